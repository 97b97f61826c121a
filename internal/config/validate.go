package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/pop3"
)

// Validate checks every setting and returns all the problems found, joined
// with errors.Join, each naming its key, for example
// "pop3.plaintext_auth: must be one of never, loopback, always". It returns
// nil when c is valid.
func (c *Config) Validate() error {
	return errors.Join(c.validate()...)
}

// validator accumulates problems, each prefixed with its key.
type validator struct{ errs []error }

func (v *validator) add(key, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
}

func (v *validator) oneOf(key, val string, allowed ...string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	v.add(key, "must be one of %s (got %q)", strings.Join(allowed, ", "), val)
}

// plaintext checks a plaintext-authentication policy (set in Go rather
// than decoded, which already refuses unknown words).
func (v *validator) plaintext(key string, p pop3.PlaintextPolicy) {
	if !p.Valid() {
		v.add(key, "%v (got %d)", pop3.ErrPlaintextPolicy, int(p))
	}
}

func (v *validator) atLeast(key string, val, lo int) {
	if val < lo {
		v.add(key, "must be at least %d (got %d)", lo, val)
	}
}

func (v *validator) intRange(key string, val, lo, hi int) {
	if val < lo || val > hi {
		v.add(key, "must be between %d and %d (got %d)", lo, hi, val)
	}
}

func (v *validator) minDuration(key string, d Duration, lo time.Duration) {
	if d.Duration < lo {
		v.add(key, "must be at least %s (got %s)", Duration{lo}, d)
	}
}

func (v *validator) positiveSize(key string, s Size) {
	if s <= 0 {
		v.add(key, "must be greater than zero (got %s)", s)
	}
}

// addr checks a host:port listen address; empty disables the listener.
func (v *validator) addr(key, a string) {
	if a == "" {
		return
	}
	if msg := checkAddr(a); msg != "" {
		v.add(key, "%s", msg)
	}
}

func checkAddr(a string) string {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Sprintf("invalid address %q: want host:port, e.g. \"127.0.0.1:110\" or \"[::1]:110\" or \":110\"", a)
	}
	if strings.ContainsAny(host, " \t\r\n") {
		return fmt.Sprintf("invalid address %q: host contains white space", a)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || port == "" || n > 65535 {
		return fmt.Sprintf("invalid address %q: port must be a number from 0 to 65535", a)
	}
	return ""
}

// isDays reports whether s is a plain decimal number of days, at most
// 999999999.
func isDays(s string) bool {
	if s == "" || len(s) > 9 {
		return false
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkHostname returns why h is not acceptable as the server's name, or ""
// if it is. It is deliberately lenient: letters, digits, '-', '_' and '.'.
func checkHostname(h string) string {
	if h == "" {
		return "must not be empty"
	}
	if len(h) > 253 {
		return "must be at most 253 characters"
	}
	for _, r := range h {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Sprintf("invalid host name %q: only letters, digits, '-', '_' and '.' are allowed", h)
		}
	}
	return ""
}

// checkDomain returns why d is not a valid DNS domain name, or "".
func checkDomain(d string) string {
	if d == "" {
		return "empty domain"
	}
	if len(d) > 253 {
		return fmt.Sprintf("domain %q is longer than 253 characters", d)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Sprintf("invalid domain %q", d)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Sprintf("invalid domain %q", d)
			}
		}
	}
	return ""
}

// validate returns every problem in c.
func (c *Config) validate() []error {
	v := &validator{}

	if msg := checkHostname(c.Hostname); msg != "" {
		v.add("hostname", "%s", msg)
	}
	if strings.TrimSpace(c.DataDir) == "" {
		v.add("data_dir", "must not be empty")
	}
	v.oneOf("log_level", c.LogLevel, "debug", "info", "warn", "error")
	v.oneOf("log_format", c.LogFormat, "text", "json")

	// [tls]
	if (c.TLS.Cert == "") != (c.TLS.Key == "") {
		if c.TLS.Cert == "" {
			v.add("tls.cert", "must be set when tls.key is set (or leave both empty for a self-signed certificate)")
		} else {
			v.add("tls.key", "must be set when tls.cert is set (or leave both empty for a self-signed certificate)")
		}
	}
	v.oneOf("tls.min_version", c.TLS.MinVersion, "1.2", "1.3")

	// [pop3]
	p := &c.POP3
	v.addr("pop3.listen", p.Listen)
	v.addr("pop3.listen_tls", p.ListenTLS)
	v.plaintext("pop3.plaintext_auth", p.PlaintextAuth)
	v.minDuration("pop3.line_timeout", c.POP3.LineTimeout, time.Second)
	if c.POP3.MaxSessionTime.Duration < 0 {
		v.add("pop3.max_session_time", "must not be negative (got %s)", c.POP3.MaxSessionTime)
	}
	if c.POP3.CommandsPerSecond < 0 {
		v.add("pop3.commands_per_second", "must not be negative (got %d)", c.POP3.CommandsPerSecond)
	}
	if f := c.POP3.DovecotUIDLFormat; f != "" {
		if _, err := maildir.ParseUIDLFormat(f); err != nil {
			v.add("pop3.dovecot_uidl_format", "%v", err)
		}
	}
	v.plaintext("smtp.plaintext_auth", c.SMTP.PlaintextAuth)
	v.minDuration("pop3.autologout", p.Autologout, time.Second)
	v.intRange("pop3.max_line", p.MaxLine, 255, 1<<20)
	v.atLeast("pop3.max_bad_commands", p.MaxBadCommands, 1)
	v.minDuration("pop3.write_timeout", p.WriteTimeout, time.Second)
	v.atLeast("pop3.max_connections", p.MaxConnections, 1)
	v.atLeast("pop3.max_connections_per_ip", p.MaxConnectionsPerIP, 1)
	if p.LoginDelay.Duration < 0 {
		v.add("pop3.login_delay", "must not be negative (got %s)", p.LoginDelay)
	} else if p.LoginDelay.Duration%time.Second != 0 {
		v.add("pop3.login_delay", "must be a whole number of seconds (got %s)", p.LoginDelay)
	}
	if p.Expire != ExpireNever && !isDays(p.Expire) {
		v.add("pop3.expire", "must be NEVER or a whole number of days (got %q)", p.Expire)
	}

	// [users]
	if c.Users.CacheTTL.Duration < 0 {
		v.add("users.cache_ttl", "must not be negative (got %s)", c.Users.CacheTTL)
	}
	v.atLeast("users.max_failures", c.Users.MaxFailures, 1)
	v.atLeast("users.default_quota_messages", c.Users.DefaultQuotaMessages, 0)
	v.minDuration("users.failure_window", c.Users.FailureWindow, time.Second)
	v.minDuration("users.block_for", c.Users.BlockFor, time.Second)
	if c.Users.FailureDelay.Duration < 0 || c.Users.MaxFailureDelay.Duration < c.Users.FailureDelay.Duration {
		v.add("users.failure_delay", "must be between 0s and users.max_failure_delay (got %s and %s)", c.Users.FailureDelay, c.Users.MaxFailureDelay)
	}

	// [delivery]
	v.positiveSize("delivery.max_message_size", c.Delivery.MaxMessageSize)

	// [smtp]
	s := &c.SMTP
	v.addr("smtp.listen", s.Listen)
	v.addr("smtp.submission", s.Submission)
	v.addr("smtp.submissions", s.Submissions)
	switch {
	case s.LMTP == "":
	case strings.HasPrefix(s.LMTP, "unix:"):
		if rest := strings.TrimPrefix(s.LMTP, "unix:"); rest == "" {
			v.add("smtp.lmtp", "unix socket path is empty")
		}
	case strings.HasPrefix(s.LMTP, "/"):
	default:
		if msg := checkAddr(s.LMTP); msg != "" {
			v.add("smtp.lmtp", "%s, or a unix socket path starting with \"/\" or \"unix:\"", msg)
		}
	}
	v.atLeast("smtp.max_recipients", s.MaxRecipients, 1)
	v.positiveSize("smtp.max_message_size", s.MaxMessageSize)
	v.minDuration("smtp.command_timeout", s.CommandTimeout, time.Second)
	v.minDuration("smtp.data_timeout", s.DataTimeout, time.Second)
	v.atLeast("smtp.max_errors", s.MaxErrors, 1)
	v.atLeast("smtp.max_connections", s.MaxConnections, 1)
	v.atLeast("smtp.max_connections_per_ip", s.MaxConnectionsPerIP, 1)
	for i, n := range s.TrustedNetworks {
		if _, err := parseNetwork(n); err != nil {
			v.add(fmt.Sprintf("smtp.trusted_networks[%d]", i), "%s", err)
		}
	}
	for i, d := range s.LocalDomains {
		if msg := checkDomain(d); msg != "" {
			v.add(fmt.Sprintf("smtp.local_domains[%d]", i), "%s", msg)
		}
	}
	if pm := s.Postmaster; pm != "" {
		at := strings.LastIndexByte(pm, '@')
		if at <= 0 || strings.ContainsAny(pm[:at], " \t\r\n<>\"") || checkDomain(pm[at+1:]) != "" {
			v.add("smtp.postmaster", "must be empty or an address user@domain (got %q)", pm)
		}
	}
	if sep := s.PlusSeparator; sep != "" {
		if len(sep) != 1 || sep[0] <= ' ' || sep[0] >= 0x7f || sep[0] == '@' || sep[0] == '"' || sep[0] == '\\' ||
			sep[0] >= 'a' && sep[0] <= 'z' || sep[0] >= 'A' && sep[0] <= 'Z' || sep[0] >= '0' && sep[0] <= '9' {
			v.add("smtp.plus_separator", "must be empty or a single punctuation character other than '@', '\"' and '\\' (got %q)", sep)
		}
	}

	// Two listeners cannot share an address (port 0 picks a free port, so it
	// may repeat).
	listeners := []struct{ key, addr string }{
		{"pop3.listen", p.Listen}, {"pop3.listen_tls", p.ListenTLS},
		{"smtp.listen", s.Listen}, {"smtp.submission", s.Submission},
		{"smtp.submissions", s.Submissions}, {"smtp.lmtp", s.LMTP},
		{"http.listen", c.HTTP.Listen}, {"https.listen", c.HTTPS.Listen},
		{"admin.listen", c.Admin.Listen},
	}
	used := map[string]string{}
	for _, l := range listeners {
		if l.addr == "" || checkAddr(l.addr) != "" {
			continue
		}
		host, port, _ := net.SplitHostPort(l.addr)
		if port == "0" {
			continue
		}
		norm := net.JoinHostPort(host, port)
		if prev, ok := used[norm]; ok {
			v.add(l.key, "address %q is already used by %s", l.addr, prev)
			continue
		}
		used[norm] = l.key
	}

	c.validateWeb(v)

	// [fetch]
	c.validateFetch(v)
	c.validateQueue(v)
	c.validateDNS(v)
	c.validateMailAuth(v)
	c.validateProxy(v)
	c.validateAdmin(v)
	c.validateAntispam(v)
	c.validateMilters(v)
	c.validateJunk(v)
	c.validateStorage(v)
	return v.errs
}
