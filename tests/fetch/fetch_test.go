package fetch_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
)

// Exit codes documented in internal/fetch.
const (
	exitNewMail  = 0
	exitNoMail   = 1
	exitNetwork  = 2
	exitAuth     = 3
	exitTLS      = 5
	exitDelivery = 6
)

// postinoAccount starts a postino server with one user and returns the
// account as seen over implicit TLS with the pinned certificate.
func postinoAccount(t *testing.T, user string) (*postinoServer, account) {
	s := startPostino(t)
	s.addUser(t, user, "pw-"+user)
	return s, account{server: s.pop3sAddr, user: user, pw: "pw-" + user, extra: []string{"--fingerprint", s.fingerprint}}
}

func mdaCheck(d *destination) []string {
	if d.kind != "mda" {
		return nil
	}
	dir := strings.TrimPrefix(d.env[0], "MDA_DIR=")
	return []string{"--mda-check", fmt.Sprintf(`cat %s/*.msg 2>/dev/null | grep -qF "X-Postino-Fetch: $POSTINO_FETCH_ID"`, dir)}
}

// TestPolicies: new and old mail, leave on server, delete after
// download, delete after N days, size limit and per-run limit, with every
// destination type, against postino's own server.
func TestPolicies(t *testing.T) {
	s, a := postinoAccount(t, "alice@example.test")
	for _, kind := range []string{"maildir", "mbox", "mda", "local"} {
		t.Run(kind, func(t *testing.T) {
			user := kind + "@example.test"
			s.addUser(t, user, "pw")
			a := account{server: a.server, user: user, pw: "pw", extra: a.extra}
			d := newDestination(t, kind)
			state := t.TempDir()
			more := mdaCheck(d)
			for i := 1; i <= 3; i++ {
				s.deliver(t, user, testMessage(i, 2000))
			}
			// Leave on server: new mail, then no new mail.
			if r := fetch(t, nil, a, d, state, more...); r.Code != exitNewMail {
				t.Fatalf("first fetch: exit %d, want %d:\n%s", r.Code, exitNewMail, r.Output)
			}
			checkExactlyOnce(t, d, ids(1, 3))
			if r := fetch(t, nil, a, d, state, more...); r.Code != exitNoMail {
				t.Fatalf("second fetch: exit %d, want %d:\n%s", r.Code, exitNoMail, r.Output)
			}
			if n := serverCount(t, s.pop3Addr, user, "pw"); n != 3 {
				t.Errorf("server has %d messages after leave-on-server fetches, want 3", n)
			}
			// Old and new mail: only the new one is downloaded.
			s.deliver(t, user, testMessage(4, 2000))
			if r := fetch(t, nil, a, d, state, more...); r.Code != exitNewMail {
				t.Fatalf("third fetch: exit %d:\n%s", r.Code, r.Output)
			}
			checkExactlyOnce(t, d, ids(1, 4))

			// Size limit and per-run limit.
			s.deliver(t, user, testMessage(5, 50000))
			s.deliver(t, user, testMessage(6, 1000))
			s.deliver(t, user, testMessage(7, 1000))
			if r := fetch(t, nil, a, d, state, append(more, "--max-size", "20KiB", "--max-messages", "1")...); r.Code != exitNewMail || !strings.Contains(r.Output, "size limit") {
				t.Fatalf("limited fetch: exit %d:\n%s", r.Code, r.Output)
			}
			checkExactlyOnce(t, d, []int{1, 2, 3, 4, 6})

			// Delete after N days: nothing is old enough yet.
			if r := fetch(t, nil, a, d, state, append(more, "--delete-after-days", "3")...); r.Code != exitNewMail {
				t.Fatalf("fetch: exit %d:\n%s", r.Code, r.Output)
			}
			checkExactlyOnce(t, d, ids(1, 7))
			if n := serverCount(t, s.pop3Addr, user, "pw"); n != 7 {
				t.Errorf("server has %d messages, want 7", n)
			}
			// Age messages 1-3 in the state file by four days.
			ageState(t, filepath.Join(state, "acct.state"), 4*24*time.Hour, 3)
			if r := fetch(t, nil, a, d, state, append(more, "--delete-after-days", "3")...); r.Code != exitNoMail {
				t.Fatalf("fetch: exit %d:\n%s", r.Code, r.Output)
			}
			if n := serverCount(t, s.pop3Addr, user, "pw"); n != 4 {
				t.Errorf("server has %d messages after delete-after-days, want 4", n)
			}
			// Delete after download: the rest goes, nothing is delivered
			// twice.
			s.deliver(t, user, testMessage(8, 1000))
			if r := fetch(t, nil, a, d, state, append(more, "--delete")...); r.Code != exitNewMail {
				t.Fatalf("fetch --delete: exit %d:\n%s", r.Code, r.Output)
			}
			if n := serverCount(t, s.pop3Addr, user, "pw"); n != 0 {
				t.Errorf("server has %d messages after --delete, want 0", n)
			}
			checkExactlyOnce(t, d, ids(1, 8))
		})
	}
}

// ageState moves the first_seen time of the n oldest records back by d.
func ageState(t *testing.T, path string, d time.Duration, n int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatal(err)
	}
	msgs := st["messages"].(map[string]any)
	type kv struct {
		k  string
		at time.Time
	}
	var recs []kv
	for k, v := range msgs {
		at, _ := time.Parse(time.RFC3339Nano, v.(map[string]any)["delivered_at"].(string))
		recs = append(recs, kv{k, at})
	}
	// Oldest by delivery.
	for i := range recs {
		for j := i + 1; j < len(recs); j++ {
			if recs[j].at.Before(recs[i].at) {
				recs[i], recs[j] = recs[j], recs[i]
			}
		}
	}
	for _, r := range recs[:n] {
		msgs[r.k].(map[string]any)["first_seen"] = time.Now().Add(-d).UTC().Format(time.RFC3339Nano)
	}
	out, _ := json.Marshal(st)
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// killBatch is the delivery batch of the crash tests (POSTINO_FETCH_DEBUG_BATCH):
// five messages make the batches {1, 2}, {3, 4} and {5}.
const killBatch = 2

// batchEnv sets the crash tests' delivery batch.
var batchEnv = "POSTINO_FETCH_DEBUG_BATCH=" + fmt.Sprint(killBatch)

// TestKillAtEveryStep SIGKILLs the fetch at every step of the exactly-once
// protocol (with the crash-test hook), in batches of two messages: at the
// per-message steps for the first message of the first batch, the last
// message of a batch and the first of a later batch, and at the per-batch
// steps (intents durable, Maildir new/ fsync'd, done records durable) for
// the first and the last batch. It checks that the kill left the state the
// step names (journal records, complete copies at the destination), and
// that the next run leaves every message at the destination exactly once
// and the server empty (delete policy).
func TestKillAtEveryStep(t *testing.T) {
	s := startPostino(t)
	steps := []string{"spooled", "intent", "deliver-partial", "delivered", "synced", "done", "dele", "quit", "snapshot-tmp", "snapshot"}
	kinds := []string{"maildir", "mbox", "local", "mda"}
	n := 0
	type tc struct {
		step, kind string
		nth        int
	}
	var cases []tc
	for _, step := range steps {
		nths := []int{1, 3}
		if step == "delivered" || step == "deliver-partial" {
			nths = []int{1, 2, 3} // first, last and first of a later batch
		}
		for _, nth := range nths {
			kind := kinds[n%len(kinds)]
			n++
			if (strings.HasPrefix(step, "snapshot") || step == "quit") && nth == 3 {
				continue // one QUIT and at most two snapshots per run
			}
			switch step {
			case "deliver-partial":
				// The destinations that can hold a partial copy, each
				// of them after the first and a later message.
				cases = append(cases, tc{step, "maildir", nth}, tc{step, "mbox", nth})
				continue
			case "synced":
				kind = "maildir" // the only destination that defers
			case "delivered":
				// Maildir defers new/'s fsync to the batch: each
				// position in a batch, and another destination.
				cases = append(cases, tc{step, "maildir", nth})
				if kind == "maildir" {
					kind = "mbox"
				}
			}
			cases = append(cases, tc{step, kind, nth})
		}
	}
	for i, c := range cases {
		step, kind, nth := c.step, c.kind, c.nth
		t.Run(fmt.Sprintf("%s:%d/%s", step, nth, kind), func(t *testing.T) {
			user := fmt.Sprintf("k%d@example.test", i)
			s.addUser(t, user, "pw")
			for i := 1; i <= 5; i++ {
				s.deliver(t, user, testMessage(i, 40000))
			}
			a := account{server: s.pop3sAddr, user: user, pw: "pw", extra: []string{"--fingerprint", s.fingerprint}}
			d := newDestination(t, kind)
			state := t.TempDir()
			more := append(mdaCheck(d), "--delete")
			r := fetch(t, []string{"POSTINO_FETCH_DEBUG_KILL=" + step + ":" + fmt.Sprint(nth), batchEnv}, a, d, state, more...)
			if r.Code != -1 {
				t.Fatalf("the hooked run was not killed (exit %d):\n%s", r.Code, r.Output)
			}
			checkKillState(t, step, nth, 5, d, state)
			r = fetch(t, []string{batchEnv}, a, d, state, more...)
			if r.Code != exitNewMail && r.Code != exitNoMail {
				t.Fatalf("rerun: exit %d:\n%s", r.Code, r.Output)
			}
			checkExactlyOnce(t, d, ids(1, 5))
			checkNoLeftovers(t, d)
			if c := serverCount(t, s.pop3Addr, user, "pw"); c != 0 {
				t.Errorf("server has %d messages after the rerun, want 0", c)
			}
		})
	}
}

// journalOps counts the records of each kind in the journal of the
// account "acct" in state.
func journalOps(t *testing.T, state string) map[string]int {
	t.Helper()
	ops := map[string]int{}
	data, err := os.ReadFile(filepath.Join(state, "acct.journal"))
	if errors.Is(err, os.ErrNotExist) {
		return ops // nothing recorded yet
	}
	if err != nil {
		t.Fatalf("journal after the kill: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		_, body, _ := strings.Cut(line, " ")
		var e struct {
			Op string `json:"op"`
		}
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatalf("journal line %q: %v", line, err)
		}
		ops[e.Op]++
	}
	return ops
}

// checkKillState checks that a run of total messages killed at the nth
// time it reached step, in batches of killBatch, left the state the step
// names: the intent and done records of the batches before it (and of its
// own batch, from the step on which they are durable) and the complete
// copies at the destination.
func checkKillState(t *testing.T, step string, nth, total int, d *destination, state string) {
	t.Helper()
	batchOf := func(msg int) int { return (msg + killBatch - 1) / killBatch }
	upTo := func(batch int) int { return min(batch*killBatch, total) }
	var intents, dones, copies int
	switch step {
	case "spooled": // message nth spooled: the batches before it settled
		b := batchOf(nth)
		intents, dones, copies = upTo(b-1), upTo(b-1), upTo(b-1)
	case "intent": // batch nth's intents durable, none of it delivered
		intents, dones, copies = upTo(nth), upTo(nth-1), upTo(nth-1)
	case "deliver-partial": // message nth partly written
		b := batchOf(nth)
		intents, dones, copies = upTo(b), upTo(b-1), -1
		checkPartialCopy(t, d, nth)
	case "delivered": // message nth stored, its batch not settled
		b := batchOf(nth)
		intents, dones, copies = upTo(b), upTo(b-1), nth
	case "synced": // batch nth's new/ fsync'd, no done records
		intents, dones, copies = upTo(nth), upTo(nth-1), upTo(nth)
	case "done": // batch nth settled
		intents, dones, copies = upTo(nth), upTo(nth), upTo(nth)
	default: // dele, quit, snapshot: every message settled
		intents, dones, copies = total, total, total
	}
	ops := journalOps(t, state)
	if ops["intent"] != intents || ops["done"] != dones {
		t.Errorf("journal after the kill at %s:%d: %d intents and %d done records, want %d and %d", step, nth, ops["intent"], ops["done"], intents, dones)
	}
	if copies >= 0 {
		if got := len(d.read(t)); got != copies {
			t.Errorf("%s holds %d messages after the kill at %s:%d, want %d", d.kind, got, step, nth, copies)
		}
	}
	if step == "dele" && ops["dele"] != total {
		t.Errorf("journal after the kill at dele: %d dele records, want %d (all durable before the first DELE)", ops["dele"], total)
	}
}

// TestKillPartialMboxEndingInBlankLine: a fetch killed while appending to
// an mbox leaves a copy whose cut falls inside a run of empty lines, so
// that the file ends in an empty line like a complete entry. Recovery must
// see it as partial: truncate it, deliver the message again, and delete
// from the server only what is complete at the destination.
func TestKillPartialMboxEndingInBlankLine(t *testing.T) {
	s := startPostino(t)
	user := "blank@example.test"
	s.addUser(t, user, "pw")
	for i := 1; i <= 3; i++ {
		s.deliver(t, user, blankLinesMessage(i, 50000))
	}
	a := account{server: s.pop3sAddr, user: user, pw: "pw", extra: []string{"--fingerprint", s.fingerprint}}
	d := newDestination(t, "mbox")
	state := t.TempDir()
	r := fetch(t, []string{"POSTINO_FETCH_DEBUG_KILL=deliver-partial:2"}, a, d, state, "--delete")
	if r.Code != -1 {
		t.Fatalf("the hooked run was not killed (exit %d):\n%s", r.Code, r.Output)
	}
	checkPartialCopy(t, d, 2)
	if data, _ := os.ReadFile(d.path); !strings.HasSuffix(string(data), "\n\n") {
		t.Fatalf("the partial copy does not end in an empty line: %q", tail(data))
	}
	if r := fetch(t, nil, a, d, state, "--delete"); r.Code != exitNewMail {
		t.Fatalf("rerun: exit %d:\n%s", r.Code, r.Output)
	}
	checkExactlyOnce(t, d, ids(1, 3))
	if c := serverCount(t, s.pop3Addr, user, "pw"); c != 0 {
		t.Errorf("server has %d messages after the rerun, want 0", c)
	}
}

// TestKillTakingMboxDotLock: a fetch killed while it creates the mbox's
// dot-lock must not leave a lock that the next run (or a mail reader)
// cannot tell is stale: the next run goes through at once, and nothing of
// the lock remains.
func TestKillTakingMboxDotLock(t *testing.T) {
	s := startPostino(t)
	user := "dotlock@example.test"
	s.addUser(t, user, "pw")
	for i := 1; i <= 3; i++ {
		s.deliver(t, user, testMessage(i, 2000))
	}
	a := account{server: s.pop3sAddr, user: user, pw: "pw", extra: []string{"--fingerprint", s.fingerprint}}
	d := newDestination(t, "mbox")
	state := t.TempDir()
	for _, step := range []string{"dot-lock:1", "dot-lock:2"} {
		r := fetch(t, []string{"POSTINO_FETCH_DEBUG_KILL=" + step}, a, d, state, "--delete")
		if r.Code != -1 {
			t.Fatalf("%s: the hooked run was not killed (exit %d):\n%s", step, r.Code, r.Output)
		}
	}
	start := time.Now()
	if r := fetch(t, nil, a, d, state, "--delete"); r.Code != exitNewMail {
		t.Fatalf("rerun after %v: exit %d:\n%s", time.Since(start).Round(time.Second), r.Code, r.Output)
	}
	checkExactlyOnce(t, d, ids(1, 3))
	checkNoLeftovers(t, d)
	ents, _ := os.ReadDir(filepath.Dir(d.path))
	for _, e := range ents {
		if e.Name() != filepath.Base(d.path) {
			t.Errorf("left next to the mbox: %s", e.Name())
		}
	}
}

// TestKillRandom SIGKILLs fetches after random delays, again and again,
// with and without the delete policy (with it, in delivery batches of four
// messages; without, in one batch), until a run completes; then every
// message must be at the destination exactly once.
func TestKillRandom(t *testing.T) {
	s := startPostino(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i, kind := range []string{"maildir", "mbox", "local"} {
		for _, del := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/delete=%v", kind, del), func(t *testing.T) {
				user := fmt.Sprintf("r%d%v@example.test", i, del)
				s.addUser(t, user, "pw")
				const count = 30
				for j := 1; j <= count; j++ {
					s.deliver(t, user, testMessage(j, 5000+rng.IntN(60000)))
				}
				a := account{server: s.pop3sAddr, user: user, pw: "pw", extra: []string{"--fingerprint", s.fingerprint}}
				d := newDestination(t, kind)
				state := t.TempDir()
				var more []string
				if del {
					more = append(more, "--delete")
				}
				kills := 0
				for attempt := 0; attempt < 40; attempt++ {
					cmd := exec.Command(binPath, fetchArgs(a, d, state, more...)...)
					if del {
						// Batches of four: kills fall in every part
						// of the batched protocol (without: one
						// batch of 30 messages).
						cmd.Env = append(os.Environ(), "POSTINO_FETCH_DEBUG_BATCH=4")
					}
					out := &testutil.SyncBuffer{}
					cmd.Stdout, cmd.Stderr = out, out
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					done := make(chan error, 1)
					go func() { done <- cmd.Wait() }()
					// Kill early and often at first (the process start,
					// login and first messages take ~50-150ms), then give
					// runs the time to finish.
					delay := time.Duration(30+rng.IntN(150)) * time.Millisecond
					if attempt >= 10 {
						delay = time.Duration(rng.IntN(1000)) * time.Millisecond
					}
					if attempt >= 30 {
						// Enough kills: let a run finish however slow
						// the machine is.
						delay = 90 * time.Second
					}
					select {
					case err := <-done:
						if code := cmd.ProcessState.ExitCode(); code != exitNewMail && code != exitNoMail {
							t.Fatalf("fetch exit %d (%v):\n%s", code, err, out)
						}
						goto finished
					case <-time.After(delay):
						cmd.Process.Signal(syscall.SIGKILL)
						<-done
						kills++
					}
				}
				t.Fatalf("no run completed")
			finished:
				t.Logf("%d kills before a run completed", kills)
				if r := fetch(t, nil, a, d, state, more...); r.Code != exitNoMail {
					t.Fatalf("final fetch: exit %d, want no new mail:\n%s", r.Code, r.Output)
				}
				checkExactlyOnce(t, d, ids(1, count))
				want := count
				if del {
					want = 0
				}
				if c := serverCount(t, s.pop3Addr, user, "pw"); c != want {
					t.Errorf("server has %d messages, want %d", c, want)
				}
			})
		}
	}
}

// TestTLSAndAuthFailures: an untrusted certificate, STLS over the plain
// port, cleartext refused unless allowed, and a wrong password.
func TestTLSAndAuthFailures(t *testing.T) {
	s, a := postinoAccount(t, "tls@example.test")
	s.deliver(t, a.user, testMessage(1, 1000))
	d := newDestination(t, "maildir")
	state := t.TempDir()

	noPin := a
	noPin.extra = nil
	if r := fetch(t, nil, noPin, d, state); r.Code != exitTLS || !strings.Contains(r.Output, "certificate") {
		t.Errorf("self-signed certificate without pin: exit %d, want %d:\n%s", r.Code, exitTLS, r.Output)
	}
	wrongPin := a
	wrongPin.extra = []string{"--fingerprint", strings.Repeat("ab", 32)}
	if r := fetch(t, nil, wrongPin, d, state); r.Code != exitTLS || !strings.Contains(r.Output, "fingerprint") {
		t.Errorf("wrong fingerprint: exit %d, want %d:\n%s", r.Code, exitTLS, r.Output)
	}
	plain := account{server: s.pop3Addr, user: a.user, pw: a.pw}
	if r := fetch(t, nil, plain, d, state, "--security", "none"); r.Code != 64 || !strings.Contains(r.Output, "allow_plaintext") {
		t.Errorf("security none without --allow-plaintext: exit %d:\n%s", r.Code, r.Output)
	}
	checkExactlyOnce(t, d, nil)
	if r := fetch(t, nil, plain, d, state, "--security", "starttls", "--fingerprint", s.fingerprint); r.Code != exitNewMail {
		t.Errorf("starttls with pin: exit %d:\n%s", r.Code, r.Output)
	}
	checkExactlyOnce(t, d, ids(1, 1))
	s.deliver(t, a.user, testMessage(2, 1000))
	if r := fetch(t, nil, noPin, d, state, "--insecure"); r.Code != exitNewMail {
		t.Errorf("--insecure: exit %d:\n%s", r.Code, r.Output)
	}
	checkExactlyOnce(t, d, ids(1, 2))

	bad := a
	bad.pw = "wrong"
	if r := fetch(t, nil, bad, d, state); r.Code != exitAuth {
		t.Errorf("wrong password: exit %d, want %d:\n%s", r.Code, exitAuth, r.Output)
	}
	// A failing MDA keeps the message on the server.
	s.deliver(t, a.user, testMessage(3, 1000))
	fail := &destination{kind: "mda", arg: "mda:cat >/dev/null; exit 1"}
	if r := fetch(t, nil, a, fail, state, "--delete"); r.Code != exitDelivery {
		t.Errorf("failing MDA: exit %d, want %d:\n%s", r.Code, exitDelivery, r.Output)
	}
	if n := serverCount(t, s.pop3Addr, a.user, a.pw); n != 3 {
		t.Errorf("server has %d messages after a failed delivery, want 3", n)
	}
	if r := fetch(t, nil, a, d, state); r.Code != exitNewMail {
		t.Errorf("after the failed MDA: exit %d:\n%s", r.Code, r.Output)
	}
	checkExactlyOnce(t, d, ids(1, 3))
}

// TestDropMidRETR: the connection is cut in the middle of a message; the
// fetch reconnects, and every message arrives exactly once, untruncated.
// Without retries the run fails with the network exit code and the next
// run completes.
func TestDropMidRETR(t *testing.T) {
	s, a := postinoAccount(t, "drop@example.test")
	for i := 1; i <= 6; i++ {
		s.deliver(t, a.user, testMessage(i, 30000))
	}
	for _, retries := range []string{"0", "2"} {
		t.Run("retries="+retries, func(t *testing.T) {
			p := startProxy(t, s.pop3Addr, 100000, false)
			pa := account{server: p.addr, user: a.user, pw: a.pw, extra: []string{"--security", "starttls", "--fingerprint", s.fingerprint}}
			d := newDestination(t, "mbox")
			state := t.TempDir()
			r := fetch(t, nil, pa, d, state, "--retries", retries)
			if retries == "0" {
				if r.Code != exitNetwork {
					t.Fatalf("drop without retries: exit %d, want %d:\n%s", r.Code, exitNetwork, r.Output)
				}
				r = fetch(t, nil, pa, d, state)
			}
			if r.Code != exitNewMail {
				t.Fatalf("exit %d:\n%s", r.Code, r.Output)
			}
			checkExactlyOnce(t, d, ids(1, 6))
		})
	}
}

// TestNoUIDL: a server without UIDL (a proxy refuses the command) is
// warned about, and messages are identified by their headers (TOP n 0):
// leave-on-server still fetches only new mail.
func TestNoUIDL(t *testing.T) {
	s, a := postinoAccount(t, "nouidl@example.test")
	for i := 1; i <= 3; i++ {
		s.deliver(t, a.user, testMessage(i, 3000))
	}
	p := startProxy(t, s.pop3Addr, 0, true)
	pa := account{server: p.addr, user: a.user, pw: a.pw, extra: []string{"--security", "none", "--allow-plaintext"}}
	d := newDestination(t, "maildir")
	state := t.TempDir()
	r := fetch(t, nil, pa, d, state)
	if r.Code != exitNewMail || !strings.Contains(r.Output, "does not support UIDL") {
		t.Fatalf("exit %d:\n%s", r.Code, r.Output)
	}
	s.deliver(t, a.user, testMessage(4, 3000))
	if r := fetch(t, nil, pa, d, state); r.Code != exitNewMail {
		t.Fatalf("exit %d:\n%s", r.Code, r.Output)
	}
	if r := fetch(t, nil, pa, d, state, "--delete"); r.Code != exitNoMail {
		t.Fatalf("exit %d:\n%s", r.Code, r.Output)
	}
	checkExactlyOnce(t, d, ids(1, 4))
	if n := serverCount(t, s.pop3Addr, a.user, a.pw); n != 0 {
		t.Errorf("server has %d messages, want 0", n)
	}
}

// TestConfigAccounts: accounts from a configuration file, several at
// once, selected by name, state in DATA/fetch.
func TestConfigAccounts(t *testing.T) {
	s := startPostino(t)
	s.addUser(t, "c1@example.test", "pw1")
	s.addUser(t, "c2@example.test", "pw2")
	s.deliver(t, "c1@example.test", testMessage(1, 1000))
	s.deliver(t, "c2@example.test", testMessage(2, 1000))
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw2")
	os.WriteFile(pwFile, []byte("pw2\n"), 0o600)
	cfg := fmt.Sprintf(`data_dir = %[1]q
[[fetch.account]]
name = "one"
server = "127.0.0.1"
port = %[2]s
fingerprint = %[3]q
user = "c1@example.test"
password = "pw1"
destination = "maildir:%[1]s/one"

[[fetch.account]]
name = "two"
server = "127.0.0.1"
port = %[2]s
fingerprint = %[3]q
user = "c2@example.test"
password_command = "cat %[4]s"
destination = "mbox:%[1]s/two.mbox"
delete = true
`, dir, strings.Split(s.pop3sAddr, ":")[1], s.fingerprint, pwFile)
	cfgFile := filepath.Join(dir, "postino.toml")
	os.WriteFile(cfgFile, []byte(cfg), 0o600)
	if r := run(t, nil, nil, binPath, "config", "check", cfgFile); r.Code != 0 {
		t.Fatalf("config check: %s", r.Output)
	}
	if r := run(t, nil, nil, binPath, "fetch", "--config", cfgFile, "two"); r.Code != exitNewMail {
		t.Fatalf("fetch two: exit %d:\n%s", r.Code, r.Output)
	}
	if _, err := os.Stat(filepath.Join(dir, "fetch", "two.state")); err != nil {
		t.Errorf("state not in DATA/fetch: %v", err)
	}
	if r := run(t, nil, nil, binPath, "fetch", "--config", cfgFile); r.Code != exitNewMail {
		t.Fatalf("fetch all: exit %d:\n%s", r.Code, r.Output)
	}
	if r := run(t, nil, nil, binPath, "fetch", "--config", cfgFile); r.Code != exitNoMail {
		t.Fatalf("fetch all again: exit %d:\n%s", r.Code, r.Output)
	}
	one := &destination{kind: "maildir", read: func(t testing.TB) [][]byte {
		var out [][]byte
		for _, b := range maildirMessages(t, filepath.Join(dir, "one")) {
			out = append(out, b)
		}
		return out
	}}
	two := &destination{kind: "mbox", read: func(t testing.TB) [][]byte { return mboxMessages(t, filepath.Join(dir, "two.mbox")) }}
	checkExactlyOnce(t, one, ids(1, 1))
	checkExactlyOnce(t, two, ids(2, 2))
	if r := run(t, nil, nil, binPath, "fetch", "--config", cfgFile, "three"); r.Code != 64 {
		t.Errorf("unknown account: exit %d:\n%s", r.Code, r.Output)
	}
}

// TestDaemon: --daemon polls until SIGTERM.
func TestDaemon(t *testing.T) {
	s, a := postinoAccount(t, "daemon@example.test")
	d := newDestination(t, "maildir")
	state := t.TempDir()
	cmd := exec.Command(binPath, fetchArgs(a, d, state, "--daemon", "200ms")...)
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.deliver(t, a.user, testMessage(1, 1000))
	testutil.WaitFor(t, 10*time.Second, "one message delivered", func() bool { return len(d.read(t)) == 1 })
	s.deliver(t, a.user, testMessage(2, 1000))
	testutil.WaitFor(t, 10*time.Second, "two messages delivered", func() bool { return len(d.read(t)) == 2 })
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("daemon exit: %v\n%s", err, out)
	}
	checkExactlyOnce(t, d, ids(1, 2))
}

// ---- Dovecot ----

// TestDovecot: new and old mail, leave on server, deletion, TLS
// verification, wrong password, kills and a UIDL change, against a real
// Dovecot.
func TestDovecot(t *testing.T) {
	dv := startDovecot(t)
	a := account{server: dv.pop3sAddr, user: "u1@test", pw: "secret", extra: []string{"--fingerprint", dv.fingerprint}}

	t.Run("policies", func(t *testing.T) {
		for i := 1; i <= 3; i++ {
			dv.deliver(t, a.user, testMessage(i, 3000))
		}
		d := newDestination(t, "maildir")
		state := t.TempDir()
		if r := fetch(t, nil, a, d, state); r.Code != exitNewMail {
			t.Fatalf("exit %d:\n%s", r.Code, r.Output)
		}
		if r := fetch(t, nil, a, d, state); r.Code != exitNoMail {
			t.Fatalf("exit %d:\n%s", r.Code, r.Output)
		}
		dv.deliver(t, a.user, testMessage(4, 3000))
		if r := fetch(t, nil, a, d, state); r.Code != exitNewMail {
			t.Fatalf("exit %d:\n%s", r.Code, r.Output)
		}
		checkExactlyOnce(t, d, ids(1, 4))
		if n := serverCount(t, dv.pop3Addr, a.user, a.pw); n != 4 {
			t.Errorf("dovecot has %d messages, want 4 (leave on server)", n)
		}

		// UIDL change: Dovecot forgets its UIDs (new UIDVALIDITY), so
		// every UIDL changes; nothing is delivered again.
		before := uidls(t, dv.pop3Addr, a.user, a.pw)
		os.Remove(filepath.Join(dv.dir, "mail", a.user, "dovecot-uidlist"))
		for _, f := range []string{"dovecot.index", "dovecot.index.log", "dovecot.index.cache"} {
			os.Remove(filepath.Join(dv.dir, "mail", a.user, f))
		}
		time.Sleep(1100 * time.Millisecond) // a new UIDVALIDITY is the current second
		after := uidls(t, dv.pop3Addr, a.user, a.pw)
		if strings.Join(before, " ") == strings.Join(after, " ") {
			t.Fatalf("UIDLs did not change: %v", after)
		}
		r := fetch(t, nil, a, d, state, "--verbose")
		if r.Code != exitNoMail || !strings.Contains(r.Output, "under another UIDL") {
			t.Fatalf("after the UIDL change: exit %d:\n%s", r.Code, r.Output)
		}
		checkExactlyOnce(t, d, ids(1, 4))

		if r := fetch(t, nil, a, d, state, "--delete"); r.Code != exitNoMail {
			t.Fatalf("exit %d:\n%s", r.Code, r.Output)
		}
		if n := serverCount(t, dv.pop3Addr, a.user, a.pw); n != 0 {
			t.Errorf("dovecot has %d messages after --delete, want 0", n)
		}
		checkExactlyOnce(t, d, ids(1, 4))
	})

	t.Run("tls-and-auth", func(t *testing.T) {
		d := newDestination(t, "mbox")
		state := t.TempDir()
		noPin := account{server: dv.pop3sAddr, user: "u2@test", pw: "secret"}
		if r := fetch(t, nil, noPin, d, state); r.Code != exitTLS {
			t.Errorf("untrusted certificate: exit %d, want %d:\n%s", r.Code, exitTLS, r.Output)
		}
		bad := account{server: dv.pop3sAddr, user: "u2@test", pw: "wrong", extra: a.extra}
		if r := fetch(t, nil, bad, d, state); r.Code != exitAuth {
			t.Errorf("wrong password: exit %d, want %d:\n%s", r.Code, exitAuth, r.Output)
		}
		dv.deliver(t, "u2@test", testMessage(1, 1000))
		st := account{server: dv.pop3Addr, user: "u2@test", pw: "secret", extra: []string{"--security", "starttls", "--fingerprint", dv.fingerprint}}
		if r := fetch(t, nil, st, d, state, "--delete"); r.Code != exitNewMail {
			t.Errorf("starttls: exit %d:\n%s", r.Code, r.Output)
		}
		checkExactlyOnce(t, d, ids(1, 1))
	})

	t.Run("kills", func(t *testing.T) {
		user := "u3@test"
		for i := 1; i <= 8; i++ {
			dv.deliver(t, user, testMessage(i, 20000))
		}
		ka := account{server: dv.pop3sAddr, user: user, pw: "secret", extra: a.extra}
		d := newDestination(t, "mbox")
		state := t.TempDir()
		for _, step := range []string{"intent:2", "deliver-partial:3", "delivered:3", "dele:2", "quit"} {
			r := fetch(t, []string{"POSTINO_FETCH_DEBUG_KILL=" + step, batchEnv}, ka, d, state, "--delete")
			if r.Code != -1 {
				t.Fatalf("%s: not killed (exit %d):\n%s", step, r.Code, r.Output)
			}
		}
		if r := fetch(t, []string{batchEnv}, ka, d, state, "--delete"); r.Code != exitNewMail && r.Code != exitNoMail {
			t.Fatalf("exit %d:\n%s", r.Code, r.Output)
		}
		checkExactlyOnce(t, d, ids(1, 8))
		if n := serverCount(t, dv.pop3Addr, user, "secret"); n != 0 {
			t.Errorf("dovecot has %d messages, want 0", n)
		}
	})

	t.Run("drop-mid-retr", func(t *testing.T) {
		user := "u4@test"
		for i := 1; i <= 5; i++ {
			dv.deliver(t, user, testMessage(i, 30000))
		}
		p := startProxy(t, dv.pop3Addr, 70000, false)
		pa := account{server: p.addr, user: user, pw: "secret", extra: []string{"--security", "starttls", "--fingerprint", dv.fingerprint}}
		d := newDestination(t, "maildir")
		if r := fetch(t, nil, pa, d, t.TempDir(), "--delete"); r.Code != exitNewMail {
			t.Fatalf("exit %d:\n%s", r.Code, r.Output)
		}
		checkExactlyOnce(t, d, ids(1, 5))
		if n := serverCount(t, dv.pop3Addr, user, "secret"); n != 0 {
			t.Errorf("dovecot has %d messages, want 0", n)
		}
	})
}

func uidls(t *testing.T, addr, user, pw string) []string {
	c := popClient(t, addr, user, pw)
	defer c.Quit()
	return mailtest.UIDLs(t, c)
}
