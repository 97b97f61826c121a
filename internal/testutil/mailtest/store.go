package mailtest

import (
	"context"
	"io"
	"testing"

	"github.com/postino-mail/postino/internal/store"
)

// StoreMessages returns the messages of a mailbox in st, in wire form
// (CRLF line ends, not dot-stuffed), in maildrop order. It fails the test
// on error.
func StoreMessages(t testing.TB, st store.Store, mailbox string) []string {
	t.Helper()
	md, err := st.OpenMaildrop(context.Background(), mailbox)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	var out []string
	for i := range md.Messages() {
		rc, err := md.Open(context.Background(), i)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}
