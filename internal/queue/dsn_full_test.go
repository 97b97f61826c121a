package queue

import (
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/envelope"
)

// TestDSNFullOnlyForSubmitted: RET=FULL on mail nobody of ours submitted
// (it came in over the MX: no AuthUser) gets the header section only, so
// a sender cannot have its own text come back in a DSN signed as ours;
// the same request from an authenticated user gets the whole message.
func TestDSNFullOnlyForSubmitted(t *testing.T) {
	srv := newServer(t, srvConfig{rcpt: func(string) string { return "550 5.1.1 unknown" }})
	body := "From: someone@remote.test\r\nSubject: buy now\r\n\r\nText of the sender's choosing.\r\n"
	for _, c := range []struct {
		name, authUser string
		full           bool
	}{{"over the MX", "", false}, {"submitted", "alice@example.test", true}} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.route("remote.test", srv)
			d := bounceFor(t, e, "bob@remote.test", envelope.DSNParams{Return: "FULL", AuthUser: c.authUser}, body)
			hasText := strings.Contains(d.bodies[2], "Text of the sender's choosing.")
			if c.full {
				if d.types[2] != "message/rfc822" || !hasText {
					t.Fatalf("RET=FULL of a submitter: part %s %q", d.types[2], d.bodies[2])
				}
				return
			}
			if d.types[2] != "text/rfc822-headers" || hasText || !strings.Contains(d.bodies[2], "Subject: buy now") {
				t.Fatalf("RET=FULL over the MX: part %s %q", d.types[2], d.bodies[2])
			}
		})
	}
}
