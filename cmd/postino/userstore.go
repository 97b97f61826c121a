package main

import (
	"context"
	"time"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/store/pgstore"
)

// userStore is what "postino user" needs of the mail store: usage for
// list, removal for del --purge.
type userStore interface {
	store.UsageReporter
	store.MailboxRemover
	Close() error
}

// pgUserStore gives pgstore.Store the Close of userStore.
type pgUserStore struct{ *pgstore.Store }

func (s pgUserStore) Close() error { s.Store.Close(); return nil }

// openUserStore opens the configured mail store: the Maildirs of the
// data folder, or PostgreSQL.
func openUserStore(cfg *config.Config) (userStore, error) {
	if !cfg.UsesPostgres() {
		return maildir.New(cfg.MailDir(), nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := cfg.OpenPGStore(ctx, false, nil)
	if err != nil {
		return nil, err
	}
	return pgUserStore{st}, nil
}
