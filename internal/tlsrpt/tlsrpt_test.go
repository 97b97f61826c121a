package tlsrpt

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/testutil"
)

func TestParseRecord(t *testing.T) {
	rua, err := ParseRecord("v=TLSRPTv1; rua=mailto:reports@example.com, https://r.example.com/v1;")
	if err != nil || len(rua) != 2 || rua[0] != "mailto:reports@example.com" {
		t.Fatalf("%q %v", rua, err)
	}
	for _, txt := range []string{"", "v=TLSRPTv1", "rua=mailto:a@b; v=TLSRPTv1", "v=TLSRPTv1; rua=ftp://x", "v=TLSRPTv1; rua=mailto:a@b; rua=mailto:c@d", "v=TLSRPTv1; junk", "v=TLSRPTv1; rua=" + strings.Repeat("mailto:a@b,", 11) + "mailto:a@b", strings.Repeat("x", maxRecord+1)} {
		_, err := ParseRecord(txt)
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%q: %v", txt, err)
		}
	}
	for u, want := range map[string]string{
		"mailto:a@example.com":               "a@example.com",
		"MAILTO:a%40example.com?subject=x":   "a@example.com",
		"mailto:a@example.com,b@example.com": "",
		"mailto:<a@example.com>":             "",
		"mailto:a@example.com%0d%0aBcc: x":   "",
		"https://example.com":                "",
	} {
		if got := mailtoAddr(u); got != want {
			t.Errorf("mailtoAddr(%q) = %q", u, got)
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add("v=TLSRPTv1; rua=mailto:reports@example.com, https://r.example.com/v1;")
	f.Add("v=TLSRPTv1;rua=mailto:a%40b?x=y")
	f.Add("rua=mailto:a@b; v=TLSRPTv1")
	f.Fuzz(func(t *testing.T, s string) {
		rua, err := ParseRecord(s)
		if err != nil {
			return
		}
		if len(rua) == 0 || len(rua) > maxRUA {
			t.Fatalf("%d rua", len(rua))
		}
		for _, u := range rua {
			if a := mailtoAddr(u); strings.ContainsAny(a, "\r\n<>,") {
				t.Fatalf("address %q", a)
			}
		}
	})
}

type fakeTXT map[string][]string

func (f fakeTXT) LookupTXT(ctx context.Context, name string) ([]string, error) {
	if name == "_smtp._tls.tempfail.test" {
		return nil, &net.DNSError{Err: "SERVFAIL", Name: name, IsTemporary: true}
	}
	if t, ok := f[name]; ok {
		return t, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// relay records the queued messages.
type relay struct {
	mu   sync.Mutex
	msgs []queued
}

type queued struct {
	from   string
	to     []string
	params envelope.DSNParams
	data   []byte
}

func (r *relay) Enqueue(ctx context.Context, from string, rcpts []string, params envelope.DSNParams, msg io.Reader) (string, error) {
	b, err := io.ReadAll(msg)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, queued{from, rcpts, params, b})
	return "id", nil
}

// ReportOf parses a report message and returns its header and JSON.
func reportOf(t *testing.T, data []byte) (mail.Header, *Report) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("content type %q", m.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no tlsrpt part: %v", err)
		}
		if p.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
			continue
		}
		if !strings.HasSuffix(p.FileName(), ".json.gz") || strings.Count(p.FileName(), "!") != 4 {
			t.Errorf("file name %q", p.FileName())
		}
		rep, err := DecodeReport(base64.NewDecoder(base64.StdEncoding, p))
		if err != nil {
			t.Fatal(err)
		}
		return m.Header, rep
	}
}

func TestDailyReports(t *testing.T) {
	now := time.Date(2026, 3, 1, 23, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s, err := OpenStore(t.TempDir(), clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	sts := PolicyDesc{Type: PolicySTS, Domain: "Example.TEST", Strings: []string{"version: STSv1", "mode: enforce"}, MXHosts: []string{"mx.example.test"}}
	for range 3 {
		if err := s.Add(Result{Policy: sts}); err != nil {
			t.Fatal(err)
		}
	}
	bad := &Failure{ResultType: ResultCertificateHostMismatch, ReceivingMX: "mx.example.test", ReceivingIP: "127.0.0.1"}
	s.Add(Result{Policy: sts, Failure: bad})
	s.Add(Result{Policy: sts, Failure: bad})
	s.Add(Result{Policy: PolicyDesc{Type: PolicyTLSA, Domain: "dane.test", Strings: []string{"3 1 1 ab"}}, Failure: &Failure{ResultType: ResultValidationFailure}})
	s.Add(Result{Policy: PolicyDesc{Type: PolicyNotFound, Domain: "norua.test"}})
	s.Add(Result{Policy: PolicyDesc{Type: PolicyNotFound, Domain: "tempfail.test"}})
	if err := s.Add(Result{Policy: PolicyDesc{Domain: "../etc"}}); err == nil {
		t.Error("a path as domain was accepted")
	}
	rl := &relay{}
	r, err := NewReporter(ReporterOptions{Store: s, Relay: rl, Submitter: "mail.postino.test", Now: clock, Resolver: fakeTXT{
		"_smtp._tls.example.test": {"v=spf1 -all", "v=TLSRPTv1; rua=mailto:tls@example.test,https://r.example.test/"},
		"_smtp._tls.dane.test":    {"v=TLSRPTv1;rua=mailto:a@dane.test"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The day is not over: nothing is sent.
	if err := r.SendDue(ctx); err != nil || len(rl.msgs) != 0 {
		t.Fatalf("%v %d", err, len(rl.msgs))
	}
	now = now.Add(2 * time.Hour)
	s.Add(Result{Policy: sts}) // the next day
	err = r.SendDue(ctx)
	if err == nil || !strings.Contains(err.Error(), "tempfail.test") {
		t.Fatalf("want the temporary failure reported, got %v", err)
	}
	if len(rl.msgs) != 2 {
		t.Fatalf("%d reports", len(rl.msgs))
	}
	m := rl.msgs[1]
	if m.from != "" || len(m.to) != 1 || m.to[0] != "tls@example.test" || m.params.AuthUser != "tlsrpt-noreply@mail.postino.test" {
		t.Fatalf("envelope %+v", m)
	}
	h, rep := reportOf(t, m.data)
	if h.Get("TLS-Report-Domain") != "example.test" || h.Get("TLS-Report-Submitter") != "mail.postino.test" {
		t.Errorf("header %v", h)
	}
	want := DateRange{Start: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), End: time.Date(2026, 3, 1, 23, 59, 59, 0, time.UTC)}
	if rep.DateRange != want || rep.Organization != "mail.postino.test" || len(rep.Policies) != 1 {
		t.Fatalf("%+v", rep)
	}
	p := rep.Policies[0]
	if p.Summary.Successes != 3 || p.Summary.Failures != 2 || len(p.Details) != 1 || p.Details[0].Count != 2 || p.Details[0].ResultType != ResultCertificateHostMismatch || p.Policy.Domain != "example.test" {
		t.Fatalf("%+v", p)
	}
	// Sent once: the results are gone, but tempfail.test waits.
	if err := r.SendDue(ctx); err == nil || len(rl.msgs) != 2 {
		t.Fatalf("second run: %v %d", err, len(rl.msgs))
	}
	if _, err := s.Results(want.Start, "example.test"); err == nil {
		t.Error("reported results still there")
	}
	if l, err := s.Results(want.Start, "tempfail.test"); err != nil || len(l) != 1 {
		t.Errorf("tempfail.test: %v %v", l, err)
	}
}

type loopbackIPs struct{}

func (loopbackIPs) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	if host == "reports.example.test" {
		return []net.IPAddr{{IP: net.IPv4(127, 0, 0, 1)}}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// TestPostReport: an https: rua gets the gzipped report by POST (RFC 8460
// §5.4), with a verified certificate, next to the mailto: one.
func TestPostReport(t *testing.T) {
	cert := testutil.NewCert(t, "reports.example.test")
	var got []*Report
	var ctype string
	var mu sync.Mutex
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep, err := DecodeReport(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		ctype = r.Header.Get("Content-Type")
		got = append(got, rep)
	}))
	hs.TLS = cert.Config()
	hs.StartTLS()
	defer hs.Close()
	_, port, _ := net.SplitHostPort(hs.Listener.Addr().String())

	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s, _ := OpenStore(t.TempDir(), func() time.Time { return now }, nil)
	s.Add(Result{Policy: PolicyDesc{Type: PolicySTS, Domain: "example.test"}})
	s.Add(Result{Policy: PolicyDesc{Type: PolicySTS, Domain: "untrusted.test"}})
	rl := &relay{}
	r, err := NewReporter(ReporterOptions{Store: s, Relay: rl, Submitter: "postino.test", Now: func() time.Time { return now },
		HTTP: NewHTTPClient(loopbackIPs{}, cert.Pool(), 5*time.Second),
		Resolver: fakeTXT{
			"_smtp._tls.example.test":   {"v=TLSRPTv1; rua=https://reports.example.test:" + port + "/v1,mailto:tls@example.test"},
			"_smtp._tls.untrusted.test": {"v=TLSRPTv1; rua=https://elsewhere.test:" + port + "/v1"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(24 * time.Hour)
	if err := r.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || ctype != "application/tlsrpt+gzip" || got[0].Policies[0].Summary.Successes != 1 || got[0].Policies[0].Policy.Domain != "example.test" {
		t.Fatalf("posted %d reports (%q): %+v", len(got), ctype, got)
	}
	if len(rl.msgs) != 1 || rl.msgs[0].to[0] != "tls@example.test" {
		t.Fatalf("mailed %+v", rl.msgs)
	}
}
