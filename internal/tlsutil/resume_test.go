package tlsutil

import (
	"crypto/tls"
	"path/filepath"
	"testing"
)

// resumeServer starts a loopback TLS listener with postino's server
// configuration and returns its address. Every accepted connection
// completes the handshake, reads until the client closes, and is closed.
func resumeServer(tb testing.TB, minVersion string) string {
	tb.Helper()
	return serveTLS(tb, serverConfig(tb, minVersion))
}

// serverConfig returns postino's server configuration over a fresh
// self-signed certificate.
func serverConfig(tb testing.TB, minVersion string) *tls.Config {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "tls")
	certFile, keyFile, _, err := EnsureSelfSigned(dir, "localhost")
	if err != nil {
		tb.Fatal(err)
	}
	r, err := NewReloader(certFile, keyFile, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return ServerConfig(r, minVersion)
}

// serveTLS serves cfg on a loopback listener (see resumeServer) until the
// test ends, and returns its address.
func serveTLS(tb testing.TB, cfg *tls.Config) string {
	tb.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				// The TLS 1.3 session ticket is sent after the
				// handshake, with the first write.
				if _, err := c.Write([]byte("+OK\r\n")); err != nil {
					return
				}
				var b [64]byte
				for {
					if _, err := c.Read(b[:]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// poll makes one connection as a polling client does: handshake, read the
// greeting, close. It reports whether the session was resumed.
func poll(tb testing.TB, addr string, cfg *tls.Config) bool {
	tb.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	var b [16]byte
	if _, err := c.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return c.ConnectionState().DidResume
}

// TestSessionResumption: a client that keeps its TLS session (RFC 8446
// §2.2, RFC 5077) resumes it on its next poll instead of a full handshake,
// in TLS 1.3 and in TLS 1.2.
func TestSessionResumption(t *testing.T) {
	for _, v := range []struct {
		name string
		max  uint16
	}{{"TLS1.3", tls.VersionTLS13}, {"TLS1.2", tls.VersionTLS12}} {
		t.Run(v.name, func(t *testing.T) {
			addr := resumeServer(t, "1.2")
			cfg := &tls.Config{
				InsecureSkipVerify: true,
				MaxVersion:         v.max,
				ClientSessionCache: tls.NewLRUClientSessionCache(4),
			}
			if poll(t, addr, cfg) {
				t.Fatal("first connection resumed a session it never had")
			}
			if !poll(t, addr, cfg) {
				t.Fatal("second connection did not resume the session")
			}
			// A client without the ticket gets a full handshake.
			fresh := &tls.Config{InsecureSkipVerify: true, MaxVersion: v.max}
			if poll(t, addr, fresh) {
				t.Fatal("a client without a session resumed one")
			}
		})
	}
}

// BenchmarkPollHandshake measures one POP3S poll's TLS handshake against
// postino's server configuration (loopback, client and server CPU both
// counted): full handshakes versus resumed ones.
func BenchmarkPollHandshake(b *testing.B) {
	for _, bc := range []struct {
		name   string
		resume bool
	}{{"full", false}, {"resumed", true}} {
		b.Run(bc.name, func(b *testing.B) {
			addr := resumeServer(b, "1.2")
			cfg := &tls.Config{InsecureSkipVerify: true}
			if bc.resume {
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
				poll(b, addr, cfg)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if got := poll(b, addr, cfg); got != bc.resume {
					b.Fatalf("resumed = %v", got)
				}
			}
		})
	}
}
