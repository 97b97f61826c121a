package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
	"github.com/postino-mail/postino/pop3"
)

// startTLS runs node name on dsn with plain POP3 (STLS), POP3 over
// implicit TLS, SMTP and SMTP submission over implicit TLS, each on a
// free port.
func (c *cluster) startTLS(t *testing.T, name, dsn string) *node {
	t.Helper()
	n := &node{}
	n.Serve = testutil.StartServe(t, testutil.ServeConfig{
		Bin: binPath, FreeAddrs: 4, Retry: true,
		Setup: func(free []string) ([]string, map[string]string) {
			n.pop3, n.pop3s, n.smtp, n.submissions = free[0], free[1], free[2], free[3]
			n.config = c.configAll(t, name, dsn, n.pop3, n.pop3s, n.smtp, n.submissions)
			return []string{"serve", "--config", n.config}, map[string]string{"pop3": n.pop3, "pop3s": n.pop3s, "smtp": n.smtp, "submissions": n.submissions}
		},
	})
	n.name = name
	t.Cleanup(func() {
		if !n.killed && !n.done {
			n.Stop(t, 15*time.Second, n.Stderr)
		}
	})
	c.importUsers(t, n.config)
	return n
}

// startNodes runs count nodes, node1 to nodeN, on dsn.
func (c *cluster) startNodes(t *testing.T, count int, dsn string) []*node {
	t.Helper()
	nodes := make([]*node, count)
	for i := range nodes {
		nodes[i] = c.startTLS(t, fmt.Sprintf("node%d", i+1), dsn)
	}
	return nodes
}

// stop ends the node with SIGTERM and checks that it exits 0.
func (n *node) stop(t *testing.T) {
	t.Helper()
	n.done = true
	n.Stop(t, 15*time.Second, n.Stderr)
}

// loginAs opens a POP3 session on the node as user.
func (n *node) loginAs(t *testing.T, user string) (*pop3.Client, error) {
	t.Helper()
	c := mailtest.DialPOP3(t, n.pop3, 30*time.Second)
	t.Cleanup(func() { c.Close() })
	return c, c.Login(user, alicePW)
}

// loginWait is loginAs retried while the mailbox is locked ([IN-USE]),
// for up to lock_ttl and some: a lease left by a session that ended
// while the database was unreachable expires by itself.
func (n *node) loginWait(t *testing.T, user string) *pop3.Client {
	t.Helper()
	start := time.Now()
	for {
		c, err := n.loginAs(t, user)
		if err == nil {
			return c
		}
		if !strings.Contains(err.Error(), "IN-USE") || time.Since(start) > lockTTL+5*time.Second {
			t.Fatalf("login on %s as %s: %v", n.name, user, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// smallMessage is a test message in SMTP form (CRLF, not dot-stuffed)
// with a Subject that names it, a line starting with a dot and a lone
// dot line.
func smallMessage(rcpt, subject string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: bob@remote.example\r\nTo: %s\r\nSubject: %s\r\n\r\n", rcpt, subject)
	for i := range 20 {
		fmt.Fprintf(&b, "line %d of %s\r\n", i, subject)
	}
	b.WriteString(".a line that starts with a dot\r\n.\r\nend\r\n")
	return b.String()
}

// errReply is an SMTP reply other than the one expected.
type errReply struct{ line string }

func (e *errReply) Error() string { return "SMTP reply " + e.line }

// trySend runs one SMTP transaction with msg (CRLF, not dot-stuffed) and
// returns the reply to the end of DATA. acked is true only for a 250
// after the final dot; sentBody tells whether the body began to go out
// (after which a broken connection leaves the outcome unknown).
func trySend(addr, msg string, rcpts ...string) (reply string, sentBody bool, err error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", false, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	read := func() (string, error) {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return "", err
			}
			line = strings.TrimRight(line, "\r\n")
			if len(line) < 4 || line[3] != '-' {
				return line, nil
			}
		}
	}
	l, err := read()
	if err != nil {
		return "", false, err
	}
	if !strings.HasPrefix(l, "220") {
		return l, false, &errReply{l}
	}
	cmds := []string{"EHLO client.example.test", "MAIL FROM:<bob@remote.example>"}
	for _, rc := range rcpts {
		cmds = append(cmds, "RCPT TO:<"+rc+">")
	}
	for _, cmd := range append(cmds, "DATA") {
		if _, err := fmt.Fprintf(conn, "%s\r\n", cmd); err != nil {
			return "", false, err
		}
		l, err := read()
		if err != nil {
			return "", false, err
		}
		if !strings.HasPrefix(l, "2") && !strings.HasPrefix(l, "354") {
			return l, false, &errReply{l}
		}
	}
	var b strings.Builder
	for line := range strings.SplitAfterSeq(msg, "\r\n") {
		if strings.HasPrefix(line, ".") {
			b.WriteByte('.') // RFC 5321 §4.5.2
		}
		b.WriteString(line)
	}
	b.WriteString(".\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return "", true, err
	}
	l, err = read()
	if err != nil {
		return "", true, err
	}
	fmt.Fprintf(conn, "QUIT\r\n")
	if !strings.HasPrefix(l, "250") {
		return l, true, &errReply{l}
	}
	return l, true, nil
}

// traffic is SMTP mail sent to a cluster by several clients that retry
// what was refused, as an MTA does, keeping account of what was
// acknowledged.
type traffic struct {
	mu      sync.Mutex
	sent    map[string]string // subject → message, every attempt whose body went out
	bodies  map[string]int    // subject → attempts whose body went out
	acked   map[string]bool   // subject → acknowledged with 250
	replies map[string]int    // reply to the end of DATA or the first refusal, by its first 9 characters
	errs    []string          // anything other than 250, 451 4.3.0 or a refused/broken connection
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	seq     int
}

// startTraffic starts one sender per address, each sending to rcpt one
// message after another until stop; an attempt that fails is retried
// with the same message after a short pause.
func startTraffic(t *testing.T, rcpt string, addrs ...string) *traffic {
	tr := &traffic{sent: map[string]string{}, bodies: map[string]int{}, acked: map[string]bool{}, replies: map[string]int{}, stop: make(chan struct{})}
	for w, addr := range addrs {
		tr.wg.Go(func() {
			for {
				tr.mu.Lock()
				tr.seq++
				subject := fmt.Sprintf("flow %d from sender %d", tr.seq, w)
				tr.mu.Unlock()
				msg := smallMessage(rcpt, subject)
				for {
					select {
					case <-tr.stop:
						return
					default:
					}
					reply, sentBody, err := trySend(addr, msg, rcpt)
					tr.mu.Lock()
					if sentBody {
						tr.sent[subject] = msg
						tr.bodies[subject]++
					}
					if reply != "" {
						tr.replies[reply[:min(9, len(reply))]]++
					}
					var er *errReply
					if err != nil && errors.As(err, &er) && !strings.HasPrefix(reply, "451 4.3.0") && !strings.HasPrefix(reply, "421") {
						tr.errs = append(tr.errs, reply)
					}
					if err == nil {
						tr.acked[subject] = true
					}
					tr.mu.Unlock()
					if err == nil {
						break
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		})
	}
	return tr
}

// ackedCount returns how many messages were acknowledged so far.
func (tr *traffic) ackedCount() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.acked)
}

// replied returns how many replies began with prefix so far.
func (tr *traffic) replied(prefix string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for r, k := range tr.replies {
		if strings.HasPrefix(r, prefix) {
			n += k
		}
	}
	return n
}

// waitAcked waits until n more messages than now are acknowledged.
func (tr *traffic) waitAcked(t *testing.T, n int, d time.Duration, what string) {
	t.Helper()
	want := tr.ackedCount() + n
	testutil.WaitFor(t, d, what, func() bool { return tr.ackedCount() >= want })
}

// finish stops the senders and waits for them.
func (tr *traffic) finish() {
	tr.once.Do(func() { close(tr.stop) })
	tr.wg.Wait()
}

// verify downloads rcpt's mailbox through the POP3 server at pop3Addr
// and checks that every acknowledged message is there, byte for byte
// after the trace headers the receiving node added, that none is there
// twice (a refusal after the message was stored would make the retry
// store it again) and that none is unknown. It returns how many messages
// were acknowledged and how many are present.
func (tr *traffic) verify(t *testing.T, pop3Addr, rcpt string) (acked, present int) {
	t.Helper()
	c := mailtest.DialPOP3(t, pop3Addr, 60*time.Second)
	defer c.Close()
	var err error
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		if err = c.Login(rcpt, alicePW); err == nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("login to check the mailbox: %v", err)
		}
		c.Close()
		c = mailtest.DialPOP3(t, pop3Addr, 60*time.Second)
	}
	got := mailtest.RetrAll(t, c, "check")
	c.Cmd("QUIT")
	tr.mu.Lock()
	defer tr.mu.Unlock()
	seen := map[string]int{}
	for i, m := range got {
		s := string(m)
		_, rest, ok := strings.Cut(s, "\r\nSubject: ")
		subject, _, _ := strings.Cut(rest, "\r\n")
		want, known := tr.sent[subject]
		switch {
		case !ok || !known:
			t.Errorf("message %d is unknown: %q", i+1, s[:min(300, len(s))])
			continue
		case !strings.HasSuffix(s, "\r\n"+want):
			t.Errorf("message %d (%s) differs from what was sent:\n%q\nwant the end:\n%q", i+1, subject, s, want)
		}
		seen[subject]++
	}
	for subject, n := range seen {
		if n > 1 {
			t.Errorf("%s present %d times, its body sent %d times", subject, n, tr.bodies[subject])
		}
	}
	for subject := range tr.acked {
		if seen[subject] == 0 {
			t.Errorf("%s was acknowledged with 250 and is missing", subject)
		}
	}
	for _, e := range tr.errs {
		t.Errorf("unexpected SMTP reply %q", e)
	}
	return len(tr.acked), len(got)
}
