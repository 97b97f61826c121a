package dnscheck

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestSPFVariants: an SPF record other than the one postino prints is
// judged by whether it authorizes the public addresses.
func TestSPFVariants(t *testing.T) {
	srv := testutil.StartDNS(t, map[string]string{"example.test": `
@ MX 10 mail
mail A 192.0.2.10
other A 198.51.100.1
`})
	p := &Plan{Domain: "example.test", Host: "mail.example.test", Addrs: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	c := &checker{p: p, r: newResolver(t, srv)}
	for _, tc := range []struct {
		rec    string
		status Status
		why    string
	}{
		{"v=spf1 ip4:192.0.2.0/24 -all", OK, ""},
		{"v=spf1 ip4:192.0.2.10 ~all", OK, ""},
		{"v=spf1 a:mail.example.test -all", OK, ""},
		{"v=spf1 mx/24 -all", OK, ""},
		{"v=spf1 a:other.example.test -all", Fail, "does not authorize 192.0.2.10"},
		{"v=spf1 -ip4:192.0.2.10 mx -all", Fail, "does not authorize"},
		{"v=spf1 include:_spf.example.net -all", Warn, "depends on include/redirect"},
		{"v=spf1 redirect=_spf.example.net", Warn, "depends on include/redirect"},
		{"v=spf1 mx +all", Fail, "lets any host send"},
		{"v=spf1 ip4:300.1.1.1 -all", Fail, "invalid ip4 term"},
		{"v=spf1 " + strings.Repeat("a ", 100), Fail, "more than 64 terms"},
	} {
		st, why := c.spfCovers(context.Background(), tc.rec)
		if st != tc.status || !strings.Contains(why, tc.why) {
			t.Errorf("%q: %s %q, want %s %q", tc.rec, st, why, tc.status, tc.why)
		}
	}
}

// FuzzParseSPF: parseSPF never panics, keeps to its limits and returns
// terms with a valid qualifier.
func FuzzParseSPF(f *testing.F) {
	for _, s := range []string{"v=spf1 mx -all", "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all", "v=spf1 a:x/24//64 redirect=y", "v=spf1 +", "V=SPF1 ?include:x exp=e", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rec string) {
		terms, err := parseSPF(rec)
		if err != nil {
			return
		}
		if len(rec) > maxSPFLen || len(terms) > maxSPFTerms {
			t.Fatalf("limits not enforced: %d octets, %d terms", len(rec), len(terms))
		}
		for _, tm := range terms {
			if strings.IndexByte("+-~?", tm.qual) < 0 {
				t.Fatalf("qualifier %q", tm.qual)
			}
		}
	})
}

// FuzzTagList: dkimTag (DKIM, DMARC, MTA-STS and TLS-RPT tag lists)
// never panics and returns values without white space.
func FuzzTagList(f *testing.F) {
	for _, s := range []string{"v=DKIM1; k=ed25519; p=abc", "v=DMARC1;p=none", "v=STSv1; id= 1 2 3", ";;=;p", ""} {
		f.Add(s, "p")
	}
	f.Fuzz(func(t *testing.T, rec, tag string) {
		v := dkimTag(rec, tag)
		if strings.ContainsAny(v, " \t\r\n") || len(v) > len(rec) {
			t.Fatalf("dkimTag(%q, %q) = %q", rec, tag, v)
		}
	})
}
