package queue

import (
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/envelope"
)

type quotaMap map[string]int64

func (q quotaMap) MailboxQuota(mb string) (int64, int64) { return q[mb], 0 }

// TestLocalOverQuota: queued local delivery to a full mailbox fails at
// once with 552 5.2.2 and the sender gets a DSN saying so; the other
// recipient is delivered.
func TestLocalOverQuota(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver.Quotas = quotaMap{"alice@example.test": 50}
	e.enqueue("carol@remote.test", []string{"alice@example.test", "bob@example.test"}, envelope.DSNParams{}, simpleMsg("quota"))
	srv := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	e.runOnce()
	if len(e.mailbox("alice@example.test")) != 0 || len(e.mailbox("bob@example.test")) != 1 {
		t.Fatalf("alice %d, bob %d messages", len(e.mailbox("alice@example.test")), len(e.mailbox("bob@example.test")))
	}
	e.runOnce() // the bounce goes to carol@remote.test
	m := srv.messages()
	if len(m) != 1 || !strings.Contains(m[0].data, "Status: 5.2.2") || !strings.Contains(m[0].data, "alice@example.test") ||
		strings.Contains(m[0].data, "Final-Recipient: rfc822; bob@example.test") {
		t.Fatalf("bounce: %+v", m)
	}
}
