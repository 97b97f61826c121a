package pop3backend

import (
	"context"
	"io"
	"testing"

	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/pop3"
)

type revStoreDrop struct{ done chan struct{} }

func (revStoreDrop) Messages() []store.MessageInfo                    { return nil }
func (revStoreDrop) Open(context.Context, int) (io.ReadCloser, error) { return nil, io.EOF }
func (revStoreDrop) Commit(context.Context, []int) error              { return nil }
func (revStoreDrop) Close() error                                     { return nil }
func (d revStoreDrop) Done() <-chan struct{}                          { return d.done }

// TestMaildropPassesRevocation: the POP3 server sees the store's lock
// loss through the converted maildrop.
func TestMaildropPassesRevocation(t *testing.T) {
	done := make(chan struct{})
	md := NewMaildrop(revStoreDrop{done: done})
	r, ok := md.(pop3.Revocable)
	if !ok || r.Done() != (<-chan struct{})(done) {
		t.Fatal("the store's Done channel is not passed on")
	}
}
