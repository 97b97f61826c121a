package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/store/maildir"
)

// openDeliverer builds local delivery over the configured store.
func openDeliverer(cfg *config.Config, users *auth.DB, logger *slog.Logger) (*delivery.Deliverer, *maildir.Store, error) {
	st, err := maildir.New(cfg.MailDir(), logger)
	if err != nil {
		return nil, nil, err
	}
	spool := filepath.Join(cfg.DataDir, "spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, nil, err
	}
	return &delivery.Deliverer{
		Store:         st,
		Users:         users,
		SpoolDir:      spool,
		MaxSize:       int64(cfg.Delivery.MaxMessageSize),
		PlusSeparator: cfg.SMTP.PlusSeparator,
		Logger:        logger,
	}, st, nil
}

func runDeliver(env *cmdEnv, args []string) int {
	fs := newFlags(env, "deliver", "deliver [--from SENDER] [--data DIR] [--config FILE] ADDRESS... < message")
	var common commonFlags
	common.register(fs)
	from := fs.String("from", "", "envelope sender, written to Return-Path (empty: <>)")
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return fs.missing("recipient ADDRESS")
	}
	cfg, code := common.loadAsOwner(env)
	if cfg == nil {
		return code
	}
	logger := slog.New(slog.NewTextHandler(env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	users := auth.OpenDB(cfg.UsersFile())
	d, _, err := openDeliverer(cfg, users, logger)
	if err != nil {
		errorf(env, "deliver: %v", err)
		return exitTempFail
	}
	results, err := d.Deliver(context.Background(), *from, pos, env.stdin)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, delivery.ErrUnknownUser):
		errorf(env, "deliver: %v (nothing was delivered)", err)
		return exitNoUser
	case errors.Is(err, delivery.ErrMalformed), errors.Is(err, delivery.ErrTooBig):
		errorf(env, "deliver: %v", err)
		return exitDataErr
	}
	for _, r := range results {
		if r.Err == nil && r.UID != "" {
			fmt.Fprintf(env.stderr, "postino: deliver: delivered to %s before the failure\n", r.Recipient)
		}
	}
	errorf(env, "deliver: %v (temporary failure, try again)", err)
	return exitTempFail
}
