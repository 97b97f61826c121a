package fetch

import (
	"bytes"
	"context"
	"fmt"
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
