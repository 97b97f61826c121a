package pop3

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
)

// benchWireMessage returns a wire-form message (CRLF line ends) of about
// size octets in which every fourth body line begins with '.', so the
// dot-stuffing path is taken often.
func benchWireMessage(size int) string {
	var b strings.Builder
	b.WriteString("From: bench@example.test\r\nTo: alice@example.test\r\nSubject: benchmark\r\n\r\n")
	for i := 0; b.Len() < size; i++ {
		if i%4 == 0 {
			b.WriteByte('.')
		}
		fmt.Fprintf(&b, "line %d of the benchmark message body, with some text to fill it up\r\n", i)
	}
	return b.String()
}

// BenchmarkDotWriter measures byte-stuffing a 1 MB message into a
// bufio.Writer, in 32 KB chunks as sendMessage copies it.
func BenchmarkDotWriter(b *testing.B) {
	msg := []byte(benchWireMessage(1 << 20))
	bw := bufio.NewWriterSize(io.Discard, 4096)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		dw := newDotWriter(bw)
		for p := msg; len(p) > 0; {
			n := min(len(p), 32<<10)
			if _, err := dw.Write(p[:n]); err != nil {
				b.Fatal(err)
			}
			p = p[n:]
		}
		if err := dw.Close(); err != nil {
			b.Fatal(err)
		}
		bw.Flush()
	}
}

// BenchmarkRetr1MB measures a whole RETR of a 1 MB message over loopback:
// server (memBackend) and client (Retr, un-stuffing) in one process.
func BenchmarkRetr1MB(b *testing.B) {
	ts := benchServer(b)
	msg := benchWireMessage(1 << 20)
	ts.be.add("alice@example.test", "big", msg)
	c, err := Dial(context.Background(), ts.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice@example.test", "secret pass"); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := c.Retr(1)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, r, buf)
		if err != nil || n != int64(len(msg)) {
			b.Fatalf("read %d of %d: %v", n, len(msg), err)
		}
	}
}

// BenchmarkUIDL10k measures a UIDL listing of 10,000 messages over
// loopback, client parsing included.
func BenchmarkUIDL10k(b *testing.B) {
	ts := benchServer(b)
	for i := range 10000 {
		// Maildir-like UIDs, as the maildir store produces.
		ts.be.add("alice@example.test", "1700000000.M"+strconv.Itoa(100000+i)+"P12345Q"+strconv.Itoa(i)+"R0123456789abcdef.mail.example.test", "Subject: x\r\n\r\nbody\r\n")
	}
	c, err := Dial(context.Background(), ts.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice@example.test", "secret pass"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		l, err := c.UIDL()
		if err != nil || len(l) != 10000 {
			b.Fatalf("%d entries: %v", len(l), err)
		}
	}
}

// benchServer is startServer for benchmarks: a Server over a memBackend on
// a loopback listener, shut down when the benchmark ends.
func benchServer(b *testing.B) *testServer {
	b.Helper()
	be := newMemBackend()
	srv := &Server{Backend: be, Implementation: "postino-bench"}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Shutdown(context.Background()) })
	return &testServer{Server: srv, addr: l.Addr().String(), be: be}
}
