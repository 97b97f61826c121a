package server

import (
	"bufio"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/config"
)

// dialMXFrom connects to the MX from a loopback address of the test's
// choosing and reads the greeting.
func dialMXFrom(t *testing.T, src, addr string) *conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &conn{t: t, c: nc, br: bufio.NewReader(nc)}
	c.expect("220", c.line())
	return c
}

// TestAntispamChecksFromConfig: the [antispam] keys turn the checks on
// the MX; greylisting refuses a client outside the trusted networks,
// not a trusted one; the greylist store outlives a reload and is
// replaced when its file changes.
func TestAntispamChecksFromConfig(t *testing.T) {
	cfg := testConfig(t)
	cfg.SMTP.TrustedNetworks = []string{"127.0.0.1/32"}
	logger := slog.New(slog.DiscardHandler)

	// The defaults: HELO and reverse DNS scoring only.
	srv, _, _ := startForReload(t, cfg, logger)
	if got := checkNames(srv); !slices.Equal(got, []string{"helo", "fcrdns"}) {
		t.Errorf("default checks %v", got)
	}

	cfg = testConfig(t)
	cfg.SMTP.TrustedNetworks = []string{"127.0.0.1/32"}
	cfg.DNS.Server = "127.0.0.1:9" // never asked: no list lists loopback here
	cfg.Antispam.DNSBLSites = []string{"bl.test*3"}
	cfg.Antispam.FCrDNSScore = 0
	cfg.Antispam.Greylist = true
	srv, addr, _ := startForReload(t, cfg, logger)
	if got := checkNames(srv); !slices.Equal(got, []string{"helo", "dnsbl", "greylist"}) {
		t.Errorf("checks %v", got)
	}
	store := srv.greylist
	if store == nil || store.Path() != filepath.Join(cfg.DataDir, "greylist.db") {
		t.Fatalf("greylist store %v", store)
	}
	c := dialMXFrom(t, "127.0.0.1", addr["smtp"])
	c.expect("250", c.cmd("EHLO relay.example.test"))
	c.expect("250", c.cmd("MAIL FROM:<a@remote.example>"))
	c.expect("250", c.cmd("RCPT TO:<alice@example.test>"))

	next := *srv.Config()
	next.Antispam.GreylistDelay = config.D(10 * time.Minute)
	if _, err := srv.Reload(&next, logger); err != nil {
		t.Fatal(err)
	}
	if srv.greylist != store {
		t.Error("the greylist store was reopened by a reload")
	}
	c = dialMXFrom(t, "127.0.0.2", addr["smtp"])
	c.expect("250", c.cmd("EHLO client.example.org"))
	c.expect("250", c.cmd("MAIL FROM:<a@remote.example>"))
	c.expect("450 4.2.0 Greylisted", c.cmd("RCPT TO:<alice@example.test>"))
	if store.Len() != 1 {
		t.Errorf("%d triplets stored", store.Len())
	}

	next.Antispam.GreylistFile = "other-greylist.db"
	if _, err := srv.Reload(&next, logger); err != nil {
		t.Fatal(err)
	}
	if srv.greylist == store || srv.greylist.Path() != filepath.Join(cfg.DataDir, "other-greylist.db") {
		t.Errorf("greylist store after the file changed: %s", srv.greylist.Path())
	}
}

func checkNames(s *Server) []string {
	var out []string
	for _, c := range s.checks {
		out = append(out, c.Name())
	}
	return out
}
