package resolver

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/postino-mail/postino/internal/testutil"
)

// zone is a tiny authoritative server on loopback (UDP and TCP on the
// same port) that counts the queries it answers.
type zone struct {
	addr    string
	queries atomic.Int64
	mu      sync.Mutex
	records map[string][]string // "name TYPE" -> RR strings
	rcode   map[string]int      // name -> forced rcode
	ad      bool
	big     bool // answer TXT too large for UDP
}

func startZone(t *testing.T) *zone {
	t.Helper()
	z := &zone{records: map[string][]string{}, rcode: map[string]int{}}
	// The same port for UDP and TCP: a UDP port whose TCP twin another
	// program holds is given back and another one tried.
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ; try++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if try == 20 {
			t.Fatal(err)
		}
	}
	z.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(z.serve)
	us := &dns.Server{PacketConn: pc, Handler: h}
	ts := &dns.Server{Listener: ln, Handler: h}
	go us.ActivateAndServe()
	go ts.ActivateAndServe()
	t.Cleanup(func() { us.Shutdown(); ts.Shutdown() })
	return z
}

func (z *zone) add(rrs ...string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		k := strings.ToLower(rr.Header().Name) + " " + dns.TypeToString[rr.Header().Rrtype]
		z.records[k] = append(z.records[k], s)
	}
}

func (z *zone) serve(w dns.ResponseWriter, req *dns.Msg) {
	z.queries.Add(1)
	z.mu.Lock()
	defer z.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(req)
	m.AuthenticatedData = z.ad
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if rc, ok := z.rcode[name]; ok {
		m.Rcode = rc
		w.WriteMsg(m)
		return
	}
	exists := false
	for k := range z.records {
		if strings.HasPrefix(k, name+" ") {
			exists = true
		}
	}
	for _, s := range z.records[name+" "+dns.TypeToString[q.Qtype]] {
		rr, _ := dns.NewRR(s)
		m.Answer = append(m.Answer, rr)
	}
	if len(m.Answer) == 0 {
		soa, _ := dns.NewRR("test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 60")
		m.Ns = append(m.Ns, soa)
		if !exists {
			m.Rcode = dns.RcodeNameError
		}
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && z.big && q.Qtype == dns.TypeTXT {
		m.Answer = nil
		m.Truncated = true
	}
	w.WriteMsg(m)
}

func newResolver(t *testing.T, z *zone, now func() time.Time) *Resolver {
	t.Helper()
	r, err := New(z.addr, Options{Timeout: 2 * time.Second, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLookups(t *testing.T) {
	z := startZone(t)
	z.add(
		`example.test. 300 IN MX 20 mx2.example.test.`,
		`example.test. 300 IN MX 10 mx1.example.test.`,
		`example.test. 300 IN TXT "v=spf1 " "ip4:127.0.0.1 -all"`,
		`mx1.example.test. 300 IN A 127.0.0.2`,
		`mx1.example.test. 300 IN AAAA ::1`,
		`2.0.0.127.in-addr.arpa. 300 IN PTR mx1.example.test.`,
		`_25._tcp.mx1.example.test. 300 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef`,
	)
	r := newResolver(t, z, nil)
	ctx := context.Background()

	mx, err := r.LookupMX(ctx, "Example.Test")
	if err != nil || len(mx) != 2 || mx[0].Host != "mx1.example.test." || mx[1].Pref != 20 {
		t.Fatalf("MX: %v %v", mx, err)
	}
	txt, err := r.LookupTXT(ctx, "example.test")
	if err != nil || len(txt) != 1 || txt[0] != "v=spf1 ip4:127.0.0.1 -all" {
		t.Fatalf("TXT: %q %v", txt, err)
	}
	ips, err := r.LookupIPAddr(ctx, "mx1.example.test")
	if err != nil || len(ips) != 2 || ips[0].IP.String() != "127.0.0.2" || ips[1].IP.String() != "::1" {
		t.Fatalf("IP: %v %v", ips, err)
	}
	names, err := r.LookupAddr(ctx, "127.0.0.2")
	if err != nil || len(names) != 1 || names[0] != "mx1.example.test." {
		t.Fatalf("PTR: %v %v", names, err)
	}
	tlsa, ad, err := r.LookupTLSA(ctx, 25, "tcp", "mx1.example.test")
	if err != nil || len(tlsa) != 1 || tlsa[0].Selector != 1 || ad {
		t.Fatalf("TLSA: %v %v %v", tlsa, ad, err)
	}
	lit, err := r.LookupIPAddr(ctx, "::1")
	if err != nil || len(lit) != 1 {
		t.Fatalf("literal: %v %v", lit, err)
	}
}

func TestNotFoundAndTemporary(t *testing.T) {
	z := startZone(t)
	z.add(`a.test. 300 IN A 127.0.0.1`)
	z.rcode["broken.test."] = dns.RcodeServerFailure
	r := newResolver(t, z, nil)
	ctx := context.Background()

	_, err := r.LookupTXT(ctx, "nx.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound || de.IsTemporary {
		t.Fatalf("NXDOMAIN: %#v", err)
	}
	// NODATA: the name exists without that type.
	ans, err := r.Query(ctx, "a.test", dns.TypeTXT)
	if !errors.As(err, &de) || !de.IsNotFound || ans == nil || ans.Rcode != dns.RcodeSuccess {
		t.Fatalf("NODATA: %v %#v", ans, err)
	}
	_, err = r.LookupTXT(ctx, "broken.test")
	if !errors.As(err, &de) || !de.IsTemporary || de.IsNotFound {
		t.Fatalf("SERVFAIL: %#v", err)
	}
	if _, err := r.LookupTXT(ctx, strings.Repeat("a", 64)+".test"); !errors.As(err, &de) || !de.IsNotFound {
		t.Fatalf("invalid name: %#v", err)
	}
}

func TestUnreachableServerIsTemporary(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close() // nobody answers there
	r, err := New(addr, Options{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.LookupMX(context.Background(), "example.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTemporary || de.IsNotFound {
		t.Fatalf("got %#v", err)
	}
}

func TestCacheHonoursTTL(t *testing.T) {
	z := startZone(t)
	z.add(`short.test. 30 IN TXT "x"`, `long.test. 3600 IN TXT "y"`)
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	r := newResolver(t, z, clock)
	ctx := context.Background()
	for range 3 {
		r.LookupTXT(ctx, "short.test")
		r.LookupTXT(ctx, "long.test")
		r.LookupTXT(ctx, "nx.test") // negative: SOA minimum 60 s
	}
	if n := z.queries.Load(); n != 3 {
		t.Fatalf("queries after repeated lookups: %d, want 3", n)
	}
	advance(31 * time.Second)
	r.LookupTXT(ctx, "short.test")
	r.LookupTXT(ctx, "long.test")
	r.LookupTXT(ctx, "nx.test")
	if n := z.queries.Load(); n != 4 {
		t.Fatalf("queries after 31 s: %d, want 4 (only the 30 s answer expired)", n)
	}
	advance(30 * time.Second)
	r.LookupTXT(ctx, "nx.test")
	if n := z.queries.Load(); n != 5 {
		t.Fatalf("queries after 61 s: %d, want 5 (negative answer expired)", n)
	}
}

func TestServerFailureNotCached(t *testing.T) {
	z := startZone(t)
	z.rcode["broken.test."] = dns.RcodeServerFailure
	r := newResolver(t, z, nil)
	for range 3 {
		r.LookupTXT(context.Background(), "broken.test")
	}
	if n := z.queries.Load(); n != 3 {
		t.Fatalf("SERVFAIL answered from cache: %d queries", n)
	}
}

func TestTruncatedRetriedOverTCP(t *testing.T) {
	z := startZone(t)
	z.big = true
	z.add(`big.test. 300 IN TXT "` + strings.Repeat("x", 250) + `"`)
	r := newResolver(t, z, nil)
	txt, err := r.LookupTXT(context.Background(), "big.test")
	if err != nil || len(txt) != 1 || len(txt[0]) != 250 {
		t.Fatalf("got %q %v", txt, err)
	}
}

func TestAuthenticatedData(t *testing.T) {
	z := startZone(t)
	z.ad = true
	z.add(`_25._tcp.mx.test. 300 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef`)
	r := newResolver(t, z, nil)
	_, ad, err := r.LookupTLSA(context.Background(), 25, "tcp", "mx.test")
	if err != nil || !ad {
		t.Fatalf("AD bit lost: %v %v", ad, err)
	}
}

func TestCacheBounded(t *testing.T) {
	z := startZone(t)
	r, err := New(z.addr, Options{CacheSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		z.add("n" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + ".test. 300 IN TXT \"v\"")
	}
	for i := range 100 {
		r.LookupTXT(context.Background(), "n"+string(rune('a'+i%26))+strings.Repeat("x", i/26)+".test")
	}
	r.mu.Lock()
	n := len(r.cache)
	r.mu.Unlock()
	if n > 10 {
		t.Fatalf("cache holds %d entries, bound 10", n)
	}
}

// TestAgainstNSD asks a real authoritative server (NSD) for every record
// type the resolver decodes.
func TestAgainstNSD(t *testing.T) {
	srv := testutil.StartDNS(t, map[string]string{
		"example.test": `@ MX 10 mx
@ TXT "v=spf1 ip4:127.0.0.1 -all"
mx A 127.0.0.1
mx AAAA ::1
long TXT "` + strings.Repeat("a", 200) + `" "` + strings.Repeat("b", 200) + `"
`,
		"0.0.127.in-addr.arpa": `1 PTR mx.example.test.
`,
	})
	r, err := New(srv.Addr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if mx, err := r.LookupMX(ctx, "example.test"); err != nil || len(mx) != 1 || mx[0].Host != "mx.example.test." {
		t.Fatalf("MX %v %v", mx, err)
	}
	if txt, err := r.LookupTXT(ctx, "long.example.test"); err != nil || len(txt) != 1 || len(txt[0]) != 400 {
		t.Fatalf("TXT %v %v", txt, err)
	}
	if ips, err := r.LookupIPAddr(ctx, "mx.example.test"); err != nil || len(ips) != 2 {
		t.Fatalf("IP %v %v", ips, err)
	}
	if names, err := r.LookupAddr(ctx, "127.0.0.1"); err != nil || len(names) != 1 || names[0] != "mx.example.test." {
		t.Fatalf("PTR %v %v", names, err)
	}
	var de *net.DNSError
	if _, err := r.LookupTXT(ctx, "nx.example.test"); !errors.As(err, &de) || !de.IsNotFound {
		t.Fatalf("NXDOMAIN %#v", err)
	}
}
