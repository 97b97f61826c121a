package pop3backend

import (
	"context"
	"os"
	"testing"

	"github.com/postino-mail/postino/internal/auth"
)

// TestUserExpireFromPasswd: CAPA shows each user's userdb_pop3_expire
// after login, NEVER for "never" and for a value that cannot be parsed
// (the sweep keeps that mail), and "EXPIRE NEVER USER" before login.
func TestUserExpireFromPasswd(t *testing.T) {
	e := start(t)
	h, err := auth.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	lines := "alice@example.test:" + h + "::::::userdb_pop3_expire=30\n" +
		"bob@example.test:" + h + "\n" +
		"carol@example.test:" + h + "::::::userdb_pop3_expire=never\n" +
		"dave@example.test:" + h + "::::::userdb_pop3_expire=-3\n"
	if err := os.WriteFile(e.users, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	c := e.dial(t)
	caps, err := c.Capabilities()
	if err != nil || len(caps["EXPIRE"]) != 2 || caps["EXPIRE"][0] != "NEVER" || caps["EXPIRE"][1] != "USER" {
		t.Fatalf("CAPA before login: EXPIRE %v, %v", caps["EXPIRE"], err)
	}
	for user, want := range map[string]string{"alice@example.test": "30", "bob@example.test": "NEVER", "carol@example.test": "NEVER", "dave@example.test": "NEVER"} {
		c := e.dial(t)
		if err := c.Login(user, "pw"); err != nil {
			t.Fatal(err)
		}
		caps, err := c.Capabilities()
		if err != nil || len(caps["EXPIRE"]) != 1 || caps["EXPIRE"][0] != want {
			t.Errorf("%s: EXPIRE %v, %v; want %s", user, caps["EXPIRE"], err, want)
		}
		c.Quit()
	}
	if got := (&POP3Backend{Users: e.db}).UserExpire(context.Background(), "nobody@example.test"); got != "" {
		t.Errorf("unknown user: %q", got)
	}
}
