package server

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/junk"
	"github.com/postino-mail/postino/internal/quarantine"
	"github.com/postino-mail/postino/internal/smtpin"
)

// junkFor returns the MX's spam handling as cfg's [junk] section and the
// users' userdb_junk fields set it.
func junkFor(cfg *config.Config, users *auth.DB, logger *slog.Logger) *smtpin.Junk {
	def, err := junk.ParseChoice(cfg.Junk.DefaultAction)
	if err != nil {
		def = junk.Score // validated already
	}
	return &smtpin.Junk{
		Policy: junk.Policy{TagScore: cfg.Junk.TagScore, QuarantineScore: cfg.Junk.QuarantineScore, RejectScore: cfg.Junk.RejectScore,
			Default: def, SubjectPrefix: cfg.Junk.SubjectPrefix},
		Choice: func(mailbox string) junk.Choice {
			u, ok := users.Lookup(mailbox)
			if !ok {
				return junk.Default
			}
			v, ok := u.JunkChoice()
			if !ok {
				return junk.Default
			}
			c, err := junk.ParseChoice(v)
			if err != nil {
				logger.Warn("junk: ignoring the userdb_junk field of a user", "user", u.Address, "err", err)
				return junk.Default
			}
			return c
		},
		Quarantine: &quarantine.Store{Dir: cfg.QuarantineDir(), Logger: logger},
	}
}

// Digest returns the daily quarantine digest of cfg, delivering with
// deliverer.
func Digest(cfg *config.Config, deliverer *delivery.Deliverer, logger *slog.Logger) *quarantine.Digest {
	return &quarantine.Digest{
		Store:    &quarantine.Store{Dir: cfg.QuarantineDir(), Logger: logger},
		From:     cfg.DigestFrom(),
		Hostname: cfg.Hostname,
		At:       cfg.Junk.DigestTime,
		Deliver: func(ctx context.Context, user string, msg io.Reader) error {
			// An auto-generated message: the null sender (RFC 3834 §3.3).
			_, err := deliverer.DeliverStream(ctx, "", user, user, msg, "")
			return err
		},
	}
}

// junkSweepInterval is how often expired quarantined messages are
// removed.
const junkSweepInterval = time.Hour

// runJunk removes expired quarantined messages every hour and sends the
// daily digest at junk.digest_time, with the configuration in force,
// until ctx ends.
func (s *Server) runJunk(ctx context.Context, logger *slog.Logger) {
	next := time.Time{}
	for {
		cfg := s.Config()
		d := Digest(cfg, cfg.Deliverer(s.store, s.Users(), logger), logger)
		if ret := cfg.QuarantineRetention(); ret > 0 {
			if n, err := d.Store.Sweep(ret); err != nil {
				logger.Warn("quarantine: sweeping", "err", err)
			} else if n > 0 {
				logger.Info("quarantine: expired messages removed", "count", n)
			}
		}
		now := time.Now()
		if next.IsZero() {
			next = d.Next(now)
		} else if !now.Before(next) {
			if cfg.Junk.Digest {
				n, err := d.Run(ctx)
				if err != nil {
					logger.Warn("quarantine: digest", "err", err, "sent", n)
				} else if n > 0 {
					logger.Info("quarantine: digests sent", "count", n)
				}
			}
			next = d.Next(now)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(next.Sub(now), junkSweepInterval)):
		}
	}
}
