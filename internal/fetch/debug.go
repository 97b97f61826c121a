package fetch

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// DebugKillEnv names the environment variable of the crash-test hook. Its
// value is "STEP" or "STEP:N": the process kills itself with SIGKILL the
// N-th time (default the first) it reaches the named step, exactly as an
// outside kill at that instant would. Tests use it to prove that no step
// boundary loses or duplicates a message. The steps, in the order a
// message passes them:
//
//	spooled          message downloaded to the spool, no intent yet
//	                 (once per message)
//	intent           the intent records of a batch durable, none of its
//	                 messages delivered yet (once per batch)
//	dot-lock         taking an mbox's dot-lock (each time, in Find and
//	                 Deliver): its temporary file written, not yet linked
//	deliver-partial  part of the message written at the destination: the
//	                 first 32 KiB in a Maildir's tmp/ file or the mbox
//	                 (flushed to the file); for a local mailbox, the
//	                 message spooled and not yet stored
//	delivered        message stored at the destination, no done record
//	                 (once per message); in a Maildir its file is
//	                 fsync'd and renamed into new/, new/ not yet fsync'd
//	synced           a Maildir's new/ fsync'd for the batch, no done
//	                 record yet (once per batch, Maildir only)
//	done             the done records of a batch durable (once per batch)
//	dele             a DELE answered (before QUIT)
//	quit             before QUIT
//	snapshot-tmp     new snapshot written, not yet renamed
//	snapshot         snapshot renamed into place, journal not yet removed
//
// It is for testing only; leave it unset.
const DebugKillEnv = "POSTINO_FETCH_DEBUG_KILL"

// DebugBatchEnv names the environment variable that sets, for crash
// tests, the number of messages in a delivery batch (default 64), so that
// a few messages make several batches. It is for testing only.
const DebugBatchEnv = "POSTINO_FETCH_DEBUG_BATCH"

var debug struct {
	once  sync.Once
	step  string
	nth   int
	count int
	mu    sync.Mutex
}

func debugInit() {
	debug.once.Do(func() {
		v := os.Getenv(DebugKillEnv)
		if v == "" {
			return
		}
		name, n, _ := strings.Cut(v, ":")
		debug.step, debug.nth = name, 1
		if k, err := strconv.Atoi(n); err == nil && k > 0 {
			debug.nth = k
		}
	})
}

// debugArmed reports whether the crash-test hook names step, so that the
// step can first make its partial state visible (flush its buffers to the
// file), as a crash at that instant of an unbuffered writer would leave it.
func debugArmed(step string) bool {
	debugInit()
	return debug.step != "" && debug.step == step
}

// debugPoint kills the process if the crash-test hook names this step.
func debugPoint(step string) {
	debugInit()
	if debug.step == "" || debug.step != step {
		return
	}
	debug.mu.Lock()
	debug.count++
	hit := debug.count == debug.nth
	debug.mu.Unlock()
	if hit {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // not reached
	}
}
