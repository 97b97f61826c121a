package config

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// listenerOwner returns the process id and name of a process listening on
// TCP port (decimal), from /proc. Nothing is connected to. It returns
// 0 and "" when there is no /proc or the owner is not visible to this user.
func listenerOwner(port string) (pid int, name string) {
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, ""
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		listeningInodes(f, fmt.Sprintf("%04X", p), inodes)
	}
	if len(inodes) == 0 {
		return 0, ""
	}
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		id, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fdDir := filepath.Join("/proc", e.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
				comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
				return id, strings.TrimSpace(string(comm))
			}
		}
	}
	return 0, ""
}

// listeningInodes adds to inodes the socket inodes of the listening
// sockets on the hex port hexPort in the /proc/net/tcp-format file.
func listeningInodes(file, hexPort string, inodes map[string]bool) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode
		fl := strings.Fields(sc.Text())
		if len(fl) < 10 || fl[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		if _, p, ok := strings.Cut(fl[1], ":"); ok && p == hexPort {
			inodes[fl[9]] = true
		}
	}
}
