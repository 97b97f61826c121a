package delivery

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/store/maildir"
)

type mapUsers map[string]bool

func (m mapUsers) LookupAddress(a string) (string, bool) { return a, m[a] }

func newDeliverer(t *testing.T) (*Deliverer, *maildir.Store) {
	t.Helper()
	dir := t.TempDir()
	st, err := maildir.New(filepath.Join(dir, "mail"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	users := mapUsers{"alice@example.test": true, "bob@example.test": true}
	return &Deliverer{Store: st, Users: users, Resolver: &Resolver{Users: users, PlusSeparator: "+"},
		SpoolDir: dir, MaxSize: 1000}, st
}

func mailbox(t *testing.T, st *maildir.Store, box string) []string {
	t.Helper()
	md, err := st.OpenMaildrop(context.Background(), box)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	var out []string
	for i := range md.Messages() {
		r, err := md.Open(context.Background(), i)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		r.Close()
		out = append(out, string(b))
	}
	return out
}

func TestDeliver(t *testing.T) {
	d, st := newDeliverer(t)
	res, err := d.Deliver(context.Background(), "carol@remote.test", []string{"alice@example.test", "bob+news@example.test"},
		strings.NewReader("From carol@remote.test Sat Nov 21 10:00:00 2026\nSubject: hi\n\nbody"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[1].Mailbox != "bob@example.test" || res[0].UID == "" {
		t.Fatalf("results %+v", res)
	}
	want := "Return-Path: <carol@remote.test>\r\nDelivered-To: alice@example.test\r\nSubject: hi\r\n\r\nbody\r\n"
	if got := mailbox(t, st, "alice@example.test"); len(got) != 1 || got[0] != want {
		t.Fatalf("alice has %q", got)
	}
	if got := mailbox(t, st, "bob@example.test"); len(got) != 1 || !strings.Contains(got[0], "Delivered-To: bob+news@example.test\r\n") {
		t.Fatalf("bob has %q", got)
	}
}

func TestDeliverErrors(t *testing.T) {
	d, st := newDeliverer(t)
	ctx := context.Background()
	// An unknown recipient stops everything before anything is stored.
	_, err := d.Deliver(ctx, "", []string{"alice@example.test", "nobody@example.test"}, strings.NewReader("S: x\n\nx\n"))
	if !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("err = %v", err)
	}
	if got := mailbox(t, st, "alice@example.test"); len(got) != 0 {
		t.Fatalf("alice got %d messages", len(got))
	}
	if _, err := d.Deliver(ctx, "", []string{"alice@example.test"}, strings.NewReader("")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty: %v", err)
	}
	if _, err := d.Deliver(ctx, "", []string{"alice@example.test"}, strings.NewReader(strings.Repeat("x", 1001))); !errors.Is(err, ErrTooBig) {
		t.Fatalf("too big: %v", err)
	}
	if _, err := d.Deliver(ctx, "", []string{"alice@example.test"}, strings.NewReader(strings.Repeat("x", 1000))); err != nil {
		t.Fatalf("exactly MaxSize: %v", err)
	}
	if _, err := d.Resolve("+tag@example.test"); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("empty base: %v", err)
	}
	// Header injection through the envelope is neutralised.
	d.Deliver(ctx, "a@b\r\nX-Evil: 1", []string{"bob@example.test"}, strings.NewReader("S: x\n\nx\n"))
	if got := mailbox(t, st, "bob@example.test"); len(got) != 1 || strings.Contains(got[0], "\r\nX-Evil") {
		t.Fatalf("bob has %q", got)
	}
}

type brokenReader struct{ n int }

func (b *brokenReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	b.n--
	return copy(p, "Subject: x\r\n\r\npartial line\r\n"), nil
}

func TestDeliverStream(t *testing.T) {
	d, st := newDeliverer(t)
	ctx := context.Background()
	if _, err := d.DeliverStream(ctx, "a@b", "alice@example.test", "alice@example.test", strings.NewReader("S: x\n\nbody"), "X-Trace: 1\r\n"); err != nil {
		t.Fatal(err)
	}
	want := "Return-Path: <a@b>\r\nDelivered-To: alice@example.test\r\nX-Trace: 1\r\nS: x\r\n\r\nbody\r\n"
	if got := mailbox(t, st, "alice@example.test"); len(got) != 1 || got[0] != want {
		t.Fatalf("alice has %q", got)
	}
	// A client that goes away, an oversize or an empty message: nothing
	// is stored and the error is not a store failure.
	for name, r := range map[string]io.Reader{
		"broken": &brokenReader{n: 3},
		"big":    strings.NewReader(strings.Repeat("x", 1001)),
		"empty":  strings.NewReader(""),
	} {
		_, err := d.DeliverStream(ctx, "", "bob@example.test", "bob@example.test", r, "")
		if err == nil || errors.Is(err, ErrStore) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	if got := mailbox(t, st, "bob@example.test"); len(got) != 0 {
		t.Fatalf("bob has %d messages after failed reads", len(got))
	}
}
