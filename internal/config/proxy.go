package config

import (
	"net/netip"
	"time"

	"github.com/postino-mail/postino/internal/proxyproto"
)

// ProxyConfig is the [proxy] section: the PROXY protocol spoken by TCP
// load balancers in front of postino.
type ProxyConfig struct {
	Trusted       []string `toml:"trusted" reload:"restart" comment:"Addresses or networks (CIDR) of the load balancers (e.g. HAProxy with send-proxy-v2) in front of postino. A connection from them, on every listener, must start with a PROXY protocol header (v1 or v2), whose client address then counts for per-address limits, failed-login blocks, plaintext_auth = \"loopback\", logs and Received headers. A connection from any other address that starts with a PROXY header is refused (it would spoof its address). Empty: the PROXY protocol is off."`
	HeaderTimeout Duration `toml:"header_timeout" reload:"restart" comment:"Time a load balancer has to send the PROXY header of a connection."`
}

// defaultProxy is the default [proxy] section: off.
func defaultProxy() ProxyConfig {
	return ProxyConfig{Trusted: []string{}, HeaderTimeout: D(proxyproto.DefaultHeaderTimeout)}
}

// ProxyTrusted returns proxy.trusted parsed; entries that do not parse
// (Validate reports them) are left out.
func (c *Config) ProxyTrusted() []netip.Prefix {
	var out []netip.Prefix
	for _, n := range c.Proxy.Trusted {
		if p, err := parseNetwork(n); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func (c *Config) validateProxy(v *validator) {
	for _, n := range c.Proxy.Trusted {
		if _, err := parseNetwork(n); err != nil {
			v.add("proxy.trusted", "%v", err)
		}
	}
	v.minDuration("proxy.header_timeout", c.Proxy.HeaderTimeout, 100*time.Millisecond)
}
