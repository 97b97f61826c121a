package fetch

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
)

func TestSplitHostPortOpt(t *testing.T) {
	for _, c := range []struct {
		in   string
		host string
		port int
		err  bool
	}{
		{"pop.example.test", "pop.example.test", 0, false},
		{"pop.example.test:995", "pop.example.test", 995, false},
		{"127.0.0.1:110", "127.0.0.1", 110, false},
		{"::1", "::1", 0, false},
		{"[::1]:995", "::1", 995, false},
		{"host:pop3", "", 0, true},
	} {
		h, p, err := SplitHostPortOpt(c.in)
		if (err != nil) != c.err || h != c.host || p != c.port {
			t.Errorf("SplitHostPortOpt(%q) = %q, %d, %v; want %q, %d, error %v", c.in, h, p, err, c.host, c.port, c.err)
		}
	}
}

// TestPasswordSource: the configured password, else the first line of
// password_command's output, run once; a failing command is an error.
func TestPasswordSource(t *testing.T) {
	if pw, err := PasswordSource(config.FetchAccount{Password: "plain"}, nil)(); pw != "plain" || err != nil {
		t.Errorf("password = %q, %v", pw, err)
	}
	dir := t.TempDir()
	count := filepath.Join(dir, "runs")
	src := PasswordSource(config.FetchAccount{PasswordCommand: "echo x >> " + count + "; printf 'secret\\r\\nsecond line\\n'"}, nil)
	for range 2 {
		if pw, err := src(); pw != "secret" || err != nil {
			t.Fatalf("password_command: %q, %v", pw, err)
		}
	}
	if runs, err := os.ReadFile(count); err != nil || string(runs) != "x\n" {
		t.Fatalf("password_command runs: %q, %v; want exactly one", runs, err)
	}
	var stderr bytes.Buffer
	_, err := PasswordSource(config.FetchAccount{PasswordCommand: "echo nope >&2; exit 3"}, &stderr)()
	if err == nil || !strings.Contains(err.Error(), "password_command") || !strings.Contains(stderr.String(), "nope") {
		t.Fatalf("failing password_command: err %v, stderr %q", err, stderr.String())
	}
}

// TestNewAccount: a configured account becomes an Account with its
// settings, its destination and a password source; a missing ca_file and
// a bad destination are errors.
func TestNewAccount(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	fa := config.FetchAccount{
		Name: "work", Server: "127.0.0.1", Port: 1995, Security: "tls", User: "alice", Password: "pw",
		Destination: "maildir:" + filepath.Join(cfg.DataDir, "Maildir"), Delete: true, DeleteAfterDays: 2,
		MaxSize: 1000, MaxMessages: 7, Timeout: config.D(5 * time.Second),
	}
	a, err := NewAccount(cfg, fa, nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "work" || a.Server != "127.0.0.1" || a.Port != 1995 || a.User != "alice" || !a.Delete ||
		a.DeleteAfter != 48*time.Hour || a.MaxSize != 1000 || a.MaxMessages != 7 || a.Timeout != 5*time.Second || a.Dest == nil {
		t.Fatalf("NewAccount = %+v", a)
	}
	if pw, err := a.Password(); pw != "pw" || err != nil {
		t.Fatalf("Password() = %q, %v", pw, err)
	}
	bad := fa
	bad.CAFile = "missing-ca.pem"
	if _, err := NewAccount(cfg, bad, nil); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Fatalf("missing ca_file: %v", err)
	}
	bad = fa
	bad.Destination = "ftp:somewhere"
	if _, err := NewAccount(cfg, bad, nil); err == nil {
		t.Fatal("bad destination accepted")
	}
	local := fa
	local.Destination = "local:alice@example.test"
	if _, err := NewAccount(cfg, local, nil); err == nil || !strings.Contains(err.Error(), "unknown user") {
		t.Fatalf("local destination of no user: %v", err)
	}
	db := cfg.OpenUsers(nil)
	db.Argon2 = auth.Argon2Parameters{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	h, err := db.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Add(context.Background(), "alice@example.test", h); err != nil {
		t.Fatal(err)
	}
	if a, err := NewAccount(cfg, local, nil); err != nil || a.Dest == nil {
		t.Fatalf("local destination: %v", err)
	}
}
