package cluster

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// slowSink is an SMTP server that accepts every recipient and holds the
// end of each message's data for a while before its 250. It counts a
// message as received only when it answers 250 to a client still
// connected: a client that died during the hold is not answered.
type slowSink struct {
	ln      net.Listener
	hold    time.Duration
	refuse  atomic.Bool   // answer RCPT with 451 4.3.0
	holding chan struct{} // receives when a message's data is held

	mu       sync.Mutex
	received map[string]int // "subject rcpt" → 250s given
}

func newSlowSink(t *testing.T, hold time.Duration) *slowSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &slowSink{ln: ln, hold: hold, holding: make(chan struct{}, 100), received: map[string]int{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

func (s *slowSink) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	r := bufio.NewReader(c)
	io.WriteString(c, "220 sink.test ESMTP\r\n")
	var rcpts []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			io.WriteString(c, "250-sink.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
		case strings.HasPrefix(cmd, "MAIL"):
			rcpts = nil
			io.WriteString(c, "250 2.1.0 ok\r\n")
		case strings.HasPrefix(cmd, "RCPT") && s.refuse.Load():
			io.WriteString(c, "451 4.3.0 try later\r\n")
		case strings.HasPrefix(cmd, "RCPT"):
			a := strings.TrimSpace(line[strings.Index(line, "<")+1 : strings.Index(line, ">")])
			rcpts = append(rcpts, strings.ToLower(a))
			io.WriteString(c, "250 2.1.5 ok\r\n")
		case cmd == "DATA":
			io.WriteString(c, "354 go on\r\n")
			var subject string
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				if subject == "" && strings.HasPrefix(l, "Subject: ") {
					subject = strings.TrimSpace(l[len("Subject: "):])
				}
			}
			s.holding <- struct{}{}
			// Hold the reply; a client that goes away meanwhile (EOF)
			// gets none, and the message does not count.
			c.SetReadDeadline(time.Now().Add(s.hold))
			if _, err := r.Peek(1); err != nil {
				if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
					return
				}
			}
			c.SetDeadline(time.Now().Add(2 * time.Minute))
			if _, err := io.WriteString(c, "250 2.0.0 queued\r\n"); err != nil {
				return
			}
			s.mu.Lock()
			for _, a := range rcpts {
				s.received[subject+" "+a]++
			}
			s.mu.Unlock()
		case cmd == "QUIT":
			io.WriteString(c, "221 bye\r\n")
			return
		default:
			io.WriteString(c, "250 ok\r\n")
		}
	}
}

func (s *slowSink) counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.received))
	for k, v := range s.received {
		out[k] = v
	}
	return out
}

// startForwarding runs a node whose aliases forward fwd@example.test to
// three recipients at sink.test, routed to the sink, one delivery at a
// time.
func (c *cluster) startForwarding(t *testing.T, name, dsn, sink string) *node {
	t.Helper()
	data := filepath.Join(c.dir, name)
	os.MkdirAll(data, 0o700)
	if err := os.WriteFile(filepath.Join(data, "aliases"), []byte("fwd@example.test: r1@sink.test, r2@sink.test, r3@sink.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := &node{}
	n.Serve = testutil.StartServe(t, testutil.ServeConfig{
		Bin: binPath, FreeAddrs: 2, Retry: true,
		Setup: func(free []string) ([]string, map[string]string) {
			n.pop3, n.smtp = free[0], free[1]
			n.config = c.config(t, name, dsn, n.pop3, n.smtp)
			f, err := os.OpenFile(n.config, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(f, "[queue]\nroutes = [\"sink.test=%s\"]\nmax_per_domain = 1\nmax_concurrent = 1\nmin_backoff = \"1s\"\n", sink)
			f.Close()
			// The users and the forwarding alias are in the database
			// before the node reads them.
			c.importUsers(t, n.config)
			return []string{"serve", "--config", n.config}, map[string]string{"pop3": n.pop3, "smtp": n.smtp}
		},
	})
	t.Cleanup(func() {
		if !n.killed && !n.done {
			n.Stop(t, 15*time.Second, n.Stderr)
		}
	})
	return n
}

// TestQueueKill9: node A works the shared queue, delivering to a slow
// remote server; it is killed with SIGKILL while the server holds the
// data of a message. Node B takes the entry over once A's lease has
// expired: every message reaches every recipient, and none twice (the
// messages whose 250 A recorded are not sent again, the interrupted one
// is sent once).
func TestQueueKill9(t *testing.T) {
	c := newCluster(t)
	sink := newSlowSink(t, 700*time.Millisecond)
	a := c.startForwarding(t, "a", c.dsn, sink.ln.Addr().String())
	const n = 5
	for i := range n {
		if rep := smtpSend(t, a.smtp, fmt.Sprintf("From: bob@remote.example\r\nSubject: m%d\r\n\r\nbody %d\r\n", i, i), "fwd@example.test"); !strings.HasPrefix(rep, "250") {
			t.Fatalf("message %d: %s", i, rep)
		}
	}
	// A has delivered some and holds the data of the next one.
	for range 3 {
		select {
		case <-sink.holding:
		case <-time.After(60 * time.Second):
			t.Fatalf("node A is not delivering; received %v\n%s", sink.counts(), a.Stderr.String())
		}
	}
	a.kill9(t)
	before := sink.counts()
	if len(before) == 0 || len(before) == 3*n {
		t.Fatalf("the kill did not interrupt the deliveries: %v", before)
	}
	b := c.startForwarding(t, "b", c.dsn, sink.ln.Addr().String())
	deadline := time.Now().Add(90 * time.Second)
	for len(sink.counts()) < 3*n {
		if time.Now().After(deadline) {
			t.Fatalf("received %v\n%s", sink.counts(), b.Stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Nothing left: the queue, seen from either node, is empty.
	for {
		r := postino(t, nil, "queue", "list", "--config", a.config)
		if r.Code == 0 && strings.Contains(r.Stdout, "queue is empty") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue list: %s", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second) // a duplicate would arrive meanwhile
	got := sink.counts()
	for i := range n {
		for _, r := range []string{"r1", "r2", "r3"} {
			if k := fmt.Sprintf("m%d %s@sink.test", i, r); got[k] != 1 {
				t.Errorf("%s received %d times", k, got[k])
			}
		}
	}
	if !strings.Contains(b.Stderr.String(), "recovering interrupted attempt") {
		t.Errorf("node B did not take over an interrupted attempt:\n%s", b.Stderr.String())
	}
}

// TestQueueDatabaseDown: while the node cannot reach PostgreSQL, mail to
// be relayed is refused with 451 4.3.0 (the sender keeps it); when the
// database is back, the node queues and delivers again by itself.
func TestQueueDatabaseDown(t *testing.T) {
	c := newCluster(t)
	addr := pgtest.Addr(t)
	proxy := pgtest.NewProxy(t, addr)
	sink := newSlowSink(t, 0)
	a := c.startForwarding(t, "a", strings.Replace(c.dsn, addr, proxy.Addr(), 1), sink.ln.Addr().String())
	send := func(subject string) string {
		return smtpSend(t, a.smtp, "From: bob@remote.example\r\nSubject: "+subject+"\r\n\r\nbody\r\n", "fwd@example.test")
	}
	wait := func(key string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for sink.counts()[key] == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%s not received: %v\n%s", key, sink.counts(), a.Stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if rep := send("before"); !strings.HasPrefix(rep, "250") {
		t.Fatalf("before the cut: %s", rep)
	}
	wait("before r1@sink.test")
	proxy.Cut()
	if rep := send("during"); !strings.HasPrefix(rep, "451 4.3.0") {
		t.Fatalf("with the database down: %q, want 451 4.3.0", rep)
	}
	time.Sleep(2 * time.Second)
	proxy.Heal()
	deadline := time.Now().Add(60 * time.Second)
	for {
		rep := send("after")
		if strings.HasPrefix(rep, "250") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the database returned: %s", rep)
		}
		time.Sleep(500 * time.Millisecond)
	}
	wait("after r3@sink.test")
	if n := sink.counts()["during r1@sink.test"]; n != 0 {
		t.Errorf("the refused message was delivered %d times", n)
	}
}

// TestQueueCommands: "postino queue" run with the configuration of
// another server sees and steers the cluster's queue: list, show, retry
// (which wakes the server delivering) and delete.
func TestQueueCommands(t *testing.T) {
	c := newCluster(t)
	sink := newSlowSink(t, 0)
	sink.refuse.Store(true)
	a := c.startForwarding(t, "a", c.dsn, sink.ln.Addr().String())
	// Node b's configuration only: its server is not running.
	bConfig := c.config(t, "b", c.dsn, "127.0.0.1:1", "127.0.0.1:2")
	for _, subject := range []string{"kept", "dropped"} {
		if rep := smtpSend(t, a.smtp, "From: bob@remote.example\r\nSubject: "+subject+"\r\n\r\nbody\r\n", "fwd@example.test"); !strings.HasPrefix(rep, "250") {
			t.Fatalf("%s: %s", subject, rep)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	var list testutil.Result
	for {
		list = postino(t, nil, "queue", "list", "--config", bConfig)
		if list.Code == 0 && strings.Count(list.Stdout, "451 4.3.0 try later") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue list from the other node: %s", list)
		}
		time.Sleep(200 * time.Millisecond)
	}
	var ids []string
	for _, l := range strings.Split(list.Stdout, "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.Contains(f[0], ".") && len(f[0]) > 10 {
			ids = append(ids, f[0])
		}
	}
	if len(ids) != 2 {
		t.Fatalf("entry ids %q in:\n%s", ids, list.Stdout)
	}
	if r := postino(t, nil, "queue", "show", ids[1], "--config", bConfig); r.Code != 0 || !strings.Contains(r.Stdout, "r2@sink.test") {
		t.Fatalf("queue show: %s", r)
	}
	for try := 0; ; try++ {
		// Node a may be retrying it at this moment: busy, try again.
		r := postino(t, nil, "queue", "delete", ids[1], "--config", bConfig)
		if r.Code == 0 {
			break
		}
		if try == 10 || !strings.Contains(r.Stderr, "being delivered") {
			t.Fatalf("queue delete: %s", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sink.refuse.Store(false)
	// min_backoff is 1s but the next attempt is later (backoff doubles):
	// retry makes it due, and NOTIFY wakes node a.
	if r := postino(t, nil, "queue", "retry", "--config", bConfig); r.Code != 0 {
		t.Fatalf("queue retry: %s", r)
	}
	for len(sink.counts()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("received %v\n%s", sink.counts(), a.Stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	got := sink.counts()
	if len(got) != 3 || got["kept r1@sink.test"] != 1 || got["kept r3@sink.test"] != 1 {
		t.Fatalf("received %v, want only the message not deleted", got)
	}
}
