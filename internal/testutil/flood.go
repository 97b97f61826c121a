package testutil

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// SilentFlood opens n TCP connections to addr that send nothing, and
// returns how many of them the server closed within limit and how many
// of those at once (within a second): a test of how a server refuses
// connections over its limits that never send a byte (not even a TLS
// ClientHello).
func SilentFlood(t testing.TB, addr string, n int, limit time.Duration) (closed, atOnce int) {
	t.Helper()
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns[i] = c
	}
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(start.Add(limit))
			// A refusal in the clear is read first; then the end.
			_, err := io.Copy(io.Discard, c)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			closed++
			if time.Since(start) < time.Second {
				atOnce++
			}
		})
	}
	wg.Wait()
	return closed, atOnce
}
