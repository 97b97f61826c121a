package config

import (
	"fmt"
	"log/slog"

	"github.com/postino-mail/postino/internal/aliases"
	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/srs"
)

// Resolution is the recipient resolution of the SMTP servers, for the
// commands that take mail outside them ("postino deliver", "postino
// fetch" into a local mailbox).
type Resolution struct {
	// Resolver resolves recipients as SMTP does.
	Resolver *delivery.Resolver
	// Aliases is the alias table.
	Aliases *aliases.Table
	// SRS is the SRS rewriter; nil when smtp.srs is off.
	SRS *srs.Rewriter
	// IsLocal reports whether a domain is delivered locally.
	IsLocal func(string) bool
}

// FullResolver sets d.Resolver to the resolution SMTP uses (aliases,
// catch-alls, postmaster, SRS) over the same configuration.
func (cfg *Config) FullResolver(users *auth.DB, d *delivery.Deliverer, logger *slog.Logger) (*Resolution, error) {
	rl, err := cfg.OpenAliases(logger)
	if err != nil {
		return nil, fmt.Errorf("aliases: %w", err)
	}
	al := rl.Table()
	fr := &Resolution{Aliases: al, IsLocal: envelope.LocalDomainFunc(cfg.SMTP.LocalDomains, users, al, logger)}
	if cfg.SMTP.SRS {
		key, err := srs.LoadKey(cfg.SRSKeyFile())
		if err == nil {
			fr.SRS, err = srs.New(key)
		}
		if err != nil {
			return nil, err
		}
	}
	fr.Resolver = &delivery.Resolver{
		Users:         d.Users,
		Aliases:       al,
		PlusSeparator: cfg.SMTP.PlusSeparator,
		Postmaster:    cfg.SMTP.Postmaster,
		SRS:           fr.SRS,
		IsLocalDomain: fr.IsLocal,
	}
	d.Resolver = fr.Resolver
	return fr, nil
}
