package smtpin

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/store/maildir"
)

// TestConfigOptions: the default configuration's options are accepted in
// every role (this package has no defaults of its own for them), and a
// setting changed in the configuration reaches its field.
func TestConfigOptions(t *testing.T) {
	dir := t.TempDir()
	st, err := maildir.New(filepath.Join(dir, "mail"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	users := auth.OpenDB(filepath.Join(dir, "users.passwd"))
	for _, role := range []Role{RoleMX, RoleSubmission, RoleLMTP} {
		o := ConfigOptions(config.Default(), role)
		o.Users = users
		o.Deliverer = &delivery.Deliverer{Store: st, Users: users, SpoolDir: dir}
		if _, err := New(o); err != nil {
			t.Errorf("New(ConfigOptions(config.Default(), %v)) = %v", role, err)
		}
	}
	c := config.Default()
	c.Hostname = "mx.example.test"
	c.SMTP.MaxRecipients, c.SMTP.MaxErrors, c.SMTP.MaxMessageSize = 7, 3, config.MiB
	c.SMTP.CommandTimeout, c.SMTP.DataTimeout = config.D(time.Minute), config.D(2*time.Minute)
	c.SMTP.RestrictSender = false
	c.SMTP.Postmaster = "admin@example.test"
	o := ConfigOptions(c, RoleSubmission)
	if o.Hostname != "mx.example.test" || o.Role != RoleSubmission || o.MaxRecipients != 7 || o.MaxErrors != 3 ||
		o.MaxMessageBytes != 1<<20 || o.ReadTimeout != time.Minute || o.DataTimeout != 2*time.Minute ||
		!o.AllowAnySender || o.Postmaster != "admin@example.test" || len(o.TrustedNetworks) != 2 {
		t.Errorf("ConfigOptions = %+v", o)
	}
}
