package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/queue"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/pgstore"
)

// pgStartTimeout bounds connecting to PostgreSQL and migrating its
// schema at start.
const pgStartTimeout = 2 * time.Minute

// openPGStore opens the PostgreSQL store, applying the migrations it
// lacks (under a lock, so that nodes starting together are safe), and
// local delivery over it.
func openPGStore(cfg *config.Config, users *auth.DB, logger *slog.Logger) (*delivery.Deliverer, store.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pgStartTimeout)
	defer cancel()
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "spool"), 0o700); err != nil {
		return nil, nil, err
	}
	st, err := cfg.OpenPGStoreCached(ctx, true, logger.With("component", "pgstore"))
	if err != nil {
		return nil, nil, fmt.Errorf("opening mail store: %w", err)
	}
	// The users are the database's too: read them now, so that a node
	// that later loses the database still knows its recipients (and
	// answers 451 at delivery, not 550).
	if _, err := users.List(); err != nil {
		st.Close()
		return nil, nil, fmt.Errorf("reading users: %w", err)
	}
	go collectBlobs(st, logger)
	logger.Info("mail store: PostgreSQL", "blobs", cfg.Storage.Blobs, "lock_ttl", cfg.Storage.LockTTL.Duration)
	return cfg.Deliverer(st, users, logger), st, nil
}

// blobCollectInterval is how often a node collects unreferenced blobs.
const blobCollectInterval = 10 * time.Minute

// collectBlobs removes unreferenced blobs periodically until the store is
// closed (its pool then refuses, and the loop ends).
func collectBlobs(st *pgstore.Store, logger *slog.Logger) {
	t := time.NewTicker(blobCollectInterval)
	defer t.Stop()
	for range t.C {
		if st.Closed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), blobCollectInterval/2)
		for {
			n, err := st.CollectBlobs(ctx, 500)
			if err != nil {
				if !st.Closed() {
					logger.Error("collecting unreferenced blobs", "err", err)
				}
				break
			}
			if n > 0 {
				logger.Info("collected unreferenced blobs", "count", n)
			}
			if n < 500 {
				break
			}
		}
		cancel()
	}
}

// closeStore closes a store that holds resources (PostgreSQL's pool and
// its maildrop leases).
func closeStore(st store.Store) {
	if pg, ok := st.(*pgstore.Store); ok {
		pg.Close()
	}
}

// openQueue opens the outbound queue: in PostgreSQL, worked by every
// node, when the mail store is there; otherwise the queue folder.
func openQueue(cfg *config.Config, st store.Store, opts queue.Options) (*queue.Queue, error) {
	if pg, ok := st.(*pgstore.Store); ok {
		return queue.OpenPG(pg, opts)
	}
	return queue.Open(cfg.QueueDir(), opts)
}
