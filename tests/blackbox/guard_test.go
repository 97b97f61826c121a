package blackbox

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/postino-mail/postino/pop3"
)

// TestSCRAMGuessingBlocked: with pop3.scram = true, guesses made with AUTH
// SCRAM-SHA-256 against the real server are delayed and counted like any
// others: after users.max_failures the address is refused, through SCRAM
// and USER/PASS alike, even with the right password. Loopback is not
// trusted here, or it would never be blocked.
func TestSCRAMGuessingBlocked(t *testing.T) {
	data := t.TempDir()
	const user, pw = "alice@example.test", "correct horse"
	if r := postino(t, []byte(pw+"\n"), "user", "add", user, "--password-stdin", "--scheme", "SCRAM-SHA-256", "--data", data); r.Code != 0 {
		t.Fatalf("user add: %s", r)
	}
	conf := filepath.Join(data, "postino.toml")
	err := os.WriteFile(conf, []byte("[pop3]\nscram = true\n\n[smtp]\ntrusted_networks = []\n\n[users]\nmax_failures = 3\nfailure_delay = \"100ms\"\nmax_failure_delay = \"100ms\"\n"), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, serverOpts{data: data, extraArgs: []string{"--config", conf}})

	c := s.dial()
	if err := c.Auth(pop3.NewSCRAMClient(user, pw)); err != nil {
		t.Fatalf("SCRAM with the right password: %v", err)
	}
	c.Quit()
	c = s.dial()
	for i := range 3 {
		start := time.Now()
		err := c.Auth(pop3.NewSCRAMClient(user, "guess"))
		if !isCode(err, pop3.CodeAuth) {
			t.Fatalf("guess %d: %v, want [AUTH]", i+1, err)
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Fatalf("guess %d answered after %v, want at least 100ms", i+1, d)
		}
		if i == 1 {
			// The server closes after 3 failed logins on one connection.
			c = s.dial()
		}
	}
	c = s.dial()
	if err := c.Auth(pop3.NewSCRAMClient(user, pw)); !isCode(err, pop3.CodeLoginDelay) {
		t.Fatalf("SCRAM with the right password from a blocked address: %v, want [LOGIN-DELAY]", err)
	}
	if err := c.Login(user, pw); !isCode(err, pop3.CodeLoginDelay) {
		t.Fatalf("USER/PASS with the right password from a blocked address: %v, want [LOGIN-DELAY]", err)
	}
}
