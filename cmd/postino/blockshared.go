package main

import (
	"context"

	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/config"
)

// sharedBlocks returns the list and lift of "postino block" over the
// failed-login state the nodes share in PostgreSQL; the socket argument
// is not used.
func sharedBlocks(cfg *config.Config) (
	list func(context.Context, string) ([]authguard.Entry, error),
	lift func(context.Context, string, string) (authguard.Entry, error),
) {
	g := cfg.Guard(nil)
	list = func(ctx context.Context, _ string) ([]authguard.Entry, error) {
		recs, err := g.Shared.List(ctx)
		if err != nil {
			return nil, err
		}
		return g.SharedEntries(recs), nil
	}
	lift = func(ctx context.Context, _ string, name string) (authguard.Entry, error) {
		return g.LiftShared(ctx, name)
	}
	return list, lift
}
