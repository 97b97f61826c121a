package tlsutil

import (
	"crypto/tls"
	"io"
	"net"
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

// recordCounter counts the TLS records (RFC 8446 §5.1) read through it.
type recordCounter struct {
	net.Conn
	buf     []byte
	records int
}

func (r *recordCounter) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.buf = append(r.buf, p[:n]...)
	for len(r.buf) >= 5 {
		l := int(r.buf[3])<<8 | int(r.buf[4])
		if len(r.buf) < 5+l {
			break
		}
		r.records++
		r.buf = r.buf[5+l:]
	}
	return n, err
}

// TestFullSizeRecords: a message of 256 KB goes out in records of 16 KB
// from the start, not in the records of ~1.2 KB, 2.4 KB, ... with which
// crypto/tls's dynamic sizing starts every connection.
func TestFullSizeRecords(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const size = 256 << 10
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := tls.Server(c, serverConfig(t, "1.2"))
		tc.Write(make([]byte, size))
		tc.Close()
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	rc := &recordCounter{Conn: raw}
	c := tls.Client(rc, &tls.Config{InsecureSkipVerify: true})
	defer c.Close()
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != size {
		t.Fatalf("read %d of %d: %v", n, size, err)
	}
	// 16 full records of data, plus the handshake's and the close's
	// (about 7); dynamic sizing adds about 7 more while it ramps up.
	if rc.records > size/(16<<10)+10 {
		t.Fatalf("%d records for %d octets: small records in use", rc.records, size)
	}
}
