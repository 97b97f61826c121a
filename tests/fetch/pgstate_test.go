package fetch_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// pgNodeConfig writes the configuration of a fetch node keeping its
// state in the PostgreSQL database dsn, with a lease of ttl.
func pgNodeConfig(t *testing.T, name, dsn string, ttl time.Duration) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	os.MkdirAll(dir, 0o700)
	cfg := filepath.Join(dir, "postino.toml")
	body := fmt.Sprintf("data_dir = %q\n[admin]\nlisten = \"\"\n[storage]\nbackend = \"postgres\"\npostgres_dsn = %q\nlock_ttl = %q\n[fetch]\nstate = \"postgres\"\n",
		dir, dsn, ttl.String())
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestPGStateKillDaemon: two nodes run `postino fetch --daemon` on one
// account with the state in PostgreSQL. The first is SIGKILLed in the
// middle of a batch (its intents committed, two of four messages
// delivered, no done record) and leaves its lease behind; the second is
// refused the account until the lease expires, then takes it over,
// recovers the batch and fetches the rest: every message exactly once,
// and the remote mailbox emptied.
func TestPGStateKillDaemon(t *testing.T) {
	s := startPostino(t)
	const user = "pg@example.test"
	s.addUser(t, user, "pw")
	const count = 20
	for i := 1; i <= count; i++ {
		s.deliver(t, user, testMessage(i, 3000+i*500))
	}
	dsn := pgtest.NewDB(t)
	ttl := 3 * time.Second
	cfgA := pgNodeConfig(t, "a", dsn, ttl)
	cfgB := pgNodeConfig(t, "b", dsn, ttl)
	if r := run(t, nil, nil, binPath, "db", "migrate", "--config", cfgA); r.Code != 0 {
		t.Fatalf("db migrate: %s", r.Output)
	}
	a := account{server: s.pop3sAddr, user: user, pw: "pw", extra: []string{"--fingerprint", s.fingerprint}}
	d := newDestination(t, "maildir")
	daemon := func(cfg string, env ...string) (*exec.Cmd, *testutil.SyncBuffer, chan error) {
		args := append(fetchArgs(a, d, t.TempDir(), "--delete", "--daemon", "200ms"), "--config", cfg)
		cmd := exec.Command(binPath, args...)
		cmd.Env = append(append(os.Environ(), "POSTINO_FETCH_DEBUG_BATCH=4"), env...)
		out := &testutil.SyncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { cmd.Process.Kill() })
		return cmd, out, done
	}

	// Node A dies once the 6th message is delivered: batch 2 has its
	// intents committed, messages 5 and 6 at the destination, 7 and 8
	// not, and no done record.
	cmdA, outA, doneA := daemon(cfgA, "POSTINO_FETCH_DEBUG_KILL=delivered:6")
	select {
	case <-doneA:
	case <-time.After(60 * time.Second):
		t.Fatalf("node A did not reach its kill point:\n%s", outA)
	}
	if ws, ok := cmdA.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("node A ended with %v, not SIGKILL:\n%s", cmdA.ProcessState, outA)
	}
	died := time.Now()
	if n := len(d.read(t)); n != 6 {
		t.Fatalf("%d messages at the destination when node A died, want 6", n)
	}

	cmdB, outB, doneB := daemon(cfgB)
	testutil.WaitFor(t, 60*time.Second, "node B fetches everything", func() bool {
		return len(d.read(t)) >= count
	})
	took := time.Since(died)
	cmdB.Process.Signal(syscall.SIGTERM)
	if err := <-doneB; err != nil {
		t.Errorf("node B exit: %v\n%s", err, outB)
	}
	if !strings.Contains(outB.String(), "another postino fetch is running for this account") {
		t.Errorf("node B was never refused the account while node A's lease ran:\n%s", outB)
	}
	if took < ttl-time.Second {
		t.Errorf("node B finished %v after node A died, before the lease (%v) could expire", took, ttl)
	}
	checkExactlyOnce(t, d, ids(1, count))
	// A last run on node A's configuration: nothing new, nothing pending.
	args := append(fetchArgs(a, d, t.TempDir(), "--delete"), "--config", cfgA)
	if r := run(t, nil, nil, binPath, args...); r.Code != exitNoMail {
		t.Fatalf("final fetch: exit %d, want no new mail:\n%s", r.Code, r.Output)
	}
	checkExactlyOnce(t, d, ids(1, count))
	if c := serverCount(t, s.pop3Addr, user, "pw"); c != 0 {
		t.Errorf("server has %d messages, want 0", c)
	}
}

// TestPGStateTwoDaemons: two nodes run `postino fetch --daemon` on one
// account at the same time while mail arrives: the lease keeps them from
// ever being on the remote mailbox together (the server would answer
// [IN-USE]), and every message is delivered exactly once.
func TestPGStateTwoDaemons(t *testing.T) {
	s := startPostino(t)
	const user = "pg2@example.test"
	s.addUser(t, user, "pw")
	dsn := pgtest.NewDB(t)
	ttl := 3 * time.Second
	cfgs := []string{pgNodeConfig(t, "a", dsn, ttl), pgNodeConfig(t, "b", dsn, ttl)}
	if r := run(t, nil, nil, binPath, "db", "migrate", "--config", cfgs[0]); r.Code != 0 {
		t.Fatalf("db migrate: %s", r.Output)
	}
	a := account{server: s.pop3sAddr, user: user, pw: "pw", extra: []string{"--fingerprint", s.fingerprint}}
	d := newDestination(t, "maildir")
	var cmds []*exec.Cmd
	var outs []*testutil.SyncBuffer
	var dones []chan error
	for _, cfg := range cfgs {
		args := append(fetchArgs(a, d, t.TempDir(), "--delete", "--daemon", "100ms"), "--config", cfg)
		cmd := exec.Command(binPath, args...)
		cmd.Env = append(os.Environ(), "POSTINO_FETCH_DEBUG_BATCH=3")
		out := &testutil.SyncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		t.Cleanup(func() { cmd.Process.Kill() })
		cmds, outs, dones = append(cmds, cmd), append(outs, out), append(dones, done)
	}
	const count = 24
	for i := 1; i <= count; i++ {
		s.deliver(t, user, testMessage(i, 2000+i*300))
	}
	testutil.WaitFor(t, 60*time.Second, "every message fetched", func() bool { return len(d.read(t)) >= count })
	// Time for a duplicate, if there were to be one.
	time.Sleep(500 * time.Millisecond)
	locked := 0
	for i, cmd := range cmds {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := <-dones[i]; err != nil {
			t.Errorf("node %d exit: %v\n%s", i, err, outs[i])
		}
		if strings.Contains(outs[i].String(), "IN-USE") {
			t.Errorf("node %d met the other on the server ([IN-USE]):\n%s", i, outs[i])
		}
		locked += strings.Count(outs[i].String(), "another postino fetch is running")
	}
	if locked == 0 {
		t.Error("no node was ever refused the account: the two never ran at once")
	}
	checkExactlyOnce(t, d, ids(1, count))
	if c := serverCount(t, s.pop3Addr, user, "pw"); c != 0 {
		t.Errorf("server has %d messages, want 0", c)
	}
}
