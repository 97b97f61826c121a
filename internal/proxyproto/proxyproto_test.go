package proxyproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

var (
	src4 = netip.MustParseAddrPort("192.0.2.7:51234")
	dst4 = netip.MustParseAddrPort("198.51.100.1:995")
	src6 = netip.MustParseAddrPort("[2001:db8::7]:40000")
	dst6 = netip.MustParseAddrPort("[2001:db8::1]:25")
)

// TestReadHeader: valid v1 and v2 headers, LOCAL/UNKNOWN, and the
// malformed or oversized ones, each with its error.
func TestReadHeader(t *testing.T) {
	v2local := AppendV2(nil, Header{Command: Local})
	v2big := append(append([]byte(nil), v2Sig...), 0x21, 0x11, 0x08, 0x01) // 2049 bytes announced
	v2udp := append(append([]byte(nil), v2Sig...), 0x21, 0x12, 0, 12)
	v2udp = append(v2udp, make([]byte, 12)...)
	v2ver := append(append([]byte(nil), v2Sig...), 0x11, 0x11, 0, 12)
	v2short := append(append([]byte(nil), v2Sig...), 0x21, 0x11, 0, 4, 1, 2, 3, 4)
	for _, c := range []struct {
		name string
		in   []byte
		want *Header
		err  string
	}{
		{"v1 tcp4", AppendV1(nil, Header{Source: src4, Dest: dst4}), &Header{Version: 1, Source: src4, Dest: dst4}, ""},
		{"v1 tcp6", AppendV1(nil, Header{Source: src6, Dest: dst6}), &Header{Version: 1, Source: src6, Dest: dst6}, ""},
		{"v1 unknown", []byte("PROXY UNKNOWN whatever\r\n"), &Header{Version: 1, Command: Local}, ""},
		{"v2 tcp4", AppendV2(nil, Header{Source: src4, Dest: dst4}), &Header{Version: 2, Source: src4, Dest: dst4}, ""},
		{"v2 tcp6", AppendV2(nil, Header{Source: src6, Dest: dst6}), &Header{Version: 2, Source: src6, Dest: dst6}, ""},
		{"v2 local", v2local, &Header{Version: 2, Command: Local}, ""},
		{"no header", []byte("USER alice\r\n"), nil, "no PROXY protocol header"},
		{"empty", nil, nil, "no PROXY protocol header"},
		{"v1 too long", []byte("PROXY TCP4 " + strings.Repeat("1", 200) + "\r\n"), nil, "longer than 107 bytes"},
		{"v1 bare LF", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n"), nil, "does not end with CRLF"},
		{"v1 family mismatch", []byte("PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n"), nil, `bad address "2001:db8::7"`},
		{"v1 port range", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 70000 2\r\n"), nil, `bad port "70000"`},
		{"v1 leading zero", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n"), nil, `bad port "01"`},
		{"v1 fields", []byte("PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n"), nil, "want PROXY TCP4|TCP6"},
		{"v1 truncated", []byte("PROXY TCP4 192.0.2.7"), nil, "truncated"},
		{"v2 oversized", v2big, nil, "over the limit of 2048"},
		{"v2 udp", v2udp, nil, "unsupported family/protocol 0x12"},
		{"v2 version", v2ver, nil, "version 1"},
		{"v2 short block", v2short, nil, "IPv4 address block too short"},
		{"v2 truncated", AppendV2(nil, Header{Source: src6, Dest: dst6})[:30], nil, "truncated"},
	} {
		t.Run(c.name, func(t *testing.T) {
			br := bufio.NewReader(bytes.NewReader(append(c.in, "after"...)))
			h, err := ReadHeader(br)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || *h != *c.want {
				t.Fatalf("= %+v, %v; want %+v", h, err, c.want)
			}
			if rest, _ := io.ReadAll(br); string(rest) != "after" {
				t.Fatalf("read past the header: rest %q", rest)
			}
		})
	}
}

// FuzzReadHeader: any input gives a header or an error, never a panic,
// and never reads more than the limits allow.
func FuzzReadHeader(f *testing.F) {
	f.Add(AppendV1(nil, Header{Source: src4, Dest: dst4}))
	f.Add(AppendV2(nil, Header{Source: src6, Dest: dst6}))
	f.Add(AppendV2(nil, Header{Command: Local}))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("USER x\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := ReadHeader(bufio.NewReaderSize(r, 16))
		consumed := len(in) - r.Len()
		if consumed > v2HeaderLen+MaxV2Len+16 {
			t.Fatalf("consumed %d bytes", consumed)
		}
		if err == nil && h.Command == Proxy && (!h.Source.IsValid() || !h.Dest.IsValid()) {
			t.Fatalf("PROXY header without addresses: %+v", h)
		}
	})
}

// startListener starts a Listener trusting trusted and returns it.
func startListener(t *testing.T, trusted string) net.Listener {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(inner, Options{Trusted: []netip.Prefix{netip.MustParsePrefix(trusted)}, HeaderTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { l.Close() })
	return l
}

// dialFrom connects to l from a local address and writes data.
func dialFrom(t *testing.T, l net.Listener, from string, data []byte) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if len(data) > 0 {
		c.Write(data)
	}
	return c
}

func accept(t *testing.T, l net.Listener, wait ...time.Duration) net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			ch <- c
		}
	}()
	select {
	case c := <-ch:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(append(wait, 5*time.Second)[0]):
		return nil
	}
}

// TestListenerTrusted: a trusted peer's v1 and v2 headers replace the
// addresses; what follows the header is read intact; a trusted peer
// without a header (or too slow to send it) is never accepted.
func TestListenerTrusted(t *testing.T) {
	l := startListener(t, "127.0.0.3/32")
	for _, hdr := range [][]byte{AppendV1(nil, Header{Source: src4, Dest: dst4}), AppendV2(nil, Header{Source: src6, Dest: dst6})} {
		dialFrom(t, l, "127.0.0.3", append(hdr, "CAPA\r\n"...))
		c := accept(t, l)
		if c == nil {
			t.Fatal("not accepted")
		}
		want := src4
		if hdr[0] == '\r' {
			want = src6
		}
		if c.RemoteAddr().String() != want.String() {
			t.Errorf("RemoteAddr = %s, want %s", c.RemoteAddr(), want)
		}
		buf := make([]byte, 6)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "CAPA\r\n" {
			t.Errorf("data after the header = %q, %v", buf, err)
		}
	}
	// LOCAL (a health check): the real addresses stand.
	dialFrom(t, l, "127.0.0.3", AppendV2(nil, Header{Command: Local}))
	if c := accept(t, l); c == nil || !strings.HasPrefix(c.RemoteAddr().String(), "127.0.0.3:") {
		t.Errorf("LOCAL: %v", c)
	}
	// No header, or one never finished: refused, never accepted.
	for _, data := range []string{"USER alice\r\n", "PROXY TCP4 1.2.3.4"} {
		c := dialFrom(t, l, "127.0.0.3", []byte(data))
		if got := accept(t, l, 1500*time.Millisecond); got != nil {
			t.Fatalf("%q: accepted from %s", data, got.RemoteAddr())
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Errorf("%q: connection still open", data)
		}
	}
}

// TestListenerUntrusted: an untrusted peer keeps its address; one that
// sends a PROXY header to pass as another address is cut off.
func TestListenerUntrusted(t *testing.T) {
	l := startListener(t, "127.0.0.3/32")
	dialFrom(t, l, "127.0.0.2", []byte("USER alice\r\n"))
	c := accept(t, l)
	if c == nil || !strings.HasPrefix(c.RemoteAddr().String(), "127.0.0.2:") {
		t.Fatalf("honest client: %v", c)
	}
	buf := make([]byte, 12)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "USER alice\r\n" {
		t.Fatalf("honest client's data = %q, %v", buf, err)
	}
	for _, forged := range [][]byte{AppendV1(nil, Header{Source: src4, Dest: dst4}), AppendV2(nil, Header{Source: src4, Dest: dst4})} {
		dialFrom(t, l, "127.0.0.2", forged)
		c := accept(t, l)
		if c == nil {
			t.Fatal("not accepted")
		}
		if !strings.HasPrefix(c.RemoteAddr().String(), "127.0.0.2:") {
			t.Errorf("RemoteAddr = %s: the forged header was believed", c.RemoteAddr())
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 64)); !errors.Is(err, ErrSpoofed) {
			t.Errorf("forged header: read err = %v, want ErrSpoofed", err)
		}
	}
}

// TestListenerMaxPending: connections from a trusted address that stall
// before their header cannot pile up: beyond MaxPending, one is closed at
// once, and the listener serves again when they time out.
func TestListenerMaxPending(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(inner, Options{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.3/32")}, HeaderTimeout: time.Second, MaxPending: 2})
	defer l.Close()
	dialFrom(t, l, "127.0.0.3", []byte("PRO"))
	dialFrom(t, l, "127.0.0.3", []byte("PRO"))
	time.Sleep(100 * time.Millisecond) // both are being read
	third := dialFrom(t, l, "127.0.0.3", AppendV1(nil, Header{Source: src4, Dest: dst4}))
	// Closed before the header timeout could have ended it.
	third.SetReadDeadline(time.Now().Add(900 * time.Millisecond))
	if _, err := third.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection over MaxPending: read err %v, want it closed at once", err)
	}
	// Once the stalled ones time out, a new connection is served.
	time.Sleep(1200 * time.Millisecond)
	dialFrom(t, l, "127.0.0.3", AppendV1(nil, Header{Source: src4, Dest: dst4}))
	if c := accept(t, l); c == nil || c.RemoteAddr().String() != src4.String() {
		t.Fatalf("after the timeouts: %v", c)
	}
}

// TestListenerBlankLine: an untrusted client whose first bytes only look
// like the start of a v2 header (a blank line) is served, not held until
// it sends more.
func TestListenerBlankLine(t *testing.T) {
	l := startListener(t, "127.0.0.3/32")
	dialFrom(t, l, "127.0.0.2", []byte("\r\n"))
	c := accept(t, l)
	if c == nil {
		t.Fatal("not accepted")
	}
	// No read deadline: without the guard's own pause the read would
	// wait for bytes that never come.
	buf := make([]byte, 2)
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(c, buf)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil || string(buf) != "\r\n" {
			t.Fatalf("blank line = %q, %v", buf, err)
		}
	case <-time.After(10 * time.Second):
		c.Close()
		t.Fatal("the blank line is held back")
	}
	// The server's own deadline still holds afterwards.
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the blank line: %v, want the deadline", err)
	}
}
