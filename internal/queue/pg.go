package queue

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postino-mail/postino/internal/fsutil"
	"github.com/postino-mail/postino/internal/store/pgstore"
)

// NotifyChannel is the PostgreSQL LISTEN/NOTIFY channel on which nodes
// announce changes of the queue.
const NotifyChannel = "postino_queue"

// ErrLeaseLost is returned by PGStore's Update and Remove when the claim
// of the entry expired (the node could not renew it in time) and another
// node may have taken the entry over: nothing was written.
var ErrLeaseLost = errors.New("queue: claim of the entry expired")

// pgListenRetryMax bounds the wait between reconnections of the LISTEN
// connection.
const pgListenRetryMax = 30 * time.Second

// PGStore is a Store in PostgreSQL (schema version 2 of pgstore), shared
// by every node of a cluster:
//
//   - queue_messages: one row per message, whose body is a blob of the
//     mail store's blob store (so stored once);
//   - queue_entries: one row per entry, the entry itself as jsonb, and the
//     claim as a lease (token, node, expiry in the database's clock).
//
// A claim sets the lease of an entry whose lease is free or expired, in
// one UPDATE: exactly one node wins. The node renews its leases every
// LockTTL/3 while it delivers; a node that dies stops renewing, and
// after LockTTL another node takes the entry over (its InFlight mark
// says the attempt was interrupted) and resends only to the recipients
// not recorded as sent. A claim that could not be renewed until
// LockTTL/6 before its expiry ends the context ClaimContext returned, so
// that the worker stops the delivery before another node may take the
// entry over. Update and Remove are fenced: they write only
// while this claim's lease is unexpired, so that a node that lost its
// lease (a partition) cannot overwrite the state of the node that took
// the entry over.
//
// Changes are announced with NOTIFY postino_queue (in the enqueue
// transaction and by Kick); each node LISTENs on a dedicated connection,
// reconnected after an outage, and its worker wakes on a notification.
// While the database is unreachable, AddMessage fails (the SMTP intake
// answers 451 4.3.0) and the worker finds no entries; it resumes by
// itself when the database returns.
type PGStore struct {
	st   *pgstore.Store
	pool *pgxpool.Pool
	log  *slog.Logger
	ttl  time.Duration
	node string

	mu     sync.Mutex
	claims map[string]*pgClaim // entry id → claim held by this process

	changes  atomic.Int64 // notifications received, reconnections, busy claims
	busy     atomic.Bool  // a claim found a live lease since the last tick
	notify   chan struct{}
	startLis sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
	closed   atomic.Bool
}

var _ Store = (*PGStore)(nil)

// NewPGStore returns the queue kept in the database of st (whose schema
// must be up to date). Close stops its renewer and listener; it does not
// close st.
func NewPGStore(st *pgstore.Store, logger *slog.Logger) *PGStore {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &PGStore{
		st: st, pool: st.Pool(), log: logger, ttl: st.LockTTL(), node: st.NodeID(),
		claims: make(map[string]*pgClaim),
		notify: make(chan struct{}, 1),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go s.renewer(ctx)
	return s
}

// OpenPG returns a Queue over the PostgreSQL store st. Closing the Queue
// stops the queue's background work, not st.
func OpenPG(st *pgstore.Store, opts Options) (*Queue, error) {
	ps := NewPGStore(st, opts.Logger)
	q, err := New(ps, st.SpoolDir(), opts)
	if err != nil {
		ps.Close()
		return nil, err
	}
	q.closer = ps
	return q, nil
}

// Close stops the lease renewer and the listener. Leases still held
// expire by themselves.
func (s *PGStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.cancel()
	<-s.done
	return nil
}

// AddMessage implements Store: the body becomes a blob (its row touched
// first, so that the collector leaves it alone), then one transaction
// inserts the message, its entries and a NOTIFY.
func (s *PGStore) AddMessage(ctx context.Context, msgID string, body io.Reader, entries []*Entry) error {
	if !validID(msgID) {
		return fmt.Errorf("queue: bad message id %q", msgID)
	}
	f, err := os.CreateTemp(s.st.SpoolDir(), "queue-*")
	if err != nil {
		return fmt.Errorf("queue: spool file: %w", err)
	}
	os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(io.MultiWriter(f, h), fsutil.ContextReader(ctx, body))
	if err != nil {
		return fmt.Errorf("queue: storing message: %w", err)
	}
	if size == 0 {
		return errors.New("queue: empty message")
	}
	key := hex.EncodeToString(h.Sum(nil))
	rows := make([][]byte, len(entries))
	for i, e := range entries {
		if rows[i], err = e.marshal(); err != nil {
			return err
		}
	}
	blobs, grace := s.st.Blobs(), s.st.BlobGrace()
	for try := 0; ; try++ {
		if _, err := s.pool.Exec(ctx, `INSERT INTO blobs (key, size) VALUES ($1, $2)
			ON CONFLICT (key) DO UPDATE SET touched_at = now()`, key, size); err != nil {
			return fmt.Errorf("queue: storing message: %w", err)
		}
		has, err := blobs.Has(ctx, key)
		if err != nil {
			return fmt.Errorf("queue: storing message: %w", err)
		}
		if !has {
			if err := blobs.Put(ctx, key, size, io.NewSectionReader(f, 0, size)); err != nil {
				return fmt.Errorf("queue: storing message: %w", err)
			}
		}
		collected := false
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			// The blob row's lock excludes the collector (pgstore's
			// protocol): a row touched longer ago than the grace period
			// may have lost its octets meanwhile.
			tag, err := tx.Exec(ctx, s.st.TouchBlobSQL(), key, grace.Seconds())
			if err != nil {
				return err
			}
			if tag.RowsAffected() == 0 {
				collected = true
				return nil
			}
			if _, err := tx.Exec(ctx, `INSERT INTO queue_messages (id, blob_key, size) VALUES ($1, $2, $3)`, msgID, key, size); err != nil {
				return err
			}
			for i, e := range entries {
				if _, err := tx.Exec(ctx, `INSERT INTO queue_entries (id, message_id, domain, next_attempt, entry)
					VALUES ($1, $2, $3, $4, $5)`, e.ID, msgID, e.Domain, e.NextAttempt, rows[i]); err != nil {
					return err
				}
			}
			// Delivered at commit, to every node listening.
			_, err = tx.Exec(ctx, `SELECT pg_notify($1, 'add')`, NotifyChannel)
			return err
		})
		if err != nil {
			return fmt.Errorf("queue: storing message: %w", err)
		}
		if !collected {
			return nil
		}
		if try == 2 {
			return errors.New("queue: storing message: its blob was collected meanwhile, three times")
		}
	}
}

// OpenMessage implements Store.
func (s *PGStore) OpenMessage(ctx context.Context, msgID string) (io.ReadCloser, error) {
	var key string
	err := s.pool.QueryRow(ctx, `SELECT blob_key FROM queue_messages WHERE id = $1`, msgID).Scan(&key)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: message %s", ErrNotFound, msgID)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	rc, err := s.st.Blobs().Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("queue: message %s: %w", msgID, err)
	}
	return rc, nil
}

// List implements Store.
func (s *PGStore) List(ctx context.Context, bad func(string, error)) ([]*Entry, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, entry FROM queue_entries ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	defer rows.Close()
	var out []*Entry
	for rows.Next() {
		var id string
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			return nil, fmt.Errorf("queue: %w", err)
		}
		e, err := parseEntry(data)
		if err == nil && e.ID != id {
			err = fmt.Errorf("queue entry %s: holds id %s", id, e.ID)
		}
		if err != nil {
			if bad != nil {
				bad(id, err)
			}
			continue
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return out, nil
}

// Get implements Store.
func (s *PGStore) Get(ctx context.Context, id string) (*Entry, error) {
	var data []byte
	err := s.pool.QueryRow(ctx, `SELECT entry FROM queue_entries WHERE id = $1`, id).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	e, err := parseEntry(data)
	if err != nil {
		return nil, err
	}
	if e.ID != id {
		return nil, fmt.Errorf("queue entry %s: holds id %s", id, e.ID)
	}
	return e, nil
}

// pgClaim is a claim this process holds.
type pgClaim struct {
	token  string
	cancel context.CancelCauseFunc
	timer  *time.Timer // cancels when the lease was not renewed in time
}

// margin is how long before its expiry a lease that could not be renewed
// is given up: the delivery stops before another node may take the
// entry.
func (s *PGStore) margin() time.Duration { return s.ttl / 6 }

// Claim implements Store with a lease: it takes an entry whose lease is
// free or expired, in one UPDATE (the row lock and the re-check of the
// condition make it exclusive across nodes). An entry that does not
// exist gives a claim that holds nothing, and Get then says ErrNotFound,
// as with FileStore.
func (s *PGStore) Claim(ctx context.Context, id string) (func(), error) {
	_, release, err := s.ClaimContext(ctx, id)
	return release, err
}

// ClaimContext is Claim, and also returns a context derived from ctx
// that is cancelled (with cause ErrLeaseLost) when the lease could not
// be renewed until LockTTL/6 before its expiry, or was found taken over:
// the worker's delivery then stops before another node may start one.
func (s *PGStore) ClaimContext(ctx context.Context, id string) (context.Context, func(), error) {
	token := newLeaseToken()
	start := time.Now()
	tag, err := s.pool.Exec(ctx, `UPDATE queue_entries
		SET lease_token = $2, lease_node = $3, lease_until = now() + make_interval(secs => $4)
		WHERE id = $1 AND (lease_until IS NULL OR lease_until < now())`, id, token, s.node, s.ttl.Seconds())
	if err != nil {
		return nil, nil, fmt.Errorf("queue: claiming %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		var exists bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM queue_entries WHERE id = $1)`, id).Scan(&exists); err != nil {
			return nil, nil, fmt.Errorf("queue: claiming %s: %w", id, err)
		}
		if exists {
			s.busy.Store(true)
			return nil, nil, ErrBusy
		}
		return ctx, func() {}, nil
	}
	cctx, cancel := context.WithCancelCause(ctx)
	c := &pgClaim{token: token, cancel: cancel}
	c.timer = time.AfterFunc(time.Until(start.Add(s.ttl-s.margin())), func() {
		s.log.Warn("queue: claim not renewed in time; stopping the delivery", "entry", id)
		cancel(ErrLeaseLost)
	})
	s.mu.Lock()
	s.claims[id] = c
	s.mu.Unlock()
	return cctx, func() { s.release(id, c) }, nil
}

// release ends a claim: the lease is cleared (if the database cannot be
// reached, it expires).
func (s *PGStore) release(id string, c *pgClaim) {
	c.timer.Stop()
	c.cancel(context.Canceled)
	token := c.token
	s.mu.Lock()
	if s.claims[id] == c {
		delete(s.claims, id)
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `UPDATE queue_entries SET lease_token = NULL, lease_node = NULL, lease_until = NULL
		WHERE id = $1 AND lease_token = $2`, id, token); err != nil {
		s.log.Warn("queue: releasing claim; it expires by itself", "entry", id, "err", err)
	}
}

func (s *PGStore) token(id string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.claims[id]
	if !ok {
		return "", fmt.Errorf("queue: entry %s is not claimed", id)
	}
	return c.token, nil
}

// Update implements Store, fenced by the claim's lease.
func (s *PGStore) Update(ctx context.Context, e *Entry) error {
	tok, err := s.token(e.ID)
	if err != nil {
		return err
	}
	data, err := e.marshal()
	if err != nil {
		return err
	}
	// The outcome of an attempt is written even when the attempt was
	// cancelled (shutdown), as FileStore does.
	ctx = context.WithoutCancel(ctx)
	tag, err := s.pool.Exec(ctx, `UPDATE queue_entries SET entry = $3, next_attempt = $4, updated_at = now()
		WHERE id = $1 AND lease_token = $2 AND lease_until > now()`, e.ID, tok, data, e.NextAttempt)
	if err != nil {
		return fmt.Errorf("queue: updating entry: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: %s", ErrLeaseLost, e.ID)
	}
	return nil
}

// Remove implements Store, fenced by the claim's lease: the entry, and
// the message row when no other entry uses it (its blob is then left to
// the collector).
func (s *PGStore) Remove(ctx context.Context, e *Entry) error {
	tok, err := s.token(e.ID)
	if err != nil {
		return err
	}
	ctx = context.WithoutCancel(ctx)
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// The message row first: two entries of one message finishing
		// at once are serialized here, so that the last one removes it.
		if _, err := tx.Exec(ctx, `SELECT 1 FROM queue_messages WHERE id = $1 FOR UPDATE`, e.MessageID); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM queue_entries WHERE id = $1 AND lease_token = $2 AND lease_until > now()`, e.ID, tok)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: %s", ErrLeaseLost, e.ID)
		}
		_, err = tx.Exec(ctx, `DELETE FROM queue_messages m WHERE id = $1
			AND NOT EXISTS (SELECT 1 FROM queue_entries WHERE message_id = m.id)`, e.MessageID)
		if err == nil {
			_, err = tx.Exec(ctx, `UPDATE blobs SET touched_at = now() WHERE key = (SELECT blob_key FROM queue_messages WHERE id = $1)`, e.MessageID)
		}
		return err
	})
}

// Changed implements Store: a counter of the notifications this node
// received, of reconnections of its listener (changes may have been
// missed), and of renewal ticks after a claim found another node's lease
// (it may expire: the worker looks again).
func (s *PGStore) Changed() string {
	s.startListener()
	return fmt.Sprint(s.changes.Load())
}

// Notify returns a channel that receives when another node (or this
// one) announced a change: the worker's wake-up.
func (s *PGStore) Notify() <-chan struct{} {
	s.startListener()
	return s.notify
}

// Kick implements Store: NOTIFY postino_queue.
func (s *PGStore) Kick() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.pool.Exec(ctx, `SELECT pg_notify($1, 'kick')`, NotifyChannel); err != nil {
		return fmt.Errorf("queue: notify: %w", err)
	}
	return nil
}

// Sweep implements Store: messages without entries (none are left by a
// crash, each change being one transaction) older than age.
func (s *PGStore) Sweep(age time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := s.pool.Exec(ctx, `DELETE FROM queue_messages m WHERE created_at < now() - make_interval(secs => $1)
		AND NOT EXISTS (SELECT 1 FROM queue_entries WHERE message_id = m.id)`, age.Seconds())
	if err != nil {
		return fmt.Errorf("queue: sweep: %w", err)
	}
	return nil
}

// changed records a change and wakes the worker.
func (s *PGStore) changed() {
	s.changes.Add(1)
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// renewer extends this process's leases every LockTTL/3, and makes
// Changed change when a claim found a live lease (so that an entry whose
// node died is looked at again once its lease expires).
func (s *PGStore) renewer(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.busy.Swap(false) {
			s.changed()
		}
		s.renew(ctx)
	}
}

// renew extends every lease of this process in one statement. A lease
// the statement did not find was taken over: its delivery is stopped at
// once. When the statement fails, each claim's timer stops its delivery
// at its deadline unless a later renewal succeeds.
func (s *PGStore) renew(ctx context.Context) {
	s.mu.Lock()
	tokens := make([]string, 0, len(s.claims))
	for _, c := range s.claims {
		tokens = append(tokens, c.token)
	}
	s.mu.Unlock()
	if len(tokens) == 0 {
		return
	}
	start := time.Now()
	rctx, cancel := context.WithTimeout(ctx, s.ttl/3)
	defer cancel()
	rows, err := s.pool.Query(rctx, `UPDATE queue_entries q SET lease_until = now() + make_interval(secs => $2)
		FROM unnest($1::text[]) AS t(token)
		WHERE q.lease_token = t.token AND q.lease_until > now() RETURNING q.lease_token`, tokens, s.ttl.Seconds())
	if err != nil {
		s.log.Error("queue: renewing claims", "claims", len(tokens), "err", err)
		return
	}
	renewed, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		s.log.Error("queue: renewing claims", "claims", len(tokens), "err", err)
		return
	}
	ok := make(map[string]bool, len(renewed))
	for _, t := range renewed {
		ok[t] = true
	}
	deadline := start.Add(s.ttl - s.margin())
	asked := make(map[string]bool, len(tokens))
	for _, t := range tokens {
		asked[t] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, c := range s.claims {
		switch {
		case !asked[c.token]:
			// claimed after the statement started
		case ok[c.token]:
			c.timer.Reset(time.Until(deadline))
		default:
			s.log.Warn("queue: claim taken over; stopping the delivery", "entry", id)
			c.cancel(ErrLeaseLost)
		}
	}
}

// startListener starts, once, the goroutine that LISTENs on a dedicated
// connection.
func (s *PGStore) startListener() {
	s.startLis.Do(func() {
		if s.closed.Load() {
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			select {
			case <-s.done:
			case <-ctx.Done():
			}
			cancel()
		}()
		go s.listen(ctx)
	})
}

// listen keeps a LISTEN connection, reconnecting with a growing delay
// after failures; each (re)connection counts as a change.
func (s *PGStore) listen(ctx context.Context) {
	wait := time.Second
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, func() { wait = time.Second })
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("queue: listening for changes; reconnecting", "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, pgListenRetryMax)
	}
}

func (s *PGStore) listenOnce(ctx context.Context, connected func()) error {
	cfg := s.pool.Config().ConnConfig.Copy()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return err
	}
	connected()
	s.changed() // notifications may have been missed while not listening
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		s.changed()
	}
}

func newLeaseToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
