package resolver

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
	"github.com/postino-mail/postino/internal/testutil"
)

// TestAuthenticatedThroughUnbound checks the AD bit end to end: a zone
// signed with ldns-signzone, served by NSD, resolved through a validating
// Unbound: its answers are authenticated (TLSA included), those of an
// unsigned zone are not, and a signed zone whose signatures do not match
// its anchor is bogus (SERVFAIL: a temporary error).
func TestAuthenticatedThroughUnbound(t *testing.T) {
	signed := testutil.SignZone(t, "signed.test", "@ MX 10 mx\nmx A 127.0.0.1\n_25._tcp.mx TLSA 3 1 1 "+strings.Repeat("ab", 32)+"\n")
	bogus := testutil.SignZone(t, "bogus.test", "@ MX 10 mx\nmx A 127.0.0.1\n")
	other := testutil.SignZone(t, "bogus.test", "@ MX 10 mx\n") // a different key
	ns := testutil.StartDNSZoneFiles(t, map[string]string{
		"signed.test":   signed.Text,
		"bogus.test":    bogus.Text,
		"unsigned.test": testutil.ZoneFile("unsigned.test", "@ MX 10 mx\nmx A 127.0.0.1\n_25._tcp.mx TLSA 3 1 1 "+strings.Repeat("ab", 32)+"\n"),
	})
	ub := testutil.StartUnbound(t, map[string]string{"signed.test": ns.Addr, "bogus.test": ns.Addr, "unsigned.test": ns.Addr}, signed.DS, other.DS)
	r, err := New(ub.Addr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ans, err := r.Query(ctx, "signed.test", dns.TypeMX)
	if err != nil || !ans.Authenticated || len(ans.Records) != 1 {
		t.Fatalf("signed MX: %+v %v", ans, err)
	}
	tlsa, secure, err := r.LookupTLSA(ctx, 25, "tcp", "mx.signed.test")
	if err != nil || !secure || len(tlsa) != 1 || tlsa[0].Usage != 3 {
		t.Fatalf("signed TLSA: %v %v %v", tlsa, secure, err)
	}
	// NODATA in a signed zone: authenticated denial.
	if ans, err := r.Query(ctx, "_25._tcp.nomx.signed.test", dns.TypeTLSA); err == nil || ans == nil || !ans.Authenticated {
		t.Fatalf("signed NXDOMAIN: %+v %v", ans, err)
	}
	tlsa, secure, err = r.LookupTLSA(ctx, 25, "tcp", "mx.unsigned.test")
	if err != nil || secure || len(tlsa) != 1 {
		t.Fatalf("unsigned TLSA: %v %v %v", tlsa, secure, err)
	}
	var de *net.DNSError
	if _, err := r.Query(ctx, "bogus.test", dns.TypeMX); !errors.As(err, &de) || !de.IsTemporary {
		t.Fatalf("bogus MX: %v", err)
	}
}
