package antispam

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/resolver"
	"github.com/postino-mail/postino/internal/testutil"
)

func TestParseSite(t *testing.T) {
	for _, tc := range []struct {
		spec, want string
		weight     float64
		match      []string
		nomatch    []string
	}{
		{spec: "zen.spamhaus.org", want: "zen.spamhaus.org", weight: 1, match: []string{"127.0.0.2", "127.1.2.3"}},
		{spec: "zen.spamhaus.org=127.0.0.[2..11]*3", want: "zen.spamhaus.org=127.0.0.[2..11]*3", weight: 3,
			match: []string{"127.0.0.2", "127.0.0.11"}, nomatch: []string{"127.0.0.1", "127.0.0.12", "127.0.1.2"}},
		{spec: "list.dnswl.org=127.0.[0..255].[1;3]*-5", want: "list.dnswl.org=127.0.[0..255].[1;3]*-5", weight: -5,
			match: []string{"127.0.9.1", "127.0.9.3"}, nomatch: []string{"127.0.9.2"}},
		{spec: " B.Example.  *0.5", want: "b.example*0.5", weight: 0.5},
		{spec: "b.example=127.0.0.[2;4..5]", want: "b.example=127.0.0.[2;4..5]", weight: 1,
			match: []string{"127.0.0.4"}, nomatch: []string{"127.0.0.3"}},
	} {
		s, err := ParseSite(tc.spec)
		if err != nil {
			t.Fatalf("ParseSite(%q): %v", tc.spec, err)
		}
		if s.String() != tc.want || s.Weight != tc.weight {
			t.Errorf("ParseSite(%q) = %s weight %g, want %s weight %g", tc.spec, s, s.Weight, tc.want, tc.weight)
		}
		for _, m := range tc.match {
			if !s.Matches(netip.MustParseAddr(m)) {
				t.Errorf("%s does not match %s", s, m)
			}
		}
		for _, m := range tc.nomatch {
			if s.Matches(netip.MustParseAddr(m)) {
				t.Errorf("%s matches %s", s, m)
			}
		}
	}
	for _, bad := range []string{"", "=127.0.0.2", "zone*x", "zone*NaN", "zone*1e9", "zone=127.0.0", "zone=127.0.0.256",
		"zone=127.0.0.[3..2]", "zone=127.0.0.[2", "zone=127.0.0.2.5", "a..b", "bad zone", "zone=127.0.0.-1",
		strings.Repeat("a", MaxSiteLen+1), strings.Repeat("a.", 100) + "b"} {
		_, err := ParseSite(bad)
		var se *SiteError
		if !errors.As(err, &se) {
			t.Errorf("ParseSite(%q) = %v, want a *SiteError", bad, err)
		}
	}
}

func TestQueryName(t *testing.T) {
	// RFC 5782 §2.1 and §2.4 give these examples.
	if got := QueryName(netip.MustParseAddr("192.168.42.23"), "dnsbl.example.net"); got != "23.42.168.192.dnsbl.example.net" {
		t.Errorf("IPv4: %s", got)
	}
	if got := QueryName(netip.MustParseAddr("2001:db8:1:2:3:4:567:89ab"), "ugly.example.com"); got != "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com" {
		t.Errorf("IPv6: %s", got)
	}
	if got := QueryName(netip.MustParseAddr("::ffff:127.0.0.2"), "z.test"); got != "2.0.0.127.z.test" {
		t.Errorf("mapped: %s", got)
	}
}

func TestSanitizeReason(t *testing.T) {
	if got := sanitizeReason(" a\r\n554 b\x00\xff c "); got != "a554 b c" {
		t.Errorf("%q", got)
	}
}

func TestClassifyAnswers(t *testing.T) {
	a := ClassifyAnswers([]netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("127.255.255.254")})
	if len(a.Listed) != 1 || a.Listed[0].String() != "127.0.0.2" || a.Ignored != 1 || a.Refused.String() != "127.255.255.254" {
		t.Errorf("%+v", a)
	}
	many := make([]netip.Addr, 1000)
	for i := range many {
		many[i] = netip.MustParseAddr("127.0.0.2")
	}
	if a := ClassifyAnswers(many); len(a.Listed) != maxAnswers {
		t.Errorf("%d answers kept", len(a.Listed))
	}
}

// dnsblZones is a test blocklist and allowlist:
//   - 127.0.0.2 is listed (127.0.0.2, with a TXT reason);
//   - 127.0.0.3 gets Spamhaus's "public resolver" refusal code;
//   - 127.0.0.4 is listed and also allowlisted;
//   - 127.0.0.5 gets an answer outside 127.0.0.0/8;
//   - 127.0.0.6 is listed with a code the filter leaves out;
//   - 2001:db8::2 is listed (IPv6 nibbles).
func dnsblZones() map[string]string {
	v6 := strings.TrimSuffix(QueryName(netip.MustParseAddr("2001:db8::2"), "bl.test"), ".bl.test")
	return map[string]string{
		"bl.test": `2.0.0.127 A 127.0.0.2
2.0.0.127 TXT "Listed: see https://bl.test/q?127.0.0.2 ` + strings.Repeat("x", 200) + `" "` + strings.Repeat("x", 100) + `"
3.0.0.127 A 127.255.255.254
4.0.0.127 A 127.0.0.4
5.0.0.127 A 192.0.2.1
6.0.0.127 A 127.0.0.99
` + v6 + ` A 127.0.0.2
`,
		"wl.test": `4.0.0.127 A 127.0.10.1
`,
	}
}

func newDNSBL(t *testing.T, addr string, sites ...string) *DNSBL {
	t.Helper()
	r, err := resolver.New(addr, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := &DNSBL{Threshold: 3, Action: inbound.Reject, Timeout: 5 * time.Second, TXT: true, Resolver: r, Logger: slog.New(slog.DiscardHandler)}
	for _, s := range sites {
		site, err := ParseSite(s)
		if err != nil {
			t.Fatal(err)
		}
		d.Sites = append(d.Sites, site)
	}
	return d
}

// rcptVerdict runs a DNSBL session for ip up to RCPT and returns what
// the RCPT stage found.
func rcptVerdict(t *testing.T, c inbound.Check, ip string) *inbound.Verdict {
	t.Helper()
	conn := &inbound.Conn{ID: "t", Remote: netip.MustParseAddr(ip), Helo: "client.example"}
	v := &inbound.Verdict{}
	s := c.Begin(context.Background(), conn, v)
	if s == nil {
		return v
	}
	defer s.(inbound.Ender).End()
	s.(inbound.RcptStage).Rcpt(context.Background(), &inbound.Envelope{ID: "tx"}, "u@example.test", v)
	return v
}

func TestDNSBLAgainstNSD(t *testing.T) {
	srv := testutil.StartDNS(t, dnsblZones())
	d := newDNSBL(t, srv.Addr, "bl.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].1*-5")
	logs := &strings.Builder{}
	var logMu sync.Mutex
	d.Logger = slog.New(slog.NewTextHandler(lockedWriter{&logMu, logs}, nil))

	v := rcptVerdict(t, d, "127.0.0.2")
	r, ok := v.Strongest()
	if !ok || r.Action != inbound.Reject || r.Code != 554 || r.Score != 3 {
		t.Fatalf("listed client: %+v %v", r, ok)
	}
	// The reply names the client and the zone, as Postfix's, and
	// quotes the TXT record, cut.
	if want := "Service unavailable; client [127.0.0.2] blocked using bl.test; Listed: see https://bl.test/q?127.0.0.2 " + strings.Repeat("x", maxTXTLen-40); r.Reply != want {
		t.Errorf("reply %q, want %q", r.Reply, want)
	}
	if v := rcptVerdict(t, d, "2001:db8::2"); v.Score() != 3 {
		t.Errorf("IPv6 listed client: score %g", v.Score())
	}
	// The refusal code, an answer outside 127/8, a code the filter
	// leaves out, an unlisted client: not blocked.
	for _, ip := range []string{"127.0.0.3", "127.0.0.5", "127.0.0.6", "127.0.0.7", "2001:db8::3"} {
		if _, ok := rcptVerdict(t, d, ip).Strongest(); ok {
			t.Errorf("%s is blocked", ip)
		}
	}
	// The refusal code is logged as a warning naming the list.
	logMu.Lock()
	if !strings.Contains(logs.String(), `level=WARN msg="dnsbl: the list refused the query; the client counts as not listed" id=t zone=bl.test answer=127.255.255.254`) {
		t.Errorf("no warning for the refused query:\n%s", logs)
	}
	logMu.Unlock()

	// Listed and allowlisted: -2 is under the threshold; the score
	// goes to the message at DATA.
	conn := &inbound.Conn{ID: "t", Remote: netip.MustParseAddr("127.0.0.4")}
	s := d.Begin(context.Background(), conn, &inbound.Verdict{})
	v = &inbound.Verdict{}
	s.(inbound.RcptStage).Rcpt(context.Background(), &inbound.Envelope{ID: "tx"}, "u@example.test", v)
	if _, ok := v.Strongest(); ok {
		t.Errorf("allowlisted client blocked: %+v", v.Results())
	}
	s.(inbound.DataStage).Data(context.Background(), &inbound.Envelope{ID: "tx"}, nil, v)
	if v.Score() != -2 {
		t.Errorf("allowlisted client's score %g, want -2", v.Score())
	}
	s.(inbound.Ender).End()

	// Skipped networks are not looked up.
	d.Skip = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	if s := d.Begin(context.Background(), conn, &inbound.Verdict{}); s != nil {
		t.Error("a skipped client was looked up")
	}
}

// TestDNSBLScoreMode: with a non-refusing action the listing becomes
// the message's score, once per message.
func TestDNSBLScoreMode(t *testing.T) {
	srv := testutil.StartDNS(t, dnsblZones())
	d := newDNSBL(t, srv.Addr, "bl.test*4")
	d.Action = inbound.Quarantine
	conn := &inbound.Conn{ID: "t", Remote: netip.MustParseAddr("127.0.0.2")}
	s := d.Begin(context.Background(), conn, &inbound.Verdict{})
	defer s.(inbound.Ender).End()
	v := &inbound.Verdict{}
	for _, rc := range []string{"a@x.test", "b@x.test"} {
		s.(inbound.RcptStage).Rcpt(context.Background(), &inbound.Envelope{ID: "tx"}, rc, v)
	}
	if _, ok := v.Strongest(); ok {
		t.Fatal("refused at RCPT in score mode")
	}
	s.(inbound.DataStage).Data(context.Background(), &inbound.Envelope{ID: "tx"}, nil, v)
	r, ok := v.Strongest()
	if !ok || r.Action != inbound.Quarantine || v.Score() != 4 {
		t.Errorf("%+v score %g", r, v.Score())
	}
}

// TestDNSBLServerDown: a list whose server fails (REFUSED: the zone is
// not served) blocks nobody.
func TestDNSBLServerDown(t *testing.T) {
	srv := testutil.StartDNS(t, dnsblZones())
	d := newDNSBL(t, srv.Addr, "other.test*10")
	if _, ok := rcptVerdict(t, d, "127.0.0.2").Strongest(); ok {
		t.Error("blocked on a failing list")
	}
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func FuzzParseSite(f *testing.F) {
	for _, s := range []string{"zen.spamhaus.org=127.0.0.[2..11]*3", "list.dnswl.org=127.0.[0..255].[1;3]*-5", "b.test", "x=1.2.3.4", "x=[1..2;5].[0].3.4*0.5", "x*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := ParseSite(spec)
		if err != nil {
			var se *SiteError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a *SiteError", err)
			}
			return
		}
		// What parses writes back to a spec that parses to the same.
		s2, err := ParseSite(s.String())
		if err != nil || s2.String() != s.String() || s2.Weight != s.Weight {
			t.Fatalf("%q -> %s -> %s %v", spec, s, s2, err)
		}
		if len(QueryName(netip.MustParseAddr("2001:db8::1"), s.Zone)) > 253 {
			t.Fatalf("query name too long for zone %q", s.Zone)
		}
	})
}

func FuzzClassifyAnswers(f *testing.F) {
	f.Add([]byte{127, 0, 0, 2, 127, 255, 255, 254, 192, 0, 2, 1})
	f.Add([]byte{127, 255, 255, 252})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var addrs []netip.Addr
		for i := 0; i+4 <= len(raw); i += 4 {
			addrs = append(addrs, netip.AddrFrom4([4]byte(raw[i:i+4])))
		}
		a := ClassifyAnswers(addrs)
		if len(a.Listed)+a.Ignored > maxAnswers {
			t.Fatalf("%d answers looked at", len(a.Listed)+a.Ignored)
		}
		for _, l := range a.Listed {
			if !loopback8.Contains(l) || refusalCodes.Contains(l) {
				t.Fatalf("%s counted as a listing", l)
			}
		}
	})
}

// TestDNSBLBlackhole: a list server that never answers (a hostile or
// broken one) holds the RCPT no longer than the timeout, and blocks
// nobody.
func TestDNSBLBlackhole(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	d := newDNSBL(t, pc.LocalAddr().String(), "bl.test*10")
	d.Timeout = 200 * time.Millisecond
	done := make(chan *inbound.Verdict)
	go func() { done <- rcptVerdict(t, d, "127.0.0.2") }()
	select {
	case v := <-done:
		if _, ok := v.Strongest(); ok {
			t.Errorf("blocked by a list that never answered: %+v", v.Results())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RCPT still waiting for a list that never answers")
	}
}
