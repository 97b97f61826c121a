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
	"os"
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
	// downloaded holds the rows RecordDownloads recorded, written by
	// Close with the lock's release.
	downloaded []int64

	// prefixes holds the prefixes read by the last fetch (the ones
	// opened since are dropped), by index; ahead the blobs of small
	// messages read ahead (PostgreSQL blobs only; a nil blob is
	// missing). See fetchAhead.
	prefixes map[int][]byte
	ahead    map[int][]byte
}

// readAheadBytes bounds the octets Open reads ahead for the messages
// that follow: a client downloading its maildrop in order (RETR 1, 2,
// ...) gets several small messages per round trip, and a session never
// holds more than this in memory besides the chunk being sent.
const readAheadBytes = ChunkSize

// prefixWindow is how many messages' prefixes one fetch reads at most.
const prefixWindow = 64

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

// Open streams message i: its prefix, then its content from the node's
// blob cache when it is there (Options.Cache), else from the blob
// store. A stream from the blob store fails once the lock is lost; one
// from the cache reads on (reading changes nothing, and the session is
// ended by the loss anyway).
func (m *Maildrop) Open(ctx context.Context, i int) (io.ReadCloser, error) {
	if i < 0 || i >= len(m.msgs) {
		return nil, fmt.Errorf("pgstore: no message %d", i)
	}
	if err := context.Cause(m.ctx); err != nil {
		return nil, err
	}
	rctx, cancel := mergeCancel(ctx, m.ctx)
	rc, err := m.open(rctx, i)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("pgstore: reading message %d: %w", i+1, err)
	}
	return &sizedReader{rc: rc, left: m.msgs[i].Size, cancel: cancel}, nil
}

func (m *Maildrop) open(ctx context.Context, i int) (io.ReadCloser, error) {
	cache := m.s.cache
	pg, isPG := m.s.blobs.(*PGBlobs)
	_, havePrefix := m.prefixes[i]
	_, haveData := m.ahead[i]
	cached := cache != nil && cache.has(m.keys[i])
	needPrefix := m.pre[i] && !havePrefix
	needData := isPG && !cached && !haveData && m.msgs[i].Size <= readAheadBytes
	if needPrefix || needData {
		if err := m.fetchAhead(ctx, i, pg); err != nil {
			return nil, err
		}
	}
	prefix := m.prefixes[i]
	delete(m.prefixes, i)
	if m.pre[i] && prefix == nil {
		// The row of a message in the snapshot is gone: only this
		// lock's holder deletes, so the data changed under the lock.
		return nil, fmt.Errorf("%w: message row %d", ErrBlobMissing, m.ids[i])
	}
	blobSize := m.msgs[i].Size - int64(len(prefix))
	data, haveData := m.ahead[i]
	delete(m.ahead, i)
	if cache != nil && !haveData {
		if cf, ok := cache.open(m.keys[i], blobSize); ok {
			return &cachedReader{Reader: io.MultiReader(bytes.NewReader(prefix), cf.f), prefix: prefix, cf: cf}, nil
		}
	}
	var rc io.ReadCloser
	switch {
	case haveData && data == nil:
		return nil, fmt.Errorf("%w: %s", ErrBlobMissing, m.keys[i])
	case haveData:
		rc = &chunkReader{ctx: ctx, pool: pg.pool, key: m.keys[i], seq: 1, buf: data, eof: len(data) < ChunkSize}
	default:
		var err error
		if rc, err = m.s.blobs.Get(ctx, m.keys[i]); err != nil {
			return nil, err
		}
	}
	// The blob is checked against its key as it streams: content changed
	// in the blob store fails the transfer before its end, so a client
	// never gets it as a complete message. Only a content that matched
	// enters the cache.
	var r io.Reader = &verifier{r: rc, h: sha256.New(), key: m.keys[i]}
	closer := rc.Close
	if cache != nil {
		if fill := cache.fill(m.keys[i], blobSize); fill != nil {
			fr := &fillingReader{r: r, fill: fill}
			r = fr
			closer = func() error { fr.close(); return rc.Close() }
		}
	}
	if len(prefix) > 0 {
		r = io.MultiReader(bytes.NewReader(prefix), r)
	}
	return prefixed{Reader: r, close: closer}, nil
}

// fetchAhead reads, in one query, what Open needs for message i and for
// the messages after it: the prefixes of up to prefixWindow messages,
// and (PostgreSQL blobs) the blobs of the small messages not in the
// cache, up to readAheadBytes in all. Only messages whose whole size
// fits in one chunk are read ahead: their blob is that chunk. pg is nil
// when the blobs are elsewhere.
func (m *Maildrop) fetchAhead(ctx context.Context, i int, pg *PGBlobs) error {
	clear(m.prefixes)
	clear(m.ahead)
	var ids, dataIDs []int64
	idx := map[int64]int{}
	var total int64
	dataOpen := pg != nil // still reading blobs ahead
	for j := i; j < len(m.msgs) && j < i+prefixWindow; j++ {
		wantData := false
		if dataOpen {
			small := m.msgs[j].Size <= ChunkSize
			switch {
			case m.s.cache != nil && m.s.cache.has(m.keys[j]):
			case !small || (j > i && total+m.msgs[j].Size > readAheadBytes):
				dataOpen = false
			default:
				wantData = true
				total += m.msgs[j].Size
			}
		}
		if !m.pre[j] && !wantData {
			continue
		}
		ids = append(ids, m.ids[j])
		idx[m.ids[j]] = j
		if wantData {
			dataIDs = append(dataIDs, m.ids[j])
		}
	}
	if len(ids) == 0 {
		return nil
	}
	var rows pgx.Rows
	var err error
	if len(dataIDs) > 0 {
		rows, err = pg.pool.Query(ctx, `SELECT m.id, m.prefix, m.id = ANY($2), c.data, c.key IS NOT NULL FROM messages m
			LEFT JOIN blob_chunks c ON c.key = m.blob_key AND c.seq = 0 AND m.id = ANY($2) WHERE m.id = ANY($1)`, ids, dataIDs)
	} else {
		rows, err = m.s.pool.Query(ctx, `SELECT id, prefix, false, NULL::bytea, false FROM messages WHERE id = ANY($1)`, ids)
	}
	if err != nil {
		return err
	}
	if m.prefixes == nil {
		m.prefixes = map[int][]byte{}
		m.ahead = map[int][]byte{}
	}
	for rows.Next() {
		var id int64
		var prefix, data []byte
		var wanted, found bool
		if err := rows.Scan(&id, &prefix, &wanted, &data, &found); err != nil {
			rows.Close()
			return err
		}
		j := idx[id]
		if prefix == nil {
			prefix = []byte{}
		}
		m.prefixes[j] = prefix
		if wanted {
			if !found {
				data = nil // missing
			} else if data == nil {
				data = []byte{}
			}
			m.ahead[j] = data
		}
	}
	return rows.Err()
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
	var then func(*pgx.Batch)
	if len(m.downloaded) > 0 {
		ids := m.downloaded
		then = func(b *pgx.Batch) {
			// RFC 2449 §6.7 (EXPIRE): the retention runs from the first
			// download.
			b.Queue(`UPDATE messages SET downloaded_at = now()
				WHERE id = ANY($1) AND downloaded_at IS NULL AND vaulted_at IS NULL`, ids)
		}
	}
	return m.s.locks.release(ctx, m.lease, then)
}

// prefixed is a message's prefix followed by its blob.
type prefixed struct {
	io.Reader
	close func() error
}

func (p prefixed) Close() error { return p.close() }

// cachedReader is a message whose content comes from the blob cache.
type cachedReader struct {
	io.Reader // the prefix, then the file
	prefix    []byte
	cf        cachedFile
}

func (r *cachedReader) Close() error { return r.cf.f.Close() }

// MessageFile returns the prefix and the cached file (pop3.FileMessage):
// ok when the file holds no line starting with "." and so goes on the
// wire as it is after the prefix.
func (r *cachedReader) MessageFile() (head []byte, f *os.File, ok bool) {
	return r.prefix, r.cf.f, !r.cf.dot && (len(r.prefix) == 0 || bytes.HasSuffix(r.prefix, crlf))
}

var crlf = []byte("\r\n")

// MessageFile passes on the cached file of a message not yet read from
// (pop3.FileMessage).
func (r *sizedReader) MessageFile() (head []byte, f *os.File, ok bool) {
	if fm, isFM := r.rc.(*cachedReader); isFM && !r.started {
		return fm.MessageFile()
	}
	return nil, nil, false
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
	rc      io.ReadCloser
	left    int64
	cancel  context.CancelFunc
	started bool // Read was called
}

// ErrSizeMismatch is returned when a blob does not hold exactly the
// recorded size of its message.
var ErrSizeMismatch = errors.New("pgstore: blob does not match the recorded size")

func (r *sizedReader) Read(p []byte) (int, error) {
	r.started = true
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
