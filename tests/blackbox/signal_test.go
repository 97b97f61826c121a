package blackbox

import (
	"bufio"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMRightAfterBanner: a SIGTERM sent the moment serve prints its
// first line is a graceful stop (exit 0), never the default action of the
// signal: serve catches signals before it opens its listeners and writes
// the banner.
func TestSIGTERMRightAfterBanner(t *testing.T) {
	for i := range 20 {
		cmd := exec.Command(binPath, "serve", "--data", t.TempDir(),
			"--pop3", "127.0.0.1:0", "--pop3s", "", "--smtp", "", "--submission", "", "--submissions", "")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: no banner: %v", i, err)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("round %d: serve did not stop after SIGTERM", i)
		}
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("round %d: exit %d after a SIGTERM right after the banner (%v), want 0", i, code, cmd.ProcessState)
		}
	}
}
