//go:build unix

package crash

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// journalFolder is where postino's Maildir store keeps the commit
// journal of a QUIT while it applies it, one file per mailbox naming its
// Maildir (internal/store/maildir).
const journalFolder = ".postino-journals"

// journalFor reports whether the journal folder holds a commit journal for
// the user's mailbox.
func journalFor(data, user string) bool {
	local, domain, _ := strings.Cut(user, "@")
	want := fmt.Sprintf("\ndir %q\n", domain+"/"+local+"/Maildir")
	dir := filepath.Join(data, "mail", journalFolder)
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		if strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && strings.Contains(string(b), want) {
			return true
		}
	}
	return false
}

// quitAttempt is one POP3 session of a round of TestCrashQuit: it marked
// some messages with DELE and sent QUIT.
type quitAttempt struct {
	user    string
	before  mailbox         // the maildrop as the session saw it
	marked  map[string]bool // UIDs marked deleted
	quitOK  bool            // +OK for QUIT arrived
	deleErr string          // a DELE that did not get +OK
	latency time.Duration   // from the write to QUIT's +OK
	err     error           // the session could not get as far as the write

	// Seen on disk after a SIGKILL, before anything touched the Maildir.
	journalOnDisk bool
	markedOnDisk  int
}

// TestCrashQuit proves that a POP3 QUIT applies its deletions all or
// nothing whatever the moment of a SIGKILL. Each round, four sessions on
// mailboxes of about 800 messages log in, mark a random 300–750 of them
// with DELE and send QUIT, all pipelined in one write; the server is
// SIGKILLed at a random moment spread over the time such a QUIT takes
// (measured on rounds that are not killed), so kills land before the
// DELEs, during them, while the commit journal is written, while files are
// unlinked, and after the reply. After the restart, a new login (which
// completes any commit journal) must show, for every session: all marked
// messages gone or none, all gone if QUIT got +OK, and every unmarked
// message still there with its size. At the end every remaining message is
// downloaded and checked byte for byte.
//
// The mailboxes are topped up between rounds by writing Maildir files
// directly, as another delivery agent (Dovecot's, procmail) or a MUA would
// leave them: most with Dovecot's S= and W= sizes in new/, some without
// sizes, some in cur/ with flags. The first messages of each mailbox
// arrive over SMTP.
//
// Environment: CRASH_ROUNDS (default 60), CRASH_MAILBOX (messages per
// mailbox, default 800), CRASH_QUIT_SECONDS (after which no new round
// starts once 20 are done: default 40, or an hour when CRASH_ROUNDS is
// set), CRASH_REPORT (file that receives the figures).
func TestCrashQuit(t *testing.T) {
	testCrashQuit(t, backendMaildir)
}

// TestCrashQuitPostgres is TestCrashQuit with the mailboxes in
// PostgreSQL (storage.backend = "postgres"), where a QUIT's deletions are
// one transaction: a SIGKILL before its commit leaves every marked
// message, after it none. The mailboxes are topped up over SMTP between
// rounds, and a session killed holding the maildrop lock leaves it to
// expire (lock_ttl 3s), so the defaults are smaller: 8 rounds of
// mailboxes of 200 messages, 20 seconds; every round after the first
// three is killed.
func TestCrashQuitPostgres(t *testing.T) {
	testCrashQuit(t, backendPostgres)
}

func testCrashQuit(t *testing.T, b backend) {
	defRounds, defMailbox, defSeconds, coverRounds := 60, 800, 40, 20
	if b == backendPostgres {
		defRounds, defMailbox, defSeconds, coverRounds = 8, 200, 20, 8
	}
	// The chance that a round after the calibration is killed: every
	// one of PostgreSQL's few rounds.
	killChance := 0.85
	if b == backendPostgres {
		killChance = 1
	}
	rounds := envInt(t, "CRASH_ROUNDS", defRounds)
	mailboxSize := max(envInt(t, "CRASH_MAILBOX", defMailbox), 100)
	if os.Getenv("CRASH_ROUNDS") != "" {
		defSeconds = 3600 // scaled up on purpose: let it run
	}
	budget := time.Duration(envInt(t, "CRASH_QUIT_SECONDS", defSeconds)) * time.Second
	if testing.Short() {
		rounds = min(rounds, 15)
	}
	const (
		calibration = 3  // first rounds: never killed, to measure QUIT
		viaSMTP     = 50 // first messages of each mailbox
	)
	users := []string{"q0@quit.test", "q1@quit.test", "q2@quit.test", "q3@quit.test"}

	data := t.TempDir()
	// Every kill empties the server's cache of password checks, and this
	// test logs in again after each one: SCRAM-SHA-256 hashes (PBKDF2)
	// verify in milliseconds where the default Argon2id takes a good part
	// of a second.
	for _, u := range users {
		addUser(t, data, u, "SCRAM-SHA-256")
	}
	srv := newServerWith(t, data, storageConfig(t, b))
	run := fmt.Sprintf("r%x", time.Now().UnixNano())
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (%s)", seed, b)
	rng := rand.New(rand.NewPCG(seed, 1))

	// The first messages of every mailbox arrive over SMTP; none may fail.
	seq := 0
	_, smtpAddr := srv.addrs()
	sc, err := dialSMTP(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	for range viaSMTP {
		for _, u := range users {
			seq++
			if res, err := sc.send(sender, u, makeMessage(rng, run, seq, u, "smtp", false)); res != sendAcked {
				t.Fatalf("SMTP delivery to %s: %v", u, err)
			}
		}
	}
	sc.cmd("QUIT")
	sc.Close()
	// topUp writes messages straight into the Maildirs, as another
	// delivery agent would, until each holds mailboxSize messages (have
	// gives the current counts). The new messages are added to model.
	// In PostgreSQL they arrive over SMTP, and model is read back over
	// POP3.
	planted := 0
	topUp := func(round int, have map[string]int, model map[string]map[string]int64) {
		t.Helper()
		if b == backendPostgres {
			topUpSMTP(t, srv, run, seed, round, users, mailboxSize, have, model, &seq, &planted)
			return
		}
		var wg sync.WaitGroup
		var failed atomic.Bool
		for i, u := range users {
			n := mailboxSize - have[u]
			first := seq + 1
			seq += n
			planted += n
			sizes := model[u]
			r := rand.New(rand.NewPCG(seed, uint64(1_000_000+round*100+i)))
			wg.Go(func() {
				dir := maildirOf(data, u)
				for s := first; s < first+n; s++ {
					msg := append([]byte("Return-Path: <"+sender+">\r\nDelivered-To: "+u+"\r\n"), makeMessage(r, run, s, u, "maildir", true)...)
					lf := toLF(msg)
					now := time.Now()
					base := fmt.Sprintf("%d.M%06dP%dQ%d.crash", now.Unix(), now.Nanosecond()/1000, os.Getpid(), s)
					// Most names carry Dovecot's sizes; some carry none,
					// so postino reads the file and keeps its size cache;
					// some are in cur/ with flags, as a MUA leaves them.
					name, sub := fmt.Sprintf("%s,S=%d,W=%d", base, len(lf), len(msg)), "new"
					switch s % 5 {
					case 0:
						name = base
					case 1:
						name, sub = name+":2,S", "cur"
					}
					if err := os.WriteFile(filepath.Join(dir, "tmp", base), lf, 0o600); err != nil {
						t.Error(err)
						failed.Store(true)
						return
					}
					if err := os.Rename(filepath.Join(dir, "tmp", base), filepath.Join(dir, sub, name)); err != nil {
						t.Error(err)
						failed.Store(true)
						return
					}
					if sizes != nil {
						sizes[base] = int64(len(msg))
					}
				}
			})
		}
		wg.Wait()
		if failed.Load() {
			t.FailNow()
		}
	}
	// model is what each mailbox must hold: UID → LIST size. It is
	// learnt at the first session and then kept up to date.
	model := map[string]map[string]int64{}
	have := map[string]int{}
	for _, u := range users {
		have[u] = viaSMTP
	}
	topUp(0, have, model)
	errs := &errorCap{t: t, limit: 25}
	var (
		kills, earlyKills, killedSessions, sessions   int
		cleanQuits, goneNoReply, noneGone, violations int
		journalHits, partialOnDisk, journalsCompleted int
		deleted, markedTotal                          int
		latency                                       time.Duration // moving average of the slowest QUIT of a round
		latencies                                     []time.Duration
	)
	start := time.Now()
	roundsDone := 0
	for round := 1; round <= rounds; round++ {
		if round > min(rounds, 20) && time.Since(start) > budget {
			t.Logf("stopping after %d rounds: the %v budget is spent (a slow or busy machine)", round-1, budget)
			break
		}
		roundsDone = round
		pop3Addr, _ := srv.addrs()
		attempts := make([]*quitAttempt, len(users))
		var ready, finished sync.WaitGroup
		goCh := make(chan struct{})
		for i, u := range users {
			a := &quitAttempt{user: u, marked: map[string]bool{}}
			attempts[i] = a
			r := rand.New(rand.NewPCG(seed, uint64(round*100+i)))
			ready.Add(1)
			finished.Add(1)
			go func() {
				defer finished.Done()
				readyDone := sync.OnceFunc(ready.Done)
				defer readyDone()
				c, err := popLogin(pop3Addr, u)
				if err != nil {
					a.err = err
					return
				}
				defer c.Close()
				if a.before, err = listMailbox(c); err != nil {
					a.err = err
					return
				}
				n := len(a.before.uids)
				lo := min(300, n/2)
				hi := max(lo, min(1000, n-50))
				k := lo + r.IntN(hi-lo+1)
				var cmds strings.Builder
				for _, idx := range r.Perm(n)[:k] {
					a.marked[a.before.uids[idx]] = true
					fmt.Fprintf(&cmds, "DELE %d\r\n", idx+1)
				}
				cmds.WriteString("QUIT\r\n")
				conn := c.Conn()
				conn.SetDeadline(time.Now().Add(30 * time.Second))
				br := bufio.NewReader(conn)
				readyDone()
				<-goCh
				began := time.Now()
				if _, err := conn.Write([]byte(cmds.String())); err != nil {
					return // killed before the commands went out
				}
				for i := 0; i <= k; i++ {
					line, err := br.ReadString('\n')
					if err != nil {
						return // killed
					}
					if !strings.HasPrefix(line, "+OK") {
						if i < k {
							a.deleErr = strings.TrimSpace(line)
						}
						continue
					}
					if i == k {
						a.quitOK = true
						a.latency = time.Since(began)
					}
				}
			}()
		}
		ready.Wait()
		kill := round > calibration && rng.Float64() < killChance
		close(goCh)
		if kill {
			// A quarter of the kills come right after the commands are
			// written, the rest are spread over the whole exchange as
			// long as it usually takes, and a little beyond.
			window := latency * 6 / 5
			if rng.IntN(4) == 0 {
				window = 2 * time.Millisecond
				earlyKills++
			}
			time.Sleep(time.Duration(rng.Int64N(int64(window) + 1)))
			srv.kill()
			kills++
		}
		finished.Wait()

		var slowest time.Duration
		for _, a := range attempts {
			if a.err != nil {
				t.Fatalf("round %d: %s: %v", round, a.user, a.err)
			}
			slowest = max(slowest, a.latency)
		}
		if !kill {
			latencies = append(latencies, slowest)
			if latency == 0 {
				latency = slowest
			} else {
				latency = (latency*3 + slowest) / 4
			}
		}
		if kill && b == backendMaildir {
			// What the SIGKILL left on disk, before any login repairs it.
			for _, a := range attempts {
				dir := maildirOf(data, a.user)
				a.journalOnDisk = journalFor(data, a.user)
				for _, sub := range []string{"new", "cur"} {
					es, _ := os.ReadDir(filepath.Join(dir, sub))
					for _, e := range es {
						if a.marked[baseOf(e.Name())] {
							a.markedOnDisk++
						}
					}
				}
			}
		}
		if kill {
			if err := srv.start(); err != nil {
				t.Fatalf("round %d: restarting: %v", round, err)
			}
			pop3Addr, _ = srv.addrs()
		}

		// Check every session: the next login completes any journal.
		for _, a := range attempts {
			sessions++
			markedTotal += len(a.marked)
			if kill {
				killedSessions++
			}
			if a.journalOnDisk {
				journalHits++
			}
			if a.markedOnDisk > 0 && a.markedOnDisk < len(a.marked) {
				partialOnDisk++
			}
			prev, known := model[a.user]
			if known && !sameMailbox(prev, a.before) {
				errs.errorf("round %d: %s: the session saw a mailbox different from what the last check left:\n%s", round, a.user, diffMailbox(prev, a.before))
				violations++
			}
			c, err := popLogin(pop3Addr, a.user)
			if err != nil {
				t.Fatalf("round %d: checking %s: %v", round, a.user, err)
			}
			after, err := listMailbox(c)
			if err != nil {
				t.Fatalf("round %d: checking %s: %v", round, a.user, err)
			}
			if err := c.Quit(); err != nil {
				t.Fatalf("round %d: checking %s: QUIT: %v", round, a.user, err)
			}
			if a.journalOnDisk {
				if journalFor(data, a.user) {
					errs.errorf("round %d: %s: the commit journal is still there after a restart and a login", round, a.user)
					violations++
				} else {
					journalsCompleted++
				}
			}
			gone := 0
			for uid := range a.marked {
				if _, ok := after.sizes[uid]; !ok {
					gone++
				}
			}
			var touched, appeared []string
			for uid, size := range a.before.sizes {
				if a.marked[uid] {
					continue
				}
				if got, ok := after.sizes[uid]; !ok || got != size {
					touched = append(touched, fmt.Sprintf("%s (size %d, now %d, present %v)", uid, size, got, ok))
				}
			}
			for uid := range after.sizes {
				if _, ok := a.before.sizes[uid]; !ok {
					appeared = append(appeared, uid)
				}
			}
			what := fmt.Sprintf("round %d: %s (killed %v, QUIT +OK %v, %d marked, journal on disk %v, %d marked files on disk after the kill)",
				round, a.user, kill, a.quitOK, len(a.marked), a.journalOnDisk, a.markedOnDisk)
			bad := false
			switch {
			case gone != 0 && gone != len(a.marked):
				errs.errorf("%s: %d of the %d marked messages are gone: not all or nothing", what, gone, len(a.marked))
				bad = true
			case a.quitOK && gone != len(a.marked):
				errs.errorf("%s: QUIT got +OK but the marked messages are still there", what)
				bad = true
			case !kill && !a.quitOK:
				errs.errorf("%s: QUIT got no +OK although the server was not killed", what)
				bad = true
			}
			if a.deleErr != "" {
				errs.errorf("%s: DELE answered %q", what, a.deleErr)
				bad = true
			}
			if len(touched) > 0 {
				sort.Strings(touched)
				errs.errorf("%s: %d unmarked messages were touched: %s", what, len(touched), strings.Join(touched[:min(5, len(touched))], ", "))
				bad = true
			}
			if len(appeared) > 0 {
				errs.errorf("%s: %d unknown messages appeared: %v", what, len(appeared), appeared[:min(5, len(appeared))])
				bad = true
			}
			switch {
			case bad:
				violations++
			case gone == len(a.marked) && a.quitOK:
				cleanQuits++
			case gone == len(a.marked):
				goneNoReply++
			default:
				noneGone++
			}
			deleted += gone
			model[a.user] = after.sizes
			have[a.user] = len(after.uids)
		}
		topUp(round, have, model)
		if t.Failed() && errs.n > errs.limit {
			break
		}
	}
	errs.finish()
	elapsed := time.Since(start)

	// Every message left must be intact and accounted for.
	pop3Addr, _ := srv.addrs()
	seen := map[int]bool{}
	remaining := 0
	for _, u := range users {
		msgs, problems, err := download(pop3Addr, u)
		if err != nil {
			t.Fatalf("downloading %s: %v", u, err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", u, p)
		}
		remaining += len(msgs)
		got := mailbox{sizes: map[string]int64{}}
		for _, m := range msgs {
			got.sizes[m.uid] = int64(len(m.data))
		}
		if !sameMailbox(model[u], got) {
			t.Errorf("%s: the mailbox at the end differs from what the rounds left:\n%s", u, diffMailbox(model[u], got))
		}
		for _, m := range msgs {
			c, err := verifyMessage(run, m.data)
			switch {
			case err != nil:
				t.Errorf("%s: message %s is damaged: %v", u, m.uid, err)
			case c.deliveredTo != u:
				t.Errorf("%s: message %s (seq %d) has Delivered-To %q", u, m.uid, c.seq, c.deliveredTo)
			case seen[c.seq]:
				t.Errorf("%s: seq %d present twice", u, c.seq)
			default:
				seen[c.seq] = true
			}
		}
	}
	recoveries := srv.countInLogs("completing interrupted commit")

	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	var median time.Duration
	if len(latencies) > 0 {
		median = latencies[len(latencies)/2]
	}
	report(t, "quit (%s): %d rounds in %v, %d sessions (%d killed), server SIGKILLed %d times (%d right after the write); %d messages marked, %d deleted, %d remain and are intact (%d via SMTP, %d topping up)",
		b, roundsDone, elapsed.Round(time.Millisecond), sessions, killedSessions, kills, earlyKills, markedTotal, deleted, remaining, viaSMTP*len(users), planted)
	report(t, "quit: outcomes: %d QUIT +OK and all gone, %d no reply and all gone, %d no reply and none gone, %d violations", cleanQuits, goneNoReply, noneGone, violations)
	report(t, "quit: kills during the commit: %d with the journal on disk (%d completed by the restart and login; %d recoveries logged), %d with only part of the marked files unlinked; median unkilled QUIT exchange %v",
		journalHits, journalsCompleted, recoveries, partialOnDisk, median)

	if violations > 0 {
		t.Errorf("%d sessions broke all-or-nothing", violations)
	}
	if roundsDone >= coverRounds && (cleanQuits == 0 || noneGone == 0 || kills == 0) {
		t.Errorf("the run did not cover both outcomes (%d clean, %d none gone, %d kills)", cleanQuits, noneGone, kills)
	}
	if recoveries < journalHits {
		t.Errorf("%d kills left a journal but only %d recoveries were logged", journalHits, recoveries)
	}
	srv.checkLogs()
	srv.stop()
}

// sameMailbox reports whether a listing holds exactly the UIDs and sizes
// of want.
func sameMailbox(want map[string]int64, got mailbox) bool {
	if len(want) != len(got.sizes) {
		return false
	}
	for uid, size := range want {
		if s, ok := got.sizes[uid]; !ok || s != size {
			return false
		}
	}
	return true
}

// diffMailbox describes how a listing differs from want (a few examples).
func diffMailbox(want map[string]int64, got mailbox) string {
	var lines []string
	for uid, size := range want {
		if s, ok := got.sizes[uid]; !ok {
			lines = append(lines, fmt.Sprintf("  missing %s (%d octets)", uid, size))
		} else if s != size {
			lines = append(lines, fmt.Sprintf("  %s: %d octets, want %d", uid, s, size))
		}
	}
	for uid, size := range got.sizes {
		if _, ok := want[uid]; !ok {
			lines = append(lines, fmt.Sprintf("  unexpected %s (%d octets)", uid, size))
		}
	}
	sort.Strings(lines)
	n := len(lines)
	if n > 8 {
		lines = append(lines[:8], fmt.Sprintf("  ... %d differences in all", n))
	}
	return strings.Join(lines, "\n")
}

// plantMessages writes n messages straight into the user's new/, as
// another delivery agent would, with Dovecot's S= and W= sizes, and
// returns their unique names.
func plantMessages(t *testing.T, data, user, tag string, n int) []string {
	t.Helper()
	dir := maildirOf(data, user)
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	bases := make([]string, n)
	now := time.Now()
	for i := range n {
		lf := fmt.Sprintf("From: <%s>\nTo: <%s>\nSubject: %s %d\n\nbody %d\n", sender, user, tag, i, i)
		wire := len(lf) + strings.Count(lf, "\n")
		base := fmt.Sprintf("%d.M%06dP%dQ%d%s.crash", now.Unix(), i, os.Getpid(), i, tag)
		if err := os.WriteFile(filepath.Join(dir, "tmp", base), []byte(lf), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "tmp", base), filepath.Join(dir, "new", fmt.Sprintf("%s,S=%d,W=%d", base, len(lf), wire))); err != nil {
			t.Fatal(err)
		}
		bases[i] = base
	}
	return bases
}

// basesOnDisk returns the unique names of the files in new/ and cur/.
func basesOnDisk(t *testing.T, data, user string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, sub := range []string{"new", "cur"} {
		es, err := os.ReadDir(filepath.Join(maildirOf(data, user), sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			out[baseOf(e.Name())] = true
		}
	}
	return out
}

// TestCrashQuitCompletedAtStart kills the server in the middle of the
// unlinks of a QUIT, checks that the Maildir really is half updated, then
// restarts the server and, without any login, checks on disk that the
// whole UPDATE has been applied: other programs reading the Maildir
// (Dovecot, mutt, a backup) never see half of it once the server is back.
func TestCrashQuitCompletedAtStart(t *testing.T) {
	const user = "start@quit.test"
	data := t.TempDir()
	addUser(t, data, user, "SCRAM-SHA-256")
	srv := newServer(t, data)
	var caught bool
	for attempt := 1; attempt <= 5 && !caught; attempt++ {
		plantMessages(t, data, user, fmt.Sprintf("a%d", attempt), 3000)
		pop3Addr, _ := srv.addrs()
		c, err := popLogin(pop3Addr, user)
		if err != nil {
			t.Fatal(err)
		}
		mb, err := listMailbox(c)
		if err != nil {
			t.Fatal(err)
		}
		marked := map[string]bool{}
		var cmds strings.Builder
		for i, uid := range mb.uids {
			if i%6 != 0 {
				marked[uid] = true
				fmt.Fprintf(&cmds, "DELE %d\r\n", i+1)
			}
		}
		cmds.WriteString("QUIT\r\n")
		// The server unlinks in directory order: the first marked file
		// in that order going away means the unlinks have begun.
		newDir := filepath.Join(maildirOf(data, user), "new")
		f, err := os.Open(newDir)
		if err != nil {
			t.Fatal(err)
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		first := ""
		for _, n := range names {
			if marked[baseOf(n)] {
				first = filepath.Join(newDir, n)
				break
			}
		}
		if _, err := c.Conn().Write([]byte(cmds.String())); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if _, err := os.Lstat(first); errors.Is(err, os.ErrNotExist) {
				srv.kill()
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the QUIT never started unlinking")
			}
		}
		c.Close()

		// What the SIGKILL left on disk.
		onDisk := basesOnDisk(t, data, user)
		left := 0
		for uid := range marked {
			if onDisk[uid] {
				left++
			}
		}
		journal := journalFor(data, user)
		t.Logf("attempt %d: killed with %d of %d marked files left, journal on disk %v", attempt, left, len(marked), journal)
		caught = left > 0 && left < len(marked)
		if caught && !journal {
			t.Errorf("half the marked files are gone but no journal is in %s", journalFolder)
		}

		if err := srv.start(); err != nil {
			t.Fatal(err)
		}
		// No login: the Maildir itself must show the whole UPDATE.
		onDisk = basesOnDisk(t, data, user)
		for uid := range marked {
			if onDisk[uid] {
				t.Errorf("attempt %d: marked message %s still on disk after the restart", attempt, uid)
				break
			}
		}
		kept := 0
		for _, uid := range mb.uids {
			if !marked[uid] && onDisk[uid] {
				kept++
			}
		}
		if kept != len(mb.uids)-len(marked) || len(onDisk) != kept {
			t.Errorf("attempt %d: %d files on disk, %d of the %d unmarked messages", attempt, len(onDisk), kept, len(mb.uids)-len(marked))
		}
		if journalFor(data, user) {
			t.Errorf("attempt %d: the journal is still there after the restart", attempt)
		}
		if t.Failed() {
			break
		}
	}
	if !caught {
		t.Fatal("no kill landed in the middle of the unlinks in 5 attempts")
	}
	if n := srv.countInLogs("completed interrupted POP3 updates"); n == 0 {
		t.Error("the restart logged no completed update")
	}
	srv.checkLogs()
	srv.stop()
}

// TestQuitUnlinkFailure: when an unlink fails after the journal is
// durable (here a directory that cannot be removed sits under the unique
// name of a marked message), QUIT still answers +OK, and the deletion is
// completed by the next start once the obstacle is gone, without a login.
func TestQuitUnlinkFailure(t *testing.T) {
	const user = "unlink@quit.test"
	data := t.TempDir()
	addUser(t, data, user, "SCRAM-SHA-256")
	srv := newServer(t, data)
	plantMessages(t, data, user, "u", 10)
	pop3Addr, _ := srv.addrs()
	c, err := popLogin(pop3Addr, user)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := listMailbox(c)
	if err != nil {
		t.Fatal(err)
	}
	obstacle := filepath.Join(maildirOf(data, user), "cur", mb.uids[4]+":2,S")
	if err := os.MkdirAll(filepath.Join(obstacle, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	marked := map[string]bool{}
	for _, n := range []int{2, 5, 8} {
		if err := c.Dele(n); err != nil {
			t.Fatal(err)
		}
		marked[mb.uids[n-1]] = true
	}
	if err := c.Quit(); err != nil {
		t.Fatalf("QUIT after a durable journal and a failed unlink: %v", err)
	}
	if !journalFor(data, user) {
		t.Error("no journal left for the unfinished deletion")
	}
	if err := os.Remove(filepath.Join(obstacle, "x")); err != nil {
		t.Fatal(err)
	}
	srv.stop()
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	onDisk := basesOnDisk(t, data, user)
	for uid := range marked {
		if onDisk[uid] {
			t.Errorf("marked message %s still on disk after the restart", uid)
		}
	}
	if len(onDisk) != len(mb.uids)-len(marked) {
		t.Errorf("%d messages on disk, want %d", len(onDisk), len(mb.uids)-len(marked))
	}
	if journalFor(data, user) {
		t.Error("the journal is still there after the restart")
	}
	srv.checkLogs()
	srv.stop()
}

// topUpSMTP is TestCrashQuitPostgres's top-up: it sends each user, over
// SMTP, the messages that bring the mailbox back to size, then reads the
// mailboxes over POP3 into model.
func topUpSMTP(t *testing.T, srv *server, run string, seed uint64, round int, users []string, size int, have map[string]int, model map[string]map[string]int64, seq, planted *int) {
	t.Helper()
	pop3Addr, smtpAddr := srv.addrs()
	var wg sync.WaitGroup
	var failed atomic.Bool
	for i, u := range users {
		n := size - have[u]
		first := *seq + 1
		*seq += n
		*planted += n
		r := rand.New(rand.NewPCG(seed, uint64(1_000_000+round*100+i)))
		wg.Go(func() {
			sc, err := dialSMTP(smtpAddr)
			if err != nil {
				t.Error(err)
				failed.Store(true)
				return
			}
			defer sc.Close()
			for s := first; s < first+n; s++ {
				if res, err := sc.send(sender, u, makeMessage(r, run, s, u, "smtp", true)); res != sendAcked {
					t.Errorf("topping up %s over SMTP: %v", u, err)
					failed.Store(true)
					return
				}
			}
			sc.cmd("QUIT")
		})
	}
	wg.Wait()
	if failed.Load() {
		t.FailNow()
	}
	for _, u := range users {
		c, err := popLogin(pop3Addr, u)
		if err != nil {
			t.Fatalf("reading %s after topping up: %v", u, err)
		}
		mb, err := listMailbox(c)
		if err != nil {
			t.Fatalf("reading %s after topping up: %v", u, err)
		}
		if err := c.Quit(); err != nil {
			t.Fatalf("reading %s after topping up: QUIT: %v", u, err)
		}
		if len(mb.uids) != size {
			t.Fatalf("%s holds %d messages after topping up, want %d", u, len(mb.uids), size)
		}
		model[u] = mb.sizes
	}
}
