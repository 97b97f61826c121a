package config

import (
	"net"
	"net/netip"

	"github.com/postino-mail/postino/internal/resolver"
)

// DNSConfig is the [dns] section: the one DNS server every lookup uses.
type DNSConfig struct {
	Server          string   `toml:"server" reload:"restart" comment:"DNS server (host:port) for every lookup: the queue's MX and address lookups, SPF, DKIM, DMARC, DNS blocklists, reverse DNS, MTA-STS and DANE. Answers are cached within their TTLs. For DANE it must be a DNSSEC-validating resolver reached over a trusted path (e.g. Unbound on 127.0.0.1:53). Empty: the nameservers of /etc/resolv.conf. queue.dns_server is an older name for it."`
	PublicAddresses []string `toml:"public_addresses" comment:"The server's public IPv4 and IPv6 addresses, as the Internet reaches it: 'postino dns' prints the A/AAAA, SPF and PTR records for them and 'postino check' tests them (ports, reverse DNS, blocklists); --ipv4/--ipv6 override it. They are never guessed. Empty: give them on the command line."`
}

// PublicAddrs returns dns.public_addresses parsed; entries that do not
// parse (Validate reports them) are left out.
func (c *Config) PublicAddrs() []netip.Addr {
	var out []netip.Addr
	for _, s := range c.DNS.PublicAddresses {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// DNSServer returns the DNS server lookups use: dns.server, or the older
// queue.dns_server when only that is set; "" for the system's resolver.
func (c *Config) DNSServer() string {
	if c.DNS.Server != "" {
		return c.DNS.Server
	}
	return c.Queue.DNSServer
}

// Resolver returns a caching resolver that asks DNSServer().
func (c *Config) Resolver() (*resolver.Resolver, error) {
	return resolver.New(c.DNSServer(), resolver.Options{})
}

func (c *Config) validateDNS(v *validator) {
	if c.DNS.Server != "" {
		if _, _, err := net.SplitHostPort(c.DNS.Server); err != nil {
			v.add("dns.server", "must be host:port (got %q)", c.DNS.Server)
		}
	}
	for _, s := range c.DNS.PublicAddresses {
		if a, err := netip.ParseAddr(s); err != nil || a.Zone() != "" {
			v.add("dns.public_addresses", "%q is not an IP address", s)
		}
	}
	if c.DNS.Server != "" && c.Queue.DNSServer != "" && c.DNS.Server != c.Queue.DNSServer {
		v.add("queue.dns_server", "is an older name of dns.server; set only dns.server (got %q and %q)", c.Queue.DNSServer, c.DNS.Server)
	}
}
