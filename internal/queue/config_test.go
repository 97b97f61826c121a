package queue

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/config"
)

// TestConfigOptions: the queue's settings come from the configuration
// (the default one opens a queue), and a required limit left at zero is
// refused instead of replaced by a default of the queue's own.
func TestConfigOptions(t *testing.T) {
	q, err := Open(filepath.Join(t.TempDir(), "queue"), ConfigOptions(config.Default(), nil))
	if err != nil {
		t.Fatalf("Open(ConfigOptions(config.Default())) = %v", err)
	}
	q.Close()

	c := config.Default()
	c.Hostname = "mail.example.test"
	c.SMTP.MaxMessageSize = config.MiB
	c.Queue.MinBackoff = config.D(time.Minute)
	c.Queue.MaxPerDomain = 4
	c.Queue.BounceSizeLimit = 1000
	c.Queue.STARTTLS = false
	c.Queue.Smarthost, c.Queue.SmarthostUsername = "127.0.0.1:2525", "relay"
	c.Queue.Routes = []string{"Example.TEST=127.0.0.1:25"}
	o := ConfigOptions(c, nil)
	if o.Hostname != "mail.example.test" || o.MinBackoff != time.Minute || o.MaxPerDomain != 4 || o.BounceSizeLimit != 1000 ||
		o.MaxMessageSize != 1<<20 || !o.DisableSTARTTLS || o.Smarthost == nil || o.Smarthost.Addr != "127.0.0.1:2525" ||
		o.Smarthost.Username != "relay" || o.Routes["example.test"] != "127.0.0.1:25" || o.Resolver != nil {
		t.Errorf("ConfigOptions = %+v", o)
	}

	for field, mod := range map[string]func(*Options){
		"Hostname":        func(o *Options) { o.Hostname = "" },
		"MinBackoff":      func(o *Options) { o.MinBackoff = 0 },
		"MaxLifetime":     func(o *Options) { o.MaxLifetime = 0 },
		"ConnectTimeout":  func(o *Options) { o.ConnectTimeout = -time.Second },
		"DataDoneTimeout": func(o *Options) { o.DataDoneTimeout = 0 },
		"MaxConcurrent":   func(o *Options) { o.MaxConcurrent = 0 },
		"BounceSizeLimit": func(o *Options) { o.BounceSizeLimit = 0 },
	} {
		o := defaultOptions()
		mod(&o)
		var oe *OptionError
		if _, err := Open(filepath.Join(t.TempDir(), "queue"), o); !errors.As(err, &oe) || oe.Field != field {
			t.Errorf("Open with zero %s: %v, want an OptionError for it", field, err)
		}
	}
}
