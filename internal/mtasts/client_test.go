package mtasts

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// fakeDNS answers TXT and address lookups from maps; every host resolves
// to 127.0.0.1 only when listed.
type fakeDNS struct {
	mu    sync.Mutex
	txt   map[string][]string
	txtEr map[string]error
	hosts map[string]bool
}

func (f *fakeDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.txtEr[name]; err != nil {
		return nil, err
	}
	if t, ok := f.txt[name]; ok {
		return t, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeDNS) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hosts[host] {
		return []net.IPAddr{{IP: net.IPv4(127, 0, 0, 1)}}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (f *fakeDNS) setTXT(name string, txt ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.txt[name] = txt
}

// policyServer serves body as the policy of mta-sts.<domain> over HTTPS
// with a certificate for certName, signed by its own test CA.
type policyServer struct {
	srv   *httptest.Server
	hits  atomic.Int32
	mu    sync.Mutex
	body  string
	ctype string
	code  int
}

func newPolicyServer(t *testing.T, certName, body string) (*policyServer, testutil.Cert) {
	cert := testutil.NewCert(t, certName)
	ps := &policyServer{body: body, ctype: "text/plain; charset=utf-8", code: 200}
	ps.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ps.hits.Add(1)
		ps.mu.Lock()
		defer ps.mu.Unlock()
		if r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		if ps.code == http.StatusFound {
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
			return
		}
		w.Header().Set("Content-Type", ps.ctype)
		w.WriteHeader(ps.code)
		w.Write([]byte(ps.body))
	}))
	ps.srv.TLS = cert.Config()
	ps.srv.StartTLS()
	t.Cleanup(ps.srv.Close)
	return ps, cert
}

func (ps *policyServer) port() int {
	_, p, _ := net.SplitHostPort(ps.srv.Listener.Addr().String())
	n, _ := strconv.Atoi(p)
	return n
}

const enforcePolicy = "version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n"

func newTestClient(t *testing.T, dns *fakeDNS, ps *policyServer, cert testutil.Cert, dir string, now *time.Time) *Client {
	t.Helper()
	c, err := New(Options{Resolver: dns, Roots: cert.Pool(), Port: ps.port(), Timeout: 5 * time.Second, CacheDir: dir, Now: func() time.Time { return *now }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientFetchCacheRefresh(t *testing.T) {
	ps, cert := newPolicyServer(t, "mta-sts.sts.test", enforcePolicy)
	dns := &fakeDNS{txt: map[string][]string{"_mta-sts.sts.test": {"v=STSv1; id=one"}}, hosts: map[string]bool{"mta-sts.sts.test": true}}
	dir := t.TempDir()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	c := newTestClient(t, dns, ps, cert, dir, &now)
	ctx := context.Background()
	p, err := c.Get(ctx, "STS.test.")
	if err != nil || p == nil || p.Mode != ModeEnforce || !p.Matches("mx.sts.test") {
		t.Fatalf("%+v %v", p, err)
	}
	// Same id: the cache answers.
	if _, err := c.Get(ctx, "sts.test"); err != nil || ps.hits.Load() != 1 {
		t.Fatalf("hits %d, %v", ps.hits.Load(), err)
	}
	// A new client (a restart) reads the cache from disk.
	c2 := newTestClient(t, dns, ps, cert, dir, &now)
	if p, err := c2.Get(ctx, "sts.test"); err != nil || p == nil || ps.hits.Load() != 1 {
		t.Fatalf("after restart: %+v %v hits %d", p, err, ps.hits.Load())
	}
	// A new id fetches again.
	ps.mu.Lock()
	ps.body = "version: STSv1\nmode: testing\nmx: mx.sts.test\nmax_age: 86400\n"
	ps.mu.Unlock()
	dns.setTXT("_mta-sts.sts.test", "v=STSv1; id=two")
	if p, err := c2.Get(ctx, "sts.test"); err != nil || p.Mode != ModeTesting || ps.hits.Load() != 2 {
		t.Fatalf("new id: %+v %v hits %d", p, err, ps.hits.Load())
	}
	// RFC 8461 §5.1: the server fails, the id changes: the cached policy
	// is still used while it lasts...
	ps.mu.Lock()
	ps.code = 500
	ps.mu.Unlock()
	dns.setTXT("_mta-sts.sts.test", "v=STSv1; id=three")
	if p, err := c2.Get(ctx, "sts.test"); err != nil || p == nil || p.Mode != ModeTesting {
		t.Fatalf("fetch failed with a cache: %+v %v", p, err)
	}
	// ...and not once max_age has passed.
	now = now.Add(25 * time.Hour)
	var fe *FetchError
	if p, err := c2.Get(ctx, "sts.test"); p != nil || !errors.As(err, &fe) || fe.ResultType != ResultFetchError {
		t.Fatalf("expired: %+v %v", p, err)
	}
}

func TestClientRefusals(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	dns := &fakeDNS{txt: map[string][]string{"_mta-sts.sts.test": {"v=STSv1; id=one"}}, hosts: map[string]bool{"mta-sts.sts.test": true}}

	// A certificate for another name: sts-webpki-invalid.
	ps, cert := newPolicyServer(t, "mta-sts.other.test", enforcePolicy)
	c := newTestClient(t, dns, ps, cert, "", &now)
	var fe *FetchError
	if p, err := c.Get(ctx, "sts.test"); p != nil || !errors.As(err, &fe) || fe.ResultType != ResultWebPKIError {
		t.Fatalf("wrong name: %+v %v", p, err)
	}
	// A certificate from a CA we do not trust.
	ps, _ = newPolicyServer(t, "mta-sts.sts.test", enforcePolicy)
	c = newTestClient(t, dns, ps, testutil.NewCert(t, "mta-sts.sts.test"), "", &now)
	if p, err := c.Get(ctx, "sts.test"); p != nil || !errors.As(err, &fe) || fe.ResultType != ResultWebPKIError {
		t.Fatalf("untrusted: %+v %v", p, err)
	}
	// Redirects are not followed; wrong content type; invalid policy.
	for name, set := range map[string]func(*policyServer){
		"redirect": func(ps *policyServer) { ps.code = http.StatusFound },
		"type":     func(ps *policyServer) { ps.ctype = "text/html" },
		"invalid":  func(ps *policyServer) { ps.body = "version: STSv1\nmode: enforce\n" },
	} {
		ps, cert := newPolicyServer(t, "mta-sts.sts.test", enforcePolicy)
		set(ps)
		c := newTestClient(t, dns, ps, cert, "", &now)
		if p, err := c.Get(ctx, "sts.test"); p != nil || !errors.As(err, &fe) {
			t.Errorf("%s: %+v %v", name, p, err)
		} else if name != "redirect" && fe.ResultType != ResultPolicyError {
			t.Errorf("%s: %s", name, fe.ResultType)
		}
	}
	// No record, two records, an invalid record: no policy at all.
	for _, txt := range [][]string{nil, {"v=STSv1; id=a", "v=STSv1; id=b"}, {"v=STSv1; id=-"}, {"v=spf1 -all"}} {
		dns.setTXT("_mta-sts.sts.test", txt...)
		if txt == nil {
			delete(dns.txt, "_mta-sts.sts.test")
		}
		if p, err := c.Get(ctx, "sts.test"); p != nil || err != nil {
			t.Errorf("record %q: %+v %v", txt, p, err)
		}
	}
	// A temporary DNS failure: a fetch error (reported), no policy.
	dns.txtEr = map[string]error{"_mta-sts.sts.test": &net.DNSError{Err: "SERVFAIL", IsTemporary: true}}
	if p, err := c.Get(ctx, "sts.test"); p != nil || !errors.As(err, &fe) || fe.ResultType != ResultFetchError {
		t.Errorf("temporary: %+v %v", p, err)
	}
}

// TestClientHostileServer: a policy server that never answers is given
// up after the timeout; one that sends more than 64 KiB is refused.
func TestClientHostileServer(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	dns := &fakeDNS{txt: map[string][]string{"_mta-sts.sts.test": {"v=STSv1; id=one"}}, hosts: map[string]bool{"mta-sts.sts.test": true}}
	ps, cert := newPolicyServer(t, "mta-sts.sts.test", enforcePolicy+strings.Repeat("x: y\r\n", 20000))
	c := newTestClient(t, dns, ps, cert, "", &now)
	var fe *FetchError
	if p, err := c.Get(ctx, "sts.test"); p != nil || !errors.As(err, &fe) || fe.ResultType != ResultPolicyError {
		t.Fatalf("huge policy: %+v %v", p, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close() // silent: no TLS handshake
		}
	}()
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	port, _ := strconv.Atoi(p)
	c, err = New(Options{Resolver: dns, Roots: cert.Pool(), Port: port, Timeout: 300 * time.Millisecond, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := c.Get(ctx, "sts.test"); p != nil || !errors.As(err, &fe) || fe.ResultType != ResultFetchError {
		t.Fatalf("silent server: %+v %v", p, err)
	}
}
