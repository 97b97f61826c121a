package fsutil

import "sync"

// SyncGroup shares directory fsyncs between concurrent callers (group
// commit, as databases do with their log): a caller that has just renamed a
// file into a directory calls Sync and returns once a sync of that
// directory that STARTED after its call has completed, but callers that
// arrive while one sync runs are all served by the next single sync. With
// N sessions delivering into one directory, the directory is fsync'd about
// once per sync duration instead of N times.
//
// Each key (a directory) has a sync generation counter: started counts the
// syncs begun, done the syncs completed. A caller arriving when started is
// s needs generation s+1 (generation s, if it is running, may have begun
// before the caller's rename), and returns when done reaches s+1. Syncs of
// one key never overlap; syncs of different keys are independent.
//
// The zero SyncGroup is ready to use. Keys are forgotten when no caller
// uses them, so the group does not grow with the number of directories.
type SyncGroup struct {
	mu   sync.Mutex
	dirs map[string]*syncState
}

// syncState is the sync generation counter of one key, guarded by the
// group's mutex.
type syncState struct {
	cond    sync.Cond
	started uint64 // syncs begun
	done    uint64 // syncs completed (done == started or started-1)
	running bool
	err     error // outcome of sync number done
	users   int   // callers in Sync for this key
}

// Sync returns once a call of sync for key that started after Sync was
// called has completed, and that call's error. Concurrent callers of one key
// share calls of sync: at most one runs at a time, and every caller that
// arrived while it ran is served by the next one. sync must make durable
// what was done before it began (fsync of the directory named by key).
//
// The error returned is that of a completed sync that began after the call
// (normally the first one; a caller woken late may see a later one's): any
// of them covers what the caller did before calling.
func (g *SyncGroup) Sync(key string, sync func() error) error {
	g.mu.Lock()
	if g.dirs == nil {
		g.dirs = make(map[string]*syncState)
	}
	st := g.dirs[key]
	if st == nil {
		st = &syncState{}
		st.cond.L = &g.mu
		g.dirs[key] = st
	}
	st.users++
	// The sync to wait for: the next one to begin. One running now may
	// have begun before the caller's own change.
	target := st.started + 1
	var err error
	for {
		if st.done >= target {
			// Syncs complete one at a time, in order, and every caller
			// is woken at each completion, so done == target here
			// unless the caller was woken late; any completed sync
			// numbered target or later began after the call.
			err = st.err
			break
		}
		if !st.running {
			// Not running and not done: started == done < target, so
			// the sync begun now is number target (or later): it begins
			// after the call.
			st.running = true
			st.started++
			g.mu.Unlock()
			serr := sync()
			g.mu.Lock()
			st.done = st.started
			st.err = serr
			st.running = false
			st.cond.Broadcast()
			err = serr
			break
		}
		st.cond.Wait()
	}
	st.users--
	if st.users == 0 {
		delete(g.dirs, key)
	}
	g.mu.Unlock()
	return err
}

// Callers returns how many callers are in Sync for key: the one running
// its sync, if any, and those waiting for it or for the next one.
func (g *SyncGroup) Callers(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st := g.dirs[key]; st != nil {
		return st.users
	}
	return 0
}
