package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/metrics"
)

// openAdmin opens the admin listener (admin.listen) and adds its serving
// to the start functions. A listener that cannot be opened is logged and
// left out: metrics must never keep mail from being served.
func (s *Server) openAdmin(cfg *config.Config, logger *slog.Logger) {
	if cfg.Admin.Listen == "" {
		return
	}
	l, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		logger.Error("admin listener not started: metrics and health probes are unavailable", "addr", cfg.Admin.Listen, "err", err)
		return
	}
	s.listeners = append(s.listeners, Listener{"admin", l.Addr().String()})
	h := s.metrics.Handler(s.readinessChecks(), logger)
	s.wg.Add(1)
	s.starts = append(s.starts, func() {
		defer s.wg.Done()
		if err := metrics.Serve(s.ctx, l, h, logger); err != nil {
			logger.Error("admin listener failed", "addr", cfg.Admin.Listen, "err", err)
		}
	})
}

// readinessChecks are those of /readyz: the mail store takes a file, and
// the user database can be read.
func (s *Server) readinessChecks() []metrics.Check {
	return []metrics.Check{
		{Name: "storage", Run: func(ctx context.Context) error {
			if c, ok := s.store.(interface{ Check(context.Context) error }); ok {
				return c.Check(ctx)
			}
			return nil
		}},
		{Name: "users", Run: func(ctx context.Context) error {
			s.mu.Lock()
			users := s.users
			s.mu.Unlock()
			if users == nil {
				return errors.New("no user database")
			}
			if _, err := users.List(); err != nil {
				return fmt.Errorf("user database unreadable: %w", err)
			}
			return nil
		}},
	}
}

// watchQueue makes the metrics ask the outbound queue for its size and
// oldest entry at each scrape.
func (s *Server) watchQueue() {
	if s.queue == nil {
		return
	}
	s.metrics.WatchQueue(func(ctx context.Context) (int, time.Time, error) {
		list, err := s.queue.List(ctx)
		if err != nil {
			return 0, time.Time{}, err
		}
		var oldest time.Time
		for _, e := range list {
			if oldest.IsZero() || e.Arrival.Before(oldest) {
				oldest = e.Arrival
			}
		}
		return len(list), oldest, nil
	}, time.Now)
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *metrics.Metrics { return s.metrics }
