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

// TestProxyTrusted: proxy.trusted takes networks and addresses, rejects
// the rest, and proxy.header_timeout has a floor.
func TestProxyTrusted(t *testing.T) {
	c := Default()
	if len(c.ProxyTrusted()) != 0 {
		t.Fatal("the PROXY protocol is on by default")
	}
	c.Proxy.Trusted = []string{"10.0.0.0/8", "127.0.0.3"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.3/32")}
	if got := c.ProxyTrusted(); !slices.Equal(got, want) {
		t.Fatalf("ProxyTrusted = %v, want %v", got, want)
	}
	for _, bad := range []string{"10.0.0.1/8", "haproxy.example.org", "::ffff:10.0.0.1"} {
		c.Proxy.Trusted = []string{bad}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "proxy.trusted") {
			t.Errorf("trusted %q: Validate = %v", bad, err)
		}
	}
	c.Proxy.Trusted = nil
	c.Proxy.HeaderTimeout = D(0)
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "proxy.header_timeout: must be at least") {
		t.Errorf("header_timeout 0: Validate = %v", err)
	}
}
