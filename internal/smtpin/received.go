package smtpin

import (
	"crypto/tls"
	"net/netip"
	"strings"
	"time"
)

// trace holds what goes into a Received header.
type trace struct {
	helo     string     // the client's HELO/EHLO argument, untrusted
	remote   netip.Addr // the client's IP; invalid for a unix socket
	hostname string     // our name
	lmtp     bool
	utf8     bool                 // SMTPUTF8 transaction (RFC 6531)
	tls      *tls.ConnectionState // nil without TLS
	user     string               // authenticated user, or ""
	id       string               // our message id
	rcpt     string               // "for" clause, or "" to leave it out
	date     time.Time
	// checks are the header fields the inbound checks add, placed above
	// Received (RFC 8601 §5: Authentication-Results at the top).
	checks string
}

// maxHeloInHeader bounds the HELO name recorded (a domain is at most 253
// octets, RFC 1035), so that no header line can exceed RFC 5322's 998.
const maxHeloInHeader = 255

// protocol returns the "with" keyword: RFC 3848 (ESMTPA, ESMTPS,
// ESMTPSA, LMTPA, LMTPS, LMTPSA) and RFC 6531 §4.3 (UTF8SMTP, UTF8LMTP
// with the same suffixes).
func (t *trace) protocol() string {
	p := "ESMTP"
	switch {
	case t.utf8 && t.lmtp:
		p = "UTF8LMTP"
	case t.utf8:
		p = "UTF8SMTP"
	case t.lmtp:
		p = "LMTP"
	}
	if t.tls != nil {
		p += "S"
	}
	if t.user != "" {
		p += "A"
	}
	return p
}

// header returns the Received header field (RFC 5321 §4.4, RFC 5322
// §3.6.7), folded with one clause per line and ending in CRLF:
//
//	Received: from HELO ([IP])
//		(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256)
//		(authenticated as USER)
//		by HOSTNAME (postino) with ESMTPSA id ID
//		for <RCPT>; DATE
//
// No reverse DNS lookup is made: the IP is given as an address literal.
// Everything that comes from the client is reduced to characters that
// cannot end the line or the comment.
func (t *trace) header() string {
	var b strings.Builder
	b.WriteString(t.checks)
	b.WriteString("Received: from ")
	b.WriteString(sanitizeHelo(t.helo))
	if t.remote.IsValid() {
		ip := t.remote.Unmap()
		if ip.Is4() {
			b.WriteString(" ([" + ip.String() + "])")
		} else {
			b.WriteString(" ([IPv6:" + ip.WithZone("").String() + "])")
		}
	} else {
		b.WriteString(" (unix socket)")
	}
	if t.tls != nil {
		b.WriteString("\r\n\t(using " + tlsVersionName(t.tls.Version) + " with cipher " +
			sanitizeComment(tls.CipherSuiteName(t.tls.CipherSuite)) + ")")
	}
	if t.user != "" {
		b.WriteString("\r\n\t(authenticated as " + sanitizeComment(t.user) + ")")
	}
	b.WriteString("\r\n\tby " + sanitizeHelo(t.hostname) + " (postino) with " + t.protocol() + " id " + t.id)
	if t.rcpt != "" {
		b.WriteString("\r\n\tfor <" + sanitizeComment(t.rcpt) + ">;")
	} else {
		b.WriteString(";")
	}
	b.WriteString(" " + t.date.Format(time.RFC1123Z) + "\r\n")
	return b.String()
}

// tlsVersionName returns "TLSv1.3" and the like (OpenSSL's spelling, as
// Postfix writes it).
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return sanitizeComment(tls.VersionName(v))
}

// sanitizeHelo keeps the characters of a host name or address literal
// (ASCII letters, digits, ".-_:[]") and turns the rest into '_', truncated
// to maxHeloInHeader octets.
func sanitizeHelo(s string) string {
	if len(s) > maxHeloInHeader {
		s = s[:maxHeloInHeader]
	}
	if s == "" {
		return "unknown"
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.IndexByte(".-_:[]", c) >= 0:
		default:
			b[i] = '_'
		}
	}
	return string(b)
}

// sanitizeComment makes s safe inside a header comment or angle brackets:
// no control characters (so no CR or LF), no parentheses, backslashes or
// angle brackets, at most maxPathLen octets of valid UTF-8.
func sanitizeComment(s string) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) > maxPathLen {
		s = s[:maxPathLen]
		s = strings.ToValidUTF8(s, "")
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 || r == 0x85:
			return '?'
		case strings.ContainsRune(`()\<>`, r):
			return '?'
		}
		return r
	}, s)
}
