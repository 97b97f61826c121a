package blackbox

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// bannerFingerprintRE finds the fingerprint "postino serve" prints.
var bannerFingerprintRE = regexp.MustCompile(`SHA-256 fingerprint (\S+)\n`)

// pinFlagRE finds the flag "postino fetch" suggests after a certificate it
// could not verify.
var pinFlagRE = regexp.MustCompile(`(?m)^  --fingerprint (\S+)$`)

// TestFetchPinsBannerFingerprint checks the fingerprint round trip with
// postino fetch over implicit TLS and STARTTLS: the banner prints it as
// upper-case colon-separated pairs; fetch, meeting the unverifiable
// self-signed certificate, refuses it (exit 5), prints that same
// fingerprint and the exact --fingerprint flag; pasting the flag (or the
// banner's text, or the plain-hex form) downloads the mail; a pin that
// does not match (a forged server, as the client sees it) is refused with
// nothing delivered. Plain POP3 has no certificate to pin.
func TestFetchPinsBannerFingerprint(t *testing.T) {
	s := startServer(t, serverOpts{})
	m := bannerFingerprintRE.FindStringSubmatch(s.Stdout.String())
	if m == nil {
		t.Fatalf("no fingerprint in the banner:\n%s", s.Stdout)
	}
	banner := m[1]
	if !regexp.MustCompile(`^[0-9A-F]{2}(:[0-9A-F]{2}){31}$`).MatchString(banner) {
		t.Fatalf("banner fingerprint %q is not 32 upper-case hex pairs separated by colons", banner)
	}
	addUser(t, s.data, "alice@example.test", "pw")
	msg := []byte("Subject: pinned\n\nhello\n")
	mustDeliver(t, s.data, "bob@example.test", msg, "alice@example.test")

	wrong := []byte(banner)
	wrong[0] = map[bool]byte{true: 'B', false: 'A'}[wrong[0] == 'A']

	for _, c := range []struct{ security, addr string }{{"tls", s.pop3sAddr}, {"starttls", s.pop3Addr}} {
		t.Run(c.security, func(t *testing.T) {
			dir := t.TempDir()
			fetch := func(extra ...string) (code int, stderr string, got int) {
				t.Helper()
				out := filepath.Join(dir, "out")
				os.RemoveAll(out)
				args := append([]string{"fetch", "--server", c.addr, "--security", c.security, "--user", "alice@example.test",
					"--password-command", "echo pw", "--to", "maildir:" + out, "--state-dir", t.TempDir(), "--retries", "0"}, extra...)
				r := postino(t, nil, args...)
				files, _ := filepath.Glob(filepath.Join(out, "new", "*"))
				return r.Code, r.Stderr, len(files)
			}

			code, stderr, got := fetch()
			if code != 5 || got != 0 {
				t.Fatalf("unpinned self-signed certificate: exit %d, %d delivered; want 5 and none\n%s", code, got, stderr)
			}
			if !strings.Contains(stderr, "fingerprint\n  "+banner+"\n") {
				t.Errorf("fetch does not print the certificate's fingerprint %s:\n%s", banner, stderr)
			}
			hint := pinFlagRE.FindStringSubmatch(stderr)
			if hint == nil || hint[1] != banner {
				t.Fatalf("fetch does not suggest --fingerprint %s:\n%s", banner, stderr)
			}

			if code, stderr, got := fetch("--fingerprint", string(wrong)); code != 5 || got != 0 || strings.Contains(stderr, "pin it") {
				t.Errorf("wrong pin: exit %d, %d delivered; want 5, none, and no offer to pin\n%s", code, got, stderr)
			} else if !strings.Contains(stderr, "the server's is "+banner) {
				t.Errorf("wrong pin: the error does not show the server's fingerprint:\n%s", stderr)
			}

			plainHex := strings.ToLower(strings.ReplaceAll(banner, ":", ""))
			for _, pin := range []string{hint[1], plainHex, strings.ToLower(banner)} {
				if code, stderr, got := fetch("--fingerprint", pin); code != 0 || got != 1 {
					t.Errorf("--fingerprint %s: exit %d, %d delivered; want 0 and 1\n%s", pin, code, got, stderr)
				}
			}
		})
	}

	// A configured account gets the configuration line to add instead.
	data := t.TempDir()
	conf := filepath.Join(t.TempDir(), "fetch.toml")
	os.WriteFile(conf, []byte("data_dir = \""+data+"\"\n\n[[fetch.account]]\nname = \"home\"\nserver = \"127.0.0.1\"\nport = "+
		s.pop3sAddr[strings.LastIndexByte(s.pop3sAddr, ':')+1:]+"\nuser = \"alice@example.test\"\npassword = \"pw\"\n"+
		"destination = \"maildir:"+filepath.Join(data, "out")+"\"\n"), 0o600)
	r := postino(t, nil, "fetch", "--config", conf, "--retries", "0")
	want := "  fingerprint = \"" + banner + "\"\nin the [[fetch.account]] named \"home\" of " + conf + " (--config)\n"
	if r.Code != 5 || !strings.Contains(r.Stderr, want) {
		t.Errorf("configured account: want exit 5 and %q:\n%s", want, r)
	}
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("fingerprint = \"" + banner + "\"\n")
	f.Close()
	if r := postino(t, nil, "fetch", "--config", conf, "--retries", "0"); r.Code != 0 {
		t.Errorf("configured account with the suggested line: %s", r)
	}
}
