package antispam

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/resolver"
	"github.com/postino-mail/postino/internal/testutil"
)

// TestFCrDNSAgainstNSD plays clients with good, missing, lying and
// failing reverse DNS.
func TestFCrDNSAgainstNSD(t *testing.T) {
	ptrs := "10 PTR good.example.test.\n11 PTR liar.example.test.\n12 PTR elsewhere.other.test.\n"
	// 13 has more PTR names than are looked up; the good one is last.
	for i := range MaxPTRNames {
		ptrs += "13 PTR n" + string(rune('a'+i)) + ".example.test.\n"
	}
	ptrs += "13 PTR many.example.test.\n"
	srv := testutil.StartDNS(t, map[string]string{
		"example.test":         "good A 127.0.0.10\nliar A 192.0.2.1\nmany A 127.0.0.13\n",
		"0.0.127.in-addr.arpa": ptrs,
	})
	r, err := resolver.New(srv.Addr, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ip   string
		want RDNSStatus
	}{
		{"127.0.0.10", RDNSPass},
		{"127.0.0.11", RDNSMismatch},  // the name does not have the address
		{"127.0.0.12", RDNSTempError}, // the name's zone is not served: unknown
		{"127.0.0.13", RDNSMismatch},  // the matching name is past the limit
		{"127.0.0.14", RDNSNone},      // no PTR
		{"::1", RDNSTempError},        // the reverse zone is not served
	} {
		got, _, _ := Confirm(context.Background(), r, netip.MustParseAddr(tc.ip))
		if got != tc.want {
			t.Errorf("%s: %v, want %v", tc.ip, got, tc.want)
		}
	}

	f := &FCrDNS{Score: 1.5, Timeout: 5 * time.Second, Resolver: r, Logger: slog.New(slog.DiscardHandler)}
	score := func(ip string) float64 {
		s := f.Begin(context.Background(), &inbound.Conn{ID: "t", Remote: netip.MustParseAddr(ip)}, &inbound.Verdict{})
		if s == nil {
			return 0
		}
		defer s.(inbound.Ender).End()
		v := &inbound.Verdict{}
		s.(inbound.DataStage).Data(context.Background(), &inbound.Envelope{ID: "tx"}, nil, v)
		return v.Score()
	}
	for ip, want := range map[string]float64{"127.0.0.10": 0, "127.0.0.11": 1.5, "127.0.0.14": 1.5, "127.0.0.12": 0} {
		if got := score(ip); got != want {
			t.Errorf("score of %s = %g, want %g", ip, got, want)
		}
	}
	f.Skip = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	if got := score("127.0.0.14"); got != 0 {
		t.Errorf("skipped client scored %g", got)
	}
}

func TestParseHelo(t *testing.T) {
	for h, want := range map[string]HeloKind{
		"mail.example.org":        HeloFQDN,
		"mail.example.org.":       HeloFQDN,
		"[192.0.2.1]":             HeloLiteral,
		"[IPv6:2001:db8::1]":      HeloLiteral,
		"[ipv6:::1]":              HeloLiteral,
		"192.0.2.1":               HeloBareIP,
		"2001:db8::1":             HeloBareIP,
		"localhost":               HeloShort,
		"":                        HeloInvalid,
		"[192.0.2.1":              HeloInvalid,
		"[2001:db8::1]":           HeloInvalid,
		"[IPv6:192.0.2.1]":        HeloInvalid,
		"under_score.example":     HeloInvalid,
		"-bad.example":            HeloInvalid,
		"a..b":                    HeloInvalid,
		"x y":                     HeloInvalid,
		strings.Repeat("a.", 200): HeloInvalid,
	} {
		if got, _ := ParseHelo(h); got != want {
			t.Errorf("ParseHelo(%q) = %v, want %v", h, got, want)
		}
	}
}

// TestHeloForgery: a client that claims our name or address is forged;
// the same from the address itself is not.
func TestHeloForgery(t *testing.T) {
	h := &Helo{Score: 1, ForgeryAction: inbound.Reject, ForgeryScore: 5, Hostname: "mx.example.org",
		OwnAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.25")}}
	check := func(remote, helo string) *inbound.Verdict {
		v := &inbound.Verdict{}
		h.Begin(context.Background(), &inbound.Conn{ID: "t", Remote: netip.MustParseAddr(remote), Helo: helo}, v)
		return v
	}
	for _, tc := range []struct {
		remote, helo string
		reject       bool
		score        float64
	}{
		{"198.51.100.7", "MX.example.org", true, 5},
		{"198.51.100.7", "[192.0.2.25]", true, 5},
		{"198.51.100.7", "[127.0.0.1]", true, 5},
		{"198.51.100.7", "192.0.2.25", true, 6}, // forged and a bare IP
		{"192.0.2.25", "[192.0.2.25]", false, 0},
		{"198.51.100.7", "client.example.net", false, 0},
		{"198.51.100.7", "[198.51.100.7]", false, 0},
		{"198.51.100.7", "198.51.100.7", false, 1},
		{"198.51.100.7", "PC-1234", false, 1},
		{"198.51.100.7", "bad_name!", false, 1},
	} {
		v := check(tc.remote, tc.helo)
		r, rejected := v.Strongest()
		if rejected != tc.reject || v.Score() != tc.score {
			t.Errorf("%s HELO %q: rejected %v (%+v) score %g, want %v %g", tc.remote, tc.helo, rejected, r, v.Score(), tc.reject, tc.score)
		}
	}
	h.Skip = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	if v := check("198.51.100.7", "mx.example.org"); len(v.Results()) != 0 {
		t.Errorf("skipped client judged: %+v", v.Results())
	}
}

func FuzzParseHelo(f *testing.F) {
	for _, s := range []string{"mail.example.org", "[192.0.2.1]", "[IPv6:::1]", "1.2.3.4", "localhost", "[", "]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		kind, ip := ParseHelo(h)
		if (kind == HeloLiteral || kind == HeloBareIP) != ip.IsValid() {
			t.Fatalf("%q: kind %v with address %v", h, kind, ip)
		}
		if kind != HeloInvalid && len(h) > MaxHeloLen {
			t.Fatalf("%q accepted", h)
		}
	})
}
