package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/envelope"
)

// ParseError is a TLSRPT record that does not parse.
type ParseError struct {
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *ParseError) Error() string { return "tlsrpt: invalid record: " + e.Reason }

// maxRecord bounds a record's length; maxRUA the number of rua URIs.
const (
	maxRecord = 2048
	maxRUA    = 10
)

// ParseRecord parses a _smtp._tls TXT record (RFC 8460 §3):
// "v=TLSRPTv1; rua=mailto:a@example.com,https://r.example.com/x" and
// returns its rua URIs. The version must come first; unknown fields are
// ignored.
func ParseRecord(txt string) ([]string, error) {
	if len(txt) > maxRecord {
		return nil, &ParseError{"too long"}
	}
	fields := strings.Split(txt, ";")
	var rua []string
	seenRUA := false
	for i, f := range fields {
		f = strings.Trim(f, " \t")
		if f == "" && i == len(fields)-1 && i > 0 {
			break
		}
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, &ParseError{fmt.Sprintf("field %q has no '='", f)}
		}
		k, v = strings.Trim(k, " \t"), strings.Trim(v, " \t")
		if i == 0 {
			if k != "v" || v != "TLSRPTv1" {
				return nil, &ParseError{"does not start with v=TLSRPTv1"}
			}
			continue
		}
		if k != "rua" {
			continue
		}
		if seenRUA {
			return nil, &ParseError{"rua repeated"}
		}
		seenRUA = true
		for _, u := range strings.Split(v, ",") {
			u = strings.Trim(u, " \t")
			lu := strings.ToLower(u)
			if !strings.HasPrefix(lu, "mailto:") && !strings.HasPrefix(lu, "https:") {
				return nil, &ParseError{fmt.Sprintf("rua %q is neither mailto: nor https:", u)}
			}
			if len(rua) >= maxRUA {
				return nil, &ParseError{"too many rua URIs"}
			}
			rua = append(rua, u)
		}
	}
	if len(rua) == 0 {
		return nil, &ParseError{"no rua"}
	}
	return rua, nil
}

// mailtoAddr returns the address of a mailto: URI (RFC 6068), without
// its query, or "" when it is not a usable address.
func mailtoAddr(u string) string {
	if len(u) < 7 || !strings.EqualFold(u[:7], "mailto:") {
		return ""
	}
	a := u[7:]
	if i := strings.IndexByte(a, '?'); i >= 0 {
		a = a[:i]
	}
	a = strings.ReplaceAll(a, "%40", "@")
	if strings.ContainsAny(a, "%<>\r\n\t ,\"") {
		return ""
	}
	addr, err := mail.ParseAddress(a)
	if err != nil || addr.Address != a {
		return ""
	}
	return a
}

// Report is an aggregate report (RFC 8460 §4.4).
type Report struct {
	Organization string          `json:"organization-name"`
	DateRange    DateRange       `json:"date-range"`
	Contact      string          `json:"contact-info"`
	ReportID     string          `json:"report-id"`
	Policies     []PolicyResults `json:"policies"`
}

// DateRange is the period a report covers (RFC 8460 §4.4; RFC 3339
// times).
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// Resolver looks up the TLSRPT record; *resolver.Resolver implements
// it.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// ReporterOptions configure a Reporter.
type ReporterOptions struct {
	// Store holds the results (required).
	Store *Store
	// Resolver looks up _smtp._tls records (required).
	Resolver Resolver
	// Relay queues the report messages (required; the outbound queue).
	Relay envelope.Relay
	// Submitter names us in reports: organization-name, the
	// TLS-Report-Submitter field and the From domain (required; the
	// host name by default in the configuration).
	Submitter string
	// Contact is the contact-info of reports (default
	// postmaster@Submitter).
	Contact string
	// Now tells the time (default time.Now).
	Now func() time.Time
	// Logger receives report events (default: discard).
	Logger *slog.Logger
	// HTTP posts reports to https: rua URIs (RFC 8460 §5.4); nil: those
	// are skipped. NewHTTPClient makes one.
	HTTP *http.Client
}

// Reporter sends the daily reports.
type Reporter struct {
	o ReporterOptions
}

// NewReporter returns a reporter.
func NewReporter(o ReporterOptions) (*Reporter, error) {
	if o.Store == nil || o.Resolver == nil || o.Relay == nil || o.Submitter == "" {
		return nil, errors.New("tlsrpt: Store, Resolver, Relay and Submitter must be set")
	}
	if o.Contact == "" {
		o.Contact = "postmaster@" + o.Submitter
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Reporter{o: o}, nil
}

// Run sends the reports of past days every interval until ctx ends.
func (r *Reporter) Run(ctx context.Context, interval time.Duration) {
	for {
		if err := r.SendDue(ctx); err != nil && ctx.Err() == nil {
			r.o.Logger.Warn("tlsrpt: sending reports", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// SendDue queues a report for each policy domain and each past UTC day
// with results (RFC 8460 §4.1: one report per day, covering 00:00 to
// 24:00 UTC) to the rua addresses of the domain's _smtp._tls record. A
// domain without a usable record gets none; its results are dropped. A
// temporary DNS failure keeps the results for the next run.
func (r *Reporter) SendDue(ctx context.Context) error {
	pend, days, err := r.o.Store.pending()
	if err != nil {
		return err
	}
	var errs []error
	for _, day := range days {
		for _, dom := range pend[day] {
			if err := r.send(ctx, day, dom); err != nil {
				errs = append(errs, err)
				continue
			}
			if err := r.o.Store.done(day, dom); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// send reports one day of one domain.
func (r *Reporter) send(ctx context.Context, day, domain string) error {
	txts, err := r.o.Resolver.LookupTXT(ctx, "_smtp._tls."+domain)
	var de *net.DNSError
	if err != nil && !(errors.As(err, &de) && de.IsNotFound) {
		return fmt.Errorf("tlsrpt record of %s: %w", domain, err)
	}
	var rua []string
	for _, t := range txts {
		if !strings.HasPrefix(t, "v=TLSRPTv1") {
			continue
		}
		u, err := ParseRecord(t)
		if err != nil {
			r.o.Logger.Info("tlsrpt: invalid record", "domain", domain, "err", err)
			continue
		}
		if rua != nil {
			rua = nil // §3: more than one record: none
			break
		}
		rua = u
	}
	var to, posts []string
	for _, u := range rua {
		if a := mailtoAddr(u); a != "" {
			to = append(to, a)
		} else if strings.HasPrefix(strings.ToLower(u), "https://") && r.o.HTTP != nil {
			posts = append(posts, u)
		} else {
			r.o.Logger.Info("tlsrpt: rua not used", "domain", domain, "rua", u)
		}
	}
	if len(to) == 0 && len(posts) == 0 {
		r.o.Logger.Debug("tlsrpt: no report address", "domain", domain, "day", day)
		return nil
	}
	start, _ := time.Parse(dayLayout, day)
	results, err := r.o.Store.Results(start, domain)
	if err != nil {
		return err
	}
	rep := &Report{
		Organization: r.o.Submitter,
		DateRange:    DateRange{Start: start, End: start.Add(24 * time.Hour).Add(-time.Second)},
		Contact:      r.o.Contact,
		ReportID:     fmt.Sprintf("%s_%s_%s", day, domain, randHex(6)),
		Policies:     results,
	}
	for _, u := range posts {
		// A failed POST is logged, not retried: the mail addresses, if
		// any, still get the report.
		if err := r.post(ctx, u, rep); err != nil {
			r.o.Logger.Warn("tlsrpt: posting report", "domain", domain, "rua", u, "err", err)
		} else {
			r.o.Logger.Info("tlsrpt: report posted", "domain", domain, "day", day, "rua", u)
		}
	}
	if len(to) == 0 {
		return nil
	}
	msg, err := r.Message(rep, domain)
	if err != nil {
		return err
	}
	from := "tlsrpt-noreply@" + r.o.Submitter
	// The report is ours: it is signed like the mail our users submit
	// (RFC 8460 §5.3: DKIM-signed by the submitter).
	id, err := r.o.Relay.Enqueue(ctx, "", to, envelope.DSNParams{AuthUser: from}, bytes.NewReader(msg))
	if err != nil {
		return fmt.Errorf("queueing report for %s: %w", domain, err)
	}
	r.o.Logger.Info("tlsrpt: report queued", "domain", domain, "day", day, "to", strings.Join(to, ","), "id", id)
	return nil
}

// post sends a report to an https: rua (RFC 8460 §5.4): a POST of the
// gzipped JSON as application/tlsrpt+gzip; any 2xx status is success.
func (r *Reporter) post(ctx context.Context, uri string, rep *Report) error {
	gz, err := gzipJSON(rep)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, uri, bytes.NewReader(gz))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/tlsrpt+gzip")
	resp, err := r.o.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP status %s", resp.Status)
	}
	return nil
}

// IPResolver looks up host addresses; *resolver.Resolver implements it.
type IPResolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// NewHTTPClient returns a client for https: rua URIs that finds hosts
// through res (the server's one resolver), verifies certificates against
// roots (nil: the system's), never uses a proxy from the environment nor
// follows redirects, and gives up after timeout.
func NewHTTPClient(res IPResolver, roots *x509.CertPool, timeout time.Duration) *http.Client {
	var d net.Dialer
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := res.LookupIPAddr(ctx, host)
			if err != nil {
				return nil, err
			}
			var last error = fmt.Errorf("no address for %s", host)
			for _, ip := range ips {
				c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip.IP.String(), port))
				if err == nil {
					return c, nil
				}
				last = err
			}
			return nil, last
		},
		TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func gzipJSON(rep *Report) ([]byte, error) {
	js, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(js)
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return gz.Bytes(), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Message returns the report as a mail message (RFC 8460 §5.3): a
// multipart/report of report-type tlsrpt whose second part is the JSON
// report, gzipped, as application/tlsrpt+gzip.
func (r *Reporter) Message(rep *Report, domain string) ([]byte, error) {
	gz, err := gzipJSON(rep)
	if err != nil {
		return nil, err
	}
	boundary := "tlsrpt-" + randHex(12)
	// §5.3: sender "!" policy-domain "!" begin "!" end "!" id ".json.gz"
	fname := fmt.Sprintf("%s!%s!%d!%d!%s.json.gz", r.o.Submitter, domain, rep.DateRange.Start.Unix(), rep.DateRange.End.Unix(), strings.ReplaceAll(rep.ReportID, "_", ""))
	now := r.o.Now()
	var b bytes.Buffer
	h := func(format string, args ...any) { fmt.Fprintf(&b, format+"\r\n", args...) }
	h("From: TLS reports <tlsrpt-noreply@%s>", r.o.Submitter)
	h("Date: %s", now.Format(time.RFC1123Z))
	// §5.3: the Subject names the report domain, submitter and id.
	h("Subject: Report Domain: %s Submitter: %s Report-ID: <%s>", domain, r.o.Submitter, rep.ReportID)
	h("Message-ID: <%s@%s>", randHex(12), r.o.Submitter)
	// §5.3: TLS-Report-Domain and TLS-Report-Submitter header fields.
	h("TLS-Report-Domain: %s", domain)
	h("TLS-Report-Submitter: %s", r.o.Submitter)
	h("Auto-Submitted: auto-generated")
	h("MIME-Version: 1.0")
	h(`Content-Type: multipart/report; report-type="tlsrpt"; boundary="%s"`, boundary)
	h("")
	h("--%s", boundary)
	h("Content-Type: text/plain; charset=us-ascii")
	h("")
	h("This is an aggregate TLS report (RFC 8460) from %s for %s,", r.o.Submitter, domain)
	h("%s to %s.", rep.DateRange.Start.Format(time.RFC3339), rep.DateRange.End.Format(time.RFC3339))
	h("")
	h("--%s", boundary)
	h("Content-Type: application/tlsrpt+gzip")
	h("Content-Transfer-Encoding: base64")
	h(`Content-Disposition: attachment; filename="%s"`, fname)
	h("")
	enc := base64.StdEncoding.EncodeToString(gz)
	for len(enc) > 76 {
		h("%s", enc[:76])
		enc = enc[76:]
	}
	if enc != "" {
		h("%s", enc)
	}
	h("")
	h("--%s--", boundary)
	return b.Bytes(), nil
}

// DecodeReport reads the JSON report of a gzipped attachment (for tests
// and tools).
func DecodeReport(gz io.Reader) (*Report, error) {
	zr, err := gzip.NewReader(gz)
	if err != nil {
		return nil, err
	}
	var rep Report
	if err := json.NewDecoder(io.LimitReader(zr, 10<<20)).Decode(&rep); err != nil {
		return nil, err
	}
	return &rep, nil
}
