package config

import (
	"bufio"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// listenerOwner returns the process id and name of a process listening on
// TCP port (decimal), from /proc, and the user name or id owning the
// socket. Nothing is connected to. pid is 0 and name "" when there is no
// /proc or the process is not visible to this user; owner is "" when
// unknown.
func listenerOwner(port string) (pid int, name, owner string) {
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return 0, "", ""
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		owner = listeningInodes(f, fmt.Sprintf("%04X", p), inodes, owner)
	}
	if owner != "" {
		if u, err := user.LookupId(owner); err == nil {
			owner = u.Username
		}
	}
	if len(inodes) == 0 {
		return 0, "", owner
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
				return id, strings.TrimSpace(string(comm)), owner
			}
		}
	}
	return 0, "", owner
}

// listeningInodes adds to inodes the socket inodes of the listening
// sockets on the hex port hexPort in the /proc/net/tcp-format file, and
// returns the uid owning the last one found (uid when there is none).
func listeningInodes(file, hexPort string, inodes map[string]bool, uid string) string {
	f, err := os.Open(file)
	if err != nil {
		return uid
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
			uid = fl[7]
		}
	}
	return uid
}
