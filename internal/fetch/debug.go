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
//	intent           intent record durable
//	dot-lock         taking an mbox's dot-lock (each time, in Find and
//	                 Deliver): its temporary file written, not yet linked
//	deliver-partial  part of the message written at the destination: the
//	                 first 32 KiB in a Maildir's tmp/ file or the mbox
//	                 (flushed to the file); for a local mailbox, the
//	                 message spooled and not yet stored
//	delivered        message durable at the destination, no done record
//	done             done record durable
//	dele             DELE sent for a message (before QUIT)
//	quit             before QUIT
//	snapshot-tmp     new snapshot written, not yet renamed
//	snapshot         snapshot renamed into place, journal not yet removed
//
// It is for testing only; leave it unset.
const DebugKillEnv = "POSTINO_FETCH_DEBUG_KILL"

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
