package pop3backend

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/tlsutil"
	"github.com/postino-mail/postino/pop3"
)

// guardEnv is a POP3 server over the real backend with a brute-force
// guard, listening in the clear (with STLS) and with implicit TLS.
type guardEnv struct {
	db        *auth.DB
	guard     *authguard.Guard
	addr      string
	tlsAddr   string
	clientTLS *tls.Config
}

// guardDelay is the wait of every failed login in these tests.
const guardDelay = 50 * time.Millisecond

func startGuarded(t *testing.T, maxFailures int) *guardEnv {
	t.Helper()
	return startGuardedLog(t, maxFailures, nil)
}

// startGuardedLog is startGuarded with the server and backend logging to
// logger (nil: nowhere).
func startGuardedLog(t *testing.T, maxFailures int, logger *slog.Logger) *guardEnv {
	t.Helper()
	return startGuardedWrap(t, maxFailures, logger, nil)
}

// startGuardedWrap is startGuardedLog with the server's Backend made by
// wrap from the real one (nil: the real one).
func startGuardedWrap(t *testing.T, maxFailures int, logger *slog.Logger, wrap func(*POP3Backend) pop3.Backend) *guardEnv {
	t.Helper()
	dir := t.TempDir()
	e := &guardEnv{db: auth.OpenDB(filepath.Join(dir, "users.passwd"))}
	// One user whose stored password is a SCRAM one: every mechanism,
	// SCRAM-SHA-256 included, can log her in with the right password.
	h, err := auth.HashSCRAMSHA256("right pw")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.Add(context.Background(), "alice@example.test", h); err != nil {
		t.Fatal(err)
	}
	st, err := maildir.New(filepath.Join(dir, "mail"), nil)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, _, err := tlsutil.EnsureSelfSigned(filepath.Join(dir, "tls"), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsutil.NewReloader(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	e.clientTLS = &tls.Config{RootCAs: pool, ServerName: "localhost"}
	e.guard = &authguard.Guard{MaxFailures: maxFailures, BaseDelay: guardDelay, MaxDelay: guardDelay}
	var backend pop3.Backend = &POP3Backend{Users: e.db, Store: st, Guard: e.guard, Logger: logger}
	if wrap != nil {
		backend = wrap(backend.(*POP3Backend))
	}
	srv := &pop3.Server{
		Backend:         backend,
		Logger:          logger,
		TLSConfig:       tlsutil.ServerConfig(certs, "1.2"),
		SCRAM:           true,
		MaxAuthFailures: 1000,
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lt, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr, e.tlsAddr = l.Addr().String(), lt.Addr().String()
	go srv.Serve(l)
	go srv.ServeTLS(lt)
	t.Cleanup(func() { srv.Close() })
	return e
}

// transports are the three ways of reaching the POP3 server.
var transports = []string{"plain", "stls", "tls"}

func (e *guardEnv) dial(t *testing.T, transport string) *pop3.Client {
	t.Helper()
	ctx := context.Background()
	var c *pop3.Client
	var err error
	switch transport {
	case "plain", "stls":
		c, err = pop3.Dial(ctx, e.addr)
		if err == nil && transport == "stls" {
			err = c.StartTLS(e.clientTLS)
		}
	case "tls":
		c, err = pop3.DialTLS(ctx, e.tlsAddr, e.clientTLS)
	}
	if err != nil {
		t.Fatalf("%s: %v", transport, err)
	}
	c.Timeout = 10 * time.Second
	t.Cleanup(func() { c.Close() })
	return c
}

// mechanisms are every way of logging in to POP3.
var mechanisms = []struct {
	name  string
	login func(c *pop3.Client, user, pass string) error
}{
	{"USER/PASS", func(c *pop3.Client, user, pass string) error { return c.Login(user, pass) }},
	{"PLAIN", func(c *pop3.Client, user, pass string) error { return c.Auth(sasl.NewPlainClient("", user, pass)) }},
	{"LOGIN", func(c *pop3.Client, user, pass string) error { return c.Auth(sasl.NewLoginClient(user, pass)) }},
	{"SCRAM-SHA-256", func(c *pop3.Client, user, pass string) error { return c.Auth(pop3.NewSCRAMClient(user, pass)) }},
}

func isLoginDelay(err error) bool {
	var perr *pop3.Error
	return errors.As(err, &perr) && perr.Code == pop3.CodeLoginDelay
}

// TestGuardEveryMechanism: whichever mechanism an attacker guesses with,
// in the clear, after STLS or over implicit TLS, each failure is held
// back, N failures block the address, and a blocked address is then
// refused by every mechanism on every transport, even with the right
// password.
func TestGuardEveryMechanism(t *testing.T) {
	const maxFailures = 3
	for _, mech := range mechanisms {
		for _, tr := range transports {
			t.Run(mech.name+"/"+tr, func(t *testing.T) {
				e := startGuarded(t, maxFailures)
				c := e.dial(t, tr)
				for i := range maxFailures {
					start := time.Now()
					err := mech.login(c, "alice@example.test", "wrong pw")
					if !errors.Is(err, pop3.ErrAuthFailed) {
						t.Fatalf("failure %d: %v, want [AUTH]", i+1, err)
					}
					if d := time.Since(start); d < guardDelay {
						t.Fatalf("failure %d answered after %v, want at least %v", i+1, d, guardDelay)
					}
				}
				// An unknown user and a guess at the right password alike.
				if err := mech.login(c, "ghost@example.test", "x"); !isLoginDelay(err) {
					t.Fatalf("unknown user from a blocked address: %v, want [LOGIN-DELAY]", err)
				}
				for _, m := range mechanisms {
					for _, tr2 := range transports {
						c := e.dial(t, tr2)
						if err := m.login(c, "alice@example.test", "right pw"); !isLoginDelay(err) {
							t.Errorf("%s over %s with the right password from a blocked address: %v, want [LOGIN-DELAY]", m.name, tr2, err)
						}
					}
				}
			})
		}
	}
}

// TestGuardSCRAMSuccess: the right password logs in through every
// mechanism when the address is not blocked, a success is never delayed,
// and failures of the other mechanisms add up with SCRAM's.
func TestGuardSCRAMSuccess(t *testing.T) {
	e := startGuarded(t, 4)
	for _, m := range mechanisms {
		c := e.dial(t, "plain")
		if err := m.login(c, "alice@example.test", "right pw"); err != nil {
			t.Fatalf("%s: %v", m.name, err)
		}
		if err := c.Quit(); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.guard.Len(); n != 0 {
		t.Fatalf("successful logins left %d guard records", n)
	}
	// One failure per mechanism: four failures block the address.
	c := e.dial(t, "plain")
	for _, m := range mechanisms {
		if err := m.login(c, "alice@example.test", "wrong"); !errors.Is(err, pop3.ErrAuthFailed) {
			t.Fatalf("%s: %v, want [AUTH]", m.name, err)
		}
	}
	if blocked, _ := e.guard.Blocked(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}); !blocked {
		t.Fatal("four failures over four mechanisms did not block the address")
	}
}
