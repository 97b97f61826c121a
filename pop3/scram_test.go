package pop3

import (
	"context"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"testing"
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
	waitFor(t, "unlock", func() bool { return !ts.be.isLocked("alice@example.test") })

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
