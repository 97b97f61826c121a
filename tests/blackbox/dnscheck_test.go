package blackbox

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// longCert is a self-signed certificate for names valid for 90 days, so
// that "postino check" has no expiry to warn about.
func longCert(t *testing.T, names ...string) testutil.Cert {
	t.Helper()
	return testutil.NewCertValidFor(t, 90*24*time.Hour, names...)
}

// TestServeDNSAndCheckDomain: "postino dns" of the binary prints the
// zone of a server on loopback ports with DKIM keys made by "postino dkim
// keygen"; served by a real NSD, "postino check" against the running
// binary (its TLS listeners and its own MTA-STS policy over HTTPS) finds
// nothing to fail and exits 0. With a wrong MX and no DMARC record it
// exits 1 with those FAIL lines and their fix.
func TestServeDNSAndCheckDomain(t *testing.T) {
	testutil.NeedProgram(t, "nsd")
	cert := longCert(t, "mail.example.test", "mta-sts.example.test", "127.0.0.1")
	h := startMailHost(t, cert, "")
	r := postino(t, nil, "dns", "example.test", "--ipv4", "127.0.0.1", "--config", h.config)
	if r.Code != 0 {
		t.Fatalf("postino dns: %s", r)
	}
	zone := r.Stdout
	pop3s := strconv.Itoa(h.port(t, "pop3s"))
	for _, want := range []string{
		"example.test. 3600 IN MX 10 mail.example.test.",
		"mail.example.test. 3600 IN A 127.0.0.1",
		"_pop3s._tcp.example.test. 3600 IN SRV 0 1 " + pop3s + " mail.example.test.",
		"1.0.0.127.in-addr.arpa. 3600 IN PTR mail.example.test.",
		"._domainkey.example.test. 3600 IN TXT \"v=DKIM1; k=",
		"_dmarc.example.test. 3600 IN TXT \"v=DMARC1;",
		"_mta-sts.example.test. 3600 IN TXT \"v=STSv1; id=",
	} {
		if !strings.Contains(zone, want) {
			t.Errorf("postino dns lacks %q:\n%s", want, zone)
		}
	}
	zones := testutil.SplitZones(t, zone, "example.test", "127.in-addr.arpa")
	zones["bl.test"] = ""
	good := testutil.StartDNS(t, zones)
	https := strconv.Itoa(h.port(t, "https"))
	check := func(dns string, ca ...string) testutil.Result {
		t.Helper()
		args := append([]string{"check", "example.test", "--config", h.config, "--ipv4", "127.0.0.1", "--dns", dns, "--dnsbl", "bl.test", "--https-port", https}, ca...)
		return postino(t, nil, args...)
	}
	r = check(good.Addr, "--ca", h.caFile)
	t.Logf("postino check on the correct zone:\n%s", r.Stdout)
	if r.Code != 0 || strings.Contains(r.Stdout, "FAIL ") || strings.Contains(r.Stdout, "WARN ") {
		t.Fatalf("check on the correct zone: %s", r)
	}
	for _, want := range []string{
		"OK   MX         example.test: MX 10 mail.example.test.",
		"OK   DMARC",
		"OK   DKIM",
		"OK   MTA-STS    https://mta-sts.example.test/.well-known/mta-sts.txt: policy mode testing",
		"OK   TLS        pop3s " + h.addr["pop3s"] + ": TLS 1.3, certificate for mail.example.test",
		"OK   TLS        submissions " + h.addr["submissions"] + ": TLS 1.3",
		"OK   TLS        pop3 " + h.addr["pop3"] + ": TLS 1.3",
		"OK   PTR        127.0.0.1: PTR mail.example.test.",
		"OK   FCrDNS",
		"0 WARN, 0 FAIL",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("check output lacks %q:\n%s", want, r.Stdout)
		}
	}

	// A broken zone: a wrong MX, no DMARC record.
	var broken strings.Builder
	for _, l := range strings.Split(zones["example.test"], "\n") {
		switch {
		case strings.Contains(l, " IN MX "):
			l = "example.test. 3600 IN MX 10 mx.example.test."
		case strings.HasPrefix(l, "_dmarc."):
			continue
		}
		broken.WriteString(l + "\n")
	}
	bad := testutil.StartDNS(t, map[string]string{"example.test": broken.String(), "127.in-addr.arpa": zones["127.in-addr.arpa"], "bl.test": ""})
	r = check(bad.Addr, "--ca", h.caFile)
	t.Logf("postino check on the broken zone:\n%s", r.Stdout)
	if r.Code != 1 {
		t.Errorf("check on the broken zone exited %d, want 1: %s", r.Code, r)
	}
	for _, want := range []string{
		"FAIL MX         example.test: MX is 10 mx.example.test., not mail.example.test.\n     fix: publish example.test. 3600 IN MX 10 mail.example.test.",
		"FAIL DMARC      _dmarc.example.test: no record published\n     fix: publish _dmarc.example.test. 3600 IN TXT \"v=DMARC1; p=quarantine;",
		"0 WARN, 2 FAIL",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("broken check lacks %q:\n%s", want, r.Stdout)
		}
	}
}
