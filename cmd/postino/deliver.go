package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/queue"
	"github.com/postino-mail/postino/internal/smtpin"
)

// normalizeAddress lowers the case of an address's domain, as SMTP does
// with RCPT TO (RFC 5321 §2.4: domains are case-insensitive).
func normalizeAddress(addr string) string {
	if at := strings.LastIndexByte(addr, '@'); at > 0 {
		return addr[:at] + "@" + strings.ToLower(addr[at+1:])
	}
	return addr
}

func runDeliver(env *cmdEnv, args []string) int {
	fs := newFlags(env, "deliver", "deliver [--from SENDER] [--data DIR] [--config FILE] ADDRESS... < message")
	common := &fs.common
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
	// Every delivery is logged (configured format and level, standard
	// error), with who ran the command and the message's id.
	logger := commandLogger(env, cfg, "deliver")
	users := cfg.OpenUsers(nil)
	d, _, err := cfg.OpenDeliverer(users, logger)
	if err != nil {
		errorf(env, "deliver: %v", err)
		return exitTempFail
	}
	fr, err := cfg.FullResolver(users, d, logger)
	if err != nil {
		errorf(env, "deliver: %v", err)
		return exitTempFail
	}
	// The message's id: in every log line about it, and its id in the
	// queue when it is forwarded.
	id := envelope.NewMessageID(time.Now())
	ctx := delivery.WithMessageID(context.Background(), id)
	// Every recipient is resolved, exactly as SMTP resolves RCPT TO,
	// before anything is stored: an unknown one delivers nothing.
	type local struct {
		rcpt string
		t    delivery.Target
	}
	var locals []local
	var remotes []string
	var dsn []envelope.RecipientDSN
	for _, rcpt := range pos {
		addr := normalizeAddress(rcpt)
		res, ok := fr.Resolver.Resolve(addr, logger)
		if !ok {
			logger.Info("deliver: refused", "id", id, "from", *from, "rcpt", rcpt, "code", "EX_NOUSER", "reason", "unknown user")
			errorf(env, "deliver: %v: %s (nothing was delivered)", delivery.ErrUnknownUser, rcpt)
			return exitNoUser
		}
		for _, t := range res.Local {
			locals = append(locals, local{addr, t})
		}
		for _, r := range res.Remote {
			if !slices.Contains(remotes, r) {
				remotes = append(remotes, r)
				rd := envelope.RecipientDSN{}
				if r != addr {
					// RFC 3461 §4.2: the address the message was sent to.
					rd.OriginalRecipientType, rd.OriginalRecipient = "rfc822", addr
				}
				dsn = append(dsn, rd)
			}
		}
	}
	sp, err := d.Spool(ctx, env.stdin)
	if err != nil {
		errorf(env, "deliver: %v", err)
		if errors.Is(err, delivery.ErrMalformed) || errors.Is(err, delivery.ErrTooBig) {
			return exitDataErr
		}
		return exitTempFail
	}
	defer sp.Close()
	// Quotas are checked for every mailbox before anything is stored, so
	// that the exit code speaks for the whole message. sysexits(3) has no
	// code for a full mailbox: 73 (EX_CANTCREAT, the mailbox file cannot
	// be created) is permanent, as Dovecot's default quota answer is, so
	// the calling MTA bounces with a DSN.
	for _, l := range locals {
		if err := d.CheckQuota(ctx, l.t.Mailbox, sp.Size()); err != nil {
			errorf(env, "deliver: %v (nothing was delivered)", err)
			if errors.Is(err, delivery.ErrOverQuota) {
				return exitCantCreate
			}
			return exitTempFail
		}
	}
	done := map[string]bool{}
	for _, l := range locals {
		if done[l.t.Mailbox] {
			continue // one copy per mailbox, as over SMTP
		}
		if _, err := d.DeliverSpooled(ctx, *from, l.t.DeliveredTo, l.t.Mailbox, sp, ""); err != nil {
			for mb := range done {
				fmt.Fprintf(env.stderr, "postino: deliver: delivered to %s before the failure\n", mb)
			}
			if errors.Is(err, delivery.ErrMalformed) {
				errorf(env, "deliver: %v", err)
				return exitDataErr
			}
			if errors.Is(err, delivery.ErrOverQuota) {
				errorf(env, "deliver: %v", err)
				return exitCantCreate
			}
			errorf(env, "deliver: %v (temporary failure, try again)", err)
			return exitTempFail
		}
		done[l.t.Mailbox] = true
	}
	if len(remotes) > 0 {
		// Aliases that forward elsewhere: the message goes into the
		// outbound queue's folder, which the running server watches (as
		// Postfix's sendmail drops mail into its maildrop), or with
		// storage.backend = "postgres" into the queue the nodes share.
		if err := enqueueForward(ctx, cfg, d, fr, users, *from, remotes, dsn, sp, logger, id); err != nil {
			for mb := range done {
				fmt.Fprintf(env.stderr, "postino: deliver: delivered to %s before the failure\n", mb)
			}
			errorf(env, "deliver: queueing for %s: %v (temporary failure, try again)", strings.Join(remotes, ", "), err)
			return exitTempFail
		}
	}
	logger.Info("deliver: done", "id", id, "from", *from, "rcpts", pos, "mailboxes", len(done), "queued", len(remotes))
	return exitOK
}

// enqueueForward queues the spooled message for remote addresses, with the
// envelope sender SMTP would forward it with (SRS when on).
func enqueueForward(ctx context.Context, cfg *config.Config, d *delivery.Deliverer, fr *config.Resolution, users *auth.DB, from string, rcpts []string, dsn []envelope.RecipientDSN, sp *delivery.Spool, logger *slog.Logger, id string) error {
	qo := queue.ConfigOptions(cfg, logger)
	qo.IsLocalDomain = fr.IsLocal
	qo.Local = d
	var q *queue.Queue
	if cfg.UsesPostgres() {
		// The queue every node shares: the NOTIFY of Enqueue wakes them.
		st, err := cfg.OpenPGStore(ctx, false, logger)
		if err != nil {
			return err
		}
		defer st.Close()
		if q, err = queue.OpenPG(st, qo); err != nil {
			return err
		}
	} else {
		var err error
		if q, err = queue.Open(cfg.QueueDir(), qo); err != nil {
			return err
		}
	}
	defer q.Close()
	primary := func() string {
		return envelope.PrimaryDomain(cfg.Hostname, cfg.SMTP.LocalDomains, users, fr.Aliases, fr.IsLocal)
	}
	sender := smtpin.ForwardSender(fr.SRS, from, "", primary, logger)
	if _, err := q.Enqueue(ctx, sender, rcpts, envelope.DSNParams{Recipients: dsn, ID: id}, sp.Reader()); err != nil {
		return err
	}
	return q.Store().Kick()
}
