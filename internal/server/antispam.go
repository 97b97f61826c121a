package server

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/postino-mail/postino/internal/antispam"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/inbound"
)

// loopbackNets are never looked up in DNS (reverse DNS, HELO): mail
// from the machine itself.
var loopbackNets = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// antispamChecks returns the [antispam] checks the configuration turns
// on: HELO first (it needs no DNS), then DNS lists, reverse DNS and
// greylisting (which refuses last, after the lists named the client).
func (s *Server) antispamChecks(cfg *config.Config, logger *slog.Logger) ([]inbound.Check, error) {
	a := &cfg.Antispam
	trusted := cfg.SMTP.TrustedNetworkPrefixes()
	local := append(append([]netip.Prefix(nil), trusted...), loopbackNets...)
	var checks []inbound.Check
	checks = append(checks, &antispam.Helo{Score: a.HeloScore, ForgeryAction: a.Action(a.HeloForgeryAction),
		ForgeryScore: a.HeloForgeryScore, Hostname: cfg.Hostname, OwnAddrs: ownAddrs(), Skip: local})
	if sites := a.Sites(); len(sites) > 0 {
		checks = append(checks, &antispam.DNSBL{Sites: sites, Threshold: a.DNSBLThreshold, Action: a.Action(a.DNSBLAction),
			Timeout: a.DNSBLTimeout.Duration, TXT: a.DNSBLReplyTXT, Skip: trusted, Resolver: s.resolver, Logger: logger})
	}
	if a.FCrDNSScore != 0 {
		checks = append(checks, &antispam.FCrDNS{Score: a.FCrDNSScore, Timeout: a.DNSBLTimeout.Duration, Skip: local,
			Resolver: s.resolver, Logger: logger})
	}
	if a.Greylist {
		path := cfg.GreylistPath()
		if s.greylist == nil || s.greylist.Path() != path {
			st, err := antispam.OpenFileStore(path, a.GreylistMax, nil, logger)
			if err != nil {
				return nil, fmt.Errorf("greylist: %w", err)
			}
			s.greylist = st
		}
		s.greylist.SetMaxEntries(a.GreylistMax)
		checks = append(checks, &antispam.Greylist{Delay: a.GreylistDelay.Duration, RetryWindow: a.GreylistWindow.Duration,
			Expire: a.GreylistExpire.Duration, Skip: trusted, Store: s.greylist, Logger: logger})
	}
	return checks, nil
}

// ownAddrs returns this machine's addresses, which no other client may
// claim in its HELO.
func ownAddrs() []netip.Addr {
	addrs, _ := net.InterfaceAddrs()
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}
