package config

import (
	"context"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/pop3"
)

// This file turns the configuration into the options of each package: the
// one place where a setting meets the field that uses it. The packages
// themselves hold no defaults of their settings (the public pop3 package
// and the login guard export theirs as constants, which Default uses).
// The SMTP servers and the outbound queue build their own options
// (smtpin.ConfigOptions, queue.ConfigOptions), so that their tests can
// start from Default.

// Guard returns the failed-login guard of the [users] section, shared by
// POP3 and SMTP AUTH; smtp.trusted_networks are never blocked.
func (c *Config) Guard(logger *slog.Logger) *authguard.Guard {
	u := c.Users
	g := &authguard.Guard{
		MaxFailures: u.MaxFailures,
		Window:      u.FailureWindow.Duration,
		BlockFor:    u.BlockFor.Duration,
		BaseDelay:   u.FailureDelay.Duration,
		MaxDelay:    u.MaxFailureDelay.Duration,
		Trusted:     c.SMTP.TrustedNetworkPrefixes(),
		Logger:      logger,
	}
	if g.BaseDelay == 0 {
		g.BaseDelay = -1 // 0s in the config disables delays; 0 in Guard is its default
	}
	if c.UsesPostgres() {
		g.Shared = c.sharedGuardState()
	}
	return g
}

// OpenUsers opens the user database of the [users] section (its file and
// the cache of password checks), logging to logger. With
// storage.backend = "postgres" the users are PostgreSQL's, shared by
// every node, and users.file is not read.
func (c *Config) OpenUsers(logger *slog.Logger) *auth.DB {
	if c.UsesPostgres() {
		return c.openPGUsers(logger)
	}
	db := auth.OpenDB(c.UsersFile())
	db.CacheTTL = c.Users.CacheTTL.Duration
	db.Logger = logger
	return db
}

// POP3Server returns the POP3 server of the [pop3] section over backend,
// offering STLS and implicit TLS with tlsConfig.
func (c *Config) POP3Server(backend pop3.Backend, tlsConfig *tls.Config, logger *slog.Logger) *pop3.Server {
	p := c.POP3
	return &pop3.Server{
		Backend:             backend,
		TLSConfig:           tlsConfig,
		Logger:              logger,
		Plaintext:           p.PlaintextAuth,
		Implementation:      "postino",
		Autologout:          p.Autologout.Duration,
		WriteTimeout:        p.WriteTimeout.Duration,
		MaxLine:             p.MaxLine,
		MaxBadCommands:      p.MaxBadCommands,
		MaxConnections:      p.MaxConnections,
		MaxConnectionsPerIP: p.MaxConnectionsPerIP,
		Expire:              p.Expire,
		LoginDelay:          int(p.LoginDelay.Seconds()),
		SCRAM:               p.SCRAM,
		LineTimeout:         p.LineTimeout.Duration,
		MaxSessionTime:      p.MaxSessionTime.Duration,
		CommandsPerSecond:   p.CommandsPerSecond,
	}
}

// OpenDeliverer builds local delivery over the configured store (creating
// DATA/mail and DATA/spool), with the users, quotas and plus-addressing of
// the configuration; the caller sets Resolver to the full resolution
// (aliases, catch-alls, postmaster, SRS) where it needs it.
//
// With storage.backend = "postgres" the store is PostgreSQL's, whose
// schema must be the one this build knows (postino db migrate).
func (cfg *Config) OpenDeliverer(users *auth.DB, logger *slog.Logger) (*delivery.Deliverer, store.Store, error) {
	spool := filepath.Join(cfg.DataDir, "spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, nil, err
	}
	if cfg.UsesPostgres() {
		ctx, cancel := context.WithTimeout(context.Background(), pgOpenTimeout)
		defer cancel()
		st, err := cfg.OpenPGStore(ctx, false, logger)
		if err != nil {
			return nil, nil, err
		}
		return cfg.Deliverer(st, users, logger), st, nil
	}
	st, err := maildir.New(cfg.MailDir(), logger)
	if err != nil {
		return nil, nil, err
	}
	return cfg.Deliverer(st, users, logger), st, nil
}

// Deliverer builds local delivery over an open store (one per process:
// its locks exclude each other only within one Store), with the users,
// quotas and plus-addressing of the configuration; a reload builds a new
// one over the same store.
func (cfg *Config) Deliverer(st store.Store, users *auth.DB, logger *slog.Logger) *delivery.Deliverer {
	return &delivery.Deliverer{
		Store:    st,
		Users:    users,
		Resolver: &delivery.Resolver{Users: users, PlusSeparator: cfg.SMTP.PlusSeparator},
		SpoolDir: filepath.Join(cfg.DataDir, "spool"),
		MaxSize:  int64(cfg.Delivery.MaxMessageSize),
		Quotas:   &auth.Quotas{DB: users, Default: auth.Quota{Bytes: int64(cfg.Users.DefaultQuota), Messages: int64(cfg.Users.DefaultQuotaMessages)}},
		Logger:   logger,
	}
}

// AdminSocket is the path of the running server's admin socket, which
// "postino block" talks to.
func (cfg *Config) AdminSocket() string {
	return filepath.Join(cfg.DataDir, authguard.AdminSocketName)
}
