package dnscheck

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/resolver"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/wellknown"
)

// testPlan is a plan for example.test served by mail.example.test on
// 127.0.0.1, with fresh DKIM keys.
func testPlan(t *testing.T) *Plan {
	t.Helper()
	recs, err := dkim.KeygenAll(t.TempDir(), "example.test")
	if err != nil {
		t.Fatal(err)
	}
	return &Plan{
		Domain: "example.test",
		Host:   "mail.example.test",
		Addrs:  []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")},
		DKIM:   recs,
		MTASTS: wellknown.Policy{Mode: wellknown.ModeTesting, MX: []string{"mail.example.test"}, MaxAge: 7 * 24 * time.Hour},
		Services: []Service{
			{SvcSMTP, 25}, {SvcPOP3, 110}, {SvcPOP3S, 995}, {SvcSubmission, 0}, {SvcSubmissions, 465},
		},
	}
}

// SplitZones sorts the record lines of zone text (as Plan.Zone prints
// it) into the zones of origins they belong to; comments and blank lines
// are dropped.
func splitZones(t *testing.T, text string, origins ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, o := range origins {
		out[o] = ""
	}
	for _, l := range strings.Split(text, "\n") {
		if l == "" || strings.HasPrefix(l, ";") {
			continue
		}
		owner := strings.Fields(l)[0]
		found := false
		for _, o := range origins {
			if strings.HasSuffix(owner, "."+o+".") || owner == o+"." {
				out[o] += l + "\n"
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("record %q is in none of the zones %q", l, origins)
		}
	}
	return out
}

func newResolver(t *testing.T, srv *testutil.DNSServer) *resolver.Resolver {
	t.Helper()
	r, err := resolver.New(srv.Addr, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRecordsZone: the records cover every kind asked for, with a
// comment before each, SRV "not offered" as RFC 6186 §3.1 writes it, and
// the DKIM records as internal/dkim formats them.
func TestRecordsZone(t *testing.T) {
	p := testPlan(t)
	z := p.Zone()
	for _, want := range []string{
		"example.test. 3600 IN MX 10 mail.example.test.",
		"mail.example.test. 3600 IN A 127.0.0.1",
		`example.test. 3600 IN TXT "v=spf1 mx -all"`,
		`_dmarc.example.test. 3600 IN TXT "v=DMARC1; p=quarantine; adkim=r; aspf=r; rua=mailto:dmarc-reports@example.test"`,
		`_mta-sts.example.test. 3600 IN TXT "v=STSv1; id=` + p.MTASTS.ID() + `"`,
		`_smtp._tls.example.test. 3600 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.test"`,
		"_pop3s._tcp.example.test. 3600 IN SRV 0 1 995 mail.example.test.",
		"_pop3._tcp.example.test. 3600 IN SRV 0 1 110 mail.example.test.",
		"_submissions._tcp.example.test. 3600 IN SRV 0 1 465 mail.example.test.",
		"_submission._tcp.example.test. 3600 IN SRV 0 0 0 .",
		"_imaps._tcp.example.test. 3600 IN SRV 0 0 0 .",
		"autoconfig.example.test. 3600 IN CNAME mail.example.test.",
		"autodiscover.example.test. 3600 IN CNAME mail.example.test.",
		"1.0.0.127.in-addr.arpa. 3600 IN PTR mail.example.test.",
		"mail.example.test. 3600 IN AAAA ::1",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa. 3600 IN PTR mail.example.test.",
	} {
		if !strings.Contains(z, want+"\n") {
			t.Errorf("zone lacks %q:\n%s", want, z)
		}
	}
	for _, k := range p.DKIM {
		if want := strings.Replace(k.String(), ". IN TXT", ". 3600 IN TXT", 1); !strings.Contains(z, want) {
			t.Errorf("zone lacks the DKIM record %q", want)
		}
	}
	lines := strings.Split(strings.TrimSpace(z), "\n")
	for i, l := range lines {
		if l != "" && !strings.HasPrefix(l, ";") && (i == 0 || !strings.HasPrefix(lines[i-1], "; ")) {
			t.Errorf("record %q has no comment above it", l)
		}
	}
}

// TestCheckCorrectZone: a zone made from the plan's own output, served by
// a real NSD, passes every DNS check.
func TestCheckCorrectZone(t *testing.T) {
	p := testPlan(t)
	zones := splitZones(t, p.Zone(), "example.test", "127.in-addr.arpa", "ip6.arpa")
	zones["bl.test"] = "" // a blocklist listing nothing
	srv := testutil.StartDNS(t, zones)
	fs := Check(context.Background(), p, Options{Resolver: newResolver(t, srv), SkipPorts: true, DNSBL: []string{"bl.test"}})
	for _, f := range fs {
		if f.Status != OK {
			t.Errorf("%s", f)
		}
	}
	if Failed(fs) || len(fs) < 20 {
		t.Fatalf("%d findings:\n%s", len(fs), join(fs))
	}
}

func join(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.String() + "\n")
	}
	return b.String()
}

// TestCheckBrokenZone: each broken record is reported on its own line,
// with the status and fix it deserves.
func TestCheckBrokenZone(t *testing.T) {
	p := testPlan(t)
	other, err := dkim.KeygenAll(t.TempDir(), "example.test") // other keys, same selectors
	if err != nil {
		t.Fatal(err)
	}
	good := splitZones(t, p.Zone(), "example.test", "127.in-addr.arpa", "ip6.arpa")
	var broken strings.Builder
	for _, l := range strings.Split(good["example.test"], "\n") {
		switch {
		case strings.HasPrefix(l, "example.test. 3600 IN MX"):
			l = "example.test. 3600 IN MX 10 mx.elsewhere.test."
		case strings.Contains(l, "v=spf1"):
			l = ""
		case strings.HasPrefix(l, p.DKIM[0].Name+"."):
			l = strings.Replace(other[0].String(), ". IN TXT", ". 3600 IN TXT", 1)
		case strings.Contains(l, "v=DMARC1"):
			l = `_dmarc.example.test. 3600 IN TXT "v=DMARC1; p=none; rua=mailto:d@example.test"`
		case strings.HasPrefix(l, "_mta-sts."):
			l = ""
		case strings.HasPrefix(l, "_pop3s._tcp."):
			l = "_pop3s._tcp.example.test. 3600 IN SRV 0 1 9995 mail.example.test."
		}
		broken.WriteString(l + "\n")
	}
	broken.WriteString("other.example.test. 3600 IN A 127.0.0.9\n")
	srv := testutil.StartDNS(t, map[string]string{
		"example.test":     broken.String(),
		"127.in-addr.arpa": "1.0.0 PTR other.example.test.\n",
		"ip6.arpa":         good["ip6.arpa"],
		"bl.test":          "1.0.0.127 A 127.0.0.2\n1.0.0.127 TXT \"listed for testing\"\n1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0 A 127.0.0.4\n",
	})
	fs := Check(context.Background(), p, Options{Resolver: newResolver(t, srv), SkipPorts: true, DNSBL: []string{"bl.test", "unserved.test"}})
	t.Logf("\n%s", join(fs))
	for _, c := range []struct {
		status         Status
		check, subject string
		detail, fix    string
	}{
		{Fail, KindMX, "example.test", "MX is 10 mx.elsewhere.test., not mail.example.test.", "publish example.test. 3600 IN MX 10 mail.example.test."},
		{Fail, KindSPF, "example.test", "no record published", `publish example.test. 3600 IN TXT "v=spf1 mx -all"`},
		{Fail, KindDKIM, strings.TrimSuffix(p.DKIM[0].Name, "."), "is not the key in the DKIM folder", "publish " + p.DKIM[0].Name + ". 3600 IN TXT"},
		{OK, KindDKIM, strings.TrimSuffix(p.DKIM[1].Name, "."), "key matches", ""},
		{Warn, KindDMARC, "_dmarc.example.test", "p=none only monitors", "p=quarantine"},
		{Fail, KindMTASTS, "_mta-sts.example.test", "no record published", "id=" + p.MTASTS.ID()},
		{Fail, KindSRV, "_pop3s._tcp.example.test", "SRV 0 1 9995 mail.example.test., want port 995", "SRV 0 1 995 mail.example.test."},
		{OK, KindSRV, "_pop3._tcp.example.test", "SRV 0 1 110", ""},
		{Fail, KindPTR, "127.0.0.1", "PTR other.example.test., not mail.example.test.", "1.0.0.127.in-addr.arpa. 3600 IN PTR mail.example.test."},
		{Fail, "FCrDNS", "127.0.0.1", "other.example.test. does not resolve back to 127.0.0.1", "resolve to 127.0.0.1"},
		{Fail, "DNSBL", "127.0.0.1", "listed in bl.test (127.0.0.2): listed for testing", "delisting"},
		{Warn, "DNSBL", "127.0.0.1", "unserved.test could not be asked", ""},
		{Fail, "DNSBL", "::1", "listed in bl.test (127.0.0.4)", "delisting"},
		{OK, KindPTR, "::1", "PTR mail.example.test.", ""},
		{OK, "FCrDNS", "::1", "mail.example.test. resolves back to ::1", ""},
	} {
		found := false
		for _, f := range fs {
			if f.Check == c.check && f.Subject == c.subject && strings.Contains(f.Detail, c.detail) {
				found = true
				if f.Status != c.status || !strings.Contains(f.Fix, c.fix) {
					t.Errorf("%s %s: got\n%s\nwant %s with fix containing %q", c.check, c.subject, f, c.status, c.fix)
				}
			}
		}
		if !found {
			t.Errorf("no %s finding for %s with %q", c.check, c.subject, c.detail)
		}
	}
	if !Failed(fs) {
		t.Error("Failed = false")
	}
}
