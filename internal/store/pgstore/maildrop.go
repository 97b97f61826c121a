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

	// ahead holds the prefixes and whole blobs of the small messages
	// read ahead by the last Open (PostgreSQL blobs only), by index;
	// each is dropped when opened.
	ahead map[int]readAhead
}

// readAhead is a message read ahead: its prefix and its blob's only
// chunk (nil if the blob is missing).
type readAhead struct {
	prefix, data []byte
}

// readAheadBytes bounds the octets Open reads ahead for the messages
// that follow: a client downloading its maildrop in order (RETR 1, 2,
// ...) gets several small messages per round trip, and a session never
// holds more than this in memory besides the chunk being sent.
const readAheadBytes = ChunkSize

var _ store.Maildrop = (*Maildrop)(nil)

// OpenMaildrop takes the mailbox's lease and reads its snapshot.
func (s *Store) OpenMaildrop(ctx context.Context, mailbox string) (store.Maildrop, error) {
	if err := checkMailbox(mailbox); err != nil {
		return nil, err
	}
	md := &Maildrop{s: s}
	// The lock and the snapshot in one round trip. The snapshot:
	// messages of INBOX in delivery order; mail delivered after it is
	// seen by the next session.
	snapshot := func(b *pgx.Batch) {
		b.Queue(`SELECT m.id, m.pop3_uidl, m.size, m.blob_key, length(m.prefix) > 0, m.internal_date FROM messages m
			JOIN folders f ON f.id = m.folder_id AND f.name = $2
			JOIN mailboxes b ON b.id = m.mailbox_id AND b.name = $1
			WHERE m.vaulted_at IS NULL
			ORDER BY m.uid`, mailbox, inbox)
	}
	read := func(br pgx.BatchResults) error {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id, size int64
			var uidl, key string
			var pre bool
			var date time.Time
			if err := rows.Scan(&id, &uidl, &size, &key, &pre, &date); err != nil {
				return err
			}
			md.ids = append(md.ids, id)
			md.keys = append(md.keys, key)
			md.pre = append(md.pre, pre)
			md.dates = append(md.dates, date)
			md.msgs = append(md.msgs, store.MessageInfo{UID: uidl, Size: size})
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("pgstore: reading maildrop %s: %w", mailbox, err)
		}
		return nil
	}
	ls, lctx, err := s.locks.acquire(ctx, mailbox, snapshot, read)
	if err != nil {
		return nil, err
	}
	md.lease, md.ctx = ls, lctx
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
	pg, isPG := m.s.blobs.(*PGBlobs)
	if isPG && m.msgs[i].Size <= readAheadBytes {
		if _, ok := m.ahead[i]; !ok {
			err = m.readAhead(rctx, pg, i)
		}
		if ra, ok := m.ahead[i]; ok && err == nil {
			delete(m.ahead, i)
			if ra.data == nil {
				err = fmt.Errorf("%w: %s", ErrBlobMissing, m.keys[i])
			} else {
				prefix = ra.prefix
				rc = &chunkReader{ctx: rctx, pool: pg.pool, key: m.keys[i], seq: 1, buf: ra.data, eof: len(ra.data) < ChunkSize}
			}
		}
	}
	switch {
	case rc != nil || err != nil:
		// Read ahead.
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

// readAhead reads, in one query, the prefixes and blobs of message i and
// of the small messages after it, up to readAheadBytes in all, into
// m.ahead. Only messages whose whole size fits in one chunk are read
// ahead: their blob is that chunk.
func (m *Maildrop) readAhead(ctx context.Context, pg *PGBlobs, i int) error {
	clear(m.ahead)
	var ids []int64
	idx := map[int64]int{}
	var total int64
	for j := i; j < len(m.msgs) && m.msgs[j].Size <= ChunkSize; j++ {
		if j > i && total+m.msgs[j].Size > readAheadBytes {
			break
		}
		total += m.msgs[j].Size
		ids = append(ids, m.ids[j])
		idx[m.ids[j]] = j
	}
	rows, err := pg.pool.Query(ctx, `SELECT m.id, m.prefix, c.data FROM messages m
		LEFT JOIN blob_chunks c ON c.key = m.blob_key AND c.seq = 0 WHERE m.id = ANY($1)`, ids)
	if err != nil {
		return err
	}
	if m.ahead == nil {
		m.ahead = map[int]readAhead{}
	}
	for rows.Next() {
		var id int64
		var ra readAhead
		if err := rows.Scan(&id, &ra.prefix, &ra.data); err != nil {
			rows.Close()
			return err
		}
		m.ahead[idx[id]] = ra
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if _, ok := m.ahead[i]; !ok {
		// The row of a message in the snapshot is gone: only this
		// lock's holder deletes, so the data changed under the lock.
		return fmt.Errorf("%w: message row %d", ErrBlobMissing, m.ids[i])
	}
	return nil
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
