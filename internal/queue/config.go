package queue

import (
	"log/slog"

	"github.com/postino-mail/postino/internal/config"
)

// ConfigOptions returns the outbound queue's settings from the
// configuration, with logger. The caller adds what is not a setting:
// IsLocalDomain, Local, Signer, DSNDomain, SRS and the Resolver (one
// caching resolver for the whole server, from config.Config.Resolver).
func ConfigOptions(c *config.Config, logger *slog.Logger) Options {
	q := c.Queue
	o := Options{
		Hostname:        c.Hostname,
		Logger:          logger,
		MinBackoff:      q.MinBackoff.Duration,
		MaxBackoff:      q.MaxBackoff.Duration,
		MaxLifetime:     q.MaxLifetime.Duration,
		DelayWarning:    q.DelayWarning.Duration,
		ConnectTimeout:  q.ConnectTimeout.Duration,
		CommandTimeout:  q.CommandTimeout.Duration,
		DataDoneTimeout: q.DataDoneTimeout.Duration,
		MaxPerDomain:    q.MaxPerDomain,
		MaxConcurrent:   q.MaxConcurrent,
		MaxMessageSize:  int64(c.SMTP.MaxMessageSize),
		BounceSizeLimit: int64(q.BounceSizeLimit),
		DisableSTARTTLS: !q.STARTTLS,
		DANE:            q.DANE && q.STARTTLS,
		Routes:          c.QueueRoutes(),
	}
	if q.Smarthost != "" {
		o.Smarthost = &Smarthost{Addr: q.Smarthost, Username: q.SmarthostUsername,
			Password: q.SmarthostPassword, RequireTLS: q.SmarthostRequireTLS}
	}
	return o
}
