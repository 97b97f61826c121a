package maildir

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DebugKillEnv names the environment variable of the crash-test hook of
// the shared fsync of new/. Its value is "W" or "W:N", W at least 2 and N
// (default 1) at least 1: from the N-th fsync of a Maildir's new/ in this
// process on, the first time one is about to begin while W deliveries (this
// fsync's own and W-1 others, every one with its message already renamed
// into new/ and none answered yet) wait for it or for the next one, the
// process writes a line saying so to its standard error and kills itself
// with SIGKILL, exactly as an outside kill at that instant would. Should W
// deliveries not gather within a second, the fsync goes ahead and the next
// one tries again. Tests use it to prove that a crash while sessions share
// an fsync loses no acknowledged message.
//
// It is for testing only; leave it unset.
const DebugKillEnv = "POSTINO_MAILDIR_DEBUG_KILL"

var debugKill struct {
	once    sync.Once
	waiters int // 0: the hook is off
	from    int64
	syncs   atomic.Int64 // fsyncs of new/ begun
}

// debugSyncPoint is called at the start of each fsync of new/ (key is the
// directory's key in newDirSyncs); it kills the process when the hook of
// DebugKillEnv asks for it.
func debugSyncPoint(key string) {
	debugKill.once.Do(func() {
		w, n, _ := strings.Cut(os.Getenv(DebugKillEnv), ":")
		waiters, err := strconv.Atoi(w)
		if err != nil || waiters < 2 {
			return
		}
		debugKill.waiters, debugKill.from = waiters, 1
		if from, err := strconv.ParseInt(n, 10, 64); err == nil && from > 1 {
			debugKill.from = from
		}
	})
	if debugKill.waiters == 0 || debugKill.syncs.Add(1) < debugKill.from {
		return
	}
	deadline := time.Now().Add(time.Second)
	for {
		n := newDirSyncs.Callers(key)
		if n >= debugKill.waiters {
			fmt.Fprintf(os.Stderr, "maildir: %s: killing the process during an fsync of %s shared by %d deliveries\n", DebugKillEnv, key, n)
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // not reached
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
