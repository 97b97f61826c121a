package pgstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postino-mail/postino/internal/store"
)

// Maildrop is a locked snapshot of a mailbox (store.Maildrop). Besides
// the store's methods it has Done, closed when the session must end
// because its lock could not be renewed.
type Maildrop struct {
	s     *Store
	lease *lease
	ctx   context.Context // cancelled when the lease is lost or released
	msgs  []store.MessageInfo
	ids   []int64     // message row ids, in snapshot order
	keys  []string    // blob keys
	pre   []bool      // whether the message has a prefix
	dates []time.Time // internal dates
	done  bool        // Commit was called
	// vaulted is how many messages Commit moved into the vault.
	vaulted int
}

var _ store.Maildrop = (*Maildrop)(nil)

// OpenMaildrop takes the mailbox's lease and reads its snapshot.
func (s *Store) OpenMaildrop(ctx context.Context, mailbox string) (store.Maildrop, error) {
	if err := checkMailbox(mailbox); err != nil {
		return nil, err
	}
	ls, lctx, err := s.locks.acquire(ctx, mailbox)
	if err != nil {
		return nil, err
	}
	md := &Maildrop{s: s, lease: ls, ctx: lctx}
	// The snapshot: messages of INBOX in delivery order. Mail delivered
	// after this query is seen by the next session.
	rows, err := s.pool.Query(ctx, `SELECT m.id, m.pop3_uidl, m.size, m.blob_key, length(m.prefix) > 0, m.internal_date FROM messages m
		JOIN folders f ON f.id = m.folder_id AND f.name = $2
		JOIN mailboxes b ON b.id = m.mailbox_id AND b.name = $1
		WHERE m.vaulted_at IS NULL
		ORDER BY m.uid`, mailbox, inbox)
	if err == nil {
		for rows.Next() {
			var id, size int64
			var uidl, key string
			var pre bool
			var date time.Time
			if err = rows.Scan(&id, &uidl, &size, &key, &pre, &date); err != nil {
				break
			}
			md.ids = append(md.ids, id)
			md.keys = append(md.keys, key)
			md.pre = append(md.pre, pre)
			md.dates = append(md.dates, date)
			md.msgs = append(md.msgs, store.MessageInfo{UID: uidl, Size: size})
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		s.locks.release(context.WithoutCancel(ctx), ls)
		return nil, fmt.Errorf("pgstore: reading maildrop %s: %w", mailbox, err)
	}
	return md, nil
}

// InternalDate returns when message i was delivered (or the date an
// import kept).
func (m *Maildrop) InternalDate(i int) time.Time { return m.dates[i] }

// Messages returns the snapshot.
func (m *Maildrop) Messages() []store.MessageInfo { return m.msgs }

// Done is closed when the session must end: its lock could not be renewed
// in time (context.Cause of the session is then ErrLockLost) or it was
// closed.
func (m *Maildrop) Done() <-chan struct{} { return m.ctx.Done() }

// Open streams message i from the blob store. The stream fails once the
// lock is lost.
func (m *Maildrop) Open(ctx context.Context, i int) (io.ReadCloser, error) {
	if i < 0 || i >= len(m.msgs) {
		return nil, fmt.Errorf("pgstore: no message %d", i)
	}
	if err := context.Cause(m.ctx); err != nil {
		return nil, err
	}
	rctx, cancel := mergeCancel(ctx, m.ctx)
	var prefix []byte
	var rc io.ReadCloser
	var err error
	switch pg, isPG := m.s.blobs.(*PGBlobs); {
	case m.pre[i] && isPG:
		// The prefix and the first chunk in one round trip.
		prefix, rc, err = pg.getWithPrefix(rctx, m.ids[i], m.keys[i])
	case m.pre[i]:
		err = m.s.pool.QueryRow(rctx, `SELECT prefix FROM messages WHERE id = $1`, m.ids[i]).Scan(&prefix)
		if err == nil {
			rc, err = m.s.blobs.Get(rctx, m.keys[i])
		}
	default:
		rc, err = m.s.blobs.Get(rctx, m.keys[i])
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("pgstore: reading message %d: %w", i+1, err)
	}
	// The blob is checked against its key as it streams: content changed
	// in the blob store fails the transfer before its end, so a client
	// never gets it as a complete message.
	rc = prefixed{Reader: &verifier{r: rc, h: sha256.New(), key: m.keys[i]}, Closer: rc}
	if len(prefix) > 0 {
		rc = prefixed{Reader: io.MultiReader(bytes.NewReader(prefix), rc), Closer: rc}
	}
	return &sizedReader{rc: rc, left: m.msgs[i].Size, cancel: cancel}, nil
}

// Commit deletes the messages in one transaction that first checks,
// holding the lease row's lock, that the lease is still this session's
// and unexpired (fencing): otherwise it applies nothing and returns
// ErrLockLost.
func (m *Maildrop) Commit(ctx context.Context, deleted []int) error {
	if m.done {
		return errors.New("pgstore: Commit called twice")
	}
	m.done = true
	if len(deleted) == 0 {
		return nil
	}
	if context.Cause(m.ctx) != nil {
		// The session was ended (its lease could not be renewed): it
		// applies nothing, even if the lease might still be valid.
		return ErrLockLost
	}
	ids := make([]int64, 0, len(deleted))
	for _, i := range deleted {
		if i < 0 || i >= len(m.ids) {
			return fmt.Errorf("pgstore: no message %d", i)
		}
		ids = append(ids, m.ids[i])
	}
	slices.Sort(ids)
	vault := m.s.vault.Load()
	err := pgx.BeginFunc(ctx, m.s.pool, func(tx pgx.Tx) error {
		var ok bool
		// RFC 1939 §6: the UPDATE state, only by the lock's holder.
		err := tx.QueryRow(ctx, `SELECT true FROM maildrop_locks WHERE mailbox = $1 AND token = $2
			AND expires_at > now() FOR UPDATE`, m.lease.mailbox, m.lease.token).Scan(&ok)
		if isNoRows(err) {
			return ErrLockLost
		}
		if err != nil {
			return err
		}
		q := `DELETE FROM messages WHERE id = ANY($1) AND vaulted_at IS NULL`
		if vault {
			// Into the vault: kept, seen neither by POP3 nor the quota.
			q = `UPDATE messages SET vaulted_at = now() WHERE id = ANY($1) AND vaulted_at IS NULL`
		}
		tag, err := tx.Exec(ctx, q, ids)
		if err != nil {
			return err
		}
		if int(tag.RowsAffected()) != len(ids) {
			// Only this lock's holder deletes: a missing row means the
			// data changed under the lock. All or nothing.
			return fmt.Errorf("pgstore: %d of %d messages already gone", len(ids)-int(tag.RowsAffected()), len(ids))
		}
		// IMAP4rev2 (RFC 7162 §3.2.10): an expunge raises HIGHESTMODSEQ.
		_, err = tx.Exec(ctx, `UPDATE folders SET highestmodseq = highestmodseq + 1
			WHERE mailbox_id = (SELECT id FROM mailboxes WHERE name = $1) AND name = $2`, m.lease.mailbox, inbox)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrLockLost) {
			return err
		}
		return fmt.Errorf("pgstore: commit on %s: %w", m.lease.mailbox, err)
	}
	if vault {
		m.vaulted = len(ids)
	}
	return nil
}

// Close releases the lease; nothing is removed.
func (m *Maildrop) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), m.s.locks.ttl)
	defer cancel()
	return m.s.locks.release(ctx, m.lease)
}

// prefixed is a message's prefix followed by its blob.
type prefixed struct {
	io.Reader
	io.Closer
}

// ErrBlobCorrupt is returned when a blob's content does not match its
// key (the SHA-256 of what was stored).
var ErrBlobCorrupt = errors.New("pgstore: blob content does not match its key")

// verifier hashes what it reads and fails at the end if the hash is not
// key.
type verifier struct {
	r   io.Reader
	h   hash.Hash
	key string
}

func (v *verifier) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	if err == io.EOF && hex.EncodeToString(v.h.Sum(nil)) != v.key {
		return n, fmt.Errorf("%w: %s", ErrBlobCorrupt, v.key)
	}
	return n, err
}

// sizedReader passes exactly the recorded size on, failing if the blob
// is shorter or longer (it never is unless the store was tampered with).
type sizedReader struct {
	rc     io.ReadCloser
	left   int64
	cancel context.CancelFunc
}

// ErrSizeMismatch is returned when a blob does not hold exactly the
// recorded size of its message.
var ErrSizeMismatch = errors.New("pgstore: blob does not match the recorded size")

func (r *sizedReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		var one [1]byte
		n, err := r.rc.Read(one[:])
		if n > 0 {
			return 0, ErrSizeMismatch
		}
		if err != nil && err != io.EOF {
			return 0, err // a corrupt blob, found at its end
		}
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.rc.Read(p)
	r.left -= int64(n)
	if err == io.EOF {
		if r.left > 0 {
			return n, fmt.Errorf("%w: %w", ErrSizeMismatch, io.ErrUnexpectedEOF)
		}
		err = nil
	}
	return n, err
}

func (r *sizedReader) Close() error {
	err := r.rc.Close()
	r.cancel()
	return err
}

// mergeCancel returns a context done when either a or b is.
func mergeCancel(a, b context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(a)
	stop := context.AfterFunc(b, func() { cancel(context.Cause(b)) })
	return ctx, func() { stop(); cancel(context.Canceled) }
}

// isNoRows reports whether err is pgx's "no rows".
func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
