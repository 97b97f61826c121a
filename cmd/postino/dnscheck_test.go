package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// longCert writes a self-signed certificate for names valid for 90 days
// (so that "check" does not warn about its expiry) and returns the
// paths of the certificate and key files.
func longCert(t *testing.T, dir string, names ...string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := testutil.NewCertValidFor(t, 90*24*time.Hour, names...).PEM(t)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// mailHost is a postino serving in-process for the DNS and POP3 checks.
type mailHost struct {
	config            string
	certFile, keyFile string
	addr              map[string]string // pop3, pop3s, smtp, submission, submissions
	logs              *testutil.SyncBuffer
}

// hostConf is more configuration of a mailHost: lines for the [pop3] and
// [smtp] sections, and more sections.
type hostConf struct {
	pop3, smtp, sections string
}

// startMailHost writes a configuration for mail.example.test on free
// loopback ports with a 90-day certificate, creates the data folder, a
// user alice@example.test (password "secret") with DKIM keys for
// example.test, and serves it until the test ends.
func startMailHost(t *testing.T, hc hostConf) *mailHost {
	t.Helper()
	t.Setenv("POSTINO_CONFIG", "")
	dir := t.TempDir()
	certFile, keyFile := longCert(t, dir, "mail.example.test", "mta-sts.example.test", "127.0.0.1")
	free := testutil.FreeAddrs(t, 5)
	h := &mailHost{config: filepath.Join(dir, "postino.toml"), certFile: certFile, keyFile: keyFile, addr: map[string]string{
		"pop3": free[0], "pop3s": free[1], "smtp": free[2], "submission": free[3], "submissions": free[4],
	}}
	conf := fmt.Sprintf(`hostname = "mail.example.test"
data_dir = %q
[tls]
cert = %q
key = %q
[pop3]
listen = %q
listen_tls = %q
%s
[smtp]
listen = %q
submission = %q
submissions = %q
local_domains = ["example.test"]
%s
[dns]
public_addresses = ["127.0.0.1"]
%s
`, filepath.Join(dir, "data"), certFile, keyFile, h.addr["pop3"], h.addr["pop3s"], hc.pop3, h.addr["smtp"], h.addr["submission"], h.addr["submissions"], hc.smtp, hc.sections)
	if err := os.WriteFile(h.config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"init"}, {"dkim", "keygen", "example.test"},
	} {
		if code, out, errs := runCmd(t, "", append(args, "--config", h.config)...); code != exitOK {
			t.Fatalf("postino %v = %d\n%s%s", args, code, out, errs)
		}
	}
	if code, out, errs := runCmd(t, "secret\n", "user", "add", "alice@example.test", "--password-stdin", "--config", h.config); code != exitOK {
		t.Fatalf("user add = %d\n%s%s", code, out, errs)
	}
	var stdout testutil.SyncBuffer
	h.logs = &testutil.SyncBuffer{}
	sigs := make(chan os.Signal, 1)
	env := &cmdEnv{stdin: strings.NewReader(""), stdout: &stdout, stderr: h.logs, signals: sigs}
	done := make(chan int, 1)
	go func() { done <- run(env, []string{"serve", "--config", h.config}) }()
	t.Cleanup(func() {
		sigs <- syscall.SIGTERM
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop")
		}
	})
	testutil.WaitFor(t, 30*time.Second, "the listeners", func() bool {
		for _, a := range h.addr {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	})
	return h
}

// startPolicyServer serves an MTA-STS policy over HTTPS with the host's
// certificate on a free loopback port, and returns the port.
func startPolicyServer(t *testing.T, h *mailHost, policy string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(h.certFile, h.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "mta-sts.example.test" || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, policy)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return port
}

// TestDNSAndCheckDomain: "postino dns" prints a zone; served by a real
// NSD, "postino check" finds every record, the ports, the certificates
// and reverse DNS right and exits 0; a broken zone gives FAIL lines with
// the fix and exit status 1.
func TestDNSAndCheckDomain(t *testing.T) {
	h := startMailHost(t, hostConf{pop3: `plaintext_auth = "never"`})
	code, zone, errs := runCmd(t, "", "dns", "example.test", "--config", h.config)
	if code != exitOK {
		t.Fatalf("dns = %d\n%s", code, errs)
	}
	_, pop3sPort, _ := net.SplitHostPort(h.addr["pop3s"])
	for _, want := range []string{
		"example.test. 3600 IN MX 10 mail.example.test.",
		"_pop3s._tcp.example.test. 3600 IN SRV 0 1 " + pop3sPort + " mail.example.test.",
		"1.0.0.127.in-addr.arpa. 3600 IN PTR mail.example.test.",
		"._domainkey.example.test. 3600 IN TXT \"v=DKIM1; k=ed25519; p=",
		"; warning: smtp.listen is port",
		"; warning: pop3.listen_tls = \"" + h.addr["pop3s"] + "\" listens on loopback only",
	} {
		if !strings.Contains(zone, want) {
			t.Errorf("dns output lacks %q:\n%s", want, zone)
		}
	}
	zones := testutil.SplitZones(t, zone, "example.test", "127.in-addr.arpa")
	zones["bl.test"] = ""
	good := testutil.StartDNS(t, zones)
	// The MTA-STS policy, served as "postino dns" prints it.
	var policy strings.Builder
	for _, l := range strings.Split(zone, "\n") {
		if p, ok := strings.CutPrefix(l, ";   "); ok {
			policy.WriteString(p + "\r\n")
		}
	}
	if !strings.HasPrefix(policy.String(), "version: STSv1\r\nmode: testing\r\nmx: mail.example.test\r\n") {
		t.Fatalf("policy in the dns output: %q", policy.String())
	}
	https := startPolicyServer(t, h, policy.String())
	code, out, errs := runCmd(t, "", "check", "example.test", "--config", h.config, "--dns", good.Addr, "--ca", h.certFile, "--dnsbl", "bl.test", "--https-port", https)
	if code != exitOK || strings.Contains(out, "FAIL ") || strings.Contains(out, "WARN ") {
		t.Fatalf("check on the correct zone = %d\n%s%s", code, out, errs)
	}
	t.Logf("postino check on the correct zone:\n%s", out)
	for _, want := range []string{"OK   MTA-STS    https://mta-sts.example.test/.well-known/mta-sts.txt: policy mode testing", "OK   TLS        pop3s 127.0.0.1:", "OK   TLS        smtp 127.0.0.1:", "OK   PORT       submission 127.0.0.1:", "OK   FCrDNS", "0 WARN, 0 FAIL"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}

	// A broken zone: wrong MX, no SPF, wrong SRV port, PTR elsewhere.
	var broken strings.Builder
	for _, l := range strings.Split(zones["example.test"], "\n") {
		switch {
		case strings.Contains(l, " IN MX "):
			l = "example.test. 3600 IN MX 10 mx.example.test."
		case strings.Contains(l, "v=spf1"):
			continue
		case strings.HasPrefix(l, "_pop3s._tcp."):
			l = "_pop3s._tcp.example.test. 3600 IN SRV 0 1 995 mail.example.test."
		}
		broken.WriteString(l + "\n")
	}
	bad := testutil.StartDNS(t, map[string]string{
		"example.test":     broken.String(),
		"127.in-addr.arpa": "1.0.0 PTR localhost.\n",
	})
	// Without --ca the test certificate is not trusted: each TLS port fails.
	code, out, _ = runCmd(t, "", "check", "example.test", "--config", h.config, "--dns", bad.Addr, "--dnsbl", "", "--https-port", https)
	if code != exitError {
		t.Errorf("check on the broken zone = %d, want %d", code, exitError)
	}
	for _, want := range []string{
		"FAIL MX         example.test: MX is 10 mx.example.test., not mail.example.test.\n     fix: publish example.test. 3600 IN MX 10 mail.example.test.",
		"FAIL SPF        example.test: no record published\n     fix: publish example.test. 3600 IN TXT \"v=spf1 mx -all\"",
		"FAIL SRV        _pop3s._tcp.example.test: SRV 0 1 995 mail.example.test., want port " + pop3sPort,
		"FAIL PTR        127.0.0.1: PTR localhost., not mail.example.test.",
		"FAIL TLS        pop3s " + h.addr["pop3s"] + ": TLS handshake: tls: failed to verify certificate",
		"FAIL TLS        smtp " + h.addr["smtp"] + ": TLS handshake: tls: failed to verify certificate",
		"FAIL MTA-STS    https://mta-sts.example.test/.well-known/mta-sts.txt: cannot fetch the policy",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("broken check lacks %q:\n%s", want, out)
		}
	}
	// Without public addresses, nothing is guessed.
	code, _, errs = runCmd(t, "", "dns", "example.test", "--config", h.config, "--ipv4", "2001:db8::1")
	if code != exitConfigError || !strings.Contains(errs, "--ipv4 2001:db8::1 is not an IPv4 address") {
		t.Errorf("dns --ipv4 IPv6 = %d, %q", code, errs)
	}
}

// TestCheckPOP3Postino audits postino's own POP3 with "postino check
// pop3://" (STLS) and "pop3s://" (implicit TLS), logged in: nothing
// fails. With plaintext_auth = "always" the audit flags USER/PASS before
// TLS and exits 1.
func TestCheckPOP3Postino(t *testing.T) {
	h := startMailHost(t, hostConf{pop3: `plaintext_auth = "never"`})
	for _, msg := range []string{"Subject: one\n\nhello\n.leading dot\n", "Subject: two\r\n\r\n" + strings.Repeat("x\r\n", 300)} {
		if code, _, errs := runCmd(t, msg, "deliver", "alice@example.test", "--config", h.config); code != exitOK {
			t.Fatalf("deliver = %d: %s", code, errs)
		}
	}
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("secret\n"), 0o600)
	for _, u := range []string{"pop3://" + h.addr["pop3"], "pop3s://" + h.addr["pop3s"]} {
		code, out, errs := runCmd(t, "", "check", u, "--ca", h.certFile, "--user", "alice@example.test", "--password-file", pw)
		t.Logf("postino check %s:\n%s", u, out)
		if code != exitOK || strings.Contains(out, "FAIL ") {
			t.Errorf("check %s = %d\n%s%s", u, code, out, errs)
		}
		for _, want := range []string{"OK   CODES", "OK   SIZE", "2 messages downloaded", "OK   UIDL", "stable across two sessions", "OK   CERT", "TLS 1.1 refused", "OK   LOCK"} {
			if !strings.Contains(out, want) {
				t.Errorf("check %s lacks %q", u, want)
			}
		}
		if strings.HasPrefix(u, "pop3://") && !strings.Contains(out, "OK   PLAINTEXT") {
			t.Errorf("check %s: no OK PLAINTEXT", u)
		}
	}

	// By name: looked up through --dns, the certificate checked for the name.
	dns := testutil.StartDNS(t, map[string]string{"example.test": "mail A 127.0.0.1\n"})
	_, port, _ := net.SplitHostPort(h.addr["pop3s"])
	code, out, _ := runCmd(t, "", "check", "pop3s://mail.example.test:"+port, "--dns", dns.Addr, "--ca", h.certFile)
	if code != exitOK || !strings.Contains(out, "OK   CONNECT    mail.example.test:"+port+": mail.example.test is 127.0.0.1") || !strings.Contains(out, "OK   CERT       127.0.0.1:"+port+": valid for mail.example.test") {
		t.Errorf("check by name = %d\n%s", code, out)
	}
	code, out, _ = runCmd(t, "", "check", "pop3s://nosuch.example.test:"+port, "--dns", dns.Addr, "--ca", h.certFile)
	if code != exitError || !strings.Contains(out, "FAIL CONNECT    nosuch.example.test:"+port+": looking up nosuch.example.test") {
		t.Errorf("check of an unknown name = %d\n%s", code, out)
	}

	open := startMailHost(t, hostConf{pop3: `plaintext_auth = "always"`})
	code, out, _ = runCmd(t, "", "check", "pop3://"+open.addr["pop3"], "--ca", open.certFile)
	if code != exitError || !strings.Contains(out, "FAIL PLAINTEXT") {
		t.Errorf("check with plaintext allowed = %d\n%s", code, out)
	}
	// A certificate that does not verify: no password is sent.
	code, out, _ = runCmd(t, "", "check", "pop3s://"+open.addr["pop3s"], "--user", "alice@example.test", "--password-file", pw)
	if code != exitError || !strings.Contains(out, "FAIL CERT") || !strings.Contains(out, "credentials not sent") || strings.Contains(out, "OK   LOGIN") {
		t.Errorf("check with an untrusted certificate = %d\n%s", code, out)
	}
	// --insecure: the certificate still fails, but the audit goes on.
	code, out, _ = runCmd(t, "", "check", "pop3s://"+open.addr["pop3s"], "--insecure", "--user", "alice@example.test", "--password-file", pw)
	if code != exitError || !strings.Contains(out, "FAIL CERT") || !strings.Contains(out, "OK   LOGIN") || !strings.Contains(out, "OK   SIZE") {
		t.Errorf("check --insecure = %d\n%s", code, out)
	}
	for _, c := range []cliCase{
		{"bad url", []string{"check", "pop3://"}, "", exitUsage, "", "want pop3://HOST[:PORT]"},
		{"user without password", []string{"check", "pop3://127.0.0.1:1", "--user", "a"}, "", exitUsage, "", "--user needs --password-file"},
	} {
		c.check(t)
	}
}

// TestDNSCheckArguments: the argument errors of "dns" and "check".
func TestDNSCheckArguments(t *testing.T) {
	t.Setenv("POSTINO_CONFIG", "")
	t.Chdir(t.TempDir())
	if code, _, errs := runCmd(t, "", "init"); code != exitOK {
		t.Fatal(errs)
	}
	for _, c := range []cliCase{
		{"dns without domain", []string{"dns"}, "", exitUsage, "", "dns: missing DOMAIN"},
		{"dns two domains", []string{"dns", "a.test", "b.test"}, "", exitUsage, "", `unexpected argument "b.test"`},
		{"dns bad flag", []string{"dns", "a.test", "--ipv4", "mail.a.test"}, "", exitUsage, "", "not an IP address"},
		{"dns no addresses", []string{"dns", "a.test"}, "", exitConfigError, "", "public addresses of the server are unknown"},
		{"dns bad domain", []string{"dns", "a b", "--ipv4", "192.0.2.1"}, "", exitConfigError, "", `invalid domain "a b"`},
		{"dns ipv6 as ipv4", []string{"dns", "a.test", "--ipv6", "192.0.2.1"}, "", exitConfigError, "", "--ipv6 192.0.2.1 is not an IPv6 address"},
		{"dns ok", []string{"dns", "a.test", "--ipv4", "192.0.2.1", "--ipv6", "2001:db8::1", "--host", "mx.a.test"}, "", exitOK, "mx.a.test. 3600 IN AAAA 2001:db8::1", ""},
		{"dns no dkim", []string{"dns", "a.test", "--ipv4", "192.0.2.1"}, "", exitOK, `; DKIM: no keys in`, ""},
		{"check without target", []string{"check"}, "", exitUsage, "", "missing DOMAIN or pop3://HOST"},
		{"check bad ca", []string{"check", "a.test", "--ca", "/nonexistent"}, "", exitUsage, "", "no such file"},
		{"check help", []string{"check", "--help"}, "", exitOK, "Usage: postino check DOMAIN | pop3://HOST", ""},
	} {
		c.check(t)
	}
}
