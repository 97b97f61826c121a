package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/postino-mail/postino/internal/config"
)

// listenAddrs returns every configured listener address.
func listenAddrs(cfg *config.Config) []string {
	var out []string
	for _, a := range []string{cfg.POP3.Listen, cfg.POP3.ListenTLS, cfg.SMTP.Listen, cfg.SMTP.Submission, cfg.SMTP.Submissions, cfg.SMTP.LMTP, cfg.Admin.Listen} {
		if a != "" {
			out = append(out, a)
		}
	}
	return out
}

// isLoopbackAddr reports whether a listen address only accepts
// connections from this machine: a loopback IP, "localhost" or a unix
// socket.
func isLoopbackAddr(addr string) bool {
	if strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "unix:") {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkPrivileges refuses to serve the network as root without a run_as
// user, and warns when root serves loopback only.
func checkPrivileges(cfg *config.Config, logger *slog.Logger) error {
	if os.Geteuid() != 0 || cfg.RunAs != "" {
		return nil
	}
	for _, a := range listenAddrs(cfg) {
		if !isLoopbackAddr(a) {
			return fmt.Errorf("refusing to listen on %s as root: set run_as to an unprivileged user (for example run_as = \"postino\")", a)
		}
	}
	logger.Warn("running as root with loopback listeners only; set run_as to drop privileges")
	return nil
}

// dropPrivileges switches to the run_as user once the listeners are open,
// handing it the data folder first.
func dropPrivileges(cfg *config.Config, logger *slog.Logger) error {
	if cfg.RunAs == "" || os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup(cfg.RunAs)
	if err != nil {
		return fmt.Errorf("run_as: %w", err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("run_as %s: %w", cfg.RunAs, err)
	}
	if uid == 0 {
		return fmt.Errorf("run_as %s: that is root", cfg.RunAs)
	}
	if err := chownTree(cfg.DataDir, uid, gid); err != nil {
		return fmt.Errorf("handing %s to %s: %w", cfg.DataDir, cfg.RunAs, err)
	}
	// Go applies these to every thread of the process (Linux, Go ≥ 1.16).
	if err := syscall.Setgroups([]int{gid}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	logger.Info("dropped privileges", "user", cfg.RunAs, "uid", uid, "gid", gid)
	return nil
}

// chownTree gives the data folder to uid:gid. It walks the tree only when
// the folder itself is not owned by uid yet (a first start as root), so a
// large mail store is not walked at every start.
func chownTree(dir string, uid, gid int) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// becomeDataOwner makes a command run as root (deliver, user) act as the
// owner of the data folder when that is not root, so that the files it
// writes stay readable by a server that dropped its privileges.
func becomeDataOwner(cfg *config.Config) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(cfg.DataDir)
	if err != nil {
		return nil // created later, as root: nothing to match yet
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	if err := syscall.Setgroups([]int{int(st.Gid)}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(int(st.Gid)); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(int(st.Uid)); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	return nil
}
