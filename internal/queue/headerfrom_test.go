package queue

import (
	"errors"
	"net/textproto"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/smtpin"
)

// TestSubmissionHeaderFromOwned: with restrict_sender on, an authenticated
// user cannot have a message signed whose header From (any of its
// addresses) or Sender is somebody else's address of the signed domain:
// 550 5.7.1 after DATA, nothing queued. The user's own address and an
// alias the user owns are accepted and signed. Over plain (loopback),
// STARTTLS and implicit TLS.
func TestSubmissionHeaderFromOwned(t *testing.T) {
	o := newOriginWith(t, func(so *smtpin.Options) { so.AllowAnySender = false })
	delivered := 0
	for _, c := range []struct{ mode, addr string }{{"plain", o.sub}, {"starttls", o.sub}, {"tls", o.subs}} {
		for _, f := range []struct {
			name, user, header string
			ok                 bool
		}{
			{"forged From", "alice@example.test", "From: CEO <ceo@example.test>\r\n", false},
			{"forged second author", "alice@example.test", "From: alice@example.test, ceo@example.test\r\nSender: alice@example.test\r\n", false},
			{"forged Sender", "alice@example.test", "From: alice@example.test\r\nSender: ceo@example.test\r\n", false},
			{"another user", "alice@example.test", "From: Bob <bob@example.test>\r\n", false},
			{"two From fields", "alice@example.test", "From: alice@example.test\r\nFrom: ceo@example.test\r\n", false},
			{"encoded display name", "alice@example.test", "From: =?utf-8?q?Alice?= <ceo@example.test>\r\n", false},
			{"unparsable From", "alice@example.test", "From: <ceo@example.test\r\n", false},
			{"own address", "alice@example.test", "From: Alice <alice@example.test>\r\n", true},
			{"own plus-address", "alice@example.test", "From: alice+news@example.test\r\n", true},
			{"owned alias", "bob@example.test", "From: The team <team@example.test>\r\nSender: bob@example.test\r\n", true},
		} {
			msg := f.header + "To: carol@remote.test\r\nSubject: " + f.name + " over " + c.mode + "\r\n\r\nPay now.\r\n"
			err := o.send(t, c.addr, c.mode, f.user, f.user, []string{"carol@remote.test"}, msg)
			if !f.ok {
				var te *textproto.Error
				if !errors.As(err, &te) || te.Code != 550 || !strings.HasPrefix(te.Msg, "5.7.1 ") {
					t.Errorf("%s, %s: %v, want 550 5.7.1", c.mode, f.name, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s, %s: %v", c.mode, f.name, err)
			}
			delivered++
			m := o.deliver(t, o.remote, delivered)
			if !strings.Contains(m.data, "Subject: "+f.name+" over "+c.mode+"\r\n") {
				t.Fatalf("%s, %s: the remote server got another message:\n%s", c.mode, f.name, m.data)
			}
			if ok, bad := o.ourSignatures(t, m.data); ok != 1 || bad != 0 {
				t.Errorf("%s, %s: %d good and %d bad signatures of example.test", c.mode, f.name, ok, bad)
			}
		}
	}
	// Nothing refused was queued.
	o.e.runOnce()
	if n := len(o.remote.messages()); n != delivered {
		t.Errorf("the remote server got %d messages, want %d", n, delivered)
	}
}
