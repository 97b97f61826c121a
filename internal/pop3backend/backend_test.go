package pop3backend

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/pop3"
)

type env struct {
	db    *auth.DB
	st    *maildir.Store
	srv   *pop3.Server
	addr  string
	users string
}

func start(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{users: filepath.Join(dir, "users.passwd")}
	e.db = auth.OpenDB(e.users)
	var err error
	if e.st, err = maildir.New(filepath.Join(dir, "mail"), nil); err != nil {
		t.Fatal(err)
	}
	e.srv = &pop3.Server{Backend: &POP3Backend{Users: e.db, Store: e.st}, SCRAM: true}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	go e.srv.Serve(l)
	t.Cleanup(func() { e.srv.Close() })
	return e
}

func (e *env) dial(t *testing.T) *pop3.Client {
	t.Helper()
	c, err := pop3.Dial(context.Background(), e.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Timeout = 10 * time.Second
	t.Cleanup(func() { c.Close() })
	return c
}

func TestLoginAndMaildropOverRealStore(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	h, err := auth.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.Add(ctx, "alice@example.test", h); err != nil {
		t.Fatal(err)
	}
	msgs := []string{"Subject: a\n\nbody\n", "Subject: b\r\n\r\n.dot\r\n", "Subject: c\n\nno newline"}
	for _, m := range msgs {
		if _, err := e.st.Deliver(ctx, "alice@example.test", strings.NewReader(m)); err != nil {
			t.Fatal(err)
		}
	}
	c := e.dial(t)
	// The domain is matched case-insensitively.
	if err := c.Login("alice@EXAMPLE.test", "pw"); err != nil {
		t.Fatal(err)
	}
	second := e.dial(t)
	if err := second.Login("alice@example.test", "pw"); !errors.Is(err, pop3.ErrInUse) {
		t.Fatalf("second login: %v, want IN-USE", err)
	}
	want := []string{"Subject: a\r\n\r\nbody\r\n", "Subject: b\r\n\r\n.dot\r\n", "Subject: c\r\n\r\nno newline\r\n"}
	list, err := c.List()
	if err != nil || len(list) != 3 {
		t.Fatalf("LIST = %v, %v", list, err)
	}
	for i, w := range want {
		r, err := c.Retr(i + 1)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		if string(b) != w || list[i].Size != int64(len(w)) {
			t.Errorf("message %d: %q (LIST %d), want %q", i+1, b, list[i].Size, w)
		}
	}
	c.Dele(2)
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	c = e.dial(t)
	if err := c.Login("alice@example.test", "pw"); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := c.Stat(); n != 2 {
		t.Fatalf("after QUIT: %d messages, want 2", n)
	}
	if err := c.Login("alice@example.test", "wrong"); err == nil {
		t.Fatal("login in TRANSACTION state accepted")
	}
}

func TestSCRAMWithStoredCredentials(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	h, _ := auth.HashSCRAMSHA256("pencil")
	e.db.Add(ctx, "scram@example.test", h)
	h2, _ := auth.HashPassword("pw")
	e.db.Add(ctx, "argon@example.test", h2)
	if out, err := exec.Command("doveadm", "pw", "-s", "SCRAM-SHA-256", "-p", "dovecot pw").Output(); err == nil {
		e.db.Add(ctx, "dove@example.test", strings.TrimSpace(string(out)))
	} else if testutil.InCI() {
		t.Fatalf("doveadm: %v", err)
	}
	cases := []struct {
		user, pass string
		ok         bool
	}{
		{"scram@example.test", "pencil", true},
		{"scram@example.test", "pencil2", false},
		{"argon@example.test", "pw", false}, // no SCRAM secrets: PLAIN only
		{"ghost@example.test", "pw", false},
	}
	if _, ok := e.db.Lookup("dove@example.test"); ok {
		cases = append(cases, struct {
			user, pass string
			ok         bool
		}{"dove@example.test", "dovecot pw", true})
	}
	for _, tc := range cases {
		c := e.dial(t)
		err := c.Auth(pop3.NewSCRAMClient(tc.user, tc.pass))
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.user, err, tc.ok)
		}
		c.Quit()
	}
}

func TestBruteForceGuard(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	h, _ := auth.HashPassword("pw")
	e.db.Add(ctx, "alice@example.test", h)
	e.srv.Backend.(*POP3Backend).Guard = &authguard.Guard{MaxFailures: 3, BaseDelay: 100 * time.Millisecond, MaxDelay: 150 * time.Millisecond}
	e.srv.MaxAuthFailures = 100

	g := e.srv.Backend.(*POP3Backend).Guard
	c := e.dial(t)
	// A successful login records nothing, so it is never slowed down.
	if err := c.Login("alice@example.test", "pw"); err != nil {
		t.Fatal(err)
	}
	if n := g.Len(); n != 0 {
		t.Fatalf("a successful login left %d guard records", n)
	}
	c.Quit()

	c = e.dial(t)
	var delays []time.Duration
	for _, user := range []string{"alice@example.test", "nobody@example.test", "alice@example.test"} {
		start := time.Now()
		err := c.Login(user, "wrong")
		delays = append(delays, time.Since(start))
		if !errors.Is(err, pop3.ErrAuthFailed) {
			t.Fatalf("%s: %v, want [AUTH]", user, err)
		}
	}
	// Failures wait, growing; unknown users wait like known ones.
	if delays[0] < 100*time.Millisecond || delays[1] < 150*time.Millisecond {
		t.Fatalf("failed logins answered too fast: %v", delays)
	}
	// The address is now refused, even with the right password.
	err := c.Login("alice@example.test", "pw")
	var perr *pop3.Error
	if !errors.As(err, &perr) || perr.Code != pop3.CodeLoginDelay {
		t.Fatalf("login from a blocked address: %v, want [LOGIN-DELAY]", err)
	}
}
