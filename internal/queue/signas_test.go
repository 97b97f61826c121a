package queue

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/envelope"
)

// TestSignedAsAuthorDomain: a submitted message is signed as the domain
// of its From address when the user owns that address in another local
// domain (so that DMARC aligns at the receiver), and as the user's own
// domain when the user does not own it, when the From field has several
// authors, or when the domain is not local. Mail nobody submitted is not
// signed, whatever its From.
func TestSignedAsAuthorDomain(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "dkim")
	var recs []dkim.Record
	for _, d := range []string{localDomain, "second.test", "foreign.test"} {
		r, err := dkim.Keygen(keys, d, dkim.AlgoEd25519, "")
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	owned := map[string]bool{"alice@example.test alice@second.test": true, "alice@example.test alias@foreign.test": true}
	e := newEnv(t, func(o *Options) {
		o.Signer = dkim.NewSigner(keys)
		o.IsLocalDomain = func(d string) bool { return d == localDomain || d == "second.test" }
		o.Owns = func(user, addr string) bool { return owned[user+" "+addr] }
	})
	srv := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	cases := []struct {
		name, from, user, want string
	}{
		{"owned address in a second domain", "Alice <alice@second.test>", "alice@example.test", "second.test"},
		{"not owned in the second domain", "CEO <ceo@second.test>", "alice@example.test", localDomain},
		{"two authors", "alice@second.test, bob@second.test", "alice@example.test", localDomain},
		// Keys exist for foreign.test, but it is not local.
		{"owned but not local", "alias@foreign.test", "alice@example.test", localDomain},
		{"own domain", "alice@example.test", "alice@example.test", localDomain},
		{"not submitted", "alice@second.test", "", ""},
	}
	for i, c := range cases {
		msg := "From: " + c.from + "\r\nTo: bob@remote.test\r\nSubject: " + c.name + "\r\n\r\nHello.\r\n"
		e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{AuthUser: c.user}, msg)
		e.runOnce()
		m := srv.messages()
		if len(m) != i+1 {
			t.Fatalf("%s: not delivered", c.name)
		}
		vs := verifyDKIM(t, m[i].data, recs)
		if c.want == "" {
			if len(vs) != 0 {
				t.Errorf("%s: signed %+v", c.name, vs[0])
			}
			continue
		}
		if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != c.want {
			t.Errorf("%s: verifications %+v, want one pass by %s:\n%s", c.name, vs, c.want, strings.SplitN(m[i].data, "\r\n\r\n", 2)[0])
		}
	}
}
