package queue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/mtasts"
	"github.com/postino-mail/postino/internal/resolver"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/tlsrpt"
)

// spkiSHA256 is the data of a DANE-EE SPKI SHA2-256 TLSA record (3 1 1).
func spkiSHA256(c testutil.Cert) string {
	sum := sha256.Sum256(c.Leaf.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// secWorld is the Internet of the transport security tests, all on
// loopback: a DNSSEC-signed zone dane.test and unsigned zones sts.test
// and insecure.test served by NSD, a validating Unbound in front of it,
// an HTTPS server for the MTA-STS policies, and one SMTP server per MX
// host, each at its own 127.0.0.x:25 (through the test dialer).
type secWorld struct {
	env     *env
	servers map[string]*testServer // by MX host
	reports *tlsrpt.Store
	policy  *httptest.Server
}

func newSecWorld(t *testing.T) *secWorld {
	good := testutil.NewCert(t, "mx-good.dane.test", "mx-both.dane.test")
	wrong := testutil.NewCert(t, "mx-bad.dane.test")
	// WebPKI for MTA-STS: each certificate is its own CA; the trusted
	// ones go in the queue's roots.
	mx1 := testutil.NewCert(t, "mx1.sts.test")
	other := testutil.NewCert(t, "other.test") // trusted, but another name
	policyCert := testutil.NewCert(t, "mta-sts.e1.sts.test", "mta-sts.e2.sts.test", "mta-sts.e3.sts.test", "mta-sts.e4.sts.test", "mta-sts.both.dane.test")

	rua := `TXT "v=TLSRPTv1; rua=mailto:bob@example.test"`
	tlsa := "TLSA 3 1 1 " + spkiSHA256(good)
	signed := testutil.SignZone(t, "dane.test", strings.Join([]string{
		"good MX 10 mx-good", "mx-good A 127.0.0.2", "_25._tcp.mx-good " + tlsa, "_smtp._tls.good " + rua,
		"bad MX 10 mx-bad", "mx-bad A 127.0.0.3", "_25._tcp.mx-bad " + tlsa, "_smtp._tls.bad " + rua,
		"notls MX 10 mx-notls", "mx-notls A 127.0.0.4", "_25._tcp.mx-notls " + tlsa, "_smtp._tls.notls " + rua,
		// DANE and an MTA-STS policy that does not list the host: DANE
		// wins (RFC 8461 §2).
		"both MX 10 mx-both", "mx-both A 127.0.0.9", "_25._tcp.mx-both " + tlsa, "_smtp._tls.both " + rua,
		`_mta-sts.both TXT "v=STSv1; id=1"`, "mta-sts.both A 127.0.0.1",
		// An attacker's TLSA record (below: its data is changed after
		// signing, so that it matches the attacker's certificate).
		"forged MX 10 mx-forged", "mx-forged A 127.0.0.11", "_25._tcp.mx-forged " + tlsa, "_smtp._tls.forged " + rua,
	}, "\n"))
	lines := strings.Split(signed.Text, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "_25._tcp.mx-forged.") && strings.Contains(l, "\tTLSA\t") {
			lines[i] = strings.Replace(l, spkiSHA256(good), spkiSHA256(wrong), 1)
			if lines[i] == l {
				t.Fatalf("no TLSA data to forge in %q", l)
			}
		}
	}
	signed.Text = strings.Join(lines, "\n")
	stsZone := strings.Join([]string{
		"e1 MX 10 mx1", "mx1 A 127.0.0.5",
		"e2 MX 10 mx2", "mx2 A 127.0.0.6",
		"e3 MX 10 mx3", "mx3 A 127.0.0.7",
		"e4 MX 10 mx4", "mx4 A 127.0.0.8",
	}, "\n") + "\n"
	for _, d := range []string{"e1", "e2", "e3", "e4"} {
		stsZone += fmt.Sprintf("_mta-sts.%s TXT \"v=STSv1; id=20260301\"\nmta-sts.%s A 127.0.0.1\n_smtp._tls.%s %s\n", d, d, d, rua)
	}
	ns := testutil.StartDNSZoneFiles(t, map[string]string{
		"dane.test": signed.Text,
		"sts.test":  testutil.ZoneFile("sts.test", stsZone),
		// TLSA records in an unsigned zone: no AD bit, not used.
		"insecure.test": testutil.ZoneFile("insecure.test", "@ MX 10 mx\nmx A 127.0.0.10\n_25._tcp.mx "+tlsa+"\n_smtp._tls "+rua+"\n"),
	})
	ub := testutil.StartUnbound(t, map[string]string{"dane.test": ns.Addr, "sts.test": ns.Addr, "insecure.test": ns.Addr}, signed.DS)
	res, err := resolver.New(ub.Addr, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}

	policies := map[string]string{
		"mta-sts.e1.sts.test":    "version: STSv1\nmode: enforce\nmx: mx1.sts.test\nmax_age: 86400\n",
		"mta-sts.e2.sts.test":    "version: STSv1\nmode: enforce\nmx: *.sts.test\nmax_age: 86400\n",
		"mta-sts.e3.sts.test":    "version: STSv1\nmode: testing\nmx: mx3.sts.test\nmax_age: 86400\n",
		"mta-sts.e4.sts.test":    "version: STSv1\nmode: enforce\nmx: *.elsewhere.test\nmax_age: 86400\n",
		"mta-sts.both.dane.test": "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n",
	}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := policies[r.Host]
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(p))
	}))
	hs.TLS = policyCert.Config()
	hs.StartTLS()
	t.Cleanup(hs.Close)
	_, hport, _ := net.SplitHostPort(hs.Listener.Addr().String())
	port, _ := strconv.Atoi(hport)

	w := &secWorld{servers: map[string]*testServer{}, policy: hs}
	dir := t.TempDir()
	var clock *fakeClock
	w.env = newEnv(t, func(o *Options) {
		clock = o.Clock.(*fakeClock)
		o.Resolver = res
		o.DANE = true
		sts, err := mtasts.New(mtasts.Options{Resolver: res, Roots: policyCert.Pool(), Port: port, Timeout: 5 * time.Second, CacheDir: filepath.Join(dir, "mta-sts"), Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		o.MTASTS = sts
		roots := mx1.Pool()
		roots.AddCert(other.Leaf)
		o.TLSRoots = roots
		w.reports, err = tlsrpt.OpenStore(filepath.Join(dir, "tlsrpt"), clock.Now, nil)
		if err != nil {
			t.Fatal(err)
		}
		o.TLSReports = w.reports
	})
	for host, c := range map[string]struct {
		ip   string
		cert *testutil.Cert
	}{
		"mx-good.dane.test":   {"127.0.0.2", &good},
		"mx-bad.dane.test":    {"127.0.0.3", &wrong},
		"mx-notls.dane.test":  {"127.0.0.4", nil},
		"mx-both.dane.test":   {"127.0.0.9", &good},
		"mx-forged.dane.test": {"127.0.0.11", &wrong},
		"mx1.sts.test":        {"127.0.0.5", &mx1},
		"mx2.sts.test":        {"127.0.0.6", &other},
		"mx3.sts.test":        {"127.0.0.7", &other},
		"mx4.sts.test":        {"127.0.0.8", &mx1},
		"mx.insecure.test":    {"127.0.0.10", &wrong},
	} {
		cfg := srvConfig{name: host}
		if c.cert != nil {
			cfg.tls = c.cert.Config()
		}
		srv := newServer(t, cfg)
		w.servers[host] = srv
		w.env.net.mu.Lock()
		w.env.net.routes[c.ip+":25"] = srv.addr()
		w.env.net.mu.Unlock()
	}
	return w
}

// status returns the state of the one recipient of the entry of domain.
func (w *secWorld) status(t *testing.T, domain string) (Status, string) {
	t.Helper()
	for _, e := range w.env.entries() {
		if e.Domain == domain {
			return e.Recipients[0].Status, e.Recipients[0].Reply
		}
	}
	return StatusSent, "" // done and removed
}

// TestTransportSecurity delivers to MX hosts under DANE and MTA-STS
// through a real validating resolver, then checks that the daily TLS-RPT
// reports count the sessions that were made.
func TestTransportSecurity(t *testing.T) {
	w := newSecWorld(t)
	e := w.env
	domains := []string{"forged.dane.test", "good.dane.test", "bad.dane.test", "notls.dane.test", "both.dane.test", "insecure.test", "e1.sts.test", "e2.sts.test", "e3.sts.test", "e4.sts.test"}
	for _, d := range domains {
		e.enqueue("alice@example.test", []string{"rcpt@" + d}, envelope.DSNParams{}, simpleMsg("to-"+strings.ReplaceAll(d, ".", "-")))
	}
	e.runOnce()
	got := func(host string) int { return len(w.servers[host].messages()) }
	// Delivered: DANE-EE matches; DANE over a non-matching MTA-STS
	// policy; TLSA in an unsigned zone ignored; MTA-STS enforce with a
	// valid certificate; MTA-STS testing with a wrong one.
	for _, host := range []string{"mx-good.dane.test", "mx-both.dane.test", "mx.insecure.test", "mx1.sts.test", "mx3.sts.test"} {
		if got(host) != 1 {
			t.Errorf("%s got %d messages, want 1", host, got(host))
		}
	}
	for _, m := range w.servers["mx-good.dane.test"].messages() {
		if !m.tls {
			t.Error("DANE delivery was not over TLS")
		}
	}
	// Refused: a certificate that matches no TLSA record, a DANE host
	// without STARTTLS, a certificate for another name under enforce, an
	// MX host the policy does not list.
	for d, want := range map[string]string{
		"bad.dane.test":    "4.7.5",
		"forged.dane.test": "4.7.5",
		"notls.dane.test":  "4.7.4",
		"e2.sts.test":      "4.7.5",
		"e4.sts.test":      "4.7.5",
	} {
		st, reply := w.status(t, d)
		if st != StatusPending || !strings.Contains(reply, want) {
			t.Errorf("%s: %v %q, want deferred with %s", d, st, reply, want)
		}
	}
	for _, host := range []string{"mx-forged.dane.test", "mx-bad.dane.test", "mx-notls.dane.test", "mx2.sts.test", "mx4.sts.test"} {
		if got(host) != 0 {
			t.Errorf("%s got a message", host)
		}
	}
	if slices.Contains(e.net.dialed(), "127.0.0.8:25") {
		t.Error("the MX host outside the MTA-STS policy was connected to")
	}
	if slices.Contains(e.net.dialed(), "127.0.0.11:25") {
		t.Error("the MX host with a forged TLSA record was connected to")
	}
	// A second attempt, the same outcome, counted again.
	e.clock.Advance(time.Hour)
	e.runOnce()
	if st, _ := w.status(t, "e2.sts.test"); st != StatusPending || got("mx2.sts.test") != 0 {
		t.Errorf("e2.sts.test after a retry: %v", st)
	}

	// The next day: the reports go to bob@example.test.
	r, err := tlsrpt.NewReporter(tlsrpt.ReporterOptions{Store: w.reports, Resolver: e.opts.Resolver.(*resolver.Resolver), Relay: e.q, Submitter: "postino.test", Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(24 * time.Hour)
	if err := r.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.runOnce()
	reports := map[string]*tlsrpt.Report{}
	for _, m := range e.mailbox("bob@example.test") {
		dom, rep := parseReport(t, m)
		reports[dom] = rep
	}
	type count struct {
		typ         string
		ok, fail    int64
		result      string // the failure's result type
		resultCount int64
	}
	want := map[string]count{
		"good.dane.test":   {typ: "tlsa", ok: 1},
		"both.dane.test":   {typ: "tlsa", ok: 1},
		"bad.dane.test":    {typ: "tlsa", fail: 2, result: "validation-failure", resultCount: 2},
		"forged.dane.test": {typ: "tlsa", fail: 2, result: "dnssec-invalid", resultCount: 2},
		"notls.dane.test":  {typ: "tlsa", fail: 2, result: "starttls-not-supported", resultCount: 2},
		"insecure.test":    {typ: "no-policy-found", ok: 1},
		"e1.sts.test":      {typ: "sts", ok: 1},
		"e2.sts.test":      {typ: "sts", fail: 2, result: "certificate-host-mismatch", resultCount: 2},
		"e3.sts.test":      {typ: "sts", fail: 1, result: "certificate-host-mismatch", resultCount: 1},
		"e4.sts.test":      {typ: "sts", fail: 2, result: "validation-failure", resultCount: 2},
	}
	if len(reports) != len(want) {
		t.Errorf("reports for %d domains, want %d: %v", len(reports), len(want), keys(reports))
	}
	for d, c := range want {
		rep := reports[d]
		if rep == nil {
			t.Errorf("no report for %s", d)
			continue
		}
		if len(rep.Policies) != 1 {
			t.Errorf("%s: %d policies: %+v", d, len(rep.Policies), rep.Policies)
			continue
		}
		p := rep.Policies[0]
		if p.Policy.Type != c.typ || p.Policy.Domain != d || p.Summary.Successes != c.ok || p.Summary.Failures != c.fail {
			t.Errorf("%s: %+v %+v, want %+v", d, p.Policy, p.Summary, c)
		}
		if c.result != "" && (len(p.Details) != 1 || p.Details[0].ResultType != c.result || p.Details[0].Count != c.resultCount) {
			t.Errorf("%s: details %+v, want %s x%d", d, p.Details, c.result, c.resultCount)
		}
		if rep.DateRange.Start != time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) {
			t.Errorf("%s: date range %+v", d, rep.DateRange)
		}
	}
	if p := reports["bad.dane.test"]; p != nil && len(p.Policies) == 1 && len(p.Policies[0].Details) == 1 {
		d := p.Policies[0].Details[0]
		if d.ReceivingMX != "mx-bad.dane.test" || d.ReceivingIP != "127.0.0.3" || d.SendingIP != "127.0.0.1" {
			t.Errorf("failure details %+v", d)
		}
	}
	if p := reports["e1.sts.test"]; p != nil && !slices.Contains(p.Policies[0].Policy.Strings, "mode: enforce") {
		t.Errorf("policy-string %q", p.Policies[0].Policy.Strings)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// parseReport returns the report domain and JSON report of a TLS-RPT
// message.
func parseReport(t *testing.T, text string) (string, *tlsrpt.Report) {
	t.Helper()
	m, err := mail.ReadMessage(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("not a TLS report: %q", m.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no application/tlsrpt+gzip part: %v", err)
		}
		if p.Header.Get("Content-Type") == "application/tlsrpt+gzip" {
			var b bytes.Buffer
			b.ReadFrom(base64.NewDecoder(base64.StdEncoding, p))
			rep, err := tlsrpt.DecodeReport(&b)
			if err != nil {
				t.Fatal(err)
			}
			return m.Header.Get("TLS-Report-Domain"), rep
		}
	}
}
