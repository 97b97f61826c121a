package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMailAuthConfig: [mailauth] is off by default (no DNS query from a
// server that was not told where to ask), its keys load strictly and are
// validated, and the authserv-id defaults to the host name.
func TestMailAuthConfig(t *testing.T) {
	d := Default()
	if d.MailAuth.Enabled || d.MailAuth.SPFFail != "dmarc" || !d.MailAuth.DMARC {
		t.Errorf("defaults %+v", d.MailAuth)
	}
	load := func(text string) (*Config, error) {
		p := filepath.Join(t.TempDir(), "postino.toml")
		if err := os.WriteFile(p, []byte("hostname = \"mx.example.org\"\n"+text), 0o600); err != nil {
			t.Fatal(err)
		}
		return Load(p)
	}
	c, err := load("[mailauth]\nenabled = true\nspf_fail = \"rcpt\"\ntimeout = \"5s\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if !c.MailAuth.Enabled || c.MailAuth.SPFFail != "rcpt" || c.MailAuthServID() != "mx.example.org" {
		t.Errorf("loaded %+v, id %q", c.MailAuth, c.MailAuthServID())
	}
	if c, err := load("[mailauth]\nauthserv_id = \"auth.example.org\"\n"); err != nil || c.MailAuthServID() != "auth.example.org" {
		t.Errorf("authserv_id: %v", err)
	}
	for text, want := range map[string]string{
		"[mailauth]\nspf_fail = \"drop\"\n":      "mailauth.spf_fail: must be one of dmarc, mail, rcpt, tag",
		"[mailauth]\nauthserv_id = \"a b; c\"\n": "mailauth.authserv_id: invalid host name",
		"[mailauth]\ntimeout = \"10ms\"\n":       "mailauth.timeout: must be at least 1s",
		"[mailauth]\nspf = true\n":               `unknown key "mailauth.spf"`,
	} {
		if _, err := load(text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", text, err, want)
		}
	}
}
