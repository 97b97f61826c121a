package smtpin

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/pop3"
)

// slowUsers counts the password checks and makes each one slow, as a
// costly password hash is, so that guesses sent in parallel are all in
// progress at once.
type slowUsers struct {
	UserDB
	checks atomic.Int32
}

func (u *slowUsers) Authenticate(ctx context.Context, username, password string) (string, error) {
	u.checks.Add(1)
	time.Sleep(100 * time.Millisecond)
	return u.UserDB.Authenticate(ctx, username, password)
}

// rawReply reads one reply and returns its code (0 on an error), without
// the test helpers' Fatal, for use in goroutines.
func rawReply(c *client) int {
	for {
		line, err := c.r.ReadString('\n')
		if err != nil || len(line) < 4 {
			return 0
		}
		if line[3] == ' ' {
			var code int
			fmt.Sscanf(line[:3], "%d", &code)
			return code
		}
	}
}

// rawAuth sends one guess with mech (PLAIN, LOGIN, or PLAIN as someone
// else) and returns the final reply code.
func rawAuth(c *client, mech, user, pw string) int {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	var lines []string
	switch mech {
	case "PLAIN":
		lines = []string{"AUTH PLAIN " + b64("\x00"+user+"\x00"+pw)}
	case "PLAIN-authz":
		lines = []string{"AUTH PLAIN " + b64("bob@example.test\x00"+user+"\x00"+pw)}
	case "LOGIN":
		lines = []string{"AUTH LOGIN", b64(user), b64(pw)}
	}
	code := 0
	for _, l := range lines {
		if _, err := io.WriteString(c.conn, l+"\r\n"); err != nil {
			return 0
		}
		if code = rawReply(c); code != 334 {
			return code
		}
	}
	return code
}

// TestAuthGuardParallelGuesses: an attacker opening 40 submission
// connections at once (in the clear, with STARTTLS and with implicit TLS)
// and guessing one password on each, by any mechanism, gets at most
// MaxFailures passwords checked; every other guess is refused with 454
// without a check, and nothing stays counted as in progress.
func TestAuthGuardParallelGuesses(t *testing.T) {
	const maxFailures, guesses = 3, 40
	for _, mech := range []string{"PLAIN", "LOGIN", "PLAIN-authz"} {
		for _, mode := range []string{"plain", "starttls", "tls"} {
			t.Run(mech+"/"+mode, func(t *testing.T) {
				users := &slowUsers{}
				g := &authguard.Guard{MaxFailures: maxFailures, BaseDelay: 10 * time.Millisecond, MaxDelay: 10 * time.Millisecond}
				e := newEnv(t, RoleSubmission, func(c *envConfig) {
					c.tls = true
					c.opts.PlaintextAuth = pop3.PlaintextLoopback
					c.opts.Guard = g
					users.UserDB = c.opts.Users
					c.opts.Users = users
				})
				clients := make([]*client, guesses)
				for i := range clients {
					clients[i] = e.dialMode(mode)
				}
				codes := make(map[int]int)
				var mu sync.Mutex
				var wg sync.WaitGroup
				start := make(chan struct{})
				for _, c := range clients {
					wg.Go(func() {
						<-start
						code := rawAuth(c, mech, "alice@example.test", "wrong pw")
						mu.Lock()
						codes[code]++
						mu.Unlock()
					})
				}
				close(start)
				wg.Wait()
				failed := codes[535]
				if codes[535]+codes[454] != guesses {
					t.Errorf("replies %v, want only 535 and 454", codes)
				}
				if failed > maxFailures {
					t.Errorf("%d guesses answered 535, want at most %d", failed, maxFailures)
				}
				if n := int(users.checks.Load()); n > maxFailures {
					t.Errorf("%d passwords checked, want at most %d", n, maxFailures)
				}
				if n := g.InFlight(); n != 0 {
					t.Errorf("%d attempts left in progress", n)
				}
				if b, _ := g.Blocked(clients[0].conn.LocalAddr()); !b {
					t.Errorf("the address is not blocked after %v", codes)
				}
			})
		}
	}
}
