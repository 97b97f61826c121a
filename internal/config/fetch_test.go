package config

import (
	"strings"
	"testing"
	"time"
)

func TestLoadFetchAccounts(t *testing.T) {
	c, err := Load(writeFile(t, `
[fetch]
state_dir = "/var/lib/postino/fetch"

[[fetch.account]]
name = "work"
server = "pop.example.org"
user = "alice"
password_command = "pass show work"
destination = "maildir:~/Maildir"
delete_after_days = 30
max_size = "20MiB"
timeout = "30s"

[[fetch.account]]
name = "home"
server = "127.0.0.1"
port = 110
security = "none"
allow_plaintext = true
user = "bob"
password = "x"
destination = "mbox:/var/mail/bob"
delete = true
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Fetch.Accounts) != 2 || c.Fetch.StateDir != "/var/lib/postino/fetch" {
		t.Fatalf("got %+v", c.Fetch)
	}
	w := c.Fetch.Accounts[0]
	if w.Name != "work" || w.DeleteAfterDays != 30 || w.MaxSize != 20*MiB || w.Timeout.Duration != 30*time.Second || w.Security != "" || w.Delete {
		t.Errorf("work = %+v", w)
	}
	if h := c.Fetch.Accounts[1]; !h.Delete || h.Port != 110 || !h.AllowPlaintext {
		t.Errorf("home = %+v", h)
	}
}

func TestFetchAccountErrors(t *testing.T) {
	tests := []struct{ toml, want string }{
		{"[[fetch.account]]\nname = \"a\"\nserver = \"h\"\ndestination = \"maildir:/x\"\nservr = \"y\"\n", `unknown key "fetch.account.servr" (did you mean "fetch.account.server"?)`},
		{"[[fetch.account]]\nname = \"a b\"\nserver = \"h\"\ndestination = \"maildir:/x\"\n", "fetch.account[0].name"},
		{"[[fetch.account]]\nname = \"a\"\nserver = \"h\"\ndestination = \"maildir:/x\"\n[[fetch.account]]\nname = \"a\"\nserver = \"h\"\ndestination = \"maildir:/x\"\n", "fetch.account[1].name: \"a\" is already"},
		{"[[fetch.account]]\nname = \"a\"\nserver = \"h\"\ndestination = \"maildir:/x\"\nsecurity = \"none\"\n", "allow_plaintext"},
		{"[[fetch.account]]\nname = \"a\"\nserver = \"h\"\ndestination = \"imap:/x\"\n", "fetch.account[0].destination"},
		{"[[fetch.account]]\nname = \"a\"\nserver = \"h\"\ndestination = \"mbox:/x\"\nfingerprint = \"abc\"\n", "fetch.account[0].fingerprint"},
		{"[[fetch.account]]\nname = \"a\"\nserver = \"h\"\ndestination = \"mbox:/x\"\npassword = \"p\"\npassword_command = \"c\"\n", "not both"},
		{"[[fetch.account]]\nname = \"a\"\nserver = \"h\"\ndestination = \"mbox:/x\"\nauth = \"kerberos\"\n", "fetch.account[0].auth"},
	}
	for _, tt := range tests {
		_, err := Load(writeFile(t, tt.toml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Load(%q) = %v, want error containing %q", tt.toml, err, tt.want)
		}
	}
}
