package queue

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("QUEUE_HELPER_DIR"); dir != "" {
		helperMain(dir, os.Getenv("QUEUE_HELPER_SMTP"))
		return
	}
	os.Exit(pgtest.Main(m))
}

// helperMain is the subprocess of TestKill9: a queue worker delivering
// remote.test to the test server, one message at a time, until killed.
func helperMain(dir, smtpAddr string) {
	n := newNet()
	n.addMX("remote.test", "mx.remote.test", 10)
	n.hosts["mx.remote.test"] = []string{"127.0.0.2"}
	n.routes["127.0.0.2:25"] = smtpAddr
	o := defaultOptions()
	o.Resolver, o.Dialer = n, n
	o.MaxPerDomain = 1
	o.PollInterval = 20 * time.Millisecond
	o.CommandTimeout = 10 * time.Second
	q, err := Open(dir, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	q.Run(context.Background())
}

func startHelper(t *testing.T, dir, smtpAddr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "QUEUE_HELPER_DIR="+dir, "QUEUE_HELPER_SMTP="+smtpAddr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
}

// TestKill9: a worker process killed with SIGKILL in the middle of DATA,
// then restarted, delivers every message exactly once: the messages whose
// 250 was written down are not sent again, the interrupted one is sent
// once (the remote never acknowledged it).
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess test")
	}
	inData := make(chan struct{})
	release := make(chan struct{})
	srv := newServer(t, srvConfig{onData: func(n int) bool {
		if n == 3 {
			// The kill comes while the message is being received: the
			// final dot never arrives (the connection is dropped).
			close(inData)
			<-release
			return false
		}
		return true
	}})
	dir := filepath.Join(t.TempDir(), "queue")
	q, err := Open(dir, defaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const N = 5
	for i := range N {
		if _, err := q.Enqueue(context.Background(), "alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, strings.NewReader(simpleMsg(fmt.Sprint("k", i)))); err != nil {
			t.Fatal(err)
		}
	}
	cmd := startHelper(t, dir, srv.addr())
	select {
	case <-inData:
	case <-time.After(20 * time.Second):
		t.Fatal("the third message never reached DATA")
	}
	kill9(t, cmd)
	close(release)
	// The interrupted entry was written as in flight before the
	// transaction.
	inflight := 0
	for _, e := range mustList(t, q) {
		if e.InFlight != nil {
			inflight++
		}
	}
	if inflight != 1 {
		t.Errorf("%d entries in flight after the kill, want 1", inflight)
	}
	if got := len(srv.messages()); got != 2 {
		t.Fatalf("%d messages before the kill, want 2", got)
	}
	cmd = startHelper(t, dir, srv.addr())
	testutil.WaitFor(t, 30*time.Second, "the queue to empty", func() bool {
		msgs, _ := os.ReadDir(filepath.Join(dir, "msg"))
		return len(mustList(t, q)) == 0 && len(msgs) == 0
	})
	kill9(t, cmd)
	count := map[string]int{}
	for _, m := range srv.messages() {
		for _, l := range strings.Split(m.data, "\r\n") {
			if strings.HasPrefix(l, "Message-ID:") {
				count[l]++
			}
		}
	}
	if len(count) != N {
		t.Errorf("%d distinct messages delivered, want %d: %v", len(count), N, count)
	}
	for id, n := range count {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
	// Nothing is left behind (msg was checked by the wait).
	for _, sub := range []string{"entries", "tmp"} {
		names, _ := os.ReadDir(filepath.Join(dir, sub))
		if len(names) != 0 {
			t.Errorf("%s: %d files left", sub, len(names))
		}
	}
}

func mustList(t *testing.T, q *Queue) []*Entry {
	t.Helper()
	l, err := q.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return l
}
