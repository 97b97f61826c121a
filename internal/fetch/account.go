package fetch

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/postino-mail/postino/internal/tlsutil"
	"github.com/postino-mail/postino/pop3"
)

// Security is how the connection to the server is protected.
type Security string

// Security modes.
const (
	// SecurityTLS is implicit TLS (port 995).
	SecurityTLS Security = "tls"
	// SecurityStartTLS is STLS, required: a server without it is an error.
	SecurityStartTLS Security = "starttls"
	// SecurityNone is cleartext; Account.AllowPlaintext must be set.
	SecurityNone Security = "none"
)

// DefaultTimeout bounds connecting and each command when Account.Timeout
// is zero.
const DefaultTimeout = 60 * time.Second

// Account is one remote mailbox and what to do with its messages.
type Account struct {
	// Name identifies the account and names its state file.
	Name string
	// Server is the host name or address; Port 0 means 995 for
	// SecurityTLS and 110 otherwise.
	Server string
	Port   int
	// Security defaults to SecurityTLS.
	Security       Security
	AllowPlaintext bool
	// Insecure accepts any certificate.
	Insecure bool
	// Fingerprint, when set, is the SHA-256 of the one certificate
	// accepted (hex, colons allowed), instead of verification against
	// the system roots.
	Fingerprint string
	// RootCAs, when set, adds certificate authorities to the system
	// roots.
	RootCAs *x509.CertPool
	// User is the login name; Password returns the password (asked once
	// per process, when first needed).
	User     string
	Password func() (string, error)
	// Auth is "auto" (or ""), "scram-sha-256", "plain", "login", "user" or
	// "apop".
	Auth string

	// Dest receives the messages.
	Dest Destination

	// Delete removes messages from the server once delivered; otherwise
	// they are left there and DeleteAfter, if set, removes them that long
	// after they were first seen.
	Delete      bool
	DeleteAfter time.Duration
	// MaxSize skips larger messages (0: no limit); MaxMessages limits the
	// number downloaded per run (0: no limit).
	MaxSize     int64
	MaxMessages int
	// Timeout bounds connecting and each command; 0 is DefaultTimeout.
	Timeout time.Duration
}

// Addr returns host:port.
func (a *Account) Addr() string {
	port := a.Port
	if port == 0 {
		port = 110
		if a.security() == SecurityTLS {
			port = 995
		}
	}
	return net.JoinHostPort(a.Server, strconv.Itoa(port))
}

func (a *Account) security() Security {
	if a.Security == "" {
		return SecurityTLS
	}
	return a.Security
}

func (a *Account) timeout() time.Duration {
	if a.Timeout <= 0 {
		return DefaultTimeout
	}
	return a.Timeout
}

// Check reports an account that cannot be used.
func (a *Account) Check() error {
	switch {
	case a.Name == "":
		return errors.New("account has no name")
	case a.Server == "":
		return fmt.Errorf("account %s: no server", a.Name)
	case a.Dest == nil:
		return fmt.Errorf("account %s: no destination", a.Name)
	case a.security() == SecurityNone && !a.AllowPlaintext:
		return fmt.Errorf("account %s: security none sends the password in the clear; allow it explicitly", a.Name)
	}
	switch a.security() {
	case SecurityTLS, SecurityStartTLS, SecurityNone:
	default:
		return fmt.Errorf("account %s: unknown security %q", a.Name, a.Security)
	}
	if a.Fingerprint != "" {
		if _, err := parseFingerprint(a.Fingerprint); err != nil {
			return fmt.Errorf("account %s: %w", a.Name, err)
		}
	}
	return nil
}

// parseFingerprint accepts plain hex and the AB:CD:... form alike.
func parseFingerprint(s string) ([]byte, error) {
	b, err := tlsutil.ParseFingerprint(s)
	if err != nil {
		return nil, fmt.Errorf("fingerprint: %w", err)
	}
	return b, nil
}

// ErrFingerprint is returned when the server's certificate does not match
// the pinned fingerprint.
var ErrFingerprint = errors.New("server certificate does not match the pinned fingerprint")

// tlsConfig returns the client TLS configuration for the account.
func (a *Account) tlsConfig() *tls.Config {
	cfg := &tls.Config{ServerName: a.Server, MinVersion: tls.VersionTLS12}
	if a.RootCAs != nil {
		cfg.RootCAs = a.RootCAs
	}
	switch {
	case a.Fingerprint != "":
		want, _ := parseFingerprint(a.Fingerprint)
		cfg.InsecureSkipVerify = true // replaced by the pin check below
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return ErrFingerprint
			}
			got := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if string(got[:]) != string(want) {
				return fmt.Errorf("%w (the server's is %s)", ErrFingerprint, tlsutil.FormatFingerprint(got[:]))
			}
			return nil
		}
	case a.Insecure:
		cfg.InsecureSkipVerify = true
	}
	return cfg
}

// SystemRootsWith returns the system roots plus the certificates in the
// PEM file.
func SystemRootsWith(pemFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	data, err := os.ReadFile(pemFile)
	if err != nil {
		return nil, err
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificates", pemFile)
	}
	return pool, nil
}

// tlsError marks failures to establish a verified TLS session.
type tlsError struct{ err error }

func (e *tlsError) Error() string { return "TLS: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }

// authError marks refused credentials.
type authError struct{ err error }

func (e *authError) Error() string { return "authentication failed: " + e.err.Error() }
func (e *authError) Unwrap() error { return e.err }

// isTLSFailure reports whether err comes from certificate verification or
// the TLS handshake.
func isTLSFailure(err error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var re tls.RecordHeaderError
	var ae tls.AlertError
	return errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) ||
		errors.As(err, &re) || errors.As(err, &ae) || errors.Is(err, ErrFingerprint)
}

// connect dials, secures the connection and logs in.
func (a *Account) connect(ctx context.Context, password string) (*pop3.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, a.timeout())
	defer cancel()
	var c *pop3.Client
	var err error
	tlsCfg := a.tlsConfig()
	if a.security() == SecurityTLS {
		c, err = pop3.DialTLS(dctx, a.Addr(), tlsCfg)
		if err != nil && isTLSFailure(err) {
			return nil, &tlsError{err}
		}
	} else {
		c, err = pop3.Dial(dctx, a.Addr())
	}
	if err != nil {
		return nil, err
	}
	c.Timeout = a.timeout()
	// A message larger than MaxSize is skipped by its LIST size; a server
	// that sends more than it announced is stopped by the client.
	c.MaxMessageSize = a.MaxSize
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	c.Capabilities() // a server without CAPA (RFC 1939 only) is served by the fallbacks
	if a.security() == SecurityStartTLS {
		if !c.HasCap("STLS") {
			return nil, &tlsError{errors.New("the server does not offer STLS (security = starttls)")}
		}
		if err := c.StartTLS(tlsCfg); err != nil {
			if isTLSFailure(err) {
				return nil, &tlsError{err}
			}
			return nil, err
		}
		c.Capabilities()
	}
	if err := a.login(c, password); err != nil {
		return nil, err
	}
	c.Capabilities() // capabilities may change after login (RFC 2449 §5)
	ok = true
	return c, nil
}

// apopTimestamp returns the <...> timestamp of an APOP-capable greeting.
func apopTimestamp(greeting string) string {
	i := strings.IndexByte(greeting, '<')
	j := strings.LastIndexByte(greeting, '>')
	if i < 0 || j < i || !strings.Contains(greeting[i:j], "@") {
		return ""
	}
	return greeting[i : j+1]
}

// login authenticates with the configured or best offered method.
func (a *Account) login(c *pop3.Client, password string) error {
	mechs := map[string]bool{}
	caps, _ := c.Capabilities()
	for _, m := range caps["SASL"] {
		mechs[strings.ToUpper(m)] = true
	}
	_, isTLS := c.Conn().(*tls.Conn)
	ts := apopTimestamp(c.Greeting())
	type method struct {
		name string
		do   func() error
	}
	scram := method{"scram-sha-256", func() error { return c.Auth(pop3.NewSCRAMClient(a.User, password)) }}
	plain := method{"plain", func() error { return c.Auth(sasl.NewPlainClient("", a.User, password)) }}
	login := method{"login", func() error { return c.Auth(sasl.NewLoginClient(a.User, password)) }}
	user := method{"user", func() error { return c.Login(a.User, password) }}
	apop := method{"apop", func() error {
		if ts == "" {
			return errors.New("the server does not offer APOP")
		}
		sum := md5.Sum([]byte(ts + password))
		_, err := c.Cmd("APOP %s %s", a.User, hex.EncodeToString(sum[:]))
		return err
	}}
	var try []method
	switch strings.ToLower(a.Auth) {
	case "", "auto":
		if mechs["SCRAM-SHA-256"] {
			try = append(try, scram)
		}
		if ts != "" && !isTLS {
			try = append(try, apop)
		}
		if mechs["PLAIN"] {
			try = append(try, plain)
		}
		if c.HasCap("USER") || caps == nil || len(try) == 0 {
			try = append(try, user)
		}
		if mechs["LOGIN"] && !mechs["PLAIN"] {
			try = append(try, login)
		}
	case "scram-sha-256":
		try = []method{scram}
	case "plain":
		try = []method{plain}
	case "login":
		try = []method{login}
	case "user":
		try = []method{user}
	case "apop":
		try = []method{apop}
	default:
		return fmt.Errorf("unknown auth method %q", a.Auth)
	}
	var last error
	for i, m := range try {
		err := m.do()
		if err == nil {
			return nil
		}
		last = err
		var pe *pop3.Error
		if !errors.As(err, &pe) {
			return err // a connection failure
		}
		if pe.Code == pop3.CodeInUse || pe.Code == pop3.CodeLoginDelay || pe.Code == pop3.CodeSysTemp {
			return err
		}
		// SCRAM fails for users without SCRAM credentials on servers
		// that offer it to everyone: fall back to the next method.
		if m.name != "scram-sha-256" || i == len(try)-1 {
			break
		}
	}
	return &authError{last}
}
