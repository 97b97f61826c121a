package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func loadTOML(t *testing.T, text string) (*Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "postino.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return Load(p)
}

func TestMilterConfig(t *testing.T) {
	c, err := loadTOML(t, `
[[milter]]
name = "rspamd"
address = "127.0.0.1:11332"

[[milter]]
name = "clamav"
address = "unix:/run/clamav/clamav-milter.ctl"
on_failure = "accept"
timeout = "2m"
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Milters) != 2 {
		t.Fatalf("milters: %+v", c.Milters)
	}
	r, cl := c.Milters[0], c.Milters[1]
	if r.AcceptOnFailure() || r.TimeoutOrDefault() != 30*time.Second || r.ConnectTimeoutOrDefault() != 10*time.Second {
		t.Errorf("rspamd defaults: %+v", r)
	}
	if !cl.AcceptOnFailure() || cl.TimeoutOrDefault() != 2*time.Minute {
		t.Errorf("clamav: %+v", cl)
	}
	for text, want := range map[string]string{
		"[[milter]]\nname = \"a b\"\naddress = \"127.0.0.1:1\"":                                                    "milter[0].name",
		"[[milter]]\nname = \"a\"\naddress = \"unix:relative\"":                                                    "milter[0].address",
		"[[milter]]\nname = \"a\"\naddress = \"localhost\"":                                                        "milter[0].address",
		"[[milter]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\non_failure = \"drop\"":                               "milter[0].on_failure",
		"[[milter]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n[[milter]]\nname = \"a\"\naddress = \"127.0.0.1:2\"": "milter[1].name",
		"[[milter]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nbogus = 1":                                           "bogus",
		"[[milter]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\nprotocol = 7":                                        "milter[0].protocol",
	} {
		_, err := loadTOML(t, text)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one naming %s", text, err, want)
		}
	}
}

func TestJunkConfig(t *testing.T) {
	c, err := loadTOML(t, "[junk]\ntag_score = 4.5\ndefault_action = \"quarantine\"\nsubject_prefix = \"[SPAM] \"\ndigest = true\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Junk.TagScore != 4.5 || c.Junk.QuarantineScore != 10 || c.Junk.RejectScore != 15 || c.Junk.DefaultAction != "quarantine" || !c.Junk.Digest || c.Junk.DigestTime != "08:00" || c.Junk.QuarantineDays != 30 {
		t.Errorf("junk: %+v", c.Junk)
	}
	for text, want := range map[string]string{
		"[junk]\ntag_score = 20.0":              "junk: need tag_score",
		"[junk]\ndefault_action = \"drop\"":     "junk.default_action",
		"[junk]\ndigest_time = \"25:00\"":       "junk.digest_time",
		"[junk]\nquarantine_days = -1":          "junk.quarantine_days",
		"[junk]\nsubject_prefix = \"a\\r\\nb\"": "junk.subject_prefix",
	} {
		_, err := loadTOML(t, text)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one naming %s", text, err, want)
		}
	}
}
