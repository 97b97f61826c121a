package server

import (
	"github.com/postino-mail/postino/internal/aliases"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/delivery"
)

// senderOwns returns the queue's Owns: whether a user may send as an
// address, by the rule smtp.restrict_sender applies on submission (the
// user's address, its plus-addresses, an alias that reaches the user).
func senderOwns(cfg *config.Config, deliverer *delivery.Deliverer, al *aliases.Reloading, isLocal func(string) bool) func(user, addr string) bool {
	r := &delivery.Resolver{Users: deliverer.Users, PlusSeparator: cfg.SMTP.PlusSeparator, IsLocalDomain: isLocal}
	if al != nil {
		r.Aliases = al
	}
	return r.Owns
}
