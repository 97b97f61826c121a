package retention

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/metrics"
	"github.com/postino-mail/postino/internal/pop3backend"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/pop3"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// env is a POP3 server over a real Maildir store and user database,
// with a fake clock.
type env struct {
	db    *auth.DB
	st    *maildir.Store
	addr  string
	clock *clock
	m     *metrics.Metrics
}

func start(t *testing.T, passwd string) *env {
	t.Helper()
	dir := t.TempDir()
	users := filepath.Join(dir, "users.passwd")
	if err := os.WriteFile(users, []byte(passwd), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &env{db: auth.OpenDB(users), clock: &clock{t: time.Date(2026, 5, 1, 8, 0, 0, 0, time.UTC)}, m: metrics.New()}
	var err error
	if e.st, err = maildir.New(filepath.Join(dir, "mail"), nil); err != nil {
		t.Fatal(err)
	}
	e.st.SetClock(e.clock.now)
	srv := &pop3.Server{Backend: &pop3backend.POP3Backend{Users: e.db, Store: e.st, Metrics: e.m}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = l.Addr().String()
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close(); e.st.Close() })
	return e
}

func passwdLine(t *testing.T, user, pw, extra string) string {
	t.Helper()
	h, err := auth.HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if extra == "" {
		return user + ":" + h + "\n"
	}
	return user + ":" + h + "::::::" + extra + "\n"
}

func (e *env) deliver(t *testing.T, user string, n int) {
	t.Helper()
	for i := range n {
		if _, err := e.st.Deliver(context.Background(), user, strings.NewReader("Subject: m\n\nbody "+string(rune('a'+i))+"\n")); err != nil {
			t.Fatal(err)
		}
	}
}

// session logs in, downloads the messages numbered in retr (RETR), and
// ends with QUIT when quit is set, else by dropping the connection.
func (e *env) session(t *testing.T, user string, retr []int, quit bool) {
	t.Helper()
	c, err := pop3.Dial(context.Background(), e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Timeout = 10 * time.Second
	if err := c.Login(user, "pw"); err != nil {
		t.Fatal(err)
	}
	for _, n := range retr {
		r, err := c.Retr(n)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r)
	}
	if quit {
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
		return
	}
	c.Close()
	// The server notices the dropped connection and closes the maildrop.
	for deadline := time.Now().Add(5 * time.Second); ; {
		md, err := e.st.OpenMaildrop(context.Background(), user)
		if err == nil {
			md.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("maildrop still locked after a dropped session: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (e *env) count(t *testing.T, user string) int {
	t.Helper()
	n, _, err := e.st.Usage(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSweepAfterPOP3Downloads: messages downloaded over POP3 by a session
// that ended with QUIT expire after pop3.expire days, or after the user's
// own userdb_pop3_expire; a session that dropped the connection
// downloaded nothing; a user with "never" keeps everything; a malformed
// value keeps the mail; and the counters say what happened.
func TestSweepAfterPOP3Downloads(t *testing.T) {
	e := start(t, passwdLine(t, "alice@example.test", "pw", "")+
		passwdLine(t, "bob@example.test", "pw", "userdb_pop3_expire=2")+
		passwdLine(t, "carol@example.test", "pw", "userdb_pop3_expire=never")+
		passwdLine(t, "dave@example.test", "pw", "userdb_pop3_expire=soon"))
	for _, u := range []string{"alice@example.test", "bob@example.test", "carol@example.test", "dave@example.test"} {
		e.deliver(t, u, 3)
		e.session(t, u, []int{1, 2}, true)
	}
	e.session(t, "alice@example.test", []int{3}, false) // dropped: not downloaded
	sw := &Sweeper{Store: e.st, Users: e.db, ExpireDays: 7, Metrics: e.m}
	ctx := context.Background()

	e.clock.t = e.clock.t.Add(2 * Day)
	tot, err := sw.Sweep(ctx)
	if err != nil || tot.Expired != 2 || tot.Mailboxes != 2 || tot.Locked != 0 {
		t.Fatalf("day 2: %+v, %v", tot, err)
	}
	if e.count(t, "bob@example.test") != 1 || e.count(t, "alice@example.test") != 3 {
		t.Fatal("day 2: wrong mailbox removed")
	}
	e.clock.t = e.clock.t.Add(5 * Day)
	if tot, err = sw.Sweep(ctx); err != nil || tot.Expired != 2 {
		t.Fatalf("day 7: %+v, %v", tot, err)
	}
	for u, want := range map[string]int{"alice@example.test": 1, "bob@example.test": 1, "carol@example.test": 3, "dave@example.test": 3} {
		if got := e.count(t, u); got != want {
			t.Errorf("%s: %d messages left, want %d", u, got, want)
		}
	}
	if n, err := testutil.GatherAndCount(e.m.Registry(), "postino_retention_expired_total"); err != nil || n != 1 {
		t.Fatalf("expired series: %d, %v", n, err)
	}
	want := `
# HELP postino_retention_expired_total Downloaded messages removed by the retention sweep (pop3.expire).
# TYPE postino_retention_expired_total counter
postino_retention_expired_total 4
`
	if err := testutil.GatherAndCompare(e.m.Registry(), strings.NewReader(want), "postino_retention_expired_total"); err != nil {
		t.Error(err)
	}
}

// TestSweepSkipsSessions: a mailbox in use is counted as locked and left
// as it is.
func TestSweepSkipsSessions(t *testing.T) {
	e := start(t, passwdLine(t, "alice@example.test", "pw", ""))
	e.deliver(t, "alice@example.test", 2)
	e.session(t, "alice@example.test", []int{1, 2}, true)
	e.clock.t = e.clock.t.Add(30 * Day)
	c, err := pop3.Dial(context.Background(), e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice@example.test", "pw"); err != nil {
		t.Fatal(err)
	}
	sw := &Sweeper{Store: e.st, Users: e.db, ExpireDays: 1, Metrics: e.m}
	tot, err := sw.Sweep(context.Background())
	if err != nil || tot.Locked != 1 || tot.Expired != 0 {
		t.Fatalf("sweep during a session: %+v, %v", tot, err)
	}
	if n, _, _ := c.Stat(); n != 2 {
		t.Fatalf("session sees %d messages", n)
	}
	c.Quit()
	if tot, err = sw.Sweep(context.Background()); err != nil || tot.Expired != 2 {
		t.Fatalf("sweep after the session: %+v, %v", tot, err)
	}
}

// TestSweepNothingToDo: with EXPIRE NEVER and no vault no mailbox is
// visited (not even locked).
func TestSweepNothingToDo(t *testing.T) {
	e := start(t, passwdLine(t, "alice@example.test", "pw", ""))
	e.deliver(t, "alice@example.test", 1)
	e.session(t, "alice@example.test", []int{1}, true)
	e.clock.t = e.clock.t.Add(1000 * Day)
	tot, err := (&Sweeper{Store: e.st, Users: e.db, ExpireDays: -1}).Sweep(context.Background())
	if err != nil || tot.Mailboxes != 0 || e.count(t, "alice@example.test") != 1 {
		t.Fatalf("%+v, %v", tot, err)
	}
}
