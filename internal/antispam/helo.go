package antispam

import (
	"context"
	"net/netip"
	"strings"

	"github.com/postino-mail/postino/internal/inbound"
)

// MaxHeloLen bounds the EHLO/HELO name checked (RFC 5321 §4.5.3.1.2:
// a domain has at most 255 octets).
const MaxHeloLen = 255

// HeloKind is what an EHLO/HELO argument is.
type HeloKind int

// The kinds of EHLO/HELO argument.
const (
	// HeloFQDN is a domain with at least two labels.
	HeloFQDN HeloKind = iota
	// HeloLiteral is an address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]").
	HeloLiteral
	// HeloBareIP is an IP address without the brackets of a literal.
	HeloBareIP
	// HeloShort is a domain of one label ("localhost", "PC-123").
	HeloShort
	// HeloInvalid is neither a domain nor an address literal.
	HeloInvalid
)

// ParseHelo sorts an EHLO/HELO argument and returns the address of a
// literal or bare IP.
func ParseHelo(h string) (HeloKind, netip.Addr) {
	if h == "" || len(h) > MaxHeloLen {
		return HeloInvalid, netip.Addr{}
	}
	// RFC 5321 §4.1.1.1: ehlo = "EHLO" SP ( Domain / address-literal ).
	if h[0] == '[' {
		if h[len(h)-1] != ']' {
			return HeloInvalid, netip.Addr{}
		}
		inner := h[1 : len(h)-1]
		// RFC 5321 §4.1.3: IPv6-address-literal = "IPv6:" IPv6-addr.
		if len(inner) > 5 && strings.EqualFold(inner[:5], "IPv6:") {
			ip, err := netip.ParseAddr(inner[5:])
			if err != nil || !ip.Is6() || ip.Zone() != "" {
				return HeloInvalid, netip.Addr{}
			}
			return HeloLiteral, ip
		}
		ip, err := netip.ParseAddr(inner)
		if err != nil || !ip.Is4() {
			return HeloInvalid, netip.Addr{}
		}
		return HeloLiteral, ip
	}
	if ip, err := netip.ParseAddr(h); err == nil {
		return HeloBareIP, ip
	}
	// RFC 5321 §4.1.2: Domain = sub-domain *("." sub-domain), sub-domain
	// = Let-dig [Ldh-str]. A final dot is tolerated.
	d := strings.TrimSuffix(h, ".")
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return HeloInvalid, netip.Addr{}
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return HeloInvalid, netip.Addr{}
			}
		}
	}
	if len(labels) < 2 {
		return HeloShort, netip.Addr{}
	}
	return HeloFQDN, netip.Addr{}
}

// Helo is the check of the EHLO/HELO name.
type Helo struct {
	// Score is added for a name that is not a fully qualified domain or
	// an address literal: bad syntax, a bare IP, a single label.
	Score float64
	// ForgeryAction is what a client that claims to be this server
	// demands: our Hostname, or a literal of one of OwnAddrs, from a
	// client that is not that address.
	ForgeryAction inbound.Action
	// ForgeryScore is added for such a client.
	ForgeryScore float64
	// Hostname is our name.
	Hostname string
	// OwnAddrs are this machine's addresses.
	OwnAddrs []netip.Addr
	// Skip are the client networks not checked.
	Skip []netip.Prefix
}

// Name implements inbound.Check.
func (h *Helo) Name() string { return "helo" }

// Begin checks the name the client gave.
func (h *Helo) Begin(ctx context.Context, c *inbound.Conn, v *inbound.Verdict) inbound.Session {
	if skipped(c.Remote, h.Skip) {
		return nil
	}
	kind, ip := ParseHelo(c.Helo)
	forged := false
	switch kind {
	case HeloFQDN, HeloShort:
		forged = h.Hostname != "" && strings.EqualFold(strings.TrimSuffix(c.Helo, "."), h.Hostname)
	case HeloLiteral, HeloBareIP:
		forged = ip.Unmap() != c.Remote.Unmap() && h.own(ip.Unmap())
	}
	if forged {
		v.Add(inbound.Result{Check: "helo", Score: h.ForgeryScore, Action: h.ForgeryAction,
			Reply: "Sender identity refused: the HELO name is this server's", Code: 550, Enhanced: [3]int{5, 7, 1},
			Detail: "the client " + c.Remote.String() + " said HELO " + quoteHelo(c.Helo) + ", a name of this server"})
	}
	if kind != HeloFQDN && kind != HeloLiteral && h.Score != 0 {
		v.Add(inbound.Result{Check: "helo", Score: h.Score, Detail: heloDetail[kind] + ": " + quoteHelo(c.Helo)})
	}
	return nil
}

var heloDetail = map[HeloKind]string{
	HeloBareIP:  "HELO is an IP address without brackets",
	HeloShort:   "HELO is not a fully qualified domain",
	HeloInvalid: "HELO is neither a domain nor an address literal",
}

// own reports whether ip is one of this server's addresses.
func (h *Helo) own(ip netip.Addr) bool {
	if ip.IsLoopback() {
		return true
	}
	for _, a := range h.OwnAddrs {
		if a.Unmap() == ip {
			return true
		}
	}
	return false
}

// quoteHelo quotes a name for the log, cut to 64 octets.
func quoteHelo(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strings.ToValidUTF8(`"`+s+`"`, "?")
}
