package fetch

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill cmd when postino dies.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
