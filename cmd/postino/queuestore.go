package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/queue"
)

// openQueueCmd opens the outbound queue for "postino queue": the queue
// folder, or with storage.backend = "postgres" the queue every node
// shares in PostgreSQL. close releases it.
func openQueueCmd(cfg *config.Config, logger *slog.Logger) (*queue.Queue, func(), error) {
	opts := queue.ConfigOptions(cfg, logger)
	if !cfg.UsesPostgres() {
		q, err := queue.Open(cfg.QueueDir(), opts)
		if err != nil {
			return nil, nil, err
		}
		return q, func() { q.Close() }, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := cfg.OpenPGStore(ctx, false, logger)
	if err != nil {
		return nil, nil, err
	}
	q, err := queue.OpenPG(st, opts)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return q, func() { q.Close(); st.Close() }, nil
}
