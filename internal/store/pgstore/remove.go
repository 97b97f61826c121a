package pgstore

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/postino-mail/postino/internal/store"
)

var _ store.MailboxRemover = (*Store)(nil)

// RemoveMailbox deletes the mailbox and its messages (their blobs are
// collected later). It returns store.ErrLocked while a session, on any
// node, holds the mailbox.
func (s *Store) RemoveMailbox(ctx context.Context, mailbox string) error {
	return s.RemoveMailboxWith(ctx, mailbox, nil)
}

// RemoveMailboxWith runs before holding the mailbox's lease and then,
// only if it succeeded, deletes the mailbox in a transaction that checks
// the lease is still held (fencing).
func (s *Store) RemoveMailboxWith(ctx context.Context, mailbox string, before func(context.Context) error) error {
	if err := checkMailbox(mailbox); err != nil {
		return err
	}
	ls, lctx, err := s.locks.acquire(ctx, mailbox, nil, nil)
	if err != nil {
		return err
	}
	defer s.locks.release(context.WithoutCancel(ctx), ls, nil)
	rctx, cancel := mergeCancel(ctx, lctx)
	defer cancel()
	if before != nil {
		if err := before(rctx); err != nil {
			return err
		}
	}
	err = pgx.BeginFunc(rctx, s.pool, func(tx pgx.Tx) error {
		var ok bool
		err := tx.QueryRow(rctx, `SELECT true FROM maildrop_locks WHERE mailbox = $1 AND token = $2
			AND expires_at > now() FOR UPDATE`, mailbox, ls.token).Scan(&ok)
		if isNoRows(err) {
			return ErrLockLost
		}
		if err != nil {
			return err
		}
		// The mailbox's folders, messages and UIDL history go with it
		// (ON DELETE CASCADE); a new mailbox of the same name gets a new
		// id, so its UIDLs never repeat these.
		_, err = tx.Exec(rctx, `DELETE FROM mailboxes WHERE name = $1`, mailbox)
		return err
	})
	if err != nil {
		return fmt.Errorf("pgstore: removing %s: %w", mailbox, err)
	}
	return nil
}
