package config

import (
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/resolver"
)

func TestAntispamLoad(t *testing.T) {
	c, err := Load(writeFile(t, `data_dir = "/srv/postino"
[antispam]
dnsbl_sites = ["zen.spamhaus.org=127.0.0.[2..11]*3", "list.dnswl.org=127.0.[0..255].[1..3]*-5"]
dnsbl_threshold = 3
dnsbl_action = "quarantine"
fcrdns_score = 1.5
pregreet_wait = "6s"
greylist = true
greylist_delay = "2m"
`))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Antispam
	if s := a.Sites(); len(s) != 2 || s[0].Weight != 3 || s[1].Weight != -5 || s[1].Zone != "list.dnswl.org" {
		t.Errorf("sites %v", s)
	}
	if a.DNSBLThreshold != 3 || a.Action(a.DNSBLAction) != inbound.Quarantine || a.FCrDNSScore != 1.5 ||
		a.PregreetWait.Duration != 6*time.Second || !a.Greylist || a.GreylistDelay.Duration != 2*time.Minute {
		t.Errorf("%+v", a)
	}
	if p := c.GreylistPath(); p != filepath.Join("/srv/postino", "greylist.db") {
		t.Errorf("greylist path %s", p)
	}
}

func TestAntispamValidate(t *testing.T) {
	for _, tc := range []struct {
		toml, key string
	}{
		{`dnsbl_sites = ["zone=127.0.0.[9..2]"]`, "antispam.dnsbl_sites"},
		{`dnsbl_sites = ["bad zone"]`, "antispam.dnsbl_sites"},
		{`dnsbl_action = "drop"`, "antispam.dnsbl_action"},
		{`helo_forgery_action = "bounce"`, "antispam.helo_forgery_action"},
		{`dnsbl_timeout = "0s"`, "antispam.dnsbl_timeout"},
		{`dnsbl_threshold = 1e9`, "antispam.dnsbl_threshold"},
		{`pregreet_wait = "10m"`, "antispam.pregreet_wait"},
		{`greylist_delay = "1h"
greylist_retry_window = "30m"`, "antispam.greylist_retry_window"},
		{`greylist_max_entries = 1`, "antispam.greylist_max_entries"},
	} {
		_, err := Load(writeFile(t, "[antispam]\n"+tc.toml+"\n"))
		if err == nil || !strings.Contains(err.Error(), tc.key+":") {
			t.Errorf("%s: %v, want an error for %s", tc.toml, err, tc.key)
		}
	}
}

// TestAntispamCheckResolver: config check warns when the lists would be
// asked through a resolver that is not on this machine.
func TestAntispamCheckResolver(t *testing.T) {
	warned := func(res *CheckResult) bool {
		for _, f := range res.Findings {
			if f.Key == "antispam.dnsbl_sites" && f.Severity == SeverityWarning && strings.Contains(f.Msg, "set dns.server") {
				return true
			}
		}
		return false
	}
	lists := quietListeners + "[antispam]\ndnsbl_sites = [\"zen.spamhaus.org\"]\n"
	if res, _ := checkFile(t, lists+"[dns]\nserver = \"127.0.0.1:53\"\n"); warned(res) {
		t.Errorf("warned with a resolver of our own: %v", res.Findings)
	}
	if res, _ := checkFile(t, quietListeners); warned(res) {
		t.Errorf("warned without lists: %v", res.Findings)
	}
	// Without dns.server: a warning exactly when /etc/resolv.conf names
	// a resolver off this machine.
	r, err := resolver.New("", resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	remote := false
	for _, s := range r.Servers() {
		host, _, _ := net.SplitHostPort(s)
		if ip, err := netip.ParseAddr(host); err == nil && !ip.IsLoopback() {
			remote = true
		}
	}
	if res, _ := checkFile(t, lists); warned(res) != remote {
		t.Errorf("resolvers %v: warned %v", r.Servers(), warned(res))
	}
}
