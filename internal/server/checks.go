package server

import (
	"log/slog"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/mailauth"
	"github.com/postino-mail/postino/internal/milter"
)

// inboundChecks returns the checks that judge mail arriving on the MX,
// in the order they run at each stage (package inbound), as the
// configuration turns them on. The resolver is s.resolver.
func (s *Server) inboundChecks(cfg *config.Config, logger *slog.Logger) ([]inbound.Check, error) {
	var checks []inbound.Check
	if cfg.MailAuth.Enabled {
		checks = append(checks, mailauth.New(mailauth.Options{
			Resolver: s.resolver, AuthservID: cfg.MailAuthServID(), SPFFail: mailauth.SPFPolicy(cfg.MailAuth.SPFFail),
			DMARC: cfg.MailAuth.DMARC, Timeout: cfg.MailAuth.Timeout.Duration, Logger: logger,
		}))
	}
	as, err := s.antispamChecks(cfg, logger)
	if err != nil {
		return nil, err
	}
	checks = append(checks, as...)
	// External filters ([[milter]]), in the order of the file.
	for _, m := range cfg.Milters {
		network, addr, err := milter.ParseAddress(m.Address)
		if err != nil {
			return nil, err
		}
		checks = append(checks, milter.New(milter.Config{Name: m.Name, Network: network, Address: addr,
			AcceptOnFailure: m.AcceptOnFailure(), ConnectTimeout: m.ConnectTimeoutOrDefault(), Timeout: m.TimeoutOrDefault(), MaxVersion: m.ProtocolOrDefault(), Logger: logger}))
	}
	return checks, nil
}
