//go:build unix

package crash

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/store/maildir"
)

// record is what the test knows about one message it tried to deliver.
type record struct {
	rcpt  string
	via   string // "smtp" or "deliver"
	state sendResult
	err   string
}

// ledger holds every message the test tried to deliver, by sequence number.
type ledger struct {
	mu   sync.Mutex
	recs map[int]*record
}

func (l *ledger) add(seq int, rcpt, via string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs[seq] = &record{rcpt: rcpt, via: via, state: sendNotSent}
}

func (l *ledger) set(seq int, state sendResult, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs[seq].state = state
	if err != nil {
		l.recs[seq].err = err.Error()
	}
}

// TestCrashDelivery delivers thousands of messages to a few users, over SMTP
// from 8 concurrent connections and with "postino deliver", while the
// server is SIGKILLed every 200–800 ms and restarted on the same ports and
// data folder, and some "postino deliver" processes are SIGKILLed too. It
// then downloads every mailbox over POP3 and proves that:
//
//   - every acknowledged message (250 after the final dot, or deliver's
//     exit 0) is present exactly once, byte for byte (body length and
//     SHA-256 carried in its header), in the right mailbox;
//   - a message whose connection or process died before the
//     acknowledgement is present at most once, and intact if present;
//   - a message whose body was never sent, or whose delivery was refused
//     (an error reply after the final dot, a non-zero exit), is absent;
//   - no message is present twice, none is damaged or truncated, none is
//     unknown, and LIST sizes are the exact RETR octet counts.
//
// A SIGKILL does not lose the page cache, so this proves atomicity and
// acknowledgement ordering, not fsync against power loss.
//
// Environment: CRASH_MESSAGES (default 4000) and CRASH_KILLS (default 30)
// are minimums: sending goes on until both are reached, or CRASH_SECONDS
// have passed (default 40, or an hour when CRASH_MESSAGES or CRASH_KILLS
// is set). CRASH_REPORT names a file that receives the figures.
func TestCrashDelivery(t *testing.T) {
	testCrashDelivery(t, backendMaildir)
}

// TestCrashDeliveryPostgres is TestCrashDelivery with the mailboxes in
// PostgreSQL (storage.backend = "postgres"): an acknowledged message is
// a committed transaction, so it survives the SIGKILL of the server, and
// a message whose transaction did not commit is absent. To keep the run
// short its defaults are smaller: 1000 messages, 10 kills, 20 seconds
// (the same environment variables scale it up).
func TestCrashDeliveryPostgres(t *testing.T) {
	testCrashDelivery(t, backendPostgres)
}

func testCrashDelivery(t *testing.T, b backend) {
	defMessages, defKills, defSeconds := 4000, 30, 40
	if b == backendPostgres {
		defMessages, defKills, defSeconds = 1000, 10, 20
	}
	minMessages := envInt(t, "CRASH_MESSAGES", defMessages)
	minKills := envInt(t, "CRASH_KILLS", defKills)
	if os.Getenv("CRASH_MESSAGES") != "" || os.Getenv("CRASH_KILLS") != "" {
		defSeconds = 3600 // scaled up on purpose: let it run
	}
	maxTime := time.Duration(envInt(t, "CRASH_SECONDS", defSeconds)) * time.Second
	if testing.Short() {
		minMessages, minKills, maxTime = min(minMessages, 1000), min(minKills, 8), min(maxTime, 15*time.Second)
	}
	const smtpSenders = 8
	users := []string{"alice@crash.test", "bob@crash.test", "carol@crash.test", "dave@crash.test"}

	data := t.TempDir()
	for _, u := range users {
		addUser(t, data, u, "ARGON2ID")
	}
	srv := newServerWith(t, data, storageConfig(t, b))
	deliverCfg := "" // Maildir: the defaults, as a local MDA runs
	if b == backendPostgres {
		deliverCfg = srv.cfgPath
	}
	run := fmt.Sprintf("r%x", time.Now().UnixNano())
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (%s)", seed, b)

	led := &ledger{recs: map[int]*record{}}
	var (
		nextSeq      atomic.Int64
		kills        atomic.Int64
		deliverKills atomic.Int64
		aborted      atomic.Bool
	)
	start := time.Now()
	// giveUp is when a message that could not be sent at all is abandoned.
	giveUp := start.Add(maxTime + 30*time.Second)
	next := func() (int, bool) {
		if aborted.Load() || time.Since(start) > maxTime {
			return 0, false
		}
		n := int(nextSeq.Add(1))
		if n > minMessages && int(kills.Load()) >= minKills {
			return 0, false
		}
		return n, true
	}

	var senders sync.WaitGroup
	for w := range smtpSenders {
		senders.Add(1)
		go func() {
			defer senders.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			var conn *smtpConn
			defer func() {
				if conn != nil {
					conn.cmd("QUIT")
					conn.Close()
				}
			}()
			for {
				seq, ok := next()
				if !ok {
					return
				}
				rcpt := users[rng.IntN(len(users))]
				msg := makeMessage(rng, run, seq, rcpt, "smtp", false)
				led.add(seq, rcpt, "smtp")
				for !aborted.Load() && time.Now().Before(giveUp) {
					if conn == nil {
						_, addr := srv.addrs()
						c, err := dialSMTP(addr)
						if err != nil {
							time.Sleep(5 * time.Millisecond) // the server is restarting
							continue
						}
						conn = c
					}
					res, err := conn.send(sender, rcpt, msg)
					if res != sendAcked {
						conn.Close()
						conn = nil
					}
					if res == sendNotSent {
						// Nothing of the body went out: retry as is.
						time.Sleep(2 * time.Millisecond)
						continue
					}
					led.set(seq, res, err)
					break
				}
			}
		}()
	}

	// One "postino deliver" after another; about one in five is killed at
	// a random moment within its usual run time.
	senders.Add(1)
	go func() {
		defer senders.Done()
		rng := rand.New(rand.NewPCG(seed, 1000))
		typical := 20 * time.Millisecond
		for {
			seq, ok := next()
			if !ok {
				return
			}
			rcpt := users[rng.IntN(len(users))]
			msg := makeMessage(rng, run, seq, rcpt, "deliver", false)
			if rng.IntN(2) == 0 {
				msg = toLF(msg) // deliver accepts both line ends
			}
			led.add(seq, rcpt, "deliver")
			var killAfter time.Duration
			if rng.IntN(5) == 0 {
				killAfter = time.Duration(1 + rng.Int64N(int64(typical)*5/4))
			}
			began := time.Now()
			out, detail := runDeliver(deliverCfg, data, sender, rcpt, msg, killAfter)
			switch out {
			case deliverAcked:
				led.set(seq, sendAcked, nil)
				typical = (typical*7 + time.Since(began)) / 8
			case deliverKilled:
				deliverKills.Add(1)
				led.set(seq, sendUncertain, nil)
			default:
				led.set(seq, sendRejected, fmt.Errorf("%s", detail))
			}
		}
	}()

	sendersDone := make(chan struct{})
	go func() {
		senders.Wait()
		close(sendersDone)
	}()
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		rng := rand.New(rand.NewPCG(seed, 2000))
		for {
			select {
			case <-sendersDone:
				return
			case <-time.After(200*time.Millisecond + time.Duration(rng.Int64N(int64(600*time.Millisecond)))):
			}
			srv.kill()
			kills.Add(1)
			if err := srv.start(); err != nil {
				t.Errorf("restarting after kill %d: %v", kills.Load(), err)
				aborted.Store(true)
				return
			}
		}
	}()
	<-sendersDone
	<-killerDone
	sendTime := time.Since(start)
	if aborted.Load() {
		t.FailNow()
	}

	// Download everything and check it against the ledger.
	errs := &errorCap{t: t, limit: 25}
	pop3Addr, _ := srv.addrs()
	present := map[int]int{}
	total := 0
	for _, u := range users {
		msgs, problems, err := download(pop3Addr, u)
		if err != nil {
			t.Fatalf("downloading %s: %v", u, err)
		}
		for _, p := range problems {
			errs.errorf("%s: %s", u, p)
		}
		total += len(msgs)
		for _, m := range msgs {
			c, err := verifyMessage(run, m.data)
			if err != nil {
				errs.errorf("%s: message %s is damaged: %v\nfirst octets: %q", u, m.uid, err, m.data[:min(len(m.data), 300)])
				continue
			}
			led.mu.Lock()
			rec := led.recs[c.seq]
			led.mu.Unlock()
			if rec == nil {
				errs.errorf("%s: message %s has seq %d, which was never sent", u, m.uid, c.seq)
				continue
			}
			if c.deliveredTo != u || rec.rcpt != u {
				errs.errorf("%s: message %s (seq %d, sent to %s) has Delivered-To %q", u, m.uid, c.seq, rec.rcpt, c.deliveredTo)
			}
			if c.via != rec.via {
				errs.errorf("%s: message %s (seq %d) says X-Via %q, sent via %s", u, m.uid, c.seq, c.via, rec.via)
			}
			present[c.seq]++
		}
	}

	type tally struct{ n, present int }
	counts := map[string]*tally{}
	count := func(key string, isPresent bool) {
		if counts[key] == nil {
			counts[key] = &tally{}
		}
		counts[key].n++
		if isPresent {
			counts[key].present++
		}
	}
	stateName := map[sendResult]string{sendAcked: "acked", sendUncertain: "uncertain", sendRejected: "rejected", sendNotSent: "not-sent"}
	for seq, rec := range led.recs {
		n := present[seq]
		key := rec.via + " " + stateName[rec.state]
		count(key, n > 0)
		switch {
		case n > 1:
			errs.errorf("seq %d (%s to %s) is present %d times", seq, key, rec.rcpt, n)
		case rec.state == sendAcked && n == 0:
			errs.errorf("seq %d was acknowledged (%s to %s) but is missing", seq, rec.via, rec.rcpt)
		case rec.state == sendNotSent && n > 0:
			errs.errorf("seq %d is present although its body was never sent (%s)", seq, rec.err)
		case rec.state == sendRejected && n > 0:
			errs.errorf("seq %d is present although its delivery was refused (%s: %s): a retry would duplicate it", seq, rec.via, rec.err)
		}
		if rec.state == sendRejected && counts[key].n <= 5 {
			t.Logf("seq %d rejected (%s): %s", seq, rec.via, rec.err)
		}
	}
	errs.finish()

	if b == backendPostgres {
		// The mail is in the database, none in Maildirs.
		for _, u := range users {
			for _, sub := range []string{"new", "cur"} {
				if es, _ := os.ReadDir(filepath.Join(maildirOf(data, u), sub)); len(es) > 0 {
					t.Errorf("%d files in the Maildir of %s with storage.backend = \"postgres\"", len(es), u)
				}
			}
		}
	}
	// Debris a crash may leave: harmless, but worth knowing.
	orphans := 0
	for _, u := range users {
		es, _ := os.ReadDir(filepath.Join(maildirOf(data, u), "tmp"))
		orphans += len(es)
	}
	spool, _ := os.ReadDir(filepath.Join(data, "spool"))

	acked := 0
	for _, k := range []string{"smtp acked", "deliver acked"} {
		if c := counts[k]; c != nil {
			acked += c.n
		}
	}
	report(t, "delivery (%s): %d messages attempted in %v, %d acknowledged, %d present in mailboxes; server SIGKILLed %d times and restarted %d times (port moves %d); %d deliver processes SIGKILLed",
		b, len(led.recs), sendTime.Round(time.Millisecond), acked, total, kills.Load(), srv.starts-1, srv.rebinds, deliverKills.Load())
	for _, k := range []string{"smtp acked", "smtp uncertain", "smtp rejected", "smtp not-sent", "deliver acked", "deliver uncertain", "deliver rejected"} {
		if c := counts[k]; c != nil {
			report(t, "delivery:   %-18s %6d, present %6d", k, c.n, c.present)
		}
	}
	report(t, "delivery: leftovers: %d files in Maildir tmp/, %d in spool/", orphans, len(spool))

	// The run must have exercised something.
	if kills.Load() < int64(min(minKills, 3)) {
		t.Errorf("only %d server kills; the run proved little", kills.Load())
	}
	if acked < min(minMessages, 500) {
		t.Errorf("only %d messages acknowledged; the run proved little", acked)
	}
	srv.checkLogs()
	srv.stop()
}

// TestCrashDuringSharedSync kills the server while several SMTP sessions
// delivering into one mailbox wait on a shared fsync of its new/ (group
// commit): the server's crash-test hook (maildir.DebugKillEnv) SIGKILLs it
// at the start of an fsync of new/ once that many deliveries, each with its
// message already renamed into new/ and not yet answered, wait for it or
// for the next one. Over CRASH_SYNC_ROUNDS rounds (default 3) it proves
// that every message whose 250 was received is present exactly once and
// intact, a message whose session died before its reply is present at most
// once, and one whose body was never sent is absent; and it checks that
// each kill really came from the hook with the deliveries in flight: the
// server died of SIGKILL after logging the hook's line, and at least that
// many sessions had sent their message without getting a reply, their
// messages being in new/ (a SIGKILL keeps the page cache: this proves
// acknowledgement ordering and atomicity, not fsync against power loss).
func TestCrashDuringSharedSync(t *testing.T) {
	rounds := envInt(t, "CRASH_SYNC_ROUNDS", 3)
	const (
		sessions = 16
		waiting  = 8 // deliveries sharing the fsync when the hook kills
		rcpt     = "alice@crash.test"
	)
	data := t.TempDir()
	addUser(t, data, rcpt, "ARGON2ID")
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	// armHook sets the hook for the next server process: the kill comes
	// after a random number of fsyncs, so that messages are acknowledged
	// first.
	armHook := func() {
		t.Setenv(maildir.DebugKillEnv, fmt.Sprintf("%d:%d", waiting, 20+rng.IntN(200)))
	}
	armHook()
	srv := newServer(t, data)
	run := fmt.Sprintf("s%x", time.Now().UnixNano())
	led := &ledger{recs: map[int]*record{}}
	var nextSeq atomic.Int64
	inFlight := 0 // over all rounds: sessions that sent a message and got no reply

	for round := 1; round <= rounds; round++ {
		_, addr := srv.addrs()
		var wg sync.WaitGroup
		var uncertain atomic.Int64
		for w := range sessions {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seed, uint64(round*100+w)))
				c, err := dialSMTP(addr)
				if err != nil {
					t.Errorf("round %d: session %d: %v", round, w, err)
					return
				}
				defer c.Close()
				for {
					seq := int(nextSeq.Add(1))
					led.add(seq, rcpt, "smtp")
					res, err := c.send(sender, rcpt, makeMessage(rng, run, seq, rcpt, "smtp", true))
					led.set(seq, res, err)
					if res == sendUncertain {
						uncertain.Add(1)
					}
					if res != sendAcked {
						return
					}
				}
			})
		}
		select {
		case <-srv.proc.Done():
		case <-time.After(60 * time.Second):
			t.Fatalf("round %d: the server was not killed by its hook within 60 s", round)
		}
		wg.Wait()
		// The kill came from the hook, at an fsync shared by enough
		// deliveries.
		ws, ok := srv.proc.Cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: the server ended with %v, want SIGKILL from its hook", round, srv.proc.Cmd.ProcessState)
		}
		log, _ := os.ReadFile(srv.logPath)
		m := regexp.MustCompile(`killing the process during an fsync of \S+ shared by (\d+) deliveries`).FindSubmatch(log)
		if m == nil {
			t.Fatalf("round %d: the server's log lacks the hook's line:\n%s", round, lastLines(string(log), 20))
		}
		shared, _ := strconv.Atoi(string(m[1]))
		if shared < waiting {
			t.Fatalf("round %d: killed during an fsync shared by %d deliveries, want at least %d", round, shared, waiting)
		}
		if n := uncertain.Load(); n < int64(shared) {
			t.Fatalf("round %d: %d sessions without a reply, but %d deliveries were waiting on the fsync", round, n, shared)
		}
		t.Logf("round %d: killed during an fsync shared by %d deliveries; %d sessions without a reply", round, shared, uncertain.Load())
		inFlight += int(uncertain.Load())
		srv.kill() // already dead: only the bookkeeping
		if round == rounds {
			os.Unsetenv(maildir.DebugKillEnv)
		} else {
			armHook()
		}
		if err := srv.start(); err != nil {
			t.Fatal(err)
		}
	}

	pop3Addr, _ := srv.addrs()
	msgs, problems, err := download(pop3Addr, rcpt)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	present := map[int]int{}
	for _, m := range msgs {
		c, err := verifyMessage(run, m.data)
		if err != nil {
			t.Errorf("message %s is damaged: %v", m.uid, err)
			continue
		}
		present[c.seq]++
	}
	acked, uncertainPresent := 0, 0
	for seq, rec := range led.recs {
		n := present[seq]
		switch {
		case n > 1:
			t.Errorf("seq %d is present %d times", seq, n)
		case rec.state == sendAcked && n == 0:
			t.Errorf("seq %d was acknowledged but is missing", seq)
		case rec.state == sendNotSent && n > 0:
			t.Errorf("seq %d is present although its body was never sent (%s)", seq, rec.err)
		case rec.state == sendRejected:
			t.Errorf("seq %d was refused: %s", seq, rec.err)
		}
		switch {
		case rec.state == sendAcked:
			acked++
		case rec.state == sendUncertain && n > 0:
			uncertainPresent++
		}
	}
	// The deliveries waiting on the fsync had their messages in new/.
	if uncertainPresent < rounds*waiting {
		t.Errorf("%d unanswered messages present after %d kills, want at least %d (the deliveries waiting on the fsync)", uncertainPresent, rounds, rounds*waiting)
	}
	if acked < rounds*sessions {
		t.Errorf("only %d messages acknowledged before the kills; the run proved little", acked)
	}
	report(t, "shared sync: %d rounds, %d messages acknowledged and present, %d sessions without a reply (%d of their messages present), %d messages in the mailbox",
		rounds, acked, inFlight, uncertainPresent, len(msgs))
	srv.checkLogs()
	srv.stop()
}
