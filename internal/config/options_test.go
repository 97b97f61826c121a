package config

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/smtpin"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/pop3"
)

// TestDefaultOptionsBuild: the options the default configuration produces
// are accepted by every package, which hold no defaults of their own for
// them (smtpin refuses zero limits).
func TestDefaultOptionsBuild(t *testing.T) {
	dir := t.TempDir()
	c := Default()
	c.DataDir = dir
	st, err := maildir.New(filepath.Join(dir, "mail"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	users := c.OpenUsers(nil)
	for _, role := range []smtpin.Role{smtpin.RoleMX, smtpin.RoleSubmission, smtpin.RoleLMTP} {
		o := c.SMTPOptions(role)
		o.Users = users
		o.Deliverer = &delivery.Deliverer{Store: st, Users: users, SpoolDir: dir}
		if _, err := smtpin.New(o); err != nil {
			t.Errorf("smtpin.New(Default().SMTPOptions(%v)) = %v", role, err)
		}
	}
}

// TestOptionsCarrySettings: a setting changed in the file reaches the
// field of the package that uses it, once.
func TestOptionsCarrySettings(t *testing.T) {
	c, err := Load(writeFile(t, `
[smtp]
max_recipients = 7
max_errors = 3
max_message_size = "1MiB"
command_timeout = "1m"
data_timeout = "2m"
restrict_sender = false
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
	o := c.SMTPOptions(smtpin.RoleSubmission)
	if o.Role != smtpin.RoleSubmission || o.MaxRecipients != 7 || o.MaxErrors != 3 || o.MaxMessageBytes != 1<<20 ||
		o.ReadTimeout != time.Minute || o.DataTimeout != 2*time.Minute || !o.AllowAnySender {
		t.Errorf("SMTPOptions = %+v", o)
	}
	if g := c.Guard(nil); g.BaseDelay >= 0 {
		t.Errorf("failure_delay = 0s gives Guard.BaseDelay %v, want a negative value (no delay)", g.BaseDelay)
	}
	if db := c.OpenUsers(nil); db.CacheTTL != 5*time.Second {
		t.Errorf("OpenUsers: CacheTTL = %v", db.CacheTTL)
	}
	p := c.POP3Server(nil, nil, nil)
	if p.MaxLine != 300 || p.LoginDelay != 3 || p.Autologout != pop3.DefaultAutologout {
		t.Errorf("POP3Server = %+v", p)
	}
}
