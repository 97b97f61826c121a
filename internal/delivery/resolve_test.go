package delivery

import (
	"slices"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/srs"
)

// mapAliases is an alias table: "@domain" keys are catch-alls; a nil
// value is an alias that loops.
type mapAliases map[string][]string

func (m mapAliases) Expand(a string) ([]string, bool) { t, ok := m[a]; return t, ok }
func (m mapAliases) CatchAll(d string) (string, bool) {
	t, ok := m["@"+d]
	if !ok || len(t) == 0 {
		return "", false
	}
	return t[0], true
}

// TestResolver runs every rule of recipient resolution, including hostile
// addresses: a forged SRS address, a looping alias, a plus-address with
// an empty user, a domain that is not ours.
func TestResolver(t *testing.T) {
	rw, err := srs.New([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	valid, err := rw.Forward("alice@example.test", "example.test")
	if err != nil {
		t.Fatal(err)
	}
	validRemote, err := rw.Forward("someone@remote.test", "example.test")
	if err != nil {
		t.Fatal(err)
	}
	r := &Resolver{
		Users: mapUsers{"alice@example.test": true, "bob@example.test": true, "carol@catch.test": true},
		Aliases: mapAliases{
			"sales@example.test": {"alice@example.test", "bob+sales@example.test"},
			"fwd@example.test":   {"friend@remote.test", "alice@example.test"},
			"loop@example.test":  nil,
			"ghost@example.test": {"nobody@example.test"},
			"@catch.test":        {"carol@catch.test"},
		},
		PlusSeparator: "+",
		Postmaster:    "bob@example.test",
		SRS:           rw,
		IsLocalDomain: func(d string) bool { return d == "example.test" || d == "catch.test" },
	}
	show := func(res Resolution, ok bool) string {
		if !ok {
			return "none"
		}
		var parts []string
		for _, l := range res.Local {
			parts = append(parts, l.Mailbox+"<"+l.DeliveredTo+">")
		}
		for _, a := range res.Remote {
			parts = append(parts, "remote:"+a)
		}
		slices.Sort(parts)
		return strings.Join(parts, " ")
	}
	for _, tc := range []struct{ addr, want string }{
		{"alice@example.test", "alice@example.test<alice@example.test>"},
		{"alice+news@example.test", "alice@example.test<alice+news@example.test>"},
		{"+news@example.test", "none"},
		{"sales@example.test", "alice@example.test<alice@example.test> bob@example.test<bob+sales@example.test>"},
		{"sales+x@example.test", "alice@example.test<alice@example.test> bob@example.test<bob+sales@example.test>"},
		{"fwd@example.test", "alice@example.test<alice@example.test> remote:friend@remote.test"},
		{"loop@example.test", "none"},
		{"ghost@example.test", "none"},
		{"anyone@catch.test", "carol@catch.test<carol@catch.test>"},
		{"postmaster@example.test", "bob@example.test<bob@example.test>"},
		{"PostMaster@example.test", "bob@example.test<bob@example.test>"},
		{"nobody@example.test", "none"},
		{"someone@remote.test", "none"},
		{"postmaster@remote.test", "none"},
		{valid, "alice@example.test<alice@example.test>"},
		{validRemote, "remote:someone@remote.test"},
		{"SRS0=AAAA=ZZ=remote.test=victim@example.test", "none"},
	} {
		if got := show(r.Resolve(tc.addr, nil)); got != tc.want {
			t.Errorf("Resolve(%q) = %s, want %s", tc.addr, got, tc.want)
		}
	}
	for _, tc := range []struct {
		user, addr string
		want       bool
	}{
		{"alice@example.test", "alice+x@example.test", true},
		{"alice@example.test", "sales@example.test", true},
		{"bob@example.test", "sales+y@example.test", true},
		{"bob@example.test", "alice@example.test", false},
		{"bob@example.test", "fwd@example.test", false},
	} {
		if got := r.Owns(tc.user, tc.addr); got != tc.want {
			t.Errorf("Owns(%s, %s) = %v", tc.user, tc.addr, got)
		}
	}
	if mb, ok := r.Mailbox("bob+tag@example.test"); !ok || mb != "bob@example.test" {
		t.Errorf("Mailbox(bob+tag) = %q, %v", mb, ok)
	}
	if _, ok := r.Mailbox("sales@example.test"); ok {
		t.Error("Mailbox resolved an alias")
	}
}
