// Package tlsrpt implements the sending side of SMTP TLS Reporting (RFC
// 8460): the outbound queue records the outcome of each TLS session it
// attempts (a success, or a failure with its result type) per policy
// domain and per UTC day, on disk; once a day is over, a report for each
// domain is built (the JSON of §4.4, gzipped) and mailed to the rua
// addresses of the domain's _smtp._tls TXT record (§3, §5.3).
//
// Implementation notes:
//   - The results of one day and domain are kept in one JSON file,
//     DIR/YYYY-MM-DD/DOMAIN.json, rewritten (atomically) at each result:
//     the counts survive restarts. One process writes them (the server's
//     queue worker).
//   - A day's file is removed once its report was queued (or when the
//     domain publishes no rua): a report is sent once.
//   - mailto: rua addresses get the report by mail, through the queue;
//     https: ones by POST (§5.4) when ReporterOptions.HTTP is set. A failed
//     POST is logged and not retried.
package tlsrpt

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/fsutil"
)

// Policy types (RFC 8460 §4.4: policy-type).
const (
	PolicySTS      = "sts"
	PolicyTLSA     = "tlsa"
	PolicyNotFound = "no-policy-found"
)

// Result types (RFC 8460 §4.3).
const (
	// §4.3.1: negotiation failures.
	ResultSTARTTLSNotSupported    = "starttls-not-supported"
	ResultCertificateHostMismatch = "certificate-host-mismatch"
	ResultCertificateExpired      = "certificate-expired"
	ResultCertificateNotTrusted   = "certificate-not-trusted"
	ResultValidationFailure       = "validation-failure"
	// §4.3.2.1: DANE policy failures.
	ResultTLSAInvalid   = "tlsa-invalid"
	ResultDNSSECInvalid = "dnssec-invalid"
	ResultDANERequired  = "dane-required"
	// §4.3.2.2: MTA-STS policy failures.
	ResultSTSPolicyFetchError = "sts-policy-fetch-error"
	ResultSTSPolicyInvalid    = "sts-policy-invalid"
	ResultSTSWebPKIInvalid    = "sts-webpki-invalid"
)

// PolicyDesc describes the policy a session was held under (RFC 8460
// §4.4: the "policy" object).
type PolicyDesc struct {
	Type    string   `json:"policy-type"`
	Strings []string `json:"policy-string,omitempty"`
	Domain  string   `json:"policy-domain"`
	MXHosts []string `json:"mx-host,omitempty"`
}

// Failure is one failed session's details (RFC 8460 §4.4:
// failure-details, without the count).
type Failure struct {
	ResultType  string `json:"result-type"`
	SendingIP   string `json:"sending-mta-ip,omitempty"`
	ReceivingMX string `json:"receiving-mx-hostname,omitempty"`
	ReceivingIP string `json:"receiving-ip,omitempty"`
	Reason      string `json:"failure-reason-code,omitempty"`
}

// Result is the outcome of one TLS session with one host of a domain.
type Result struct {
	// Policy is the policy the session was held under; Policy.Domain is
	// the recipient domain.
	Policy PolicyDesc
	// Failure is nil for a success.
	Failure *Failure
}

// FailureDetail is a failure and how many sessions had it.
type FailureDetail struct {
	Failure
	Count int64 `json:"failed-session-count"`
}

// Summary counts the sessions of a policy (RFC 8460 §4.4).
type Summary struct {
	Successes int64 `json:"total-successful-session-count"`
	Failures  int64 `json:"total-failure-session-count"`
}

// PolicyResults are the results under one policy: an element of the
// report's "policies" array (RFC 8460 §4.4).
type PolicyResults struct {
	Policy  PolicyDesc      `json:"policy"`
	Summary Summary         `json:"summary"`
	Details []FailureDetail `json:"failure-details,omitempty"`
}

// Store keeps the results on disk, per UTC day and policy domain. It is
// safe for concurrent use within a process.
type Store struct {
	dir    string
	now    func() time.Time
	logger *slog.Logger
	mu     sync.Mutex
}

// OpenStore opens (creating it) the folder of results (DATA/tlsrpt). now
// tells the time (nil: time.Now); logger receives write errors.
func OpenStore(dir string, now func() time.Time, logger *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tlsrpt: %w", err)
	}
	if now == nil {
		now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Store{dir: dir, now: now, logger: logger}, nil
}

const dayLayout = "2006-01-02"

// validDomain keeps file names safe: a domain name in lower case.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 || strings.HasPrefix(d, ".") {
		return false
	}
	for _, c := range d {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c > 0x7f) || c == '/' {
			return false
		}
	}
	return !strings.Contains(d, "..")
}

// Add records one session's result under today's date (UTC).
func (s *Store) Add(r Result) error {
	d := strings.ToLower(strings.TrimSuffix(r.Policy.Domain, "."))
	if !validDomain(d) {
		return fmt.Errorf("tlsrpt: bad policy domain %q", r.Policy.Domain)
	}
	r.Policy.Domain = d
	day := s.now().UTC().Format(dayLayout)
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Join(s.dir, day)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tlsrpt: %w", err)
	}
	file := filepath.Join(dir, d+".json")
	list, err := readResults(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		s.logger.Warn("tlsrpt: unreadable results, starting again", "file", file, "err", err)
		list = nil
	}
	list = merge(list, r)
	b, err := json.Marshal(list)
	if err == nil {
		err = fsutil.WriteFile(file, b, 0o600)
	}
	if err != nil {
		return fmt.Errorf("tlsrpt: %w", err)
	}
	return nil
}

// merge adds r to the results of its policy.
func merge(list []PolicyResults, r Result) []PolicyResults {
	var pr *PolicyResults
	for i := range list {
		if samePolicy(list[i].Policy, r.Policy) {
			pr = &list[i]
			break
		}
	}
	if pr == nil {
		list = append(list, PolicyResults{Policy: r.Policy})
		pr = &list[len(list)-1]
	}
	if r.Failure == nil {
		pr.Summary.Successes++
		return list
	}
	pr.Summary.Failures++
	for i := range pr.Details {
		if pr.Details[i].Failure == *r.Failure {
			pr.Details[i].Count++
			return list
		}
	}
	// A bound on the distinct details kept (RFC 8460 does not set one).
	if len(pr.Details) < 100 {
		pr.Details = append(pr.Details, FailureDetail{Failure: *r.Failure, Count: 1})
	}
	return list
}

func samePolicy(a, b PolicyDesc) bool {
	return a.Type == b.Type && a.Domain == b.Domain &&
		strings.Join(a.Strings, "\n") == strings.Join(b.Strings, "\n") &&
		strings.Join(a.MXHosts, "\n") == strings.Join(b.MXHosts, "\n")
}

func readResults(file string) ([]PolicyResults, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var list []PolicyResults
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, err
	}
	return list, nil
}

// Results returns the results recorded for domain on day (UTC), for
// reports and the `postino` commands.
func (s *Store) Results(day time.Time, domain string) ([]PolicyResults, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return readResults(filepath.Join(s.dir, day.UTC().Format(dayLayout), strings.ToLower(domain)+".json"))
}

// pending lists the days before today (UTC) that have results, oldest
// first, each with its domains.
func (s *Store) pending() (map[string][]string, []string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	today := s.now().UTC().Format(dayLayout)
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, err
	}
	out := map[string][]string{}
	var days []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if _, err := time.Parse(dayLayout, e.Name()); err != nil || e.Name() >= today {
			continue
		}
		files, err := os.ReadDir(filepath.Join(s.dir, e.Name()))
		if err != nil {
			return nil, nil, err
		}
		var doms []string
		for _, f := range files {
			if d, ok := strings.CutSuffix(f.Name(), ".json"); ok && validDomain(d) {
				doms = append(doms, d)
			}
		}
		sort.Strings(doms)
		if len(doms) == 0 {
			os.Remove(filepath.Join(s.dir, e.Name()))
			continue
		}
		days = append(days, e.Name())
		out[e.Name()] = doms
	}
	sort.Strings(days)
	return out, days, nil
}

// done removes a day's results for a domain once reported.
func (s *Store) done(day, domain string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := os.Remove(filepath.Join(s.dir, day, domain+".json"))
	os.Remove(filepath.Join(s.dir, day)) // when empty
	return err
}
