package main

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestServeInProcess runs "postino serve" in-process on loopback ports:
// it prints the banner with every listener, answers on them, reloads on
// SIGHUP and exits 0 on SIGTERM.
func TestServeInProcess(t *testing.T) {
	t.Setenv("POSTINO_CONFIG", "")
	t.Chdir(t.TempDir())
	data := filepath.Join(t.TempDir(), "data")
	var stdout, stderr testutil.SyncBuffer
	sigs := make(chan os.Signal, 1)
	env := &cmdEnv{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, signals: sigs}
	done := make(chan int, 1)
	go func() {
		done <- run(env, []string{"serve", "--data", data, "--hostname", "mail.example.test",
			"--pop3", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--smtp", "127.0.0.1:0",
			"--submission", "127.0.0.1:0", "--submissions", "127.0.0.1:0", "--lmtp", "127.0.0.1:0"})
	}()
	testutil.WaitFor(t, 30*time.Second, "the banner", func() bool { return strings.Contains(stdout.String(), "users in") })
	out := stdout.String()
	addr := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^  (\S+)\s+(127\.0\.0\.1:\d+)$`).FindAllStringSubmatch(out, -1) {
		addr[m[1]] = m[2]
	}
	for name, greeting := range map[string]string{"pop3": "+OK", "smtp": "220 ", "submission": "220 ", "lmtp": "220 "} {
		c, err := net.DialTimeout("tcp", addr[name], 5*time.Second)
		if err != nil {
			t.Fatalf("%s (%q in the banner): %v\n%s", name, addr[name], err, out)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		l, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil || !strings.HasPrefix(l, greeting) {
			t.Errorf("%s greeting %q, %v; want %s", name, l, err, greeting)
		}
	}
	if !strings.Contains(out, "TLS: self-signed certificate, SHA-256 fingerprint") || addr["pop3s"] == "" || addr["submissions"] == "" {
		t.Errorf("banner:\n%s", out)
	}
	sigs <- syscall.SIGHUP
	testutil.WaitFor(t, 10*time.Second, "the reload", func() bool { return strings.Contains(stderr.String(), "user database reloaded") })
	sigs <- syscall.SIGTERM
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("serve exited %d after SIGTERM\n%s", code, stderr.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
	if c, err := net.DialTimeout("tcp", addr["pop3"], time.Second); err == nil {
		c.Close()
		t.Fatal("POP3 still listening after serve returned")
	}
}

// TestServeListenFailure: a port that is taken makes serve exit 78
// (EX_CONFIG) naming the listener, without serving.
func TestServeListenFailure(t *testing.T) {
	t.Setenv("POSTINO_CONFIG", "")
	t.Chdir(t.TempDir())
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	code, _, errs := runCmd(t, "", "serve", "--data", filepath.Join(t.TempDir(), "data"),
		"--pop3", busy.Addr().String(), "--pop3s", "", "--smtp", "", "--submission", "", "--submissions", "")
	if code != exitConfigError || !strings.Contains(errs, "pop3: cannot listen on "+busy.Addr().String()) {
		t.Fatalf("serve on a busy port = %d, %q", code, errs)
	}
}
