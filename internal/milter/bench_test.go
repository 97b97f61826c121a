package milter

import (
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/inbound"
)

// BenchmarkTransaction: one transaction (MAIL, RCPT, a 10 KB message with
// a header change) through a filter on loopback that does nothing else:
// what the milter protocol itself costs per message, on a session's kept
// connection.
func BenchmarkTransaction(b *testing.B) {
	c, _ := startFilterB(b)
	msg := testMessage("bench", strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", 160))
	conn := &inbound.Conn{ID: "S", Helo: "client.example", Hostname: "mx.example.org"}
	ctx := b.Context()
	s := c.Begin(ctx, conn, &inbound.Verdict{})
	defer s.(inbound.Ender).End()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		v := &inbound.Verdict{}
		s.(inbound.MailStage).Mail(ctx, "s@example.net", v)
		env := &inbound.Envelope{ID: "T", From: "s@example.net", Rcpts: []string{"u@example.org"}}
		s.(inbound.RcptStage).Rcpt(ctx, env, "u@example.org", v)
		m, err := s.(inbound.DataStage).Data(ctx, env, stringMessage(msg), v)
		if err != nil || m == nil {
			b.Fatalf("Data: %v %v", m, err)
		}
		if r, ok := v.Strongest(); ok {
			b.Fatalf("refused: %+v", r)
		}
	}
}
