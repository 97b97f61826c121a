package fetch

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
)

// countNewSyncs counts the fsyncs of the directory dir, made by the
// Maildir writer or by syncDir.
func countNewSyncs(t *testing.T, dir string) func() int {
	var mu sync.Mutex
	n := 0
	note := func(d string) {
		if filepath.Clean(d) == dir {
			mu.Lock()
			n++
			mu.Unlock()
		}
	}
	old := syncDirFunc
	syncDirFunc = func(d string) error {
		note(d)
		return old(d)
	}
	dirSynced = note
	t.Cleanup(func() { syncDirFunc, dirSynced = old, nil })
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// TestBatchLimits: messages are delivered to a Maildir in batches of at
// most batchMessages messages and batchBytes octets, and new/ is fsync'd
// once per batch, not once per message; every message arrives once and
// the server is emptied (delete policy). Over cleartext, STARTTLS and
// implicit TLS.
func TestBatchLimits(t *testing.T) {
	big := func(id string) []byte {
		return append(fakeMessage(id), bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"), batchBytes/2/64+1000)...)
	}
	cases := []struct {
		name      string
		msgs      []fakeMsg
		wantSyncs int
	}{
		{"one message", []fakeMsg{{uidl: "u1", data: fakeMessage("1")}}, 1},
		{"by count", func() []fakeMsg {
			var ms []fakeMsg
			for i := range batchMessages + 6 {
				ms = append(ms, fakeMsg{uidl: fmt.Sprintf("u%d", i), data: fakeMessage(fmt.Sprint(i))})
			}
			return ms
		}(), 2},
		// Each over half of batchBytes: two per batch.
		{"by size", []fakeMsg{{uidl: "b1", data: big("b1")}, {uidl: "b2", data: big("b2")}, {uidl: "b3", data: big("b3")}}, 2},
	}
	for _, sec := range []Security{SecurityNone, SecurityStartTLS, SecurityTLS} {
		for _, tc := range cases {
			t.Run(string(sec)+"/"+tc.name, func(t *testing.T) {
				srv := startFakePOP(t, sec, tc.msgs...)
				dir := t.TempDir()
				a := srv.account(sec, dir)
				syncs := countNewSyncs(t, filepath.Join(dir, "Maildir", "new"))
				res, log := runFetch(t, a, t.TempDir(), true)
				if res.New != len(tc.msgs) || srv.count() != 0 {
					t.Fatalf("%+v, %d left on the server, want %d delivered and none left\n%s", res, srv.count(), len(tc.msgs), log)
				}
				if got := len(maildirFiles(t, dir)); got != len(tc.msgs) {
					t.Fatalf("new/ holds %d messages, want %d", got, len(tc.msgs))
				}
				if got := syncs(); got != tc.wantSyncs {
					t.Errorf("new/ fsync'd %d times for %d messages, want %d (once per batch)", got, len(tc.msgs), tc.wantSyncs)
				}
			})
		}
	}
}

// TestMaildirFindSyncs: a message whose delivery was deferred (renamed
// into new/, new/ not yet fsync'd, as a kill before the batch's fsync
// leaves it) is found, and Find fsyncs new/ before reporting it, so that
// the done record written next cannot outlive the copy.
func TestMaildirFindSyncs(t *testing.T) {
	d := &Maildir{Dir: filepath.Join(t.TempDir(), "md")}
	ctx := context.Background()
	m := spoolString(t, sample)
	syncs := countNewSyncs(t, filepath.Join(d.Dir, "new"))
	where, err := d.DeliverDeferred(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if got := syncs(); got != 0 {
		t.Fatalf("a deferred delivery fsync'd new/ %d times", got)
	}
	res, w, err := d.Find(ctx, m.Want())
	if err != nil || res != Found || w != where {
		t.Fatalf("Find = %v %q %v, want Found %q", res, w, err, where)
	}
	if got := syncs(); got != 1 {
		t.Errorf("Find fsync'd new/ %d times, want once", got)
	}
}

// failingMaildir is a Maildir whose failOn-th delivery fails.
type failingMaildir struct {
	*Maildir
	failOn, n int
}

func (d *failingMaildir) DeliverDeferred(ctx context.Context, m *Message) (string, error) {
	d.n++
	if d.n == d.failOn {
		return "", fmt.Errorf("%w: disk full (test)", ErrDestination)
	}
	return d.Maildir.DeliverDeferred(ctx, m)
}

// TestBatchDeliveryFails: the third delivery of a batch of five fails. The
// two before it are synced and recorded as done, the others are abandoned
// (none left pending), the run ends with the delivery exit code and
// deletes nothing; the next run delivers the other three, each once.
func TestBatchDeliveryFails(t *testing.T) {
	for _, sec := range []Security{SecurityNone, SecurityStartTLS, SecurityTLS} {
		t.Run(string(sec), func(t *testing.T) {
			var msgs []fakeMsg
			for i := 1; i <= 5; i++ {
				msgs = append(msgs, fakeMsg{uidl: fmt.Sprintf("u%d", i), data: fakeMessage(fmt.Sprint(i))})
			}
			srv := startFakePOP(t, sec, msgs...)
			dir, state := t.TempDir(), t.TempDir()
			a := srv.account(sec, dir)
			a.Delete = true
			md := a.Dest.(*Maildir)
			a.Dest = &failingMaildir{Maildir: md, failOn: 3}
			syncs := countNewSyncs(t, filepath.Join(md.Dir, "new"))
			var log bytes.Buffer
			f := &Fetcher{StateDir: state, Logger: slog.New(slog.NewTextHandler(&log, nil))}
			res, err := f.Run(context.Background(), a)
			if code := ExitCode(res.New, err); code != ExitDelivery || res.New != 2 {
				t.Fatalf("failing run: %+v, %v (exit %d), want 2 delivered and exit %d\n%s", res, err, code, ExitDelivery, log.String())
			}
			if srv.count() != 5 {
				t.Fatalf("the failing run deleted %d messages", 5-srv.count())
			}
			if got := syncs(); got != 1 {
				t.Errorf("new/ fsync'd %d times before the done records, want once", got)
			}
			st, err := OpenState(state, "acct")
			if err != nil {
				t.Fatal(err)
			}
			for k, rec := range st.State.Messages {
				want := k == "u1" || k == "u2"
				if rec.Pending || rec.Delivered() != want {
					t.Errorf("%s after the failure: %+v, delivered want %v, nothing pending", k, rec, want)
				}
			}
			st.Close()
			a.Dest = md
			if res, log := runFetch(t, a, state, true); res.New != 3 || srv.count() != 0 {
				t.Fatalf("second run: %+v, %d on the server\n%s", res, srv.count(), log)
			}
			for id, n := range subjects(t, dir) {
				if n != 1 {
					t.Errorf("message %s delivered %d times", id, n)
				}
			}
			if got := len(subjects(t, dir)); got != 5 {
				t.Errorf("%d distinct messages delivered, want 5", got)
			}
		})
	}
}
