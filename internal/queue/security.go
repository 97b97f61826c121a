package queue

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/postino-mail/postino/internal/mtasts"
	"github.com/postino-mail/postino/internal/resolver"
	"github.com/postino-mail/postino/internal/tlsrpt"
)

// This file is the queue's outbound transport security: DANE (RFC
// 7672), MTA-STS (RFC 8461) and the TLS-RPT records of each session (RFC
// 8460). Without any of them configured, delivery to MX hosts uses
// opportunistic STARTTLS as before.

// SecureResolver is a resolver that reports whether answers were
// DNSSEC-validated (the AD bit); *resolver.Resolver implements it. DANE
// is used only when Options.Resolver is one.
type SecureResolver interface {
	Query(ctx context.Context, name string, qtype uint16) (*resolver.Answer, error)
	LookupTLSA(ctx context.Context, port int, proto, host string) ([]*dns.TLSA, bool, error)
}

// STSPolicies finds the MTA-STS policy of a domain; *mtasts.Client
// implements it.
type STSPolicies interface {
	Get(ctx context.Context, domain string) (*mtasts.Policy, error)
}

// TLSRecorder records the outcome of TLS sessions for TLS-RPT;
// *tlsrpt.Store implements it.
type TLSRecorder interface {
	Add(r tlsrpt.Result) error
}

// secMode is the security a session with one MX host must have.
type secMode int

const (
	secNone       secMode = iota // opportunistic STARTTLS
	secDANE                      // RFC 7672: STARTTLS, TLSA-authenticated
	secDANENoAuth                // RFC 7672 §2.2: TLSA present but none usable: STARTTLS, unauthenticated
	secSTSEnforce                // RFC 8461 §5: STARTTLS, WebPKI, mx match
	secSTSTesting                // RFC 8461 §5: as secNone, failures reported
)

// hostSec is the security policy for one MX host of a domain.
type hostSec struct {
	mode   secMode
	domain string // the policy (recipient) domain
	tlsa   []*dns.TLSA
	policy tlsrpt.PolicyDesc
	// skip is set when the host must not be used (a failure for it).
	skip *failure
}

// required reports whether TLS is mandatory.
func (h *hostSec) required() bool {
	return h.mode == secDANE || h.mode == secDANENoAuth || h.mode == secSTSEnforce
}

// domainSec is the security of a destination domain for one attempt.
type domainSec struct {
	domain    string
	mxSecure  bool // the MX answer was DNSSEC-validated
	sts       *mtasts.Policy
	stsPolicy tlsrpt.PolicyDesc
}

// lookupDomainSec finds a domain's MTA-STS policy and whether its MX
// records are DNSSEC-validated (RFC 7672 §2.2.1: DANE applies only to MX
// hosts found securely).
func (q *Queue) lookupDomainSec(ctx context.Context, domain string) *domainSec {
	o := q.options()
	ds := &domainSec{domain: domain}
	if sr, ok := o.Resolver.(SecureResolver); ok && o.DANE {
		// The answer is in the resolver's cache already: lookupMX asked
		// for it.
		ans, err := sr.Query(ctx, domain, dns.TypeMX)
		var de *net.DNSError
		// A secure MX answer, or a secure denial (the implicit MX).
		ds.mxSecure = ans != nil && ans.Authenticated && (err == nil || errors.As(err, &de) && de.IsNotFound)
	}
	if o.MTASTS != nil {
		pol, err := o.MTASTS.Get(ctx, domain)
		var fe *mtasts.FetchError
		switch {
		case errors.As(err, &fe):
			// RFC 8461 §5: no valid policy: deliver as without one;
			// RFC 8460 §4.3.2.2: report it.
			o.Logger.Warn("queue: MTA-STS policy unavailable", "domain", domain, "err", err)
			q.recordTLS(tlsrpt.Result{Policy: tlsrpt.PolicyDesc{Type: tlsrpt.PolicySTS, Domain: domain}, Failure: &tlsrpt.Failure{ResultType: fe.ResultType, Reason: truncate(fe.Err.Error(), 200)}})
		case err != nil:
			o.Logger.Warn("queue: MTA-STS policy", "domain", domain, "err", err)
		case pol != nil && pol.Mode != mtasts.ModeNone:
			ds.sts = pol
			ds.stsPolicy = tlsrpt.PolicyDesc{Type: tlsrpt.PolicySTS, Domain: domain, Strings: policyLines(pol.Text), MXHosts: pol.MX}
		}
	}
	return ds
}

func policyLines(text string) []string {
	var out []string
	for _, l := range strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// hostSecurity decides the policy for one MX host: DANE when the host
// has DNSSEC-validated TLSA records (RFC 8461 §2: DANE takes precedence
// over MTA-STS), else the domain's MTA-STS policy, else none.
func (q *Queue) hostSecurity(ctx context.Context, ds *domainSec, host string) *hostSec {
	o := q.options()
	hs := &hostSec{mode: secNone, domain: ds.domain, policy: tlsrpt.PolicyDesc{Type: tlsrpt.PolicyNotFound, Domain: ds.domain}}
	if sr, ok := o.Resolver.(SecureResolver); ok && o.DANE && ds.mxSecure {
		recs, secure, err := sr.LookupTLSA(ctx, o.Port, "tcp", host)
		var de *net.DNSError
		switch {
		case err != nil && !(errors.As(err, &de) && de.IsNotFound):
			// RFC 7672 §2.2: a failed TLSA lookup of a host found
			// securely makes the host unusable (the records may be
			// there, and a downgrade must not be possible).
			hs.mode = secDANE
			hs.policy = tlsrpt.PolicyDesc{Type: tlsrpt.PolicyTLSA, Domain: ds.domain, MXHosts: []string{host}}
			hs.skip = &failure{enhanced: "4.7.5", text: fmt.Sprintf("TLSA lookup for %s failed: %v", host, err), host: host}
			q.recordTLS(tlsrpt.Result{Policy: hs.policy, Failure: &tlsrpt.Failure{ResultType: tlsrpt.ResultDNSSECInvalid, ReceivingMX: host, Reason: truncate(err.Error(), 200)}})
			return hs
		case err == nil && secure && len(recs) > 0:
			hs.policy = tlsrpt.PolicyDesc{Type: tlsrpt.PolicyTLSA, Domain: ds.domain, MXHosts: []string{host}}
			for _, r := range recs {
				hs.policy.Strings = append(hs.policy.Strings, fmt.Sprintf("%d %d %d %s", r.Usage, r.Selector, r.MatchingType, r.Certificate))
				if usableTLSA(r) {
					hs.tlsa = append(hs.tlsa, r)
				}
			}
			hs.mode = secDANE
			if len(hs.tlsa) == 0 {
				// RFC 7672 §2.2: only unusable records: TLS is still
				// mandatory, without authentication.
				hs.mode = secDANENoAuth
			}
			return hs
		}
		// No TLSA records (or not validated): RFC 7672 §2.2: no DANE.
	}
	if ds.sts != nil {
		hs.policy = ds.stsPolicy
		hs.mode = secSTSTesting
		if ds.sts.Mode == mtasts.ModeEnforce {
			hs.mode = secSTSEnforce
		}
		if !ds.sts.Matches(host) {
			// RFC 8461 §4.1: an MX host not listed in the policy.
			f := &tlsrpt.Failure{ResultType: tlsrpt.ResultValidationFailure, ReceivingMX: host, Reason: "mx host not listed in the MTA-STS policy"}
			q.recordTLS(tlsrpt.Result{Policy: hs.policy, Failure: f})
			if hs.mode == secSTSEnforce {
				hs.skip = &failure{enhanced: "4.7.5", text: fmt.Sprintf("MX host %s is not allowed by the MTA-STS policy of %s", host, ds.domain), host: host}
			} else {
				hs.policy = tlsrpt.PolicyDesc{} // reported once: no second record for this session
			}
		}
	}
	return hs
}

// usableTLSA reports whether a TLSA record can be used for SMTP (RFC 7672
// §3.1: DANE-TA(2) and DANE-EE(3) only; selectors Cert(0)/SPKI(1);
// matching Full(0)/SHA2-256(1)/SHA2-512(2)).
func usableTLSA(r *dns.TLSA) bool {
	return (r.Usage == 2 || r.Usage == 3) && r.Selector <= 1 && r.MatchingType <= 2
}

// tlsaMatches reports whether cert matches a TLSA record's selector and
// matching type (RFC 6698 §2.1.2, §2.1.3).
func tlsaMatches(r *dns.TLSA, cert *x509.Certificate) bool {
	data := cert.Raw
	if r.Selector == 1 {
		data = cert.RawSubjectPublicKeyInfo
	}
	var sum []byte
	switch r.MatchingType {
	case 0:
		sum = data
	case 1:
		h := sha256.Sum256(data)
		sum = h[:]
	case 2:
		h := sha512.Sum512(data)
		sum = h[:]
	default:
		return false
	}
	want, err := hex.DecodeString(r.Certificate)
	return err == nil && bytes.Equal(want, sum)
}

// verifyDANE checks a server's chain against the usable TLSA records
// (RFC 7672 §3.1): DANE-EE(3) matches the leaf, whatever its names and
// dates (§3.1.1); DANE-TA(2) matches a certificate of the chain that the
// leaf chains up to, and the leaf must name the host (§3.1.2, §3.2.2).
func verifyDANE(recs []*dns.TLSA, chain []*x509.Certificate, host string, now time.Time) *tlsrpt.Failure {
	if len(chain) == 0 {
		return &tlsrpt.Failure{ResultType: tlsrpt.ResultValidationFailure, Reason: "no certificate"}
	}
	leaf := chain[0]
	taMatched := false
	for _, r := range recs {
		switch r.Usage {
		case 3:
			if tlsaMatches(r, leaf) {
				return nil
			}
		case 2:
			for _, c := range chain[1:] {
				if !tlsaMatches(r, c) {
					continue
				}
				taMatched = true
				roots := x509.NewCertPool()
				roots.AddCert(c)
				inter := x509.NewCertPool()
				for _, ic := range chain[1:] {
					inter.AddCert(ic)
				}
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host, CurrentTime: now}); err == nil {
					return nil
				}
			}
		}
	}
	reason := "no TLSA record matches the certificate"
	if taMatched {
		reason = "the certificate does not chain to the TLSA trust anchor for " + host
	}
	return &tlsrpt.Failure{ResultType: tlsrpt.ResultValidationFailure, ReceivingMX: host, Reason: reason}
}

// verifyWebPKI checks a server's chain as MTA-STS asks (RFC 8461 §4.2):
// trusted by a root, valid now, naming the MX host.
func verifyWebPKI(roots *x509.CertPool, chain []*x509.Certificate, host string, now time.Time) *tlsrpt.Failure {
	if len(chain) == 0 {
		return &tlsrpt.Failure{ResultType: tlsrpt.ResultValidationFailure, ReceivingMX: host, Reason: "no certificate"}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host, CurrentTime: now})
	if err == nil {
		return nil
	}
	f := &tlsrpt.Failure{ResultType: tlsrpt.ResultValidationFailure, ReceivingMX: host, Reason: truncate(err.Error(), 200)}
	var he x509.HostnameError
	var ie x509.CertificateInvalidError
	var ue x509.UnknownAuthorityError
	switch {
	case errors.As(err, &he):
		f.ResultType = tlsrpt.ResultCertificateHostMismatch
	case errors.As(err, &ie) && ie.Reason == x509.Expired:
		f.ResultType = tlsrpt.ResultCertificateExpired
	case errors.As(err, &ue):
		f.ResultType = tlsrpt.ResultCertificateNotTrusted
	}
	return f
}

// checkPeer verifies the TLS session of a host under its policy and
// records the result. It returns a failure when the host must not be
// used.
func (q *Queue) checkPeer(hs *hostSec, host, addr, local string, state tls.ConnectionState) *failure {
	now := time.Now() // certificates are checked against the real time
	var f *tlsrpt.Failure
	switch hs.mode {
	case secDANE:
		f = verifyDANE(hs.tlsa, state.PeerCertificates, host, now)
	case secSTSEnforce, secSTSTesting:
		f = verifyWebPKI(q.options().TLSRoots, state.PeerCertificates, host, now)
	}
	if f != nil {
		f.ReceivingMX, f.ReceivingIP, f.SendingIP = host, ipOf(addr), local
	}
	q.recordTLS(tlsrpt.Result{Policy: hs.policy, Failure: f})
	if f == nil || !hs.required() {
		if f != nil {
			q.options().Logger.Warn("queue: TLS verification failed (MTA-STS testing: delivering anyway)", "host", host, "addr", addr, "result", f.ResultType, "reason", f.Reason)
		}
		return nil
	}
	what := map[secMode]string{secDANE: "DANE", secSTSEnforce: "MTA-STS"}[hs.mode]
	return &failure{enhanced: "4.7.5", text: fmt.Sprintf("%s: certificate of %s[%s] not accepted: %s (%s)", what, host, addr, f.ResultType, f.Reason), host: host}
}

// tlsFailed records a failed STARTTLS (not offered, or a failed
// handshake) under a host's policy and returns the failure when TLS was
// required.
func (q *Queue) tlsFailed(hs *hostSec, host, addr, local, result, reason string) *failure {
	q.recordTLS(tlsrpt.Result{Policy: hs.policy, Failure: &tlsrpt.Failure{ResultType: result, SendingIP: local, ReceivingMX: host, ReceivingIP: ipOf(addr), Reason: truncate(reason, 200)}})
	if !hs.required() {
		return nil
	}
	return &failure{enhanced: "4.7.4", text: fmt.Sprintf("TLS is required for %s[%s] (%s): %s", host, addr, result, reason), host: host}
}

// recordTLS stores a TLS-RPT result when reports are on.
func (q *Queue) recordTLS(r tlsrpt.Result) {
	rec := q.options().TLSReports
	if rec == nil || r.Policy.Domain == "" {
		return
	}
	if err := rec.Add(r); err != nil {
		q.options().Logger.Warn("queue: recording TLS result", "domain", r.Policy.Domain, "err", err)
	}
}

// localIP is the address our end of conn has (TLS-RPT's sending-mta-ip).
func localIP(conn net.Conn) string {
	if conn == nil || conn.LocalAddr() == nil {
		return ""
	}
	return ipOf(conn.LocalAddr().String())
}

func ipOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}
