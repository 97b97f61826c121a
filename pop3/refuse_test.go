package pop3

import (
	"runtime"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestRefusedSilentConnections: with every session in use, connections
// that send nothing, not even a ClientHello on the implicit-TLS port,
// are all closed within the refusal deadline; those beyond the refusals
// allowed at a time are closed at once; no goroutine stays behind; and
// the session in use is untouched.
func TestRefusedSilentConnections(t *testing.T) {
	for _, mode := range []string{"plain", "tls"} {
		t.Run(mode, func(t *testing.T) {
			ts := startServer(t, func(s *Server) { s.MaxConnections = 1 })
			held := ts.openMode(t, mode)
			if held == nil {
				t.Fatal("the first session was refused")
			}
			addr := ts.addr
			if mode == "tls" {
				addr = ts.tlsAddr
			}
			before := runtime.NumGoroutine()
			const n = 200
			closed, atOnce := testutil.SilentFlood(t, addr, n, refuseTimeout+3*time.Second)
			t.Logf("%d of %d silent connections closed, %d at once", closed, n, atOnce)
			if closed != n {
				t.Fatalf("%d of %d silent connections closed within %v", closed, n, refuseTimeout+3*time.Second)
			}
			if mode == "tls" && atOnce < n-maxRefusing {
				t.Errorf("%d silent connections closed at once, want at least %d", atOnce, n-maxRefusing)
			}
			deadline := time.Now().Add(2 * time.Second)
			for runtime.NumGoroutine() > before+5 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if g := runtime.NumGoroutine(); g > before+5 {
				t.Errorf("%d goroutines after the flood, %d before", g, before)
			}
			if s := ts.Sessions(); s != 1 {
				t.Errorf("%d sessions, want the one held", s)
			}
			held.do("USER alice", `^\+OK`)
		})
	}
}
