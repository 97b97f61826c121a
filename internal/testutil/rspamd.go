package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The GTUBE test strings rspamd knows (options.enable_test_patterns):
// a message holding one gets the action named, whatever else it holds.
const (
	// GTUBE makes rspamd reject the message.
	GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	// GTUBEAddHeader makes rspamd's action "add header" (spam, tagged).
	GTUBEAddHeader = "YJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
	// GTUBERewriteSubject makes rspamd's action "rewrite subject".
	GTUBERewriteSubject = "ZJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
)

// Rspamd is a real rspamd (Debian's package) whose proxy worker speaks
// the milter protocol on a loopback port, scanning mail itself
// (self_scan), configured by the test in a temporary folder. Its DNS
// server is a dead loopback port and no module that queries the network
// is loaded, so it never leaves the machine.
type Rspamd struct {
	// Addr is the milter's "127.0.0.1:port".
	Addr string
	dir  string
	proc *Process
	logs *SyncBuffer
}

// StartRspamd starts rspamd. It stops when the test ends. A missing
// rspamd fails the test under CI=true and skips it elsewhere.
func StartRspamd(t testing.TB) *Rspamd {
	t.Helper()
	bin := NeedProgram(t, "rspamd")
	dir := t.TempDir()
	addr := FreeAddrs(t, 1)[0]
	dead := FreeAddrs(t, 1)[0]
	conf := fmt.Sprintf(`options {
	pidfile = "%[1]s/rspamd.pid";
	enable_test_patterns = true;
	filters = "milter_headers";
	dns { nameserver = ["%[3]s"]; timeout = 0.2s; retransmits = 1; }
	local_addrs = [];
	hs_cache_dir = "%[1]s";
	tempdir = "%[1]s";
}
logging { type = "file"; filename = "%[1]s/rspamd.log"; level = "info"; }
actions { reject = 15; rewrite_subject = 8; add_header = 6; }
lua = "%[1]s/test.lua";
modules { path = "$PLUGINSDIR"; }
milter_headers {
	use = ["x-spam-status", "x-rspamd-score"];
	skip_local = false;
	skip_authenticated = false;
}
worker "rspamd_proxy" {
	bind_socket = "%[2]s";
	milter = yes;
	self_scan = yes;
	count = 1;
	timeout = 60s;
	spam_header = "X-Spam";
	upstream "local" { default = yes; self_scan = yes; }
}
`, dir, addr, dead)
	// Debian's rules (rspamd.lua; no module is configured, so none
	// queries the network) and a rule of the test's own: a Subject containing "rspamd-score-N"
	// (N a number) adds N to the score, for mail in any band.
	rule := `dofile(rspamd_paths["RULESDIR"] .. "/rspamd.lua")
rspamd_config:register_symbol({
  name = 'POSTINO_TEST_SCORE',
  score = 1.0,
  callback = function(task)
    local s = task:get_header('Subject') or ''
    local n = s:match('rspamd%-score%-([%d%.]+)')
    if n then return true, tonumber(n), n end
    return false
  end
})
`
	if err := os.WriteFile(filepath.Join(dir, "test.lua"), []byte(rule), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "rspamd.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &SyncBuffer{}
	// -i: the test may run as root, which rspamd refuses otherwise.
	cmd := exec.Command(bin, "-c", file, "-f", "-i", "-u", "root", "-g", "root",
		"--var", "DBDIR="+dir, "--var", "RUNDIR="+dir, "--var", "LOGDIR="+dir)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p, err := StartProcess(cmd)
	if err != nil {
		t.Fatalf("starting rspamd: %v", err)
	}
	r := &Rspamd{Addr: addr, dir: dir, proc: p, logs: logs}
	t.Cleanup(r.Stop)
	// rspamd compiles its URL and language tables first: ~10 s.
	ok := p.Poll(60*time.Second, 100*time.Millisecond, func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	if !ok {
		log, _ := os.ReadFile(filepath.Join(dir, "rspamd.log"))
		t.Fatalf("rspamd did not listen on %s\n%s\n%s", addr, logs.String(), log)
	}
	return r
}

// Stop stops rspamd and its workers (its process group) and waits for it.
// The milter address then refuses connections.
func (r *Rspamd) Stop() {
	if r.proc.Exited() {
		return
	}
	syscall.Kill(-r.proc.Cmd.Process.Pid, syscall.SIGTERM)
	if _, ok := r.proc.Wait(10 * time.Second); !ok {
		syscall.Kill(-r.proc.Cmd.Process.Pid, syscall.SIGKILL)
		<-r.proc.Done()
	}
}

// Log returns rspamd's log file, for failure messages.
func (r *Rspamd) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "rspamd.log"))
	return string(b) + r.logs.String()
}
