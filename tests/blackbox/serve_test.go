package blackbox

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/tlsutil"
	"github.com/postino-mail/postino/pop3"
)

// TestCertificateCreatedThenReused checks that the first start generates
// DATA/tls/cert.pem and key.pem, valid for "localhost" on both TLS paths,
// and that a second start on the same data folder reuses them unchanged.
func TestCertificateCreatedThenReused(t *testing.T) {
	data := t.TempDir()
	certFile := filepath.Join(data, "tls", "cert.pem")
	keyFile := filepath.Join(data, "tls", "key.pem")
	if _, err := os.Stat(certFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cert.pem exists before the first start: %v", err)
	}

	s1 := startServer(t, serverOpts{data: data})
	cert1, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatalf("first start did not create cert.pem: %v", err)
	}
	key1, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatalf("first start did not create key.pem: %v", err)
	}
	if fi, err := os.Stat(keyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("key.pem mode %v is readable by group or others", fi.Mode().Perm())
	}
	block, _ := pem.Decode(cert1)
	if block == nil {
		t.Fatalf("cert.pem holds no PEM block:\n%s", cert1)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("parsing cert.pem: %v", err)
	}
	if err := cert.VerifyHostname("localhost"); err != nil {
		t.Errorf("certificate not valid for localhost: %v", err)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("certificate not valid for 127.0.0.1: %v", err)
	}
	fp := sha256.Sum256(block.Bytes)
	if want := tlsutil.FormatFingerprint(fp[:]); !strings.Contains(s1.Stdout.String(), want) {
		t.Errorf("banner does not show the certificate's SHA-256 fingerprint %s:\n%s", want, s1.Stdout)
	}
	for _, l := range []string{"pop3         " + s1.pop3Addr, "pop3s        " + s1.pop3sAddr} {
		if !strings.Contains(s1.Stdout.String(), "  "+l+"\n") {
			t.Errorf("banner lacks listener line %q:\n%s", l, s1.Stdout)
		}
	}

	// Both TLS paths present this certificate and verify as "localhost".
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pop3.DialTLS(ctx, s1.pop3sAddr, s1.tlsConfig())
	if err != nil {
		t.Fatalf("implicit TLS to %s: %v", s1.pop3sAddr, err)
	}
	c.Quit()
	c = s1.dial()
	if err := c.StartTLS(s1.tlsConfig()); err != nil {
		t.Fatalf("STLS: %v", err)
	}
	if _, err := c.Capabilities(); err != nil {
		t.Fatalf("CAPA after STLS: %v", err)
	}
	if c.HasCap("STLS") {
		t.Errorf("STLS still advertised after STLS")
	}
	c.Quit()
	s1.stop()

	s2 := startServer(t, serverOpts{data: data})
	cert2, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	key2, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cert1, cert2) || !bytes.Equal(key1, key2) {
		t.Errorf("second start replaced the certificate or key")
	}
	c, err = pop3.DialTLS(ctx, s2.pop3sAddr, s1.tlsConfig())
	if err != nil {
		t.Fatalf("second start: implicit TLS with the first certificate trusted: %v", err)
	}
	c.Quit()
	if strings.Contains(s2.Stderr.String(), "generated a self-signed certificate") {
		t.Errorf("second start logged a certificate generation:\n%s", s2.Stderr)
	}
}

// TestUserManagementLive changes users with the CLI while the server runs
// and checks that every change applies at once, without a restart.
func TestUserManagementLive(t *testing.T) {
	s := startServer(t, serverOpts{})
	const addr = "alice@example.test"

	if _, err := s.tryLogin(addr, "first-pw"); !isCode(err, pop3.CodeAuth) {
		t.Fatalf("login before user add: got %v, want -ERR [AUTH]", err)
	}
	r := postino(t, []byte("first-pw\n"), "user", "add", addr, "--password-stdin", "--data", s.data)
	if r.Code != 0 {
		t.Fatalf("user add: %s", r)
	}
	c := s.login(addr, "first-pw")
	if n, _, err := c.Stat(); err != nil || n != 0 {
		t.Errorf("STAT of a new user: %d, %v", n, err)
	}
	c.Quit()

	// Adding the same user again fails and keeps the password.
	r = postino(t, []byte("other-pw\n"), "user", "add", addr, "--password-stdin", "--data", s.data)
	if r.Code == 0 || !strings.Contains(r.Stderr, "exists") {
		t.Errorf("second user add: want failure saying it exists, got %s", r)
	}
	s.login(addr, "first-pw").Quit()

	// A second user, then list.
	addUser(t, s.data, "bob@example.test", "bob-pw")
	r = postino(t, nil, "user", "list", "--data", s.data)
	if r.Code != 0 {
		t.Fatalf("user list: %s", r)
	}
	wantList := "alice@example.test\tARGON2ID\t0\t0\t-\nbob@example.test\tARGON2ID\t0\t0\t-\n"
	if r.Stdout != wantList {
		t.Errorf("user list output:\n%q\nwant\n%q", r.Stdout, wantList)
	}

	// passwd applies live: the old password is refused, the new one works.
	r = postino(t, []byte("second-pw\n"), "user", "passwd", addr, "--password-stdin", "--data", s.data)
	if r.Code != 0 {
		t.Fatalf("user passwd: %s", r)
	}
	if _, err := s.tryLogin(addr, "first-pw"); !isCode(err, pop3.CodeAuth) {
		t.Errorf("old password after passwd: got %v, want -ERR [AUTH]", err)
	}
	s.login(addr, "second-pw").Quit()

	// passwd of an unknown user fails.
	r = postino(t, []byte("x\n"), "user", "passwd", "nobody@example.test", "--password-stdin", "--data", s.data)
	if r.Code == 0 {
		t.Errorf("user passwd of an unknown user succeeded: %s", r)
	}

	// del applies live.
	r = postino(t, nil, "user", "del", addr, "--data", s.data)
	if r.Code != 0 {
		t.Fatalf("user del: %s", r)
	}
	if _, err := s.tryLogin(addr, "second-pw"); !isCode(err, pop3.CodeAuth) {
		t.Errorf("login after user del: got %v, want -ERR [AUTH]", err)
	}
	s.login("bob@example.test", "bob-pw").Quit()
	r = postino(t, nil, "user", "list", "--data", s.data)
	if r.Stdout != "bob@example.test\tARGON2ID\t0\t0\t-\n" {
		t.Errorf("user list after del: %q", r.Stdout)
	}
	r = postino(t, nil, "user", "del", addr, "--data", s.data)
	if r.Code == 0 {
		t.Errorf("deleting a deleted user succeeded: %s", r)
	}

	// Invalid addresses are refused and nothing is added.
	for _, bad := range []string{"../x@y", "a/b@c", "no-at", "a:b@c"} {
		r := postino(t, []byte("pw\n"), "user", "add", bad, "--password-stdin", "--data", s.data)
		if r.Code == 0 {
			t.Errorf("user add %q succeeded: %s", bad, r)
		}
	}
	r = postino(t, nil, "user", "list", "--data", s.data)
	if r.Stdout != "bob@example.test\tARGON2ID\t0\t0\t-\n" {
		t.Errorf("user list after invalid adds: %q", r.Stdout)
	}
	for _, p := range []string{filepath.Join(s.data, "x@y"), filepath.Join(filepath.Dir(s.data), "x")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("an invalid address created %s", p)
		}
	}
}

// TestDeliver checks postino deliver's exit codes and that what POP3 serves
// is exactly the input with the two trace lines and CRLF line ends.
func TestDeliver(t *testing.T) {
	s := startServer(t, serverOpts{})
	addUser(t, s.data, "alice@example.test", "alice-pw")
	addUser(t, s.data, "bob@example.test", "bob-pw")
	const from = "sender@remote.test"

	lf := []byte("From: sender@remote.test\nTo: alice@example.test\nSubject: LF\n\nline one\n.dot line\n.\nlast line\n")
	crlf := bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))
	crlf = bytes.Replace(crlf, []byte("Subject: LF"), []byte("Subject: CRLF"), 1)
	noFinal := []byte("Subject: no final newline\n\nno newline at the end")

	mustDeliver(t, s.data, from, lf, "alice@example.test", "bob@example.test")
	mustDeliver(t, s.data, from, crlf, "alice@example.test")
	mustDeliver(t, s.data, from, noFinal, "alice+tag@example.test")

	// Unknown recipient: 67 and nothing delivered, not even to alice.
	r := deliver(t, s.data, from, []byte("Subject: must not arrive\n\nx\n"), "alice@example.test", "nobody@example.test")
	if r.Code != 67 {
		t.Errorf("deliver with an unknown recipient: %s\nwant exit 67", r)
	}
	if !strings.Contains(r.Stderr, "nobody@example.test") {
		t.Errorf("deliver error does not name the unknown recipient: %s", r.Stderr)
	}
	// Empty input: 65.
	if r := deliver(t, s.data, from, nil, "alice@example.test"); r.Code != 65 {
		t.Errorf("deliver of empty input: %s\nwant exit 65", r)
	}
	// No recipient is a usage error, and nothing is stored.
	if r := deliver(t, s.data, from, lf); r.Code == 0 {
		t.Errorf("deliver without a recipient succeeded: %s", r)
	}

	got := s.retrieveAll("alice@example.test", "alice-pw")
	want := [][]byte{
		wireForm(from, "alice@example.test", lf),
		wireForm(from, "alice@example.test", crlf),
		wireForm(from, "alice+tag@example.test", noFinal),
	}
	compareMessages(t, "alice", got, want)
	got = s.retrieveAll("bob@example.test", "bob-pw")
	compareMessages(t, "bob", got, [][]byte{wireForm(from, "bob@example.test", lf)})

	// LF and CRLF input are served identically (apart from the subject).
	if a, b := got[0], bytes.Replace(wireForm(from, "bob@example.test", crlf), []byte("Subject: CRLF"), []byte("Subject: LF"), 1); !bytes.Equal(a, b) {
		t.Errorf("LF and CRLF deliveries differ on the wire:\n%q\n%q", a, b)
	}

	// An empty --from gives "Return-Path: <>".
	mustDeliver(t, s.data, "", []byte("Subject: bounce\n\nx\n"), "bob@example.test")
	got = s.retrieveAll("bob@example.test", "bob-pw")
	if len(got) != 2 || !bytes.HasPrefix(got[1], []byte("Return-Path: <>\r\nDelivered-To: bob@example.test\r\n")) {
		t.Errorf("bounce delivery: %q", got)
	}
}

func compareMessages(t *testing.T, who string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d messages, want %d", who, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("%s: message %d differs:\n got %q\nwant %q", who, i+1, got[i], want[i])
		}
	}
}

// TestDeliveryDuringSession checks that a session sees the snapshot taken
// at login and the next session sees the new mail.
func TestDeliveryDuringSession(t *testing.T) {
	s := startServer(t, serverOpts{})
	addUser(t, s.data, "alice@example.test", "pw")
	msg1 := []byte("Subject: one\n\nfirst\n")
	msg2 := []byte("Subject: two\n\nsecond\n")
	mustDeliver(t, s.data, "a@b.test", msg1, "alice@example.test")

	c := s.login("alice@example.test", "pw")
	n1, size1, err := c.Stat()
	if err != nil || n1 != 1 {
		t.Fatalf("STAT: %d %d %v", n1, size1, err)
	}
	mustDeliver(t, s.data, "a@b.test", msg2, "alice@example.test")
	n2, size2, err := c.Stat()
	if err != nil || n2 != n1 || size2 != size1 {
		t.Errorf("STAT changed during the session: %d %d -> %d %d (%v)", n1, size1, n2, size2, err)
	}
	list, err := c.List()
	if err != nil || len(list) != 1 {
		t.Errorf("LIST during the session: %v %v", list, err)
	}
	if _, err := c.ListOne(2); err == nil {
		t.Errorf("LIST 2 answered +OK for a message delivered after login")
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}

	got := s.retrieveAll("alice@example.test", "pw")
	compareMessages(t, "alice", got, [][]byte{
		wireForm("a@b.test", "alice@example.test", msg1),
		wireForm("a@b.test", "alice@example.test", msg2),
	})
}

// TestInUse checks the maildrop lock: a second session is refused with
// [IN-USE], and a session that dies without QUIT frees the lock and deletes
// nothing.
func TestInUse(t *testing.T) {
	s := startServer(t, serverOpts{})
	addUser(t, s.data, "alice@example.test", "pw")
	for i := range 3 {
		mustDeliver(t, s.data, "a@b.test", []byte("Subject: m"+string(rune('1'+i))+"\n\nbody\n"), "alice@example.test")
	}
	c1 := s.login("alice@example.test", "pw")
	if err := c1.Dele(1); err != nil {
		t.Fatal(err)
	}
	if err := c1.Dele(2); err != nil {
		t.Fatal(err)
	}

	_, err := s.tryLogin("alice@example.test", "pw")
	if !isCode(err, pop3.CodeInUse) {
		t.Fatalf("second login while locked: got %v, want -ERR [IN-USE]", err)
	}
	// The same over implicit TLS.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc, err := pop3.DialTLS(ctx, s.pop3sAddr, s.tlsConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.Login("alice@example.test", "pw"); !isCode(err, pop3.CodeInUse) {
		t.Errorf("second login over TLS while locked: got %v, want -ERR [IN-USE]", err)
	}
	tc.Close()

	// Kill the first client: the connection closes without QUIT.
	c1.Close()
	var c2 *pop3.Client
	deadline := time.Now().Add(5 * time.Second)
	for {
		c2, err = s.tryLogin("alice@example.test", "pw")
		if err == nil {
			break
		}
		if !isCode(err, pop3.CodeInUse) || time.Now().After(deadline) {
			t.Fatalf("login after the first client died: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	n, _, err := c2.Stat()
	if err != nil || n != 3 {
		t.Errorf("after a session ended without QUIT: STAT %d (%v), want 3 (DELE must not apply)", n, err)
	}
	c2.Quit()
}

// TestKill9ReleasesLock kills the server while a session holds the lock,
// with deletions marked, and checks that after a restart the mailbox can be
// opened and still holds every message.
func TestKill9ReleasesLock(t *testing.T) {
	data := t.TempDir()
	s := startServer(t, serverOpts{data: data})
	addUser(t, s.data, "alice@example.test", "pw")
	var want [][]byte
	for i := range 4 {
		m := []byte("Subject: kill " + string(rune('a'+i)) + "\n\nbody\n")
		mustDeliver(t, s.data, "a@b.test", m, "alice@example.test")
		want = append(want, wireForm("a@b.test", "alice@example.test", m))
	}
	c := s.login("alice@example.test", "pw")
	for i := 1; i <= 4; i++ {
		if err := c.Dele(i); err != nil {
			t.Fatal(err)
		}
	}
	s.kill9()
	c.Close()

	s2 := startServer(t, serverOpts{data: data})
	c2, err := s2.tryLogin("alice@example.test", "pw")
	if err != nil {
		t.Fatalf("login after kill -9 and restart: %v (lock stuck?)", err)
	}
	got := retrAll(t, c2)
	c2.Quit()
	compareMessages(t, "alice", got, want)
}

// TestSignals checks SIGHUP (keeps serving, sessions survive) and SIGTERM
// with an idle session open ("-ERR [SYS/TEMP]", exit 0).
func TestSignals(t *testing.T) {
	s := startServer(t, serverOpts{})
	addUser(t, s.data, "alice@example.test", "pw")
	mustDeliver(t, s.data, "a@b.test", []byte("Subject: x\n\nbody\n"), "alice@example.test")

	c := s.login("alice@example.test", "pw")
	oldTLS := s.tlsConfig()
	// Replace the certificate; the file watcher polls once a minute, so
	// within this test only SIGHUP can make the server load it.
	newCert := writeNewCert(t, s.data)
	s.signal(syscall.SIGHUP)
	if n, _, err := c.Stat(); err != nil || n != 1 {
		t.Errorf("session after SIGHUP: STAT %d %v", n, err)
	}
	c.Quit()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		tc, err := pop3.DialTLS(ctx, s.pop3sAddr, oldTLS)
		cancel()
		if err != nil {
			break // no longer the old certificate
		}
		tc.Quit()
		if time.Now().After(deadline) {
			t.Fatalf("still serving the old certificate 5s after SIGHUP\n%s", s.Stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	newTLS := s.tlsConfig()
	newTLS.VerifyConnection = func(cs tls.ConnectionState) error {
		if !bytes.Equal(cs.PeerCertificates[0].Raw, newCert) {
			return errors.New("not the new certificate")
		}
		return nil
	}
	ctx0, cancel0 := context.WithTimeout(context.Background(), 5*time.Second)
	tc, err := pop3.DialTLS(ctx0, s.pop3sAddr, newTLS)
	cancel0()
	if err != nil {
		t.Fatalf("TLS with the new certificate after SIGHUP: %v", err)
	}
	tc.Quit()
	// New connections, plain and TLS, still work after SIGHUP.
	s.login("alice@example.test", "pw").Quit()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc, err = pop3.DialTLS(ctx, s.pop3sAddr, s.tlsConfig())
	if err != nil {
		t.Fatalf("TLS after SIGHUP: %v", err)
	}
	if err := tc.StartTLS(s.tlsConfig()); err == nil {
		t.Errorf("STLS accepted inside implicit TLS")
	}
	tc.Quit()
	if code, exited := s.Wait(100 * time.Millisecond); exited {
		t.Fatalf("server exited (%d) after SIGHUP", code)
	}

	// An idle logged-in session and an idle unauthenticated one.
	idle := s.login("alice@example.test", "pw")
	raw, err := net.Dial("tcp", s.pop3Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	greet := make([]byte, 512)
	if n, err := raw.Read(greet); err != nil || !strings.HasPrefix(string(greet[:n]), "+OK") {
		t.Fatalf("greeting: %q %v", greet[:n], err)
	}

	s.stopped = true
	s.signal(syscall.SIGTERM)
	idle.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, _ := idle.Conn().Read(buf)
	if !regexp.MustCompile(`^-ERR \[SYS/TEMP\] .*\r\n$`).Match(buf[:n]) {
		t.Errorf("idle session got %q on SIGTERM, want -ERR [SYS/TEMP] ...", buf[:n])
	}
	raw.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _ = raw.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "-ERR [SYS/TEMP]") {
		t.Errorf("unauthenticated idle session got %q on SIGTERM, want -ERR [SYS/TEMP] ...", buf[:n])
	}
	code, exited := s.Wait(10 * time.Second)
	if !exited {
		s.Cmd.Process.Kill()
		t.Fatalf("server did not exit within 10s of SIGTERM\n%s", s.Stderr)
	}
	if code != 0 {
		t.Errorf("exit code after SIGTERM: %d, want 0\n%s", code, s.Stderr)
	}
	// Nothing was deleted, and the listener is gone.
	if _, err := net.DialTimeout("tcp", s.pop3Addr, time.Second); err == nil {
		t.Errorf("still accepting on %s after exit", s.pop3Addr)
	}
}

// writeNewCert replaces DATA/tls/cert.pem and key.pem with a new
// self-signed certificate for localhost and returns its DER bytes.
func writeNewCert(t *testing.T, data string) []byte {
	t.Helper()
	c := testutil.NewCert(t, "localhost", "127.0.0.1")
	certPEM, keyPEM := c.PEM(t)
	// Key first: the pair must match when the server reads both.
	if err := os.WriteFile(filepath.Join(data, "tls", "key.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "tls", "cert.pem"), certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return c.DER
}

// TestConfig checks config default / check and serve --config.
func TestConfig(t *testing.T) {
	dir := t.TempDir()
	r := postino(t, nil, "config", "default")
	if r.Code != 0 || !strings.Contains(r.Stdout, "[pop3]") {
		t.Fatalf("config default: %s", r)
	}
	def := filepath.Join(dir, "default.toml")
	if err := os.WriteFile(def, []byte(r.Stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := postino(t, nil, "config", "check", def); r.Code != 0 || !strings.Contains(r.Stdout, "OK") {
		t.Errorf("config check of the default output: %s", r)
	}

	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[pop3]\nlisten = \"127.0.0.1:1\"\nlisten_tsl = \"127.0.0.1:2\"\n"), 0o600)
	r = postino(t, nil, "config", "check", bad)
	if r.Code != 78 || !strings.Contains(r.Stderr, "listen_tsl") {
		t.Errorf("config check with an unknown key: %s\nwant exit 78 naming pop3.listen_tsl", r)
	}
	badTop := filepath.Join(dir, "badtop.toml")
	os.WriteFile(badTop, []byte("colour = \"blue\"\n"), 0o600)
	if r := postino(t, nil, "config", "check", badTop); r.Code != 78 || !strings.Contains(r.Stderr, "colour") {
		t.Errorf("config check with an unknown top-level key: %s", r)
	}
	// serve refuses such a file with the same exit code.
	if r := postino(t, nil, "serve", "--config", bad, "--data", filepath.Join(dir, "d0")); r.Code != 78 {
		t.Errorf("serve --config with an unknown key: %s\nwant exit 78", r)
	}

	// serve --config with the listeners set in the file.
	data := filepath.Join(dir, "data")
	free := testutil.FreeAddrs(t, 2)
	p3, p3s := free[0], free[1]
	good := filepath.Join(dir, "good.toml")
	cfg := "data_dir = \"" + data + "\"\nhostname = \"localhost\"\n\n[pop3]\nlisten = \"" + p3 + "\"\nlisten_tls = \"" + p3s + "\"\n\n[smtp]\nlisten = \"\"\nsubmission = \"\"\nsubmissions = \"\"\n"
	os.WriteFile(good, []byte(cfg), 0o600)
	if r := postino(t, nil, "config", "check", good); r.Code != 0 {
		t.Fatalf("config check of %s: %s", cfg, r)
	}
	// Only serve and init create the data folder.
	if r := postino(t, nil, "init", "--config", good); r.Code != 0 || !strings.Contains(r.Stdout, "created data folder "+data) {
		t.Fatalf("init --config: %s", r)
	}
	if r := postino(t, []byte("pw\n"), "user", "add", "carol@example.test", "--password-stdin", "--config", good); r.Code != 0 {
		t.Fatalf("user add --config: %s", r)
	}
	// Only --config: the file sets data_dir and both listeners.
	s := startServer(t, serverOpts{data: data, noAddrs: true, noDataFlag: true, pop3Addr: p3, pop3sAddr: p3s,
		extraArgs: []string{"--config", good}})
	if !strings.Contains(s.Stdout.String(), "pop3         "+p3) || !strings.Contains(s.Stdout.String(), "pop3s        "+p3s) {
		t.Errorf("banner does not show the configured listeners:\n%s", s.Stdout)
	}
	if _, err := os.Stat(filepath.Join(data, "tls", "cert.pem")); err != nil {
		t.Errorf("no certificate in the configured data_dir: %v", err)
	}
	mustDeliver(t, data, "a@b.test", []byte("Subject: cfg\n\nx\n"), "carol@example.test")
	got := s.retrieveAll("carol@example.test", "pw")
	compareMessages(t, "carol", got, [][]byte{wireForm("a@b.test", "carol@example.test", []byte("Subject: cfg\n\nx\n"))})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc, err := pop3.DialTLS(ctx, p3s, s.tlsConfig())
	if err != nil {
		t.Fatalf("configured TLS listener: %v", err)
	}
	if err := tc.Login("carol@example.test", "pw"); err != nil {
		t.Errorf("login over the configured TLS listener: %v", err)
	}
	tc.Quit()
}

// TestConfigPlaintextNever checks pop3.plaintext_auth = "never": USER/PASS
// without TLS is refused even from loopback, and works after STLS.
func TestConfigPlaintextNever(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "p.toml")
	os.WriteFile(conf, []byte("[pop3]\nplaintext_auth = \"never\"\n"), 0o600)
	s := startServer(t, serverOpts{extraArgs: []string{"--config", conf}})
	addUser(t, s.data, "alice@example.test", "pw")
	if _, err := s.tryLogin("alice@example.test", "pw"); err == nil {
		t.Errorf("plaintext login allowed with plaintext_auth = never")
	}
	c := s.dial()
	if err := c.StartTLS(s.tlsConfig()); err != nil {
		t.Fatal(err)
	}
	if err := c.Login("alice@example.test", "pw"); err != nil {
		t.Errorf("login after STLS: %v", err)
	}
	c.Quit()
}

// TestDisabledListener checks that an empty --pop3s disables implicit TLS.
func TestDisabledListener(t *testing.T) {
	s := startServer(t, serverOpts{noPOP3S: true})
	out := s.Stdout.String()
	if strings.Contains(out, "pop3s") {
		t.Errorf("banner lists a pop3s listener although --pop3s \"\":\n%s", out)
	}
	if !strings.Contains(out, "pop3         "+s.pop3Addr) {
		t.Errorf("banner lacks the pop3 listener:\n%s", out)
	}
	// The process listens on exactly one TCP port: the plain one.
	if ports, ok := listeningPorts(t, s.Cmd.Process.Pid); ok {
		_, want, _ := net.SplitHostPort(s.pop3Addr)
		if len(ports) != 1 || ports[0] != want {
			t.Errorf("server listens on ports %v, want only %s", ports, want)
		}
	}
	addUser(t, s.data, "alice@example.test", "pw")
	s.login("alice@example.test", "pw").Quit()

	s2 := startServer(t, serverOpts{noPOP3: true})
	if strings.Contains(s2.Stdout.String(), "pop3         ") {
		t.Errorf("banner lists a pop3 listener although --pop3 \"\":\n%s", s2.Stdout)
	}
	if ports, ok := listeningPorts(t, s2.Cmd.Process.Pid); ok {
		_, want, _ := net.SplitHostPort(s2.pop3sAddr)
		if len(ports) != 1 || ports[0] != want {
			t.Errorf("server listens on ports %v, want only %s", ports, want)
		}
	}
}
