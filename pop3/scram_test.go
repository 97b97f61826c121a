package pop3

import (
	"context"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/postino-mail/postino/internal/testutil"
)

// scramBackend adds SCRAM credentials to the in-memory backend.
type scramBackend struct{ *memBackend }

func (b scramBackend) SCRAMCredentials(ctx context.Context, ci *ConnInfo, username string) (string, SCRAMCredentials, error) {
	b.mu.Lock()
	pass, ok := b.users[username]
	b.mu.Unlock()
	if !ok || username == "bob@example.test" { // bob has no SCRAM secrets
		return "", SCRAMCredentials{}, ErrAuthFailed
	}
	salt := []byte("0123456789abcdef")
	salted, _ := pbkdf2.Key(sha256.New, pass, salt, 4096, 32)
	ck := hmacSHA256(salted, "Client Key")
	sk := sha256.Sum256(ck)
	return username, SCRAMCredentials{Iterations: 4096, Salt: salt, StoredKey: sk[:], ServerKey: hmacSHA256(salted, "Server Key")}, nil
}

func TestSCRAM(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.SCRAM = true; s.Plaintext = PlaintextNever })
	seed(ts)
	ts.Backend = scramBackend{ts.be}
	tr := ts.dial(t)
	// Offered without TLS (the password never crosses the wire), while
	// PLAIN and LOGIN are not.
	if got := tr.multi("AUTH"); got != "SCRAM-SHA-256\r\n" {
		t.Fatalf("AUTH list = %q", got)
	}
	c := ts.client(t)
	if err := c.Auth(NewSCRAMClient("alice@example.test", "secret pass")); err != nil {
		t.Fatal(err)
	}
	if n, _, err := c.Stat(); err != nil || n != 3 {
		t.Fatalf("STAT = %d, %v", n, err)
	}
	c.Quit()
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })

	for _, tc := range []struct{ user, pass string }{
		{"alice@example.test", "wrong"},
		{"nobody@example.test", "x"},
		{"bob@example.test", "hunter2"}, // no SCRAM secrets stored
	} {
		c := ts.client(t)
		if err := c.Auth(NewSCRAMClient(tc.user, tc.pass)); !errors.Is(err, ErrAuthFailed) {
			t.Errorf("%s/%s: err = %v, want ErrAuthFailed", tc.user, tc.pass, err)
		}
	}
	// Malformed exchanges.
	tr = ts.dial(t)
	tr.do("AUTH SCRAM-SHA-256 "+base64.StdEncoding.EncodeToString([]byte("garbage")), `^-ERR \[AUTH\] Malformed SCRAM`)
	tr.do("AUTH SCRAM-SHA-256 "+base64.StdEncoding.EncodeToString([]byte("p=tls-unique,,n=a,r=b")), `^-ERR \[AUTH\] Channel binding`)
	tr.do("AUTH SCRAM-SHA-256", `^\+ $`)
	tr.do("*", `^-ERR Authentication cancelled`)
}

// guardBackend records the LoginGuard calls and blocks on demand.
type guardBackend struct {
	scramBackend
	mu        sync.Mutex
	blocked   bool
	failed    []string
	succeeded []string
}

func (b *guardBackend) LoginAllowed(ctx context.Context, ci *ConnInfo) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.blocked {
		return &Error{Code: CodeLoginDelay, Text: "Blocked."}
	}
	return nil
}

func (b *guardBackend) LoginFailed(ctx context.Context, ci *ConnInfo, username string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failed = append(b.failed, username)
}

func (b *guardBackend) LoginSucceeded(ctx context.Context, ci *ConnInfo, user string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.succeeded = append(b.succeeded, user)
}

func (b *guardBackend) LoginAbandoned(ctx context.Context, ci *ConnInfo) {}

func (b *guardBackend) setBlocked(v bool) {
	b.mu.Lock()
	b.blocked = v
	b.mu.Unlock()
}

func (b *guardBackend) calls() (failed, succeeded []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.failed...), append([]string(nil), b.succeeded...)
}

// TestSCRAMLoginGuard: SCRAM logins go through the Backend's LoginGuard
// like USER/PASS: failures and successes are reported, a blocked address
// is refused before any secret is sent, and a block that arrives during
// an exchange refuses even a correct proof.
func TestSCRAMLoginGuard(t *testing.T) {
	ts := startServer(t, func(s *Server) { s.SCRAM = true; s.MaxAuthFailures = 100 })
	gb := &guardBackend{scramBackend: scramBackend{ts.be}}
	ts.Backend = gb

	c := ts.client(t)
	if err := c.Auth(NewSCRAMClient("alice@example.test", "wrong")); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong password: %v", err)
	}
	// A foreign authorization identity is a failed login too.
	if err := c.Auth(sasl.NewPlainClient("bob@example.test", "alice@example.test", "secret pass")); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("PLAIN as someone else: %v", err)
	}
	if err := c.Login("alice@example.test", "nope"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("USER/PASS: %v", err)
	}
	if err := c.Auth(NewSCRAMClient("alice@example.test", "secret pass")); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	testutil.WaitFor(t, 5*time.Second, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })
	failed, succeeded := gb.calls()
	if strings.Join(failed, ",") != "alice@example.test,alice@example.test,alice@example.test" || strings.Join(succeeded, ",") != "alice@example.test" {
		t.Fatalf("LoginFailed %q, LoginSucceeded %q", failed, succeeded)
	}

	// Blocked: refused at once, without a server-first message (no salt).
	gb.setBlocked(true)
	tr := ts.dial(t)
	tr.do("AUTH SCRAM-SHA-256 "+base64.StdEncoding.EncodeToString([]byte("n,,n=alice@example.test,r=abcdef")), `^-ERR \[LOGIN-DELAY\]`)
	tr.do("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00secret pass")), `^-ERR \[LOGIN-DELAY\]`)
	tr.do("USER alice@example.test", `^\+OK`)
	tr.do("PASS secret pass", `^-ERR \[LOGIN-DELAY\]`)

	// Blocked in the middle of an exchange (by guesses elsewhere): the
	// right proof is refused.
	gb.setBlocked(false)
	sc := NewSCRAMClient("alice@example.test", "secret pass")
	_, first, _ := sc.Start()
	tr = ts.dial(t)
	tr.send("AUTH SCRAM-SHA-256 " + base64.StdEncoding.EncodeToString(first))
	line := tr.readLine()
	if !strings.HasPrefix(line, "+ ") {
		t.Fatalf("server-first: %q", line)
	}
	chal, _ := base64.StdEncoding.DecodeString(line[2:])
	final, err := sc.Next(chal)
	if err != nil {
		t.Fatal(err)
	}
	gb.setBlocked(true)
	tr.do(base64.StdEncoding.EncodeToString(final), `^-ERR \[LOGIN-DELAY\]`)
	if failed2, succeeded2 := gb.calls(); len(failed2) != len(failed) || len(succeeded2) != len(succeeded) {
		t.Fatalf("refusals of a blocked address were counted: failed %q, succeeded %q", failed2, succeeded2)
	}
}
