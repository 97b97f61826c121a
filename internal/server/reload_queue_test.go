package server

import (
	"encoding/base64"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/testutil"
)

// TestReloadQueue: a reload gives the running queue a new route and a new
// DKIM key folder: the next message goes to the new route, signed with
// the key found in the new folder.
func TestReloadQueue(t *testing.T) {
	cfg := testConfig(t)
	first, second := testutil.NewSMTPSink(t), testutil.NewSMTPSink(t)
	cfg.Queue.Routes = []string{"routed.test=" + first.Addr}
	logger := slog.New(slog.DiscardHandler)
	srv, addr, _ := startForReload(t, cfg, logger)
	cl := &clients{t: t}
	submit := func(subject string) {
		c := cl.ehlo(addr["submission"])
		c.expect("235", c.cmd("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice-pw"))))
		c.expect("250", c.cmd("MAIL FROM:<alice@example.test>"))
		c.expect("250", c.cmd("RCPT TO:<bob@routed.test>"))
		c.expect("354", c.cmd("DATA"))
		c.expect("250", c.cmd("From: alice@example.test\r\nSubject: %s\r\n\r\nhello\r\n.", subject))
		c.expect("221", c.cmd("QUIT"))
	}
	submit("before")
	testutil.WaitFor(t, 15*time.Second, "delivery to the first route", func() bool { return len(first.Messages()) == 1 })
	if m := first.Messages()[0]; strings.Contains(m, "DKIM-Signature") {
		t.Fatalf("signed without a key:\n%s", m)
	}

	keys := filepath.Join(cfg.DataDir, "dkim-2")
	if _, err := dkim.Keygen(keys, "example.test", dkim.AlgoEd25519, "s1"); err != nil {
		t.Fatal(err)
	}
	next := *srv.Config()
	next.Queue.Routes = []string{"routed.test=" + second.Addr}
	next.Queue.DKIMDir = keys
	if _, err := srv.Reload(&next, logger); err != nil {
		t.Fatal(err)
	}
	submit("after")
	testutil.WaitFor(t, 15*time.Second, "delivery to the second route", func() bool { return len(second.Messages()) == 1 })
	if m := second.Messages()[0]; !strings.Contains(m, "DKIM-Signature:") || !strings.Contains(m, "d=example.test") || !strings.Contains(m, "s=s1") {
		t.Errorf("not signed with the new folder's key:\n%s", m)
	}
	if n := len(first.Messages()); n != 1 {
		t.Errorf("the first route got %d messages", n)
	}
}
