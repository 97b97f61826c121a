package pgstore

// Retention and the deleted-mail vault, with the semantics of the
// Maildir store (internal/store/maildir, retention.go):
//
//   - Downloads: a message counts as downloaded once a POP3 session sent
//     all of it and ended with QUIT; Maildrop.RecordDownloads then sets
//     the message row's downloaded_at, unless already set (the first
//     download counts).
//   - Vault: with the vault on (SetVault), Commit sets vaulted_at instead
//     of deleting the rows, in the same fenced transaction: POP3
//     snapshots and the quota (Usage) skip vaulted rows, and their blobs
//     stay referenced. VaultRestore clears vaulted_at (and
//     downloaded_at), so a restored message has its old UIDL again (RFC
//     1939 §7: a UIDL always names the same message).
//   - Sweep takes the maildrop lease as a POP3 session does (ErrLocked
//     while one holds it), removes the messages downloaded at least
//     Expire ago through Commit (fenced, into the vault when it is on),
//     and deletes the vault rows older than VaultKeep, fenced too.
//
// Times are the database's (now()), the one clock every node shares.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
)

var _ store.DownloadRecorder = (*Maildrop)(nil)

// SetVault turns the deleted-mail vault on or off for the commits that
// follow.
func (s *Store) SetVault(on bool) { s.vault.Store(on) }

// Vaulted returns how many messages Commit moved into the vault.
func (m *Maildrop) Vaulted() int { return m.vaulted }

// RecordDownloads records that the messages at the given 0-based indexes
// were downloaded now, unless Commit removed them or an earlier session
// already recorded them. It is called once the session ends with QUIT,
// after Commit. The rows are written by Close, in the round trip that
// releases the lock; a database crash may lose that write (it is not
// waited for: asyncCommit), and then the retention of those messages
// starts at their next download: mail is kept longer, never removed
// sooner.
func (m *Maildrop) RecordDownloads(ctx context.Context, indexes []int) error {
	if len(indexes) == 0 {
		return nil
	}
	if context.Cause(m.ctx) != nil {
		return ErrLockLost
	}
	ids := make([]int64, 0, len(indexes))
	for _, i := range indexes {
		if i < 0 || i >= len(m.ids) {
			return fmt.Errorf("pgstore: no message %d", i)
		}
		ids = append(ids, m.ids[i])
	}
	m.downloaded = ids
	return nil
}

// fence checks, in tx and under the lease row's lock, that the lease ls
// is still held and unexpired; otherwise ErrLockLost.
func (s *Store) fence(ctx context.Context, tx pgx.Tx, ls *lease) error {
	var ok bool
	err := tx.QueryRow(ctx, `SELECT true FROM maildrop_locks WHERE mailbox = $1 AND token = $2
		AND expires_at > now() FOR UPDATE`, ls.mailbox, ls.token).Scan(&ok)
	if isNoRows(err) {
		return ErrLockLost
	}
	return err
}

// Sweep applies the policy to the mailbox (retention.Store): the
// messages downloaded at least p.Expire ago are removed through Commit,
// as a POP3 QUIT removes them (into the vault when it is on), and the
// vault rows older than p.VaultKeep are deleted. It takes the maildrop
// lease as a POP3 session does and returns store.ErrLocked, touching
// nothing, while a session holds it. A mailbox that never received mail
// is left alone.
func (s *Store) Sweep(ctx context.Context, mailbox string, p maildir.SweepPolicy) (maildir.SweepResult, error) {
	var res maildir.SweepResult
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM mailboxes WHERE name = $1)`, mailbox).Scan(&exists); err != nil {
		return res, fmt.Errorf("pgstore: sweep of %s: %w", mailbox, err)
	}
	if !exists {
		return res, nil
	}
	smd, err := s.OpenMaildrop(ctx, mailbox)
	if err != nil {
		return res, err
	}
	md := smd.(*Maildrop)
	defer md.Close()
	if p.Expire >= 0 && len(md.ids) > 0 {
		rows, err := s.pool.Query(ctx, `SELECT id FROM messages WHERE id = ANY($1)
			AND downloaded_at <= now() - make_interval(secs => $2)`, md.ids, p.Expire.Seconds())
		if err != nil {
			return res, fmt.Errorf("pgstore: sweep of %s: %w", mailbox, err)
		}
		old, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return res, fmt.Errorf("pgstore: sweep of %s: %w", mailbox, err)
		}
		expired := make(map[int64]bool, len(old))
		for _, id := range old {
			expired[id] = true
		}
		var del []int
		for i, id := range md.ids {
			if expired[id] {
				del = append(del, i)
			}
		}
		if len(del) > 0 {
			if err := md.Commit(ctx, del); err != nil {
				return res, err
			}
			res.Expired, res.Vaulted = len(del), md.Vaulted()
		}
	}
	if p.VaultKeep > 0 {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if err := s.fence(ctx, tx, md.lease); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `DELETE FROM messages WHERE mailbox_id = (SELECT id FROM mailboxes WHERE name = $1)
				AND vaulted_at <= now() - make_interval(secs => $2)`, mailbox, p.VaultKeep.Seconds())
			res.Purged = int(tag.RowsAffected())
			return err
		})
		if err != nil {
			res.Purged = 0
			if errors.Is(err, ErrLockLost) {
				return res, err
			}
			return res, fmt.Errorf("pgstore: purging the vault of %s: %w", mailbox, err)
		}
	}
	return res, nil
}

// maxVaultHeader is how much of a message VaultList reads for its header.
const maxVaultHeader = 64 << 10

// VaultList returns the vault of the mailbox, oldest deletion first.
func (s *Store) VaultList(ctx context.Context, mailbox string) ([]maildir.VaultEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT m.pop3_uidl, m.vaulted_at, m.size, m.prefix, m.blob_key FROM messages m
		JOIN mailboxes b ON b.id = m.mailbox_id AND b.name = $1
		WHERE m.vaulted_at IS NOT NULL ORDER BY m.vaulted_at, m.pop3_uidl`, mailbox)
	if err != nil {
		return nil, fmt.Errorf("pgstore: vault of %s: %w", mailbox, err)
	}
	type row struct {
		e      maildir.VaultEntry
		prefix []byte
		key    string
	}
	var list []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.e.UID, &r.e.Deleted, &r.e.Size, &r.prefix, &r.key); err != nil {
			rows.Close()
			return nil, fmt.Errorf("pgstore: vault of %s: %w", mailbox, err)
		}
		list = append(list, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("pgstore: vault of %s: %w", mailbox, err)
	}
	out := make([]maildir.VaultEntry, 0, len(list))
	for _, r := range list {
		if rc, err := s.blobs.Get(ctx, r.key); err == nil {
			h := io.MultiReader(strings.NewReader(string(r.prefix)), rc)
			if msg, err := mail.ReadMessage(io.LimitReader(h, maxVaultHeader)); err == nil {
				r.e.From, r.e.Subject = oneLine(msg.Header.Get("From")), oneLine(msg.Header.Get("Subject"))
			}
			rc.Close()
		}
		out = append(out, r.e)
	}
	return out, nil
}

// oneLine makes a header value safe to print on one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// VaultRestore puts messages of the vault back into the mailbox, with
// their old UIDL: those with the given UIDs, or all with all. It takes
// the maildrop lease (store.ErrLocked while a session holds it), and a
// UID not in the vault is maildir.ErrNotInVault, nothing restored. It
// returns the entries restored, committed once it returns.
func (s *Store) VaultRestore(ctx context.Context, mailbox string, uids []string, all bool) ([]maildir.VaultEntry, error) {
	if err := checkMailbox(mailbox); err != nil {
		return nil, err
	}
	entries, err := s.VaultList(ctx, mailbox)
	if err != nil {
		return nil, err
	}
	var pick []maildir.VaultEntry
	if all {
		pick = entries
	} else {
		for _, u := range uids {
			i := slices.IndexFunc(entries, func(e maildir.VaultEntry) bool { return e.UID == u })
			if i < 0 {
				return nil, fmt.Errorf("%w: %s", maildir.ErrNotInVault, u)
			}
			if !slices.ContainsFunc(pick, func(e maildir.VaultEntry) bool { return e.UID == u }) {
				pick = append(pick, entries[i])
			}
		}
	}
	if len(pick) == 0 {
		return nil, nil
	}
	ls, _, err := s.locks.acquire(ctx, mailbox, nil, nil)
	if err != nil {
		return nil, err
	}
	defer s.locks.release(context.WithoutCancel(ctx), ls, nil)
	want := make([]string, len(pick))
	for i, e := range pick {
		want[i] = e.UID
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := s.fence(ctx, tx, ls); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE messages SET vaulted_at = NULL, downloaded_at = NULL
			WHERE mailbox_id = (SELECT id FROM mailboxes WHERE name = $1) AND pop3_uidl = ANY($2) AND vaulted_at IS NOT NULL`, mailbox, want)
		if err != nil {
			return err
		}
		if int(tag.RowsAffected()) != len(want) {
			// Purged or restored meanwhile: all or nothing.
			return fmt.Errorf("%w: %d of %d messages left the vault meanwhile", maildir.ErrNotInVault, len(want)-int(tag.RowsAffected()), len(want))
		}
		// IMAP4rev2 (RFC 7162 §3.1.2): the folder changed.
		_, err = tx.Exec(ctx, `UPDATE folders SET highestmodseq = highestmodseq + 1
			WHERE mailbox_id = (SELECT id FROM mailboxes WHERE name = $1) AND name = $2`, mailbox, inbox)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrLockLost) || errors.Is(err, maildir.ErrNotInVault) {
			return nil, err
		}
		return nil, fmt.Errorf("pgstore: restoring from the vault of %s: %w", mailbox, err)
	}
	return pick, nil
}
