package config

import (
	"errors"
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

// TestParseFetchDestination checks the one parser of the destination
// syntax.
func TestParseFetchDestination(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want FetchDestination
		err  string
	}{
		{"maildir:~/Maildir", FetchDestination{FetchDestMaildir, "~/Maildir"}, ""},
		{"mbox:/var/mail/bob", FetchDestination{FetchDestMbox, "/var/mail/bob"}, ""},
		{"mda:procmail -d bob", FetchDestination{FetchDestMDA, "procmail -d bob"}, ""},
		{"mda:a:b", FetchDestination{FetchDestMDA, "a:b"}, ""},
		{"local:bob@example.org", FetchDestination{FetchDestLocal, "bob@example.org"}, ""},
		{"", FetchDestination{}, "must be maildir:DIR"},
		{"maildir", FetchDestination{}, "must be maildir:DIR"},
		{"maildir:", FetchDestination{}, "must be maildir:DIR"},
		{"mbox: \t", FetchDestination{}, "must be maildir:DIR"},
		{"imap:/x", FetchDestination{}, `unknown destination type "imap"`},
		{"Maildir:/x", FetchDestination{}, `unknown destination type "Maildir"`},
		{"local:bob", FetchDestination{}, "want local:USER@DOMAIN"},
		{"local:@example.org", FetchDestination{}, "want local:USER@DOMAIN"},
		{"local:bob@", FetchDestination{}, "want local:USER@DOMAIN"},
		{"local:bob@example.org\nX: y", FetchDestination{}, "want local:USER@DOMAIN"},
	} {
		got, err := ParseFetchDestination(tc.in)
		if tc.err != "" {
			if err == nil || !errors.Is(err, ErrFetchDestination) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseFetchDestination(%q) = %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseFetchDestination(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseFetchDestination checks that every accepted destination has a
// known kind and a non-blank argument and writes back as it was read.
func FuzzParseFetchDestination(f *testing.F) {
	for _, s := range []string{"maildir:~/Maildir", "mbox:/var/mail/bob", "mda:procmail", "local:bob@example.org", "local:bob", "imap:x", ":", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseFetchDestination(s)
		if err != nil {
			if !errors.Is(err, ErrFetchDestination) {
				t.Fatalf("%q: untyped error %v", s, err)
			}
			return
		}
		switch d.Kind {
		case FetchDestMaildir, FetchDestMbox, FetchDestMDA:
		case FetchDestLocal:
			if !strings.Contains(d.Arg, "@") || strings.ContainsAny(d.Arg, "\r\n") {
				t.Fatalf("%q: local address %q", s, d.Arg)
			}
		default:
			t.Fatalf("%q: kind %q", s, d.Kind)
		}
		if strings.TrimSpace(d.Arg) == "" || d.String() != s {
			t.Fatalf("%q: parsed as %#v", s, d)
		}
		c := Default()
		c.Fetch.Accounts = []FetchAccount{{Name: "a", Server: "h", Destination: s}}
		if err := c.Validate(); err != nil {
			t.Fatalf("%q parses but does not validate: %v", s, err)
		}
	})
}
