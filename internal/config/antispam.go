package config

import (
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/postino-mail/postino/internal/antispam"
	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/resolver"
)

// AntispamConfig is the [antispam] section: the MX's defences at the
// door (package antispam, and the pregreet test of package smtpin).
type AntispamConfig struct {
	DNSBLSites        []string `toml:"dnsbl_sites" comment:"DNS blocklists and allowlists, in Postfix's postscreen_dnsbl_sites syntax: \"zone[=filter][*weight]\", e.g. \"zen.spamhaus.org=127.0.0.[2..11]*3\" or \"list.dnswl.org=127.0.[0..255].[1..3]*-5\". The filter keeps the answers (in 127.0.0.0/8) that count; each list that lists the client adds its weight (default 1; negative for allowlists) to the client's score. Answers 127.255.255.x (Spamhaus: query refused, public resolver, too many queries) never count and are logged. Use a resolver of your own (dns.server): public resolvers are refused by most lists. Empty: no lookups."`
	DNSBLThreshold    float64  `toml:"dnsbl_threshold" comment:"Score from which dnsbl_action applies (Postfix's postscreen_dnsbl_threshold)."`
	DNSBLAction       string   `toml:"dnsbl_action" comment:"What a score of dnsbl_threshold or more does: reject (refuse every RCPT with \"554 5.7.1 Service unavailable; client [ip] blocked using zone\", as Postfix), tempfail (450), or quarantine, tag or accept (add the score to the message's spam score). Scores under the threshold (allowlists) are always added to the message's spam score."`
	DNSBLTimeout      Duration `toml:"dnsbl_timeout" comment:"Longest time the lookups (all lists at once, from the client's EHLO) are awaited at the first RCPT; lists that have not answered by then do not count."`
	DNSBLReplyTXT     bool     `toml:"dnsbl_reply_txt" comment:"Quote the blocking list's TXT record (usually a link explaining the listing) in the reply, as Postfix's default_rbl_reply."`
	FCrDNSScore       float64  `toml:"fcrdns_score" comment:"Spam score added for a client without forward-confirmed reverse DNS: none of its PTR names (the first 10) has its address. A failed lookup adds nothing. Loopback clients are not looked up. 0: no lookups."`
	HeloScore         float64  `toml:"helo_score" comment:"Spam score added for an EHLO/HELO name that is not a fully qualified domain or an address literal (RFC 5321 §4.1.1.1): bad syntax, a bare IP address, a single label. Not for loopback clients. 0: off."`
	HeloForgeryAction string   `toml:"helo_forgery_action" comment:"What a client does that says EHLO/HELO with this server's hostname, or with a literal of one of this machine's addresses (or of loopback) that is not its own: reject (550 at RCPT), tempfail, quarantine, tag or accept (only the score)."`
	HeloForgeryScore  float64  `toml:"helo_forgery_score" comment:"Spam score added for such a client."`
	PregreetWait      Duration `toml:"pregreet_wait" comment:"Time the MX waits before its 220 greeting; a client that sends anything meanwhile is refused with \"554 5.5.1 Protocol error\" (spamware that does not wait; Postfix's postscreen_greet_wait is 6s). Only on smtp.listen (plain connections: a client speaks first on implicit TLS), not for smtp.trusted_networks nor for a client that passed within pregreet_pass_ttl. 0s: off."`
	PregreetPassTTL   Duration `toml:"pregreet_pass_ttl" comment:"How long a client (IPv4 address, IPv6 /64) that waited for the greeting is greeted at once (Postfix's postscreen_greet_ttl is 1d). 0s: every connection waits."`
	Greylist          bool     `toml:"greylist" comment:"Greylisting: the first attempt of a (client /24 or /64, sender, recipient) triplet is refused at RCPT with \"450 4.2.0 Greylisted, try again later\"; a retry after greylist_delay passes. Not for smtp.trusted_networks."`
	GreylistDelay     Duration `toml:"greylist_delay" comment:"How long a new triplet is refused."`
	GreylistWindow    Duration `toml:"greylist_retry_window" comment:"How long after its first attempt a triplet may pass; a later retry starts over."`
	GreylistExpire    Duration `toml:"greylist_expire" comment:"How long a passed triplet passes at once after its last message."`
	GreylistFile      string   `toml:"greylist_file" comment:"File of the greylisting triplets (an append-only log, compacted as it grows); empty means DATA/greylist.db."`
	GreylistMax       int      `toml:"greylist_max_entries" comment:"Most triplets remembered; beyond, the expired and then the oldest are forgotten."`
}

// defaultAntispam is the default [antispam] section: no DNS lists, no
// pregreet wait, no greylisting (each needs a choice by the site);
// reverse DNS and HELO scored, HELO forgery refused.
func defaultAntispam() AntispamConfig {
	return AntispamConfig{
		DNSBLSites:        []string{},
		DNSBLThreshold:    1, // Postfix postscreen_dnsbl_threshold
		DNSBLAction:       "reject",
		DNSBLTimeout:      D(5 * time.Second),
		DNSBLReplyTXT:     true,
		FCrDNSScore:       1,
		HeloScore:         1,
		HeloForgeryAction: "reject",
		HeloForgeryScore:  5,
		PregreetWait:      D(0),
		PregreetPassTTL:   D(24 * time.Hour), // Postfix postscreen_greet_ttl
		GreylistDelay:     D(5 * time.Minute),
		GreylistWindow:    D(48 * time.Hour),
		GreylistExpire:    D(35 * 24 * time.Hour),
		GreylistMax:       antispam.DefaultMaxEntries,
	}
}

// Sites returns antispam.dnsbl_sites parsed; entries that do not
// parse (Validate reports them) are left out.
func (a *AntispamConfig) Sites() []antispam.Site {
	var out []antispam.Site
	for _, s := range a.DNSBLSites {
		if site, err := antispam.ParseSite(s); err == nil {
			out = append(out, site)
		}
	}
	return out
}

// GreylistPath returns the greylisting store's file.
func (c *Config) GreylistPath() string {
	if c.Antispam.GreylistFile == "" {
		return filepath.Join(c.DataDir, "greylist.db")
	}
	return c.ResolvePath(c.Antispam.GreylistFile)
}

// Action parses an action of the section (Validate refuses unknown
// ones; they read as Accept).
func (a *AntispamConfig) Action(s string) inbound.Action {
	act, _ := inbound.ParseAction(s)
	return act
}

// checkAntispam warns about DNS lists asked through a resolver that is
// not on this machine: most lists refuse queries from public resolvers
// (Spamhaus answers 127.255.255.254), so that nothing is ever blocked.
func (k *checker) checkAntispam(c *Config) {
	if len(c.Antispam.DNSBLSites) == 0 || c.DNSServer() != "" {
		return
	}
	r, err := resolver.New("", resolver.Options{})
	if err != nil {
		return
	}
	for _, srv := range r.Servers() {
		host, _, err := net.SplitHostPort(srv)
		if ip, perr := netip.ParseAddr(host); err == nil && perr == nil && !ip.IsLoopback() {
			k.conf(SeverityWarning, "antispam.dnsbl_sites", "the lists are asked through %s (/etc/resolv.conf), not a resolver on this machine; most lists refuse queries from public resolvers: set dns.server to a resolver of your own (e.g. Unbound on 127.0.0.1:53)", host)
			return
		}
	}
}

func (c *Config) validateAntispam(v *validator) {
	a := &c.Antispam
	if len(a.DNSBLSites) > 50 {
		v.add("antispam.dnsbl_sites", "at most 50 lists (got %d)", len(a.DNSBLSites))
	}
	for _, s := range a.DNSBLSites {
		if _, err := antispam.ParseSite(s); err != nil {
			v.add("antispam.dnsbl_sites", "%v", err)
		}
	}
	for _, f := range []struct {
		key string
		val float64
	}{
		{"antispam.dnsbl_threshold", a.DNSBLThreshold}, {"antispam.fcrdns_score", a.FCrDNSScore},
		{"antispam.helo_score", a.HeloScore}, {"antispam.helo_forgery_score", a.HeloForgeryScore},
	} {
		if math.IsNaN(f.val) || math.IsInf(f.val, 0) || math.Abs(f.val) > 1000 {
			v.add(f.key, "must be a number from -1000 to 1000 (got %g)", f.val)
		}
	}
	actions := []string{"reject", "tempfail", "quarantine", "tag", "accept"}
	v.oneOf("antispam.dnsbl_action", a.DNSBLAction, actions...)
	v.oneOf("antispam.helo_forgery_action", a.HeloForgeryAction, actions...)
	v.minDuration("antispam.dnsbl_timeout", a.DNSBLTimeout, 100*time.Millisecond)
	if a.DNSBLTimeout.Duration > time.Minute {
		v.add("antispam.dnsbl_timeout", "must be at most 1m (got %s)", a.DNSBLTimeout)
	}
	v.minDuration("antispam.pregreet_wait", a.PregreetWait, 0)
	if a.PregreetWait.Duration > time.Minute {
		// RFC 5321 §4.5.3.2.1: clients wait 5 minutes for the greeting;
		// a long wait only ties up connections.
		v.add("antispam.pregreet_wait", "must be at most 1m (got %s)", a.PregreetWait)
	}
	v.minDuration("antispam.pregreet_pass_ttl", a.PregreetPassTTL, 0)
	v.minDuration("antispam.greylist_delay", a.GreylistDelay, time.Second)
	if a.GreylistWindow.Duration <= a.GreylistDelay.Duration {
		v.add("antispam.greylist_retry_window", "must be longer than greylist_delay (got %s)", a.GreylistWindow)
	}
	v.minDuration("antispam.greylist_expire", a.GreylistExpire, time.Hour)
	v.atLeast("antispam.greylist_max_entries", a.GreylistMax, 100)
}
