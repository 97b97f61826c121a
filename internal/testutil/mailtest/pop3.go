package mailtest

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/postino-mail/postino/pop3"
)

// DialPOP3 connects to the POP3 server at addr with the repository's
// client (within 10 seconds) and gives the client the command timeout.
// It fails the test on error.
func DialPOP3(t testing.TB, addr string, timeout time.Duration) *pop3.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pop3.Dial(ctx, addr)
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	c.Timeout = timeout
	return c
}

// RetrAll downloads every message of an open session and checks that LIST
// sizes are the exact RETR octet counts. what, when not empty, names the
// mailbox in failure messages.
func RetrAll(t testing.TB, c *pop3.Client, what string) [][]byte {
	t.Helper()
	if what != "" {
		what += " "
	}
	list, err := c.List()
	if err != nil {
		t.Fatalf("LIST: %v", err)
	}
	var msgs [][]byte
	for _, e := range list {
		r, err := c.Retr(e.Number)
		if err != nil {
			t.Fatalf("RETR %d: %v", e.Number, err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("RETR %d: %v", e.Number, err)
		}
		if int64(len(b)) != e.Size {
			t.Errorf("%smessage %d: LIST says %d octets, RETR gave %d", what, e.Number, e.Size, len(b))
		}
		msgs = append(msgs, b)
	}
	return msgs
}

// UIDLs returns the unique-ids of an open session's messages, in order.
func UIDLs(t testing.TB, c *pop3.Client) []string {
	t.Helper()
	l, err := c.UIDL()
	if err != nil {
		t.Fatalf("UIDL: %v", err)
	}
	var out []string
	for _, e := range l {
		out = append(out, e.UID)
	}
	return out
}
