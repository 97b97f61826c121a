package quarantine

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newStore(t *testing.T) (*Store, *clock) {
	c := &clock{time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)}
	return &Store{Dir: t.TempDir(), Now: c.now}, c
}

const spam = "Received: from x by mx\r\nFrom: Spammer <s@spam.example>\r\nSubject: =?utf-8?q?Cheap_=E2=82=AC?=\r\n continued\r\n\r\nBuy now\r\n"

func TestHoldListOpenRelease(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	id, err := s.Hold(ctx, Meta{User: "alice@example.org", Sender: "s@spam.example", Recipient: "alice+x@example.org", Score: 12.5, Reasons: "milter:rspamd: score 12.5\r\nX-Injected: 1"}, strings.NewReader(spam))
	if err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Minute)
	id2, err := s.Hold(ctx, Meta{User: "bob@example.org"}, strings.NewReader("Subject: b\r\n\r\nb\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.List("")
	if err != nil || len(all) != 2 || all[0].ID != id || all[1].ID != id2 {
		t.Fatalf("List: %+v %v", all, err)
	}
	e := all[0]
	if e.User != "alice@example.org" || e.Sender != "s@spam.example" || e.Recipient != "alice+x@example.org" || e.Score != 12.5 ||
		e.From != "Spammer <s@spam.example>" || e.Subject != "=?utf-8?q?Cheap_=E2=82=AC?= continued" || !e.Date.Equal(time.Date(2026, 11, 30, 6, 0, 0, 0, time.UTC)) {
		t.Errorf("entry %+v", e)
	}
	if strings.Contains(e.Reasons, "\n") {
		t.Errorf("reasons not cleaned: %q", e.Reasons)
	}
	if l, _ := s.List("alice@example.org"); len(l) != 1 {
		t.Errorf("List(alice): %+v", l)
	}
	_, rc, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != spam {
		t.Errorf("Open: %q", b)
	}
	// A failed delivery keeps it held.
	if _, err := s.Release(ctx, id, func(context.Context, Entry, io.Reader) error { return errors.New("disk full") }); err == nil {
		t.Error("Release: no error from a failed delivery")
	}
	var got string
	if _, err := s.Release(ctx, id, func(_ context.Context, e Entry, r io.Reader) error {
		b, err := io.ReadAll(r)
		got = string(b)
		return err
	}); err != nil || got != spam {
		t.Fatalf("Release: %v %q", err, got)
	}
	if _, _, err := s.Open(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("released message still held: %v", err)
	}
	if err := s.Delete(id2); err != nil {
		t.Fatal(err)
	}
	if l, _ := s.List(""); len(l) != 0 {
		t.Errorf("after delete: %+v", l)
	}
}

// TestHostileNames: IDs and user names cannot reach outside the
// quarantine directory.
func TestHostileNames(t *testing.T) {
	s, _ := newStore(t)
	secret := filepath.Join(filepath.Dir(s.Dir), "secret")
	os.WriteFile(secret, []byte("x"), 0o600)
	for _, id := range []string{"../secret", "..", "", "20261130T021200-0123456789abcdeg", "20261130T021200/0123456789abcdef", strings.Repeat("a", 32)} {
		if _, _, err := s.Open(id); !errors.Is(err, ErrBadID) {
			t.Errorf("Open(%q): %v, want ErrBadID", id, err)
		}
		if err := s.Delete(id); !errors.Is(err, ErrBadID) {
			t.Errorf("Delete(%q): %v", id, err)
		}
	}
	for _, u := range []string{"..", "../x", "a/../../b", "."} {
		if _, err := s.Hold(context.Background(), Meta{User: u}, strings.NewReader("S: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	des, _ := os.ReadDir(filepath.Dir(s.Dir))
	for _, d := range des {
		if d.Name() != filepath.Base(s.Dir) && d.Name() != "secret" {
			t.Errorf("written outside the quarantine: %s", d.Name())
		}
	}
	if l, _ := s.List(""); len(l) != 4 {
		t.Errorf("List: %d entries, want 4", len(l))
	}
}

func TestSweep(t *testing.T) {
	s, c := newStore(t)
	old, _ := s.Hold(context.Background(), Meta{User: "a@x"}, strings.NewReader("S: 1\r\n\r\n"))
	c.t = c.t.Add(20 * 24 * time.Hour)
	young, _ := s.Hold(context.Background(), Meta{User: "a@x"}, strings.NewReader("S: 2\r\n\r\n"))
	c.t = c.t.Add(11 * 24 * time.Hour)
	n, err := s.Sweep(30 * 24 * time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("Sweep: %d %v", n, err)
	}
	if _, _, err := s.Open(old); !errors.Is(err, ErrNotFound) {
		t.Error("old message kept")
	}
	if _, _, err := s.Open(young); err != nil {
		t.Errorf("young message removed: %v", err)
	}
}

// TestDigest runs the digest with a fake clock: each user gets one
// message listing what was held since the last digest, and nothing is
// listed twice.
func TestDigest(t *testing.T) {
	s, c := newStore(t)
	ctx := context.Background()
	got := map[string]string{}
	d := &Digest{Store: s, From: "postmaster@example.org", Hostname: "mx.example.org", At: "08:00", Now: c.now,
		Deliver: func(_ context.Context, user string, r io.Reader) error {
			b, _ := io.ReadAll(r)
			got[user] += string(b)
			return nil
		}}
	if n := d.Next(c.t); !n.Equal(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("Next(06:00) = %v", n)
	}
	if n := d.Next(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)); !n.Equal(time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("Next(08:00) = %v", n)
	}
	id1, _ := s.Hold(ctx, Meta{User: "alice@example.org"}, strings.NewReader(spam))
	id2, _ := s.Hold(ctx, Meta{User: "bob@example.org"}, strings.NewReader("From: b@x\r\nSubject: for bob\r\n\r\n"))
	c.t = d.Next(c.t)
	n, err := d.Run(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Run: %d %v", n, err)
	}
	a := got["alice@example.org"]
	for _, want := range []string{"To: alice@example.org\r\n", "Subject: 1 message(s) held as spam", id1, "Cheap €", "Spammer <s@spam.example>", "postino quarantine release ID", "Auto-Submitted: auto-generated"} {
		if !strings.Contains(a, want) {
			t.Errorf("alice's digest lacks %q:\n%s", want, a)
		}
	}
	if strings.Contains(a, id2) || !strings.Contains(got["bob@example.org"], id2) {
		t.Errorf("digests mixed up:\n%s", got)
	}
	// The next day: only what is new.
	clear(got)
	c.t = c.t.Add(time.Hour)
	id3, _ := s.Hold(ctx, Meta{User: "alice@example.org"}, strings.NewReader("Subject: new\r\n\r\n"))
	c.t = d.Next(c.t)
	if n, err := d.Run(ctx); err != nil || n != 1 {
		t.Fatalf("second Run: %d %v", n, err)
	}
	if a := got["alice@example.org"]; !strings.Contains(a, id3) || strings.Contains(a, id1) {
		t.Errorf("second digest:\n%s", a)
	}
	// Nothing new: no digest.
	clear(got)
	c.t = d.Next(c.t)
	if n, _ := d.Run(ctx); n != 0 || len(got) != 0 {
		t.Errorf("empty day sent %d digests", n)
	}
}

func FuzzReadEntry(f *testing.F) {
	f.Add("X-Quarantine-ID: 20261130T021200-0123456789abcdef\r\nX-Quarantine-Date: 2026-11-30T02:12:00Z\r\nFrom: a\r\n b\r\nSubject: s\r\n\r\nbody")
	f.Add("\r\n")
	f.Fuzz(func(t *testing.T, content string) {
		dir := t.TempDir()
		p := filepath.Join(dir, "20261130T021200-0123456789abcdef")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		e, err := readEntry(p)
		if err != nil {
			return
		}
		if e.ID != "20261130T021200-0123456789abcdef" {
			t.Fatalf("ID %q", e.ID)
		}
	})
}
