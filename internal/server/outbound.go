package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/mtasts"
	"github.com/postino-mail/postino/internal/queue"
	"github.com/postino-mail/postino/internal/tlsrpt"
)

// tlsReportInterval is how often the TLS-RPT job looks for a finished
// day to report.
const tlsReportInterval = time.Hour

// outboundSec holds what the queue's transport security keeps across
// reloads: the TLS-RPT results store (opened once).
type outboundSec struct {
	mu      sync.Mutex
	reports *tlsrpt.Store
	logger  *slog.Logger // the queue's, for the report job
}

// outboundSecurity adds to the queue's options what MTA-STS, DANE and
// TLS-RPT need beyond settings: the policy client over the server's
// resolver, the extra roots of queue.tls_ca_file and the results store.
func (s *Server) outboundSecurity(cfg *config.Config, logger *slog.Logger, qo *queue.Options) {
	s.outbound.mu.Lock()
	s.outbound.logger = logger
	s.outbound.mu.Unlock()
	roots, err := cfg.QueueTLSRoots()
	if err != nil {
		// Fewer roots, not more: verification only gets stricter.
		logger.Error("queue: extra certification authorities not loaded; the system's only", "err", err)
	}
	qo.TLSRoots = roots
	if cfg.Queue.MTASTS && cfg.Queue.STARTTLS && s.resolver != nil {
		c, err := mtasts.New(mtasts.Options{Resolver: s.resolver, Roots: roots, CacheDir: cfg.MTASTSDir(), Logger: logger.With("component", "mta-sts")})
		if err != nil {
			logger.Error("queue: MTA-STS is off", "err", err)
		} else {
			qo.MTASTS = c
		}
	}
	if cfg.Queue.TLSRPT {
		if st := s.tlsReportStore(cfg, logger); st != nil {
			qo.TLSReports = st
		}
	}
}

// tlsReportStore opens the TLS-RPT results store the first time.
func (s *Server) tlsReportStore(cfg *config.Config, logger *slog.Logger) *tlsrpt.Store {
	s.outbound.mu.Lock()
	defer s.outbound.mu.Unlock()
	if s.outbound.reports == nil {
		st, err := tlsrpt.OpenStore(cfg.TLSRPTDir(), nil, logger.With("component", "tlsrpt"))
		if err != nil {
			logger.Error("queue: TLS-RPT is off", "err", err)
			return nil
		}
		s.outbound.reports = st
	}
	return s.outbound.reports
}

// runTLSReports sends the daily TLS reports (RFC 8460 §4.1) of the
// finished days, at start and then every tlsReportInterval, until ctx
// ends, with the configuration in force each time.
func (s *Server) runTLSReports(ctx context.Context) {
	for {
		s.mu.Lock()
		cfg := s.cfg
		s.mu.Unlock()
		s.outbound.mu.Lock()
		logger := s.outbound.logger
		s.outbound.mu.Unlock()
		if cfg.Queue.TLSRPT {
			s.sendTLSReports(ctx, cfg, logger)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(tlsReportInterval):
		}
	}
}

// sendTLSReports queues the reports that are due.
func (s *Server) sendTLSReports(ctx context.Context, cfg *config.Config, logger *slog.Logger) {
	st := s.tlsReportStore(cfg, logger)
	if st == nil || s.queue == nil || s.resolver == nil {
		return
	}
	roots, _ := cfg.QueueTLSRoots() // an error was logged with the queue's options
	r, err := tlsrpt.NewReporter(tlsrpt.ReporterOptions{Store: st, Resolver: s.resolver, Relay: s.queue,
		Submitter: cfg.TLSRPTSubmitter(), Logger: logger.With("component", "tlsrpt"),
		HTTP: tlsrpt.NewHTTPClient(s.resolver, roots, time.Minute)})
	if err == nil {
		err = r.SendDue(ctx)
	}
	if err != nil && ctx.Err() == nil {
		logger.Warn("tlsrpt: sending reports", "err", err)
	}
}
