package server

import (
	"bufio"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/tlsutil"
)

// pollTLS opens a POP3S session (implicit TLS) or a POP3 session upgraded
// with STLS (RFC 2595 §4), reads the greeting, and reports whether the
// TLS session was resumed.
func pollTLS(t *testing.T, addr string, stls bool, cfg *tls.Config) bool {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var c *tls.Conn
	if stls {
		br := bufio.NewReader(raw)
		if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "+OK") {
			t.Fatalf("greeting %q", l)
		}
		raw.Write([]byte("STLS\r\n"))
		if l, _ := br.ReadString('\n'); !strings.HasPrefix(l, "+OK") {
			t.Fatalf("STLS: %q", l)
		}
		c = tls.Client(raw, cfg)
		c.Write([]byte("CAPA\r\n"))
	} else {
		c = tls.Client(raw, cfg)
	}
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(l, "+OK") {
		t.Fatalf("first line over TLS %q, %v", l, err)
	}
	return c.ConnectionState().DidResume
}

// TestRestartResumesTLS: a mail program that polls over POP3S or STLS
// resumes its TLS session after postino restarts (RFC 8446 §2.2), because
// the ticket keys are kept in DATA/tls/ticket-keys with mode 0600.
func TestRestartResumesTLS(t *testing.T) {
	cfg := testConfig(t)
	logger := slog.New(slog.DiscardHandler)
	start := func() (*Server, map[string]string) {
		srv, err := Build(cfg, logger)
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		addr := map[string]string{}
		for _, l := range srv.Listeners() {
			addr[l.Name] = l.Addr
		}
		return srv, addr
	}
	for _, stls := range []bool{false, true} {
		name := map[bool]string{false: "pop3s", true: "pop3"}[stls]
		client := &tls.Config{InsecureSkipVerify: true, ServerName: "mail.example.test",
			ClientSessionCache: tls.NewLRUClientSessionCache(4)}
		srv, addr := start()
		if pollTLS(t, addr[name], stls, client) {
			t.Fatalf("%s: first poll resumed", name)
		}
		srv.Shutdown(logger)
		srv, addr = start()
		if !pollTLS(t, addr[name], stls, client) {
			t.Fatalf("%s: the poll after a restart did not resume", name)
		}
		srv.Shutdown(logger)
	}
	fi, err := os.Stat(filepath.Join(cfg.TLSDir(), tlsutil.TicketKeysFileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("ticket key file mode %v, want 0600", fi.Mode().Perm())
	}
}
