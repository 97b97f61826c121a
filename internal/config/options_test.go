package config

import (
	"testing"
	"time"

	"github.com/postino-mail/postino/pop3"
)

// TestOptionsCarrySettings: a setting changed in the file reaches the
// field of the package that uses it, once.
func TestOptionsCarrySettings(t *testing.T) {
	c, err := Load(writeFile(t, `
[smtp]
trusted_networks = ["192.0.2.0/24"]
[users]
failure_delay = "0s"
cache_ttl = "5s"
[pop3]
max_line = 300
login_delay = "3s"
`))
	if err != nil {
		t.Fatal(err)
	}
	if g := c.Guard(nil); g.BaseDelay >= 0 || len(g.Trusted) != 1 || g.Trusted[0].String() != "192.0.2.0/24" {
		t.Errorf("Guard: BaseDelay %v (want negative: no delay), Trusted %v", g.BaseDelay, g.Trusted)
	}
	if db := c.OpenUsers(nil); db.CacheTTL != 5*time.Second {
		t.Errorf("OpenUsers: CacheTTL = %v", db.CacheTTL)
	}
	p := c.POP3Server(nil, nil, nil)
	if p.MaxLine != 300 || p.LoginDelay != 3 || p.Autologout != pop3.DefaultAutologout {
		t.Errorf("POP3Server = %+v", p)
	}
}
