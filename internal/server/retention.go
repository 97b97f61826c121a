package server

import (
	"log/slog"
	"time"

	"github.com/postino-mail/postino/internal/retention"
)

// startRetention adds the retention sweep (pop3.expire, pop3.vault_days)
// to the start functions, so that it runs as the final user: it sweeps
// at once, then every pop3.sweep_interval, with the configuration in
// force at each sweep.
func (s *Server) startRetention(logger *slog.Logger) {
	if _, ok := s.store.(vaultStore); !ok {
		if s.cfg.POP3.VaultDays > 0 || s.cfg.POP3.ExpireDays() > 0 {
			logger.Warn("pop3.expire and pop3.vault_days are not applied: this storage backend has no retention sweep yet", "backend", s.cfg.Storage.Backend)
		}
		return
	}
	s.setVault(s.cfg.POP3.VaultDays > 0)
	s.wg.Add(1)
	s.starts = append(s.starts, func() {
		defer s.wg.Done()
		retention.Run(s.ctx, func() time.Duration {
			return s.Config().POP3.SweepInterval.Duration
		}, func() *retention.Sweeper {
			return s.sweeper(logger)
		})
	})
}

// vaultStore is a store with the deleted-mail vault and the retention
// sweep (Maildir).
type vaultStore interface {
	retention.Store
	SetVault(on bool)
}

// setVault turns the vault on or off where the store has one.
func (s *Server) setVault(on bool) {
	if vs, ok := s.store.(vaultStore); ok {
		vs.SetVault(on)
	}
}

// sweeper returns a retention sweeper over the configuration in force.
func (s *Server) sweeper(logger *slog.Logger) *retention.Sweeper {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &retention.Sweeper{
		Store:      s.store.(vaultStore),
		Users:      s.users,
		ExpireDays: s.cfg.POP3.ExpireDays(),
		VaultDays:  s.cfg.POP3.VaultDays,
		Logger:     logger.With("component", "retention"),
		Metrics:    s.metrics,
	}
}
