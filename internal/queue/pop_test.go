package queue

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/postino-mail/postino/internal/pop3backend"
	"github.com/postino-mail/postino/pop3"
)

// popBackend serves the env's maildir store over POP3 (password "pw").
type popBackend struct{ e *env }

func (b popBackend) Authenticate(ctx context.Context, ci *pop3.ConnInfo, user, pass string) (string, error) {
	if pass != "pw" {
		return "", pop3.ErrAuthFailed
	}
	return user, nil
}

func (b popBackend) OpenMaildrop(ctx context.Context, ci *pop3.ConnInfo, user string) (pop3.Maildrop, error) {
	md, err := b.e.store.OpenMaildrop(ctx, user)
	if err != nil {
		return nil, err
	}
	return pop3backend.NewMaildrop(md), nil
}

// popRetrieve downloads a user's messages over POP3 from a loopback
// pop3.Server, as the sender's mail client would.
func popRetrieve(t *testing.T, e *env, user string) []string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &pop3.Server{Backend: popBackend{e}}
	go srv.Serve(ln)
	defer srv.Close()
	c, err := pop3.Dial(context.Background(), ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Quit()
	if err := c.Login(user, "pw"); err != nil {
		t.Fatal(err)
	}
	list, err := c.List()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range list {
		r, err := c.Retr(l.Number)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}
