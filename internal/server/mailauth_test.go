package server

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestReloadMailAuth: [mailauth] is off by default (an SPF fail goes
// through); turned on by a reload, the MX's new sessions check SPF against
// dns.server and, with spf_fail = "mail", refuse the failing sender at
// MAIL FROM with 550 5.7.23, while a passing sender goes through.
func TestReloadMailAuth(t *testing.T) {
	dns := testutil.StartDNS(t, map[string]string{
		"fail.test": `@ TXT "v=spf1 ip4:192.0.2.1 -all"` + "\n",
		"pass.test": `@ TXT "v=spf1 ip4:127.0.0.1 -all"` + "\n",
	})
	cfg := testConfig(t)
	cfg.DNS.Server = dns.Addr
	logger := slog.New(slog.DiscardHandler)
	srv, addr, _ := startForReload(t, cfg, logger)
	cl := &clients{t: t}

	c := cl.ehlo(addr["smtp"])
	c.expect("250", c.cmd("MAIL FROM:<eve@fail.test>"))
	c.expect("221", c.cmd("QUIT"))

	next := *srv.Config()
	next.MailAuth.Enabled = true
	next.MailAuth.SPFFail = "mail"
	ch, err := srv.Reload(&next, logger)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"mailauth.enabled", "mailauth.spf_fail"}; !slices.Equal(ch.Applied, want) || len(ch.Restart) != 0 {
		t.Errorf("Reload changes = %+v, want applied %v", ch, want)
	}
	c = cl.ehlo(addr["smtp"])
	c.expect("550 5.7.23 SPF check failed", c.cmd("MAIL FROM:<eve@fail.test>"))
	c.expect("250", c.cmd("MAIL FROM:<alice@pass.test>"))
	c.expect("221", c.cmd("QUIT"))
}
