package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/store/pgstore"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// onPostgres makes newEnv keep the queue in PostgreSQL (TestOnPostgres).
var onPostgres bool

// pgTestTTL is the lease length of the test nodes: short, so that
// takeovers happen within the tests.
const pgTestTTL = 1500 * time.Millisecond

// openTestPG opens a node's store on the database dsn.
func openTestPG(t testing.TB, dsn, spool string) *pgstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := pgstore.Open(ctx, pgstore.Options{DSN: dsn, Migrate: true, SpoolDir: spool, LockTTL: pgTestTTL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// TestOnPostgres runs queue tests written for the folder queue with the
// queue in PostgreSQL: delivery, pipelining, bounces and DSNs, local
// delivery, retries and backoff, expiry, delay warnings, the
// administrator's operations, crash recovery and DKIM signing behave
// the same.
func TestOnPostgres(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"DeliverBasic", TestDeliverBasic},
		{"PipeliningAndReuse", TestPipeliningAndReuse},
		{"Bounces", TestBounces},
		{"DSNParams", TestDSNParams},
		{"LocalRecipients", TestLocalRecipients},
		{"RetryTemporary", TestRetryTemporary},
		{"BackoffExpiryPOP3", TestBackoffExpiryPOP3},
		{"DelayWarning", TestDelayWarning},
		{"Operations", TestOperations},
		{"InterruptedRecovery", TestInterruptedRecovery},
		{"DKIMSignedDelivery", TestDKIMSignedDelivery},
		{"SignedOncePerKey", TestSignedOncePerKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			onPostgres = true
			defer func() { onPostgres = false }()
			before := pgEnvs.Load()
			tc.f(t)
			if pgEnvs.Load() == before {
				t.Fatal("the test did not run on PostgreSQL")
			}
		})
	}
}

// pgEnvs counts the queues newEnv opened on PostgreSQL, so that
// TestOnPostgres can check that the queue really was there.
var pgEnvs atomic.Int64

// pgEnv returns a queue env on PostgreSQL.
func pgEnv(t *testing.T, mod func(*Options)) *env {
	t.Helper()
	onPostgres = true
	defer func() { onPostgres = false }()
	return newEnv(t, mod)
}

// node opens another queue (another cluster node) on the database of e,
// with e's options.
func (e *env) node(t *testing.T, mod func(*Options)) *Queue {
	t.Helper()
	st := openTestPG(t, e.dsn, t.TempDir())
	o := e.opts
	if mod != nil {
		mod(&o)
	}
	q, err := OpenPG(st, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func testEntry(msgID string, rcpts ...string) *Entry {
	now := time.Now()
	e := &Entry{Version: entryVersion, ID: entryID(msgID, 1), MessageID: msgID, Domain: "remote.test", From: "alice@example.test",
		Size: 10, Arrival: now, Expires: now.Add(time.Hour), NextAttempt: now}
	for _, r := range rcpts {
		e.Recipients = append(e.Recipients, Recipient{Addr: r, Status: StatusPending})
	}
	return e
}

// TestPGClaimLease: a claim excludes every other node while its holder
// renews it; released, it can be taken; a node that stops renewing (it
// died) loses the entry after the lease, and its late writes are refused
// (fencing).
func TestPGClaimLease(t *testing.T) {
	dsn := pgtest.NewDB(t)
	ctx := context.Background()
	a := NewPGStore(openTestPG(t, dsn, t.TempDir()), nil)
	defer a.Close()
	b := NewPGStore(openTestPG(t, dsn, t.TempDir()), nil)
	defer b.Close()
	en := testEntry("M1", "bob@remote.test")
	if err := a.AddMessage(ctx, "M1", strings.NewReader("Subject: x\r\n\r\nhi\r\n"), []*Entry{en}); err != nil {
		t.Fatal(err)
	}
	relA, err := a.Claim(ctx, en.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Claim(ctx, en.ID); !errors.Is(err, ErrBusy) {
		t.Fatalf("second claim: %v", err)
	}
	if _, err := a.Claim(ctx, en.ID); !errors.Is(err, ErrBusy) {
		t.Fatalf("claim by the holder's node again: %v", err)
	}
	time.Sleep(2 * pgTestTTL) // renewed meanwhile
	if _, err := b.Claim(ctx, en.ID); !errors.Is(err, ErrBusy) {
		t.Fatalf("claim after the TTL of a renewed lease: %v", err)
	}
	if err := b.Update(ctx, en); err == nil {
		t.Fatal("update without a claim accepted")
	}
	relA()
	relB, err := b.Claim(ctx, en.ID)
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	_ = relB
	// b dies: its renewer stops, its lease is not released.
	b.Close()
	if _, err := a.Claim(ctx, en.ID); !errors.Is(err, ErrBusy) {
		t.Fatalf("claim of a fresh lease of a dead node: %v", err)
	}
	time.Sleep(pgTestTTL + 200*time.Millisecond)
	relA, err = a.Claim(ctx, en.ID)
	if err != nil {
		t.Fatalf("takeover after the lease: %v", err)
	}
	defer relA()
	en.Recipients[0].Status = StatusSent
	if err := b.Update(ctx, en); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("update by the node that lost the lease: %v", err)
	}
	if err := b.Remove(ctx, en); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("remove by the node that lost the lease: %v", err)
	}
	got, err := a.Get(ctx, en.ID)
	if err != nil || got.Recipients[0].Status != StatusPending {
		t.Fatalf("entry after the fenced update: %+v %v", got, err)
	}
	var addr, status string
	if err := a.pool.QueryRow(ctx, `SELECT address, status FROM queue_recipients WHERE entry_id = $1`, en.ID).Scan(&addr, &status); err != nil || addr != "bob@remote.test" || status != "pending" {
		t.Fatalf("queue_recipients: %q %q %v", addr, status, err)
	}
	if err := a.Remove(ctx, got); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(ctx, en.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after remove: %v", err)
	}
	if _, err := a.OpenMessage(ctx, "M1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("message after its last entry: %v", err)
	}
	rel, err := a.Claim(ctx, en.ID)
	if err != nil {
		t.Fatalf("claim of a removed entry: %v", err)
	}
	rel()
}

// TestPGTakeover: a node dies in the middle of an attempt, after the 250
// of one recipient was recorded; another node leaves the entry alone
// while the lease lasts, then takes it over and sends only to the
// recipient still pending.
func TestPGTakeover(t *testing.T) {
	e := pgEnv(t, nil)
	srv := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	e.enqueue("alice@example.test", []string{"bob@remote.test", "done@remote.test"}, envelope.DSNParams{}, simpleMsg("takeover"))
	ctx := context.Background()
	en := onlyEntry(t, e)
	if _, err := e.q.store.Claim(ctx, en.ID); err != nil {
		t.Fatal(err)
	}
	t0 := e.clock.Now()
	en.InFlight = &t0
	en.Attempts = []Attempt{{Start: t0}}
	en.Recipients[1].Status = StatusSent
	if err := e.q.store.Update(ctx, en); err != nil {
		t.Fatal(err)
	}
	e.q.store.(*PGStore).Close() // node A dies holding the claim
	b := e.node(t, nil)
	b.RunOnce(ctx)
	if m := srv.messages(); len(m) != 0 {
		t.Fatalf("delivered under a live lease: %+v", m)
	}
	time.Sleep(pgTestTTL + 200*time.Millisecond)
	b.RunOnce(ctx)
	m := srv.messages()
	if len(m) != 1 || strings.Join(m[0].rcpts, ",") != "bob@remote.test" {
		t.Fatalf("after takeover: %+v", m)
	}
	if l, err := b.List(ctx); err != nil || len(l) != 0 {
		t.Fatalf("entries left: %+v %v", l, err)
	}
}

// TestPGTwoNodes: two nodes work one queue at once; every recipient gets
// every message exactly once.
func TestPGTwoNodes(t *testing.T) {
	e := pgEnv(t, func(o *Options) { o.MaxPerDomain = 4 })
	srv := newServer(t, srvConfig{dataDone: func(int, string) string { time.Sleep(20 * time.Millisecond); return "" }})
	e.route("remote.test", srv)
	e.route("other.test", srv)
	b := e.node(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, q := range []*Queue{e.q, b} {
		wg.Go(func() { q.Run(ctx) })
	}
	defer func() { cancel(); wg.Wait() }()
	const n = 30
	for i := range n {
		q := []*Queue{e.q, b}[i%2]
		if _, err := q.Enqueue(context.Background(), "alice@example.test", []string{"bob@remote.test", "carol@other.test"}, envelope.DSNParams{}, strings.NewReader(simpleMsg(fmt.Sprintf("m%d", i)))); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		l, err := e.q.List(context.Background())
		if err == nil && len(l) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d entries left", len(l))
		}
		time.Sleep(50 * time.Millisecond)
	}
	count := map[string]int{}
	for _, m := range srv.messages() {
		subj := m.data[strings.Index(m.data, "Subject: ")+9:]
		subj = subj[:strings.Index(subj, "\r\n")]
		for _, r := range m.rcpts {
			count[subj+" "+r]++
		}
	}
	if len(count) != 2*n {
		t.Errorf("%d (message, recipient) pairs delivered, want %d", len(count), 2*n)
	}
	for k, c := range count {
		if c != 1 {
			t.Errorf("%s delivered %d times", k, c)
		}
	}
}

// TestPGNotifyWakes: a node whose worker would not look at the queue for
// an hour delivers at once what another node queued: NOTIFY wakes it.
func TestPGNotifyWakes(t *testing.T) {
	e := pgEnv(t, func(o *Options) { o.PollInterval = time.Hour; o.Clock = systemClock{} })
	srv := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.q.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	ps := e.q.store.(*PGStore)
	for i := 0; ps.Changed() == "0"; i++ { // listening
		if i > 500 {
			t.Fatal("not listening")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the worker's first scan is over
	b := e.node(t, nil)
	if _, err := b.Enqueue(context.Background(), "alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, strings.NewReader(simpleMsg("wake"))); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for len(srv.messages()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the worker did not wake")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPGDatabaseDown: while the database is unreachable, queueing fails
// (the intake answers 451) and the worker waits; when the database is
// back, the node delivers what another node queued, by itself.
func TestPGDatabaseDown(t *testing.T) {
	dsn := pgtest.NewDB(t)
	proxy := pgtest.NewProxy(t, pgtest.Addr(t))
	viaProxy := strings.Replace(dsn, pgtest.Addr(t), proxy.Addr(), 1) + "&connect_timeout=1"
	e := newEnvDSN(t, viaProxy, nil)
	srv := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.q.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("before"))
	waitMessages(t, srv, 1)
	proxy.Cut()
	ectx, ecancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err := e.q.Enqueue(ectx, "alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, strings.NewReader(simpleMsg("during")))
	ecancel()
	if err == nil {
		t.Fatal("queued while the database was unreachable")
	}
	time.Sleep(2 * time.Second) // the worker and the listener fail meanwhile
	proxy.Heal()
	other := openTestPG(t, dsn, t.TempDir())
	b, err := OpenPG(other, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Enqueue(context.Background(), "alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, strings.NewReader(simpleMsg("after"))); err != nil {
		t.Fatal(err)
	}
	waitMessages(t, srv, 2)
	if m := srv.messages(); !strings.Contains(m[1].data, "Subject: after") {
		t.Fatalf("second message %q", m[1].data)
	}
}

// pgEnvDSN, when set, is the database newEnv uses on PostgreSQL.
var pgEnvDSN string

// newEnvDSN returns a queue env on PostgreSQL in the database dsn.
func newEnvDSN(t *testing.T, dsn string, mod func(*Options)) *env {
	t.Helper()
	pgEnvDSN, onPostgres = dsn, true
	defer func() { pgEnvDSN, onPostgres = "", false }()
	return newEnv(t, mod)
}

func waitMessages(t *testing.T, srv *testServer, n int) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for len(srv.messages()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages delivered, want %d", len(srv.messages()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPGBodyStoredOnceNotCollected: the queued body is a blob of the mail
// store; the blob collector leaves it while the message is queued, and
// collects it once the message is gone.
func TestPGBodyStoredOnceNotCollected(t *testing.T) {
	e := pgEnv(t, nil)
	srv := newServer(t, srvConfig{rcpt: func(string) string { return "451 4.3.0 later" }})
	e.route("remote.test", srv)
	e.route("other.test", srv)
	id := e.enqueue("alice@example.test", []string{"bob@remote.test", "x@other.test"}, envelope.DSNParams{}, simpleMsg("gc"))
	ctx := context.Background()
	var blobs int
	if err := e.pg.Pool().QueryRow(ctx, `SELECT count(*) FROM blobs`).Scan(&blobs); err != nil || blobs != 1 {
		t.Fatalf("%d blobs for a message with two entries: %v", blobs, err)
	}
	collector, err := pgstore.Open(ctx, pgstore.Options{DSN: e.dsn, SpoolDir: t.TempDir(), BlobGrace: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer collector.Close()
	time.Sleep(20 * time.Millisecond)
	if n, err := collector.CollectBlobs(ctx, 10); err != nil || n != 0 {
		t.Fatalf("collected %d blobs of a queued message: %v", n, err)
	}
	rc, err := e.q.Message(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if n, err := e.q.Delete(ctx, id); err != nil || n != 2 {
		t.Fatalf("delete: %d %v", n, err)
	}
	time.Sleep(20 * time.Millisecond)
	if n, err := collector.CollectBlobs(ctx, 10); err != nil || n != 1 {
		t.Fatalf("collected %d blobs after the message left: %v", n, err)
	}
}

// BenchmarkPGEnqueue measures queueing a 10 KB message for two domains
// in PostgreSQL (blob, message and entries committed, NOTIFY sent).
func BenchmarkPGEnqueue(b *testing.B) {
	onPostgres = true
	e := newEnv(b, nil)
	onPostgres = false
	body := simpleMsg("bench") + strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n", 140)
	b.SetBytes(int64(len(body)))
	for i := 0; b.Loop(); i++ {
		msg := strings.Replace(body, "Subject: bench", fmt.Sprintf("Subject: bench %d", i), 1)
		if _, err := e.q.Enqueue(context.Background(), "alice@example.test", []string{"bob@remote.test", "carol@other.test"}, envelope.DSNParams{}, strings.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}

// cutDSN returns a new database and a DSN reaching it through a proxy
// that can cut it off.
func cutDSN(t *testing.T) (dsn, viaProxy string, proxy *pgtest.Proxy) {
	dsn = pgtest.NewDB(t)
	proxy = pgtest.NewProxy(t, pgtest.Addr(t))
	return dsn, strings.Replace(dsn, pgtest.Addr(t), proxy.Addr(), 1) + "&connect_timeout=1", proxy
}

// TestPGClaimContext: the context of a claim lives while its lease is
// renewed, and ends (cause ErrLeaseLost) before the lease expires when
// the database cannot be reached to renew it.
func TestPGClaimContext(t *testing.T) {
	dsn, viaProxy, proxy := cutDSN(t)
	ctx := context.Background()
	a := NewPGStore(openTestPG(t, viaProxy, t.TempDir()), nil)
	defer a.Close()
	b := NewPGStore(openTestPG(t, dsn, t.TempDir()), nil)
	defer b.Close()
	en := testEntry("M1", "bob@remote.test")
	if err := a.AddMessage(ctx, "M1", strings.NewReader("Subject: x\r\n\r\nhi\r\n"), []*Entry{en}); err != nil {
		t.Fatal(err)
	}
	cctx, release, err := a.ClaimContext(ctx, en.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	time.Sleep(2 * pgTestTTL)
	if err := cctx.Err(); err != nil {
		t.Fatalf("claim context of a renewed lease: %v", err)
	}
	proxy.Cut()
	select {
	case <-cctx.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("claim context alive after its lease could not be renewed")
	}
	if !errors.Is(context.Cause(cctx), ErrLeaseLost) {
		t.Fatalf("cause %v", context.Cause(cctx))
	}
	// It ended before the lease expired: the other node still finds it
	// held, then takes it.
	if _, err := b.Claim(ctx, en.ID); !errors.Is(err, ErrBusy) {
		t.Fatalf("claim while the lost lease lasts: %v", err)
	}
	time.Sleep(pgTestTTL)
	rel, err := b.Claim(ctx, en.ID)
	if err != nil {
		t.Fatalf("claim after the lease: %v", err)
	}
	rel()
}

// TestPGLeaseLostStopsDelivery: a node cut off from the database in the
// middle of an SMTP transaction stops it (rather than waiting for the
// remote server for the command timeout) before another node may take
// the entry over.
func TestPGLeaseLostStopsDelivery(t *testing.T) {
	_, viaProxy, proxy := cutDSN(t)
	e := newEnvDSN(t, viaProxy, func(o *Options) { o.CommandTimeout = 10 * time.Minute; o.DataDoneTimeout = 10 * time.Minute })
	srv := newServer(t, srvConfig{hang: "data-done"})
	e.route("remote.test", srv)
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("cut"))
	done := make(chan struct{})
	go func() { e.runOnce(); close(done) }()
	for i := 0; ; i++ {
		srv.mu.Lock()
		started := srv.dataStarted
		srv.mu.Unlock()
		if started > 0 {
			break
		}
		if i > 1000 {
			t.Fatal("the delivery did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	proxy.Cut()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the delivery went on after the claim was lost")
	}
}
