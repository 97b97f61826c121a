package blackbox

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// writeCertPair writes a self-signed certificate for name and its key as
// dir/prefix.crt and dir/prefix.key.
func writeCertPair(t *testing.T, dir, prefix, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(90 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, prefix+".crt"), filepath.Join(dir, prefix+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile
}

// checkLines runs "config check --config conf" and returns its result and
// its standard error split into lines.
func checkLines(t *testing.T, conf string) (testutil.Result, []string) {
	t.Helper()
	r := postino(t, nil, "config", "check", "--config", conf)
	return r, strings.Split(strings.TrimSuffix(r.Stderr, "\n"), "\n")
}

// wantFindings checks that every wanted finding is a line of got, once.
func wantFindings(t *testing.T, r testutil.Result, got []string, want []string) {
	t.Helper()
	for _, w := range want {
		n := 0
		for _, g := range got {
			if strings.HasPrefix(g, w) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("want one line starting %q, got %d:\n%s", w, n, r)
		}
	}
}

// TestConfigCheckReportsEverything: one run of config check on a
// configuration with a problem in each place it looks reports all of them,
// each with its file and line, and exits 78.
func TestConfigCheckReportsEverything(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	os.MkdirAll(filepath.Join(data, "dkim", "example.test"), 0o700)
	addUser(t, data, "alice@example.test", "pw")
	users := filepath.Join(data, "users.passwd")
	f, _ := os.OpenFile(users, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("this line has no password\n")
	f.Close()
	aliasFile := filepath.Join(data, "aliases")
	os.WriteFile(aliasFile, []byte("sales@example.test: alice@example.test\nno colon on this line\n"+
		"# comment\nteam@example.test: bob@@example.test\n"), 0o600)
	badKey := filepath.Join(data, "dkim", "example.test", "s1.key")
	os.WriteFile(badKey, []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"), 0o600)
	// The certificate of one pair with the key of another: a forged or
	// mixed-up key.
	cert, _ := writeCertPair(t, dir, "a", "mail.example.test")
	_, otherKey := writeCertPair(t, dir, "b", "mail.example.test")

	// Another program holds this address.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	conf := filepath.Join(dir, "postino.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`data_dir = %q
hostname = "mail.example.test"
colour = "blue"

[tls]
cert = %q
key = %q

[pop3]
listen = %q
listen_tls = "192.0.2.1:25"
autologout = "ten minutes"

[smtp]
listen = ""
submission = ""
submissions = ""
local_domains = ["example.test"]
max_recipients = "many"
`, data, cert, otherKey, taken.Addr())), 0o600)

	r, got := checkLines(t, conf)
	if r.Code != 78 {
		t.Errorf("exit %d, want 78 (EX_CONFIG)", r.Code)
	}
	wantFindings(t, r, got, []string{
		"error: " + conf + ":3: colour: unknown key",
		"error: " + conf + ":12: pop3.autologout: invalid duration \"ten minutes\"",
		"error: " + conf + ":19: smtp.max_recipients: incompatible types",
		"error: " + conf + ":7: tls.key: " + otherKey + " does not match the certificate in " + cert,
		"error: " + users + ":2: ",
		"error: " + aliasFile + ":2: syntax error: missing ':'",
		"error: " + aliasFile + ":4: target: ",
		"error: " + badKey + ": queue.dkim_dir: bad DKIM key",
		fmt.Sprintf("error: %s:10: pop3.listen: %s is already in use by another program (", conf, taken.Addr()),
		"error: " + conf + ":11: pop3.listen_tls: cannot listen on 192.0.2.1:25",
		// The only key is bad, so example.test is not signed.
		"warning: " + conf + ": queue.dkim_dir: local domain example.test has no DKIM key",
	})
	if !strings.Contains(r.Stdout, conf+" (--config): 10 errors, 1 warning\n") {
		t.Errorf("summary missing:\n%s", r)
	}

	// A tls.cert naming a missing file.
	os.WriteFile(conf, []byte(fmt.Sprintf("data_dir = %q\n[tls]\ncert = %q\nkey = %q\n[pop3]\nlisten = \"\"\nlisten_tls = \"\"\n[smtp]\nlisten = \"\"\nsubmission = \"\"\nsubmissions = \"\"\n",
		data, filepath.Join(dir, "missing.crt"), otherKey)), 0o600)
	r, got = checkLines(t, conf)
	if r.Code != 78 {
		t.Errorf("exit %d, want 78 (EX_CONFIG)", r.Code)
	}
	wantFindings(t, r, got, []string{"error: " + conf + ":3: tls.cert: open " + filepath.Join(dir, "missing.crt")})
}

// TestConfigCheckClean: a sound configuration, with a certificate, users,
// aliases and DKIM keys, is OK with nothing on standard error.
func TestConfigCheckClean(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	addUser(t, data, "alice@example.test", "pw")
	os.WriteFile(filepath.Join(data, "aliases"), []byte("sales@example.test: alice@example.test\n"), 0o600)
	if r := postino(t, nil, "dkim", "keygen", "example.test", "--data", data); r.Code != 0 {
		t.Fatalf("dkim keygen: %s", r)
	}
	cert, key := writeCertPair(t, dir, "a", "mail.example.test")
	free := testutil.FreeAddrs(t, 2)
	conf := filepath.Join(dir, "postino.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`data_dir = %q
hostname = "mail.example.test"
[tls]
cert = %q
key = %q
[pop3]
listen = %q
listen_tls = %q
[smtp]
listen = ""
submission = ""
submissions = ""
lmtp = %q
local_domains = ["example.test"]
`, data, cert, key, free[0], free[1], "unix:"+filepath.Join(data, "lmtp.sock"))), 0o600)
	r := postino(t, nil, "config", "check", "--config", conf)
	if want := conf + " (--config): OK\ndata folder: " + data + " (exists)\n"; r.Code != 0 || r.Stdout != want || r.Stderr != "" {
		t.Errorf("want exit 0, %q and nothing on stderr:\n%s", want, r)
	}
}

// TestConfigCheckRunningPostino: an address the running postino listens
// on is only a warning.
func TestConfigCheckRunningPostino(t *testing.T) {
	s := startServer(t, serverOpts{noPOP3S: true})
	conf := filepath.Join(t.TempDir(), "postino.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("data_dir = %q\n[pop3]\nlisten = %q\nlisten_tls = \"\"\n[smtp]\nlisten = \"\"\nsubmission = \"\"\nsubmissions = \"\"\n", s.data, s.pop3Addr)), 0o600)
	r, got := checkLines(t, conf)
	if r.Code != 0 || !strings.Contains(r.Stdout, "OK, 1 warning") {
		t.Errorf("want exit 0 with one warning:\n%s", r)
	}
	wantFindings(t, r, got, []string{"warning: " + conf + ":3: pop3.listen: " + s.pop3Addr + " in use (is postino running?"})
}

// TestUserAddOutsideLocalDomains: user add refuses a domain that
// smtp.local_domains does not list unless --force, and says when an empty
// list makes a new domain local.
func TestUserAddOutsideLocalDomains(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "postino.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("data_dir = %q\n[smtp]\nlocal_domains = [\"example.test\"]\n", data)), 0o600)
	if r := postino(t, nil, "init", "--config", conf); r.Code != 0 {
		t.Fatal(r)
	}
	add := func(addr string, extra ...string) testutil.Result {
		return postino(t, []byte("pw\n"), append([]string{"user", "add", addr, "--password-stdin", "--config", conf}, extra...)...)
	}
	if r := add("bob@elsewhere.test"); r.Code != 78 || !strings.Contains(r.Stderr, "elsewhere.test is not in smtp.local_domains (example.test)") || !strings.Contains(r.Stderr, "--force") {
		t.Errorf("user add outside local_domains: want exit 78 explaining why:\n%s", r)
	}
	if r := postino(t, nil, "user", "list", "--config", conf); r.Stdout != "" {
		t.Errorf("the refused user was added:\n%s", r)
	}
	if r := add("alice@Example.TEST"); r.Code != 0 || r.Stderr != "" {
		t.Errorf("user add in a local domain:\n%s", r)
	}
	if r := add("bob@elsewhere.test", "--force"); r.Code != 0 || !strings.Contains(r.Stderr, "warning: elsewhere.test is not in smtp.local_domains") {
		t.Errorf("user add --force outside local_domains:\n%s", r)
	}
	// config check warns about that user.
	r, got := checkLines(t, conf)
	wantFindings(t, r, got, []string{"warning: " + conf + ":3: smtp.local_domains: user bob@elsewhere.test is in domain elsewhere.test, which is not local"})

	// Without local_domains every user's domain is local: said, not refused.
	os.WriteFile(conf, []byte(fmt.Sprintf("data_dir = %q\n", data)), 0o600)
	if r := add("carol@new.test"); r.Code != 0 || !strings.Contains(r.Stderr, "smtp.local_domains is empty") || !strings.Contains(r.Stderr, "new.test becomes a local domain") {
		t.Errorf("user add with empty local_domains:\n%s", r)
	}
	if r := add("dave@new.test"); r.Code != 0 || r.Stderr != "" {
		t.Errorf("user add in a domain that is already local:\n%s", r)
	}
}
