package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestPublicAddresses: dns.public_addresses takes IPv4 and IPv6
// addresses (IPv4-mapped ones are unmapped) and rejects anything else.
func TestPublicAddresses(t *testing.T) {
	c := Default()
	c.DNS.PublicAddresses = []string{"192.0.2.1", "2001:db8::1", "::ffff:198.51.100.7"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("198.51.100.7")}
	if got := c.PublicAddrs(); !slices.Equal(got, want) {
		t.Fatalf("PublicAddrs = %v, want %v", got, want)
	}
	for _, bad := range []string{"mail.example.org", "192.0.2.0/24", "fe80::1%eth0", ""} {
		c.DNS.PublicAddresses = []string{bad}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "dns.public_addresses") {
			t.Errorf("public_addresses %q: Validate = %v", bad, err)
		}
	}
}
