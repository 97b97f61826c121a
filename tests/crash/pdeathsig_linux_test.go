//go:build linux

package crash

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill the child if the test process dies,
// so that no server outlives an aborted test run.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
