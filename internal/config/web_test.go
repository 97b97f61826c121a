package config

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// loadString loads a configuration file with the given text.
func loadString(t *testing.T, text string) (*Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "postino.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(path)
}

func TestWebDefaultsAreOff(t *testing.T) {
	c := Default()
	if c.HTTP.Listen != "" || c.HTTPS.Listen != "" || c.TLS.ACME {
		t.Errorf("http %q https %q acme %v: want all off", c.HTTP.Listen, c.HTTPS.Listen, c.TLS.ACME)
	}
	if c.MTASTS.Mode != "testing" || !strings.HasPrefix(c.TLS.ACMEDirectory, "https://acme-v02.api.letsencrypt.org/") {
		t.Errorf("mta_sts.mode %q, acme_directory %q", c.MTASTS.Mode, c.TLS.ACMEDirectory)
	}
}

func TestWebKeys(t *testing.T) {
	c, err := loadString(t, `
hostname = "mail.example.org"
data_dir = "/srv/postino"
[tls]
cert = "a.crt"
key = "a.key"
names = ["mail.example.net", "MAIL.example.org"]
acme = true
acme_email = "admin@example.org"
[[tls.certificate]]
cert = "b.crt"
key = "/etc/b.key"
[http]
listen = ":80"
[https]
listen = ":443"
[mta_sts]
mode = "enforce"
mx = ["*.mx.example.org"]
max_age = "24h"
`)
	if err != nil {
		t.Fatal(err)
	}
	certs, keys := c.CertificatePairs()
	if !slices.Equal(certs, []string{"/srv/postino/a.crt", "/srv/postino/b.crt"}) || !slices.Equal(keys, []string{"/srv/postino/a.key", "/etc/b.key"}) {
		t.Errorf("pairs %q %q", certs, keys)
	}
	if got := c.HostNames(); !slices.Equal(got, []string{"mail.example.org", "mail.example.net"}) {
		t.Errorf("HostNames = %q", got)
	}
	if got := c.MTASTSHosts(); !slices.Equal(got, []string{"*.mx.example.org"}) {
		t.Errorf("MTASTSHosts = %q", got)
	}
	if c.ACMEDir() != "/srv/postino/tls/acme" {
		t.Errorf("ACMEDir = %q", c.ACMEDir())
	}
}

func TestWebValidation(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"hostname = \"mail.example.org\"\n[tls]\nacme = true\nacme_email = \"a@example.org\"", "tls.acme: needs https.listen"},
		{"hostname = \"mail.example.org\"\n[https]\nlisten = \":443\"\n[tls]\nacme = true", "tls.acme_email"},
		{"hostname = \"localhost\"\n[https]\nlisten = \":443\"\n[tls]\nacme = true\nacme_email = \"a@example.org\"", "hostname: must be a public host name"},
		{"hostname = \"mail.example.org\"\n[https]\nlisten = \":443\"\n[tls]\nacme = true\nacme_email = \"a@example.org\"\nacme_directory = \"http://ca.example/dir\"", "tls.acme_directory"},
		{"[tls]\nnames = [\"bad name\"]", "tls.names[0]"},
		{"hostname = \"mail.example.org\"\n[https]\nlisten = \":443\"\n[tls]\nacme = true\nacme_email = \"a@example.org\"\nnames = [\"mail.example.net\", \"intranet\"]", "tls.names[1]: must be a public host name"},
		{"[[tls.certificate]]\ncert = \"x\"", "tls.certificate[0]"},
		{"[mta_sts]\nmode = \"strict\"", "mta_sts.mode"},
		{"[mta_sts]\nmax_age = \"9000h\"", "mta_sts.max_age"},
		{"[mta_sts]\nmax_age = \"1.5s\"", "mta_sts.max_age"},
		{"[mta_sts]\nmx = [\"*.-bad\"]", "mta_sts.mx[0]"},
		{"[http]\nlisten = \"nope\"", "http.listen"},
		{"[http]\nlisten = \"127.0.0.1:8080\"\n[https]\nlisten = \"127.0.0.1:8080\"", "https.listen: address"},
		{"[https]\nlisten = \"127.0.0.1:1995\"", "already used by pop3.listen_tls"},
		{"[tls]\nacme_emial = \"x\"", "acme_email"},
	} {
		_, err := loadString(t, tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to mention %q", tc.text, err, tc.want)
		}
	}
}

// TestCheckWebFiles: postino config check reads the files of each
// [[tls.certificate]] and tls.acme_ca_file.
func TestCheckWebFiles(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not PEM\n"), 0o600)
	res, _ := checkFile(t, quietListeners+fmt.Sprintf(`
[tls]
acme_ca_file = %q
[[tls.certificate]]
cert = %q
key = "/nonexistent/key.pem"
`, bad, bad))
	got := findings(res)
	for _, w := range []string{"tls.certificate[0].cert: ", "tls.certificate[0].key: ", "tls.acme_ca_file: " + bad + " holds no PEM certificate"} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
}
