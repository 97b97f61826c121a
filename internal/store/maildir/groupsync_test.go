package maildir

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Concurrent deliveries into one mailbox share the fsyncs of new/, and
// each returns only after an fsync of new/ that began with its own file
// already renamed into new/ has completed.
func TestConcurrentDeliveriesShareTheSyncOfNew(t *testing.T) {
	s, root := newTestStore(t)
	ctx := context.Background()
	// The Maildir exists before the measured deliveries.
	if _, err := s.Deliver(ctx, testBox, strings.NewReader("Subject: first\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	newDir := filepath.Join(maildirPath(root), "new")
	var (
		mu     sync.Mutex
		syncs  int
		synced []map[string]bool // names in new/ when each completed fsync began
	)
	old := syncDirFunc
	t.Cleanup(func() { syncDirFunc = old })
	syncDirFunc = func(r *os.Root, rel string) error {
		entries, err := os.ReadDir(newDir)
		if err != nil {
			return err
		}
		names := make(map[string]bool, len(entries))
		for _, e := range entries {
			names[strings.SplitN(e.Name(), ",", 2)[0]] = true
		}
		time.Sleep(5 * time.Millisecond) // a slow disk: callers pile up
		err = old(r, rel)
		mu.Lock()
		syncs++
		synced = append(synced, names)
		mu.Unlock()
		return err
	}
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			uid, err := s.Deliver(ctx, testBox, strings.NewReader("Subject: concurrent\r\n\r\nbody\r\n"))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, names := range synced {
				if names[uid] {
					return
				}
			}
			t.Errorf("delivery %d (%s) returned before an fsync of new/ begun after its rename completed", i, uid)
		})
	}
	wg.Wait()
	if syncs >= n {
		t.Errorf("%d fsyncs of new/ for %d concurrent deliveries: none shared", syncs, n)
	}
	if syncs == 0 {
		t.Error("new/ never fsync'd")
	}
	t.Logf("%d deliveries, %d fsyncs of new/", n, syncs)
	entries, err := os.ReadDir(newDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n+1 {
		t.Errorf("%d messages in new/, want %d", len(entries), n+1)
	}
}
