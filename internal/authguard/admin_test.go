package authguard

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// startAdmin serves g's admin socket in a temporary folder.
func startAdmin(t *testing.T, g *Guard) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), AdminSocketName)
	l, err := ListenAdmin(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.ServeAdmin(ctx, l, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeAdmin: %v", err)
		}
	})
	return path
}

// TestAdminListAndLift: through the socket, a blocked address is listed
// with its end and lifted; the guard lets it in at once.
func TestAdminListAndLift(t *testing.T) {
	g := &Guard{MaxFailures: 2, BaseDelay: -1}
	blockAddr(t, g, "192.0.2.5:1")
	path := startAdmin(t, g)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v, want 0600", fi.Mode(), err)
	}
	ctx := context.Background()
	got, err := AdminList(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	want := g.Blocks()
	if len(got) != len(want) || len(got) == 0 || !got[0].Until.Equal(want[0].Until) || got[0].Name != "192.0.2.5" || !got[0].Blocked {
		t.Fatalf("AdminList = %v, want %v", got, want)
	}
	e, err := AdminLift(ctx, path, "192.0.2.5")
	if err != nil || e.Name != "192.0.2.5" || !e.Blocked {
		t.Fatalf("AdminLift = %+v, %v", e, err)
	}
	if b, _ := g.Blocked(addr("192.0.2.5:9")); b {
		t.Fatal("still blocked")
	}
	if _, err := AdminLift(ctx, path, "192.0.2.5"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second lift: %v, want ErrNotFound", err)
	}
}

// TestAdminHostileRequests: garbage, unknown operations and an endless
// line get an error answer and change nothing.
func TestAdminHostileRequests(t *testing.T) {
	g := &Guard{MaxFailures: 2, BaseDelay: -1}
	blockAddr(t, g, "192.0.2.5:1")
	path := startAdmin(t, g)
	for _, req := range []string{"not json\n", `{"op":"drop-all"}` + "\n", `{"op":"lift","name":""}` + "\n", strings.Repeat("x", 10000)} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(req))
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if !strings.Contains(line, `"error"`) {
			t.Fatalf("request %.30q: answer %q, want an error", req, line)
		}
	}
	if b, _ := g.Blocked(addr("192.0.2.5:1")); !b {
		t.Fatal("a hostile request lifted the block")
	}
}

// TestAdminNotRunning: without a server the client says so, and a stale
// socket file is replaced while a live one is left alone.
func TestAdminNotRunning(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, AdminSocketName)
	if _, err := AdminList(context.Background(), path); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("no socket: %v, want ErrNotRunning", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	if _, err := ListenAdmin(path); err == nil || !strings.Contains(err.Error(), "another server") {
		t.Fatalf("ListenAdmin over a live socket: %v", err)
	}
	l.Close() // the file stays, as after a crash
	if _, err := AdminList(context.Background(), path); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("stale socket: %v, want ErrNotRunning", err)
	}
	l2, err := ListenAdmin(path)
	if err != nil {
		t.Fatalf("ListenAdmin over a stale socket: %v", err)
	}
	l2.Close()
	os.WriteFile(path, nil, 0o600)
	if _, err := ListenAdmin(path); err == nil {
		t.Fatal("ListenAdmin replaced a regular file")
	}
}
