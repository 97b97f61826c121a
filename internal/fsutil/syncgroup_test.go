package fsutil

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 10000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// Every caller returns only after a sync that began after its own call
// completed, syncs of one key never overlap, and concurrent callers share
// syncs.
func TestSyncGroupEachCallerWaitsForASyncStartedAfterItsCall(t *testing.T) {
	var (
		g       SyncGroup
		clock   atomic.Int64 // orders every event
		running atomic.Int32
		mu      sync.Mutex
		syncs   [][2]int64 // start, end
	)
	fake := func() error {
		if running.Add(1) != 1 {
			t.Error("two syncs of one key overlap")
		}
		start := clock.Add(1)
		time.Sleep(200 * time.Microsecond)
		end := clock.Add(1)
		running.Add(-1)
		mu.Lock()
		syncs = append(syncs, [2]int64{start, end})
		mu.Unlock()
		return nil
	}
	const goroutines, rounds = 32, 50
	type call struct{ before, after int64 }
	calls := make([][]call, goroutines)
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Go(func() {
			for range rounds {
				before := clock.Add(1)
				if err := g.Sync("new", fake); err != nil {
					t.Error(err)
				}
				calls[i] = append(calls[i], call{before, clock.Add(1)})
			}
		})
	}
	wg.Wait()
	for i, cs := range calls {
		for _, c := range cs {
			ok := false
			for _, s := range syncs {
				if s[0] > c.before && s[1] < c.after {
					ok = true
					break
				}
			}
			if !ok {
				t.Fatalf("goroutine %d: call at %d returned at %d without a whole sync in between", i, c.before, c.after)
			}
		}
	}
	total := goroutines * rounds
	if len(syncs) >= total {
		t.Errorf("%d syncs for %d calls: none shared", len(syncs), total)
	}
	t.Logf("%d calls, %d syncs", total, len(syncs))
	if n := len(g.dirs); n != 0 {
		t.Errorf("%d keys left in the group", n)
	}
}

// Callers that arrive while a sync runs wait for the next one (the running
// one may have begun before their change) and all share it.
func TestSyncGroupLateArrivalsShareTheNextSync(t *testing.T) {
	var g SyncGroup
	var calls atomic.Int32
	release := make(chan struct{})
	fake := func() error {
		if calls.Add(1) == 1 {
			<-release
		}
		return nil
	}
	first := make(chan error, 1)
	go func() { first <- g.Sync("d", fake) }()
	waitFor(t, "the first sync to begin", func() bool { return calls.Load() == 1 })
	const late = 10
	errs := make(chan error, late)
	for range late {
		go func() { errs <- g.Sync("d", fake) }()
	}
	waitFor(t, "the late callers to wait", func() bool { return g.Callers("d") == late+1 })
	select {
	case <-errs:
		t.Fatal("a late caller returned while the sync begun before its call still ran")
	default:
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range late {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("%d syncs, want 2 (the running one, then one for all %d late callers)", n, late)
	}
}

// A failed sync fails every caller it serves.
func TestSyncGroupErrorReachesEveryWaiter(t *testing.T) {
	var g SyncGroup
	boom := errors.New("EIO")
	var calls atomic.Int32
	release := make(chan struct{})
	fake := func() error {
		if calls.Add(1) == 1 {
			<-release
			return nil
		}
		return boom
	}
	first := make(chan error, 1)
	go func() { first <- g.Sync("d", fake) }()
	waitFor(t, "the first sync to begin", func() bool { return calls.Load() == 1 })
	errs := make(chan error, 5)
	for range 5 {
		go func() { errs <- g.Sync("d", fake) }()
	}
	waitFor(t, "the late callers to wait", func() bool { return g.Callers("d") == 6 })
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first caller: %v", err)
	}
	for range 5 {
		if err := <-errs; !errors.Is(err, boom) {
			t.Fatalf("late caller: %v, want %v", err, boom)
		}
	}
}

// Keys are independent: a slow sync of one directory does not hold up
// another's.
func TestSyncGroupKeysAreIndependent(t *testing.T) {
	var g SyncGroup
	release := make(chan struct{})
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- g.Sync("a", func() error { close(started); <-release; return nil })
	}()
	<-started
	var bCalls int
	if err := g.Sync("b", func() error { bCalls++; return nil }); err != nil {
		t.Fatal(err)
	}
	if bCalls != 1 {
		t.Fatalf("key b synced %d times, want 1", bCalls)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
