package pgstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postino-mail/postino/internal/store"
)

// Defaults of Options.
const (
	// DefaultLockTTL is how long a maildrop lease lasts without renewal:
	// the longest a dead node's locks stay held.
	DefaultLockTTL = 30 * time.Second
	// DefaultMaxConns bounds the connection pool of a node.
	DefaultMaxConns = 20
	// DefaultBlobGrace is how long an unreferenced blob is kept after
	// its last touch; it must exceed the longest delivery.
	DefaultBlobGrace = time.Hour
	// defaultConnectTimeout bounds a connection attempt when the DSN
	// sets no connect_timeout.
	defaultConnectTimeout = 5 * time.Second
	// inbox is the folder POP3 sees.
	inbox = "INBOX"
	// maxDeliverAttempts bounds the retries of a delivery whose blob was
	// collected under it.
	maxDeliverAttempts = 3
)

// Options configure Open.
type Options struct {
	// DSN is the PostgreSQL connection string (URL or key=value; several
	// hosts and target_session_attrs=read-write for a failover pair).
	DSN string
	// MaxConns bounds the pool; 0 means DefaultMaxConns.
	MaxConns int32
	// LockTTL is the maildrop lease length; 0 means DefaultLockTTL.
	LockTTL time.Duration
	// NodeID names this node in the lease rows; empty: host name and
	// process ID.
	NodeID string
	// Blobs holds the message contents; nil: PostgreSQL (PGBlobs).
	Blobs BlobStore
	// BlobGrace is CollectBlobs' grace period; 0 means DefaultBlobGrace.
	BlobGrace time.Duration
	// SpoolDir holds the temporary files of deliveries; empty: the
	// system's.
	SpoolDir string
	// Cache, if not nil, keeps the contents this node reads on its
	// local disk, so that downloading them again costs the blob store
	// nothing (postino serve: [storage] cache_dir and cache_size).
	// Close closes it.
	Cache *BlobCache
	// Migrate applies missing migrations at Open; otherwise Open only
	// checks that the schema is the one this build knows.
	Migrate bool
	// Logger receives the store's log lines; nil discards them.
	Logger *slog.Logger
}

// Store is a store.Store in PostgreSQL. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	blobs   BlobStore
	locks   *locker
	grace   time.Duration
	spool   string
	log     *slog.Logger
	cancel  context.CancelFunc
	stopped chan struct{}
	// vault: Commit moves messages into the vault (SetVault).
	vault atomic.Bool
	// cache holds contents read by this node (Options.Cache); nil: none.
	cache *BlobCache

	// afterBlobPut, in tests, runs between the blob's write and the
	// metadata transaction of a delivery.
	afterBlobPut func()
	// beforeCommit, in tests, runs just before a delivery's COMMIT;
	// outcomeWait bounds the check of a COMMIT whose answer was lost
	// (defaultOutcomeWait when zero).
	beforeCommit func()
	outcomeWait  time.Duration
}

var (
	_ store.Store           = (*Store)(nil)
	_ store.UsageReporter   = (*Store)(nil)
	_ store.PrefixDeliverer = (*Store)(nil)
)

// Open connects to the database, checks (or, with o.Migrate, brings up
// to date) its schema and starts the lease renewer. The pool connects
// lazily, but the schema check needs the database: Open fails while it
// is unreachable.
func Open(ctx context.Context, o Options) (*Store, error) {
	pool, err := NewPool(ctx, o.DSN, o.MaxConns)
	if err != nil {
		return nil, err
	}
	if o.Migrate {
		_, err = Migrate(ctx, pool)
	} else {
		err = CheckSchema(ctx, pool)
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return newStore(pool, o), nil
}

// NewPool returns a connection pool of at most maxConns connections
// (0: DefaultMaxConns) to the database of dsn.
func NewPool(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The DSN may hold a password: pgx's error does not repeat it.
		return nil, fmt.Errorf("pgstore: postgres_dsn: %w", err)
	}
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	pc.MaxConns = maxConns
	pc.MinConns = 0
	if pc.ConnConfig.ConnectTimeout == 0 {
		// An unreachable database must fail deliveries and logins
		// promptly (451, [SYS/TEMP]), not hang them.
		pc.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	return pgxpool.NewWithConfig(ctx, pc)
}

func newStore(pool *pgxpool.Pool, o Options) *Store {
	s := &Store{pool: pool, blobs: o.Blobs, cache: o.Cache, grace: o.BlobGrace, spool: o.SpoolDir, log: o.Logger, stopped: make(chan struct{})}
	if s.blobs == nil {
		s.blobs = NewPGBlobs(pool)
	}
	if s.grace <= 0 {
		s.grace = DefaultBlobGrace
	}
	if s.spool == "" {
		s.spool = os.TempDir()
	} else {
		cleanSpool(s.spool)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	ttl := o.LockTTL
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	node := o.NodeID
	if node == "" {
		h, _ := os.Hostname()
		node = h + ":" + strconv.Itoa(os.Getpid())
	}
	s.locks = newLocker(pool, node, ttl, s.log)
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.stopped)
		s.locks.run(ctx)
	}()
	return s
}

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Closed reports whether Close was called.
func (s *Store) Closed() bool {
	select {
	case <-s.stopped:
		return true
	default:
		return false
	}
}

// Close stops the renewer, ends every session holding a lease and closes
// the pool.
func (s *Store) Close() {
	if s.Closed() {
		return
	}
	s.cancel()
	<-s.stopped
	s.locks.releaseAll()
	s.pool.Close()
	if s.cache != nil {
		if err := s.cache.Close(); err != nil {
			s.log.Error("closing the blob cache", "err", err)
		}
	}
}

// Deliver stores msg into the mailbox and returns its POP3 UIDL once the
// blob is durable and the metadata transaction has committed.
func (s *Store) Deliver(ctx context.Context, mailbox string, msg io.Reader) (string, error) {
	return s.DeliverPrefixed(ctx, mailbox, nil, msg)
}

// maxPrefix bounds the per-recipient header lines kept in the message
// row; a longer prefix is stored with the content.
const maxPrefix = 64 << 10

// DeliverPrefixed stores prefix followed by body (store.PrefixDeliverer):
// the body's content in the blob store, shared by every message with the
// same body, and prefix, the recipient's own header lines, in the
// message's row.
func (s *Store) DeliverPrefixed(ctx context.Context, mailbox string, prefix []byte, body io.Reader) (string, error) {
	if err := checkMailbox(mailbox); err != nil {
		return "", err
	}
	if len(prefix) > maxPrefix || (len(prefix) > 0 && prefix[len(prefix)-1] != '\n') {
		// Not a sequence of whole lines: the wire form of the whole is
		// not that of its parts. Kept together.
		return s.DeliverPrefixed(ctx, mailbox, nil, io.MultiReader(bytes.NewReader(prefix), body))
	}
	wprefix := wireBytes(prefix)
	sp, err := spool(s.spool, body)
	if errors.Is(err, store.ErrMalformed) && len(prefix) > 0 {
		// Nothing but the header lines: they are the message.
		wprefix = nil
		sp, err = spool(s.spool, bytes.NewReader(prefix))
	}
	if err != nil {
		return "", err
	}
	defer sp.close()
	for attempt := 1; ; attempt++ {
		uid, err := s.deliverSpooled(ctx, mailbox, wprefix, sp, meta{})
		if !errors.Is(err, errBlobCollected) || attempt == maxDeliverAttempts {
			return uid, err
		}
		s.log.Info("pgstore: blob collected during delivery, storing it again", "mailbox", mailbox, "blob", sp.key)
	}
}

// errBlobCollected: the blob row was collected, or is about to be,
// between the write of the blob and the metadata transaction, or (with
// the contents in PostgreSQL) the metadata transaction's server does not
// have the content (TouchBlobSQL): the delivery stores it again.
var errBlobCollected = errors.New("pgstore: blob collected during delivery")

// deliverSpooled runs one attempt of a delivery.
// meta is what an import keeps of a message: its UIDL and internal
// date. Zero values: a new UIDL, now.
type meta struct {
	uidl string
	date time.Time
}

// ErrUIDLUsed is returned by Import when the mailbox has, or had, a
// message with that UIDL (RFC 1939 §7: never reused).
var ErrUIDLUsed = errors.New("pgstore: UIDL already used in this mailbox")

// maxUIDLSkips bounds the generated UIDLs skipped because an imported
// message took them.
const maxUIDLSkips = 100

func (s *Store) deliverSpooled(ctx context.Context, mailbox string, prefix []byte, sp *spooled, m meta) (string, error) {
	// 1. Touch the blob row (creating it): from now on the collector
	// leaves it alone for the grace period. With the octets in
	// PostgreSQL, whether they are stored is asked in the same
	// statement.
	//
	// These statements commit without waiting for the WAL flush
	// (asyncCommit): the metadata transaction of step 3 commits
	// synchronously, and its flush covers every WAL record written
	// before it, theirs included (the WAL is one sequence, flushed and
	// streamed to a synchronous standby in order). So the content is
	// durable before the message that refers to it is, at the cost of
	// one flush per delivery instead of two. Were the database to crash
	// in between, the message would not have committed either.
	var has bool
	var err error
	_, isPG := s.blobs.(*PGBlobs)
	switch {
	case isPG && sp.size <= inlineBlob:
		// A small content goes with the touch, in one statement (one
		// round trip); already stored, it is not written again.
		data := sp.mem
		if data == nil {
			data = make([]byte, sp.size)
			_, err = io.ReadFull(sp.reader(), data)
		}
		if err == nil {
			err = execAsync(ctx, s.pool, `WITH b AS (INSERT INTO blobs (key, size) VALUES ($1, $2)
				ON CONFLICT (key) DO UPDATE SET touched_at = now() RETURNING key)
				INSERT INTO blob_chunks (key, seq, data) SELECT key, 0, $3 FROM b
				ON CONFLICT (key, seq) DO NOTHING`, sp.key, sp.size, data)
			has = true
		}
	case isPG:
		b := &pgx.Batch{}
		asyncCommit(b)
		b.Queue(`INSERT INTO blobs (key, size) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET touched_at = now()
			RETURNING EXISTS (SELECT 1 FROM blob_chunks WHERE key = $1 AND seq = 0)`, sp.key, sp.size)
		br := s.pool.SendBatch(ctx, b)
		if _, err = br.Exec(); err == nil {
			err = br.QueryRow().Scan(&has)
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err == nil && !has {
			// The content's chunks, in a transaction of their own,
			// committed as the statements above.
			err = s.blobs.(*PGBlobs).put(ctx, sp.key, sp.size, sp.reader(), true)
			has = true
		}
	default:
		err = execAsync(ctx, s.pool, `INSERT INTO blobs (key, size) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET touched_at = now()`, sp.key, sp.size)
		if err == nil {
			// 2. The octets, unless already stored (another recipient's
			// copy).
			has, err = s.blobs.Has(ctx, sp.key)
		}
	}
	if err != nil {
		return "", fmt.Errorf("pgstore: deliver: %w", err)
	}
	if !has {
		if err := s.blobs.Put(ctx, sp.key, sp.size, sp.reader()); err != nil {
			return "", fmt.Errorf("pgstore: deliver: %w", err)
		}
	}
	if s.afterBlobPut != nil {
		s.afterBlobPut()
	}
	// 3. The metadata, in one transaction.
	if m.uidl == "" {
		// A delivery to an existing mailbox: pipelined.
		uidl, err := s.insertPipelined(ctx, mailbox, prefix, sp)
		if !errors.Is(err, errNoMailbox) {
			return uidl, err
		}
		// First delivery to the mailbox: created below.
	}
	var (
		uidl       string
		mbID       int64
		committing bool // the transaction's work is done: the error is COMMIT's
	)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The row lock excludes the collector; a row touched longer ago
		// than the grace period may have lost its octets meanwhile.
		tag, err := tx.Exec(ctx, s.TouchBlobSQL(), sp.key, s.grace.Seconds())
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errBlobCollected
		}
		var folderID int64
		mbID, folderID, err = ensureMailbox(ctx, tx, mailbox)
		if err != nil {
			return err
		}
		// POP3 UIDL from the mailbox's counter, IMAP UID and modseq from
		// the folder: both rows locked until commit, so that deliveries
		// to one mailbox are numbered in commit order. Locks are taken
		// in one order everywhere (blob, mailbox, folder): no deadlock.
		uidl = m.uidl
		for skips := 0; ; skips++ {
			if m.uidl == "" {
				var n int64
				if err := tx.QueryRow(ctx, `UPDATE mailboxes SET uidl_next = uidl_next + 1 WHERE id = $1 RETURNING uidl_next - 1`, mbID).Scan(&n); err != nil {
					return err
				}
				uidl = makeUIDL(mbID, n)
			}
			// RFC 1939 §7: a UIDL is never reused; pop3_uidls remembers
			// it after its message is gone.
			tag, err := tx.Exec(ctx, `INSERT INTO pop3_uidls (mailbox_id, uidl) VALUES ($1, $2) ON CONFLICT DO NOTHING`, mbID, uidl)
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 1 {
				break
			}
			if m.uidl != "" {
				return fmt.Errorf("%w: %q", ErrUIDLUsed, m.uidl)
			}
			if skips == maxUIDLSkips {
				return fmt.Errorf("pgstore: no free UIDL after %d tries", skips)
			}
		}
		var uid, modseq int64
		if err := tx.QueryRow(ctx, `UPDATE folders SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1
			WHERE id = $1 RETURNING uidnext - 1, highestmodseq`, folderID).Scan(&uid, &modseq); err != nil {
			return err
		}
		if prefix == nil {
			prefix = []byte{}
		}
		date := m.date
		if date.IsZero() {
			date = time.Now()
		}
		_, err = tx.Exec(ctx, `INSERT INTO messages (mailbox_id, folder_id, uid, pop3_uidl, size, internal_date, modseq, prefix, blob_key)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, mbID, folderID, uid, uidl, int64(len(prefix))+sp.size, date, modseq, prefix, sp.key)
		if err == nil {
			committing = true
			if s.beforeCommit != nil {
				s.beforeCommit()
			}
		}
		return err
	})
	if err != nil && committing {
		// The COMMIT was sent but its answer did not come: the
		// transaction may have committed (the server, or a synchronous
		// standby promoted since, has it). Answering a failure then
		// would make the sender retry and store the message twice (RFC
		// 5321 §4.2.5: a failure after the end of DATA means the message
		// was not accepted).
		if ok, cerr := s.committed(ctx, mbID, uidl, sp.key, prefix); cerr == nil && ok {
			s.log.Warn("pgstore: delivery committed although its COMMIT failed", "mailbox", mailbox, "uidl", uidl, "err", err)
			return uidl, nil
		} else if cerr != nil {
			err = fmt.Errorf("%w (whether it committed is unknown: %v)", err, cerr)
		}
	}
	if err != nil {
		if errors.Is(err, errBlobCollected) {
			return "", err
		}
		return "", fmt.Errorf("pgstore: deliver to %s: %w", mailbox, err)
	}
	return uidl, nil
}

// TouchBlobSQL is the statement a transaction that makes a row refer to
// a blob runs first ($1 the key, $2 the grace period in seconds): it
// locks the blob row, which excludes the collector, and finds it only if
// it was touched within the grace period (else its content may be gone).
// With the contents in PostgreSQL it also finds it only if the content
// is there: the content's statements commit without waiting for their
// WAL flush (deliverSpooled), so the transaction that refers to them,
// which waits, must see them on its own server — which a connection to
// a newly promoted standby, say, would not.
func (s *Store) TouchBlobSQL() string {
	if _, ok := s.blobs.(*PGBlobs); ok {
		return `UPDATE blobs SET touched_at = now()
			WHERE key = $1 AND touched_at > now() - make_interval(secs => $2)
			AND EXISTS (SELECT 1 FROM blob_chunks WHERE key = $1 AND seq = 0)`
	}
	return `UPDATE blobs SET touched_at = now()
			WHERE key = $1 AND touched_at > now() - make_interval(secs => $2)`
}

// inlineBlob is the largest content a delivery sends with the touch of
// its blob row, whether or not it is already stored (with PGBlobs).
const inlineBlob = 64 << 10

// errNoMailbox: insertPipelined found no mailbox row to number the
// message in (a first delivery).
var errNoMailbox = errors.New("pgstore: mailbox not created yet")

// insertPipelined runs the metadata transaction of a delivery to an
// existing mailbox in two round trips (pgx pipelines each batch): BEGIN,
// the blob row's touch and the two counters; then the message's UIDL and
// row, and COMMIT. The guarantees are those of the general path: the
// blob row is locked and checked within the grace period before the
// message references it, the counters are locked in the same order
// (blob, mailbox, folder), and the message is durable when COMMIT
// returns; when the second batch fails, the COMMIT in it may have been
// carried out with only its answer lost, so the database is asked
// (committed) before a failure is reported. It returns errNoMailbox,
// having changed nothing, when the mailbox does not exist yet.
func (s *Store) insertPipelined(ctx context.Context, mailbox string, prefix []byte, sp *spooled) (string, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return "", fmt.Errorf("pgstore: deliver to %s: %w", mailbox, err)
	}
	defer conn.Release() // a connection left in a transaction is closed by the pool
	if prefix == nil {
		prefix = []byte{}
	}
	for skips := 0; ; skips++ {
		b := &pgx.Batch{}
		b.Queue(`BEGIN`)
		b.Queue(s.TouchBlobSQL(), sp.key, s.grace.Seconds())
		b.Queue(`UPDATE mailboxes SET uidl_next = uidl_next + 1 WHERE name = $1 RETURNING id, uidl_next - 1`, mailbox)
		b.Queue(`UPDATE folders SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1
			WHERE mailbox_id = (SELECT id FROM mailboxes WHERE name = $1) AND name = $2
			RETURNING id, uidnext - 1, highestmodseq`, mailbox, inbox)
		var mbID, n, folderID, uid, modseq int64
		br := conn.SendBatch(ctx, b)
		_, err := br.Exec()
		var touched pgconn.CommandTag
		if err == nil {
			touched, err = br.Exec()
		}
		if err == nil {
			err = br.QueryRow().Scan(&mbID, &n)
		}
		if err == nil {
			err = br.QueryRow().Scan(&folderID, &uid, &modseq)
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err == nil && touched.RowsAffected() == 0 {
			err = errBlobCollected
		}
		if err != nil {
			if _, rerr := conn.Exec(context.WithoutCancel(ctx), `ROLLBACK`); rerr != nil {
				conn.Conn().Close(context.WithoutCancel(ctx))
			}
			switch {
			case errors.Is(err, errBlobCollected):
				return "", err
			case isNoRows(err):
				return "", errNoMailbox
			}
			return "", fmt.Errorf("pgstore: deliver to %s: %w", mailbox, err)
		}
		uidl := makeUIDL(mbID, n)
		b = &pgx.Batch{}
		// RFC 1939 §7: a UIDL is never reused; pop3_uidls remembers it
		// after its message is gone. The message is inserted only if
		// its UIDL was free.
		b.Queue(`WITH u AS (INSERT INTO pop3_uidls (mailbox_id, uidl) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1)
			INSERT INTO messages (mailbox_id, folder_id, uid, pop3_uidl, size, internal_date, modseq, prefix, blob_key)
			SELECT $1, $3, $4, $2, $5, $6, $7, $8, $9 FROM u`,
			mbID, uidl, folderID, uid, int64(len(prefix))+sp.size, time.Now(), modseq, prefix, sp.key)
		b.Queue(`COMMIT`)
		if s.beforeCommit != nil {
			s.beforeCommit()
		}
		br = conn.SendBatch(ctx, b)
		ins, err := br.Exec()
		if err == nil {
			_, err = br.Exec()
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			if _, rerr := conn.Exec(context.WithoutCancel(ctx), `ROLLBACK`); rerr != nil {
				conn.Conn().Close(context.WithoutCancel(ctx))
			}
			// The COMMIT went out with the INSERT: whatever failed, the
			// answer may be all that was lost, and the transaction
			// committed. As on the general path (RFC 5321 §4.2.5), the
			// database is asked before a failure is reported.
			if ok, cerr := s.committed(ctx, mbID, uidl, sp.key, prefix); cerr == nil && ok {
				s.log.Warn("pgstore: delivery committed although its COMMIT failed", "mailbox", mailbox, "uidl", uidl, "err", err)
				return uidl, nil
			} else if cerr != nil {
				err = fmt.Errorf("%w (whether it committed is unknown: %v)", err, cerr)
			}
			return "", fmt.Errorf("pgstore: deliver to %s: %w", mailbox, err)
		}
		if ins.RowsAffected() == 1 {
			return uidl, nil
		}
		// An imported message took this UIDL: the counter moved past it
		// (committed), the next one is tried.
		if skips == maxUIDLSkips {
			return "", fmt.Errorf("pgstore: no free UIDL after %d tries", skips)
		}
	}
}

// makeUIDL returns the UIDL of the n-th message delivered to mailbox id
// mb: the mailbox's identity is part of it, so a mailbox removed and
// created again never repeats one (RFC 1939 §7).
func makeUIDL(mb, n int64) string {
	return "P" + strings.ToUpper(strconv.FormatInt(mb, 36)) + "." + strings.ToUpper(strconv.FormatInt(n, 36))
}

// ensureMailbox returns the ids of the mailbox and its INBOX, creating
// them on first delivery.
func ensureMailbox(ctx context.Context, tx pgx.Tx, mailbox string) (mbID, folderID int64, err error) {
	err = tx.QueryRow(ctx, `SELECT m.id, f.id FROM mailboxes m JOIN folders f ON f.mailbox_id = m.id AND f.name = $2
		WHERE m.name = $1`, mailbox, inbox).Scan(&mbID, &folderID)
	if err == nil {
		return mbID, folderID, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, err
	}
	// Concurrent first deliveries: ON CONFLICT makes the second wait for
	// the first and then use its row.
	if err := tx.QueryRow(ctx, `INSERT INTO mailboxes (name) VALUES ($1)
		ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id`, mailbox).Scan(&mbID); err != nil {
		return 0, 0, err
	}
	// RFC 9051 §2.3.1.1: UIDVALIDITY, here the folder's creation time in
	// seconds, as Dovecot does.
	uidvalidity := time.Now().Unix() & 0xffffffff
	if uidvalidity == 0 {
		uidvalidity = 1
	}
	err = tx.QueryRow(ctx, `INSERT INTO folders (mailbox_id, name, uidvalidity) VALUES ($1, $2, $3)
		ON CONFLICT (mailbox_id, name) DO UPDATE SET name = excluded.name RETURNING id`, mbID, inbox, uidvalidity).Scan(&folderID)
	return mbID, folderID, err
}

// Usage returns the number of messages of the mailbox and their total
// wire size, from the metadata only.
func (s *Store) Usage(ctx context.Context, mailbox string) (int, int64, error) {
	var n int
	var bytes int64
	err := s.pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(size), 0) FROM messages
		WHERE mailbox_id = (SELECT id FROM mailboxes WHERE name = $1) AND vaulted_at IS NULL`, mailbox).Scan(&n, &bytes)
	if err != nil {
		return 0, 0, fmt.Errorf("pgstore: usage of %s: %w", mailbox, err)
	}
	return n, bytes, nil
}

// CollectBlobs removes up to limit blobs that no message (in a mailbox
// or in the outbound queue) references and that were not touched for the
// grace period, and returns how many it removed. Each is locked (skipping those a delivery holds), its octets
// deleted, then its row.
func (s *Store) CollectBlobs(ctx context.Context, limit int) (int, error) {
	removed := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT key FROM blobs b
			WHERE touched_at < now() - make_interval(secs => $1)
			  AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_key = b.key)
			  AND NOT EXISTS (SELECT 1 FROM queue_messages q WHERE q.blob_key = b.key)
			ORDER BY touched_at LIMIT $2 FOR UPDATE SKIP LOCKED`, s.grace.Seconds(), limit)
		if err != nil {
			return err
		}
		keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		for _, k := range keys {
			if _, isPG := s.blobs.(*PGBlobs); isPG {
				// In the same transaction: one connection, and the
				// octets go with the row or stay with it.
				if _, err := tx.Exec(ctx, `DELETE FROM blob_chunks WHERE key = $1`, k); err != nil {
					return err
				}
			} else if err := s.blobs.Delete(ctx, k); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM blobs WHERE key = $1`, k); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("pgstore: collecting blobs: %w", err)
	}
	return removed, nil
}

// checkMailbox refuses names that cannot be a canonical address.
func checkMailbox(mailbox string) error {
	if mailbox == "" || len(mailbox) > 320 || strings.ContainsAny(mailbox, "\x00\r\n") {
		return fmt.Errorf("%w: %q", store.ErrNoMailbox, mailbox)
	}
	return nil
}

// newToken returns a random lease token.
func newToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Check reports whether the database answers (the admin listener's
// /readyz).
func (s *Store) Check(ctx context.Context) error {
	if s.Closed() {
		return errors.New("pgstore: closed")
	}
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pgstore: database unreachable: %w", err)
	}
	return nil
}
