package fetch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultLeaseTTL is how long an account's lease in PostgreSQL lasts
// without renewal: the longest a dead node keeps an account from being
// fetched by the others.
const DefaultLeaseTTL = 30 * time.Second

// pgOpTimeout bounds each statement of the state in PostgreSQL.
const pgOpTimeout = 30 * time.Second

// ErrLeaseLost is returned when the lease of an account's state in
// PostgreSQL was lost during a run (not renewed in time, or taken over
// by another node after it expired): nothing more is recorded, no DELE
// is sent, and the run ends.
var ErrLeaseLost = errors.New("the lease of this account's fetch state was lost")

// StateOpener opens the state of an account elsewhere than in state files
// (Fetcher.States).
type StateOpener interface {
	// OpenState takes the account's lock (ErrStateLocked when another
	// fetch holds it) and loads its state.
	OpenState(ctx context.Context, account string) (*StateFile, error)
}

// PGStates keeps the state of fetch accounts in PostgreSQL (schema
// version 4 of internal/store/pgstore), shared by every node: the
// snapshot of each account in fetch_accounts, the records written since
// in fetch_journal, and the lock as a lease row in fetch_leases. The
// protocol is that of the state files, record for record: an intent is
// committed before its delivery starts, done and dele records before any
// DELE. Every write first checks, under the lease row's lock, that this
// node still holds an unexpired lease (fencing): a node whose lease
// passed to another writes nothing more.
type PGStates struct {
	// Pool is the connection pool of the database.
	Pool *pgxpool.Pool
	// NodeID names this node in the lease rows; empty: host name and
	// process ID.
	NodeID string
	// LeaseTTL is the lease length; 0 means DefaultLeaseTTL. The lease is
	// renewed every LeaseTTL/3 while the account is fetched.
	LeaseTTL time.Duration
	// Logger receives the lease's warnings; nil discards them.
	Logger *slog.Logger
}

// pgState is the PostgreSQL side of a StateFile.
type pgState struct {
	pool    *pgxpool.Pool
	account string
	token   string
	ttl     time.Duration
	log     *slog.Logger
	pending []journalEntry // written, not yet committed

	lost     chan struct{}
	lostOnce sync.Once
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// OpenState implements StateOpener: it takes the account's lease, or an
// expired one, and loads the snapshot and the records after it; the
// records are then folded into a new snapshot.
func (p *PGStates) OpenState(ctx context.Context, account string) (*StateFile, error) {
	ttl := p.LeaseTTL
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	node := p.NodeID
	if node == "" {
		h, _ := os.Hostname()
		node = h + ":" + strconv.Itoa(os.Getpid())
	}
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var b [16]byte
	rand.Read(b[:])
	ps := &pgState{pool: p.Pool, account: account, token: hex.EncodeToString(b[:]), ttl: ttl,
		log: log.With("account", account), lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	tag, err := p.Pool.Exec(ctx, `INSERT INTO fetch_leases (account, token, node_id, expires_at)
		VALUES ($1, $2, $3, now() + make_interval(secs => $4))
		ON CONFLICT (account) DO UPDATE SET token = excluded.token, node_id = excluded.node_id,
			acquired_at = now(), expires_at = excluded.expires_at
		WHERE fetch_leases.expires_at <= now()`, account, ps.token, node, ttl.Seconds())
	if err != nil {
		return nil, fmt.Errorf("fetch state: taking the lease: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return nil, ErrStateLocked
	}
	start := time.Now()
	s := &StateFile{name: account, pg: ps}
	s.State = &State{Version: StateVersion, Account: account, Messages: map[string]*Record{}}
	go ps.renew(start)
	n, err := ps.load(ctx, s)
	if err != nil {
		s.Close()
		return nil, err
	}
	if n > 0 {
		if err := s.Save(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// load reads the snapshot and applies the records after it, returning
// how many it applied.
func (p *pgState) load(ctx context.Context, s *StateFile) (int, error) {
	var snap []byte
	err := p.pool.QueryRow(ctx, `SELECT snapshot::text FROM fetch_accounts WHERE account = $1`, p.account).Scan(&snap)
	switch {
	case err == nil:
		if err := json.Unmarshal(snap, s.State); err != nil {
			return 0, fmt.Errorf("fetch state of %s in PostgreSQL is corrupt: %w", p.account, err)
		}
		if s.State.Version > StateVersion {
			return 0, fmt.Errorf("fetch state of %s in PostgreSQL has version %d, newer than this postino (%d)", p.account, s.State.Version, StateVersion)
		}
		if s.State.Messages == nil {
			s.State.Messages = map[string]*Record{}
		}
	case errors.Is(err, pgx.ErrNoRows):
	default:
		return 0, fmt.Errorf("fetch state: %w", err)
	}
	rows, err := p.pool.Query(ctx, `SELECT entry::text FROM fetch_journal WHERE account = $1 ORDER BY seq`, p.account)
	if err != nil {
		return 0, fmt.Errorf("fetch state: %w", err)
	}
	entries, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("fetch state: %w", err)
	}
	for _, text := range entries {
		var e journalEntry
		if err := json.Unmarshal([]byte(text), &e); err != nil {
			return 0, fmt.Errorf("fetch state of %s in PostgreSQL: corrupt record: %w", p.account, err)
		}
		s.apply(e)
	}
	return len(entries), nil
}

// fence checks, inside tx and under the lease row's lock, that this
// state still holds an unexpired lease.
func (p *pgState) fence(ctx context.Context, tx pgx.Tx) error {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM fetch_leases WHERE account = $1 AND token = $2 AND expires_at > now() FOR UPDATE`,
		p.account, p.token).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		p.markLost("lease expired or taken over")
		return ErrLeaseLost
	}
	return err
}

// flush commits the pending records, fenced.
func (p *pgState) flush() error {
	if len(p.pending) == 0 {
		return nil
	}
	texts := make([]string, len(p.pending))
	for i, e := range p.pending {
		b, err := json.Marshal(e)
		if err != nil {
			return err
		}
		texts[i] = string(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), pgOpTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if err := p.fence(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO fetch_journal (account, entry)
			SELECT $1, e::jsonb FROM unnest($2::text[]) WITH ORDINALITY AS t(e, n) ORDER BY n`, p.account, texts)
		return err
	})
	if err != nil {
		return fmt.Errorf("fetch state: recording: %w", err)
	}
	p.pending = p.pending[:0]
	return nil
}

// save replaces the snapshot with data and deletes the records it folds
// in, fenced, in one transaction.
func (p *pgState) save(data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), pgOpTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if err := p.fence(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO fetch_accounts (account, snapshot, updated_at) VALUES ($1, $2::jsonb, now())
			ON CONFLICT (account) DO UPDATE SET snapshot = excluded.snapshot, updated_at = now()`, p.account, string(data)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM fetch_journal WHERE account = $1`, p.account)
		return err
	})
	if err != nil {
		return fmt.Errorf("fetch state: saving: %w", err)
	}
	p.pending = p.pending[:0]
	return nil
}

// renew extends the lease every ttl/3 until close. A lease not renewed
// for ttl minus a margin, counted from the start of the last successful
// renewal (the database set the expiry after that instant), is given up
// (Lost closes) before it can expire in the database and pass to another
// node.
func (p *pgState) renew(last time.Time) {
	defer close(p.done)
	every := p.ttl / 3
	margin := p.ttl / 4
	giveUp := last.Add(p.ttl - margin)
	t := time.NewTicker(every)
	defer t.Stop()
	deadline := time.NewTimer(time.Until(giveUp))
	defer deadline.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-deadline.C:
			p.markLost("lease not renewed in time")
			return
		case <-t.C:
		}
		start := time.Now()
		// A renewal that hangs must not outlive the deadline.
		end := start.Add(every)
		if giveUp.Before(end) {
			end = giveUp
		}
		ctx, cancel := context.WithDeadline(context.Background(), end)
		tag, err := p.pool.Exec(ctx, `UPDATE fetch_leases SET expires_at = now() + make_interval(secs => $3)
			WHERE account = $1 AND token = $2 AND expires_at > now()`, p.account, p.token, p.ttl.Seconds())
		cancel()
		switch {
		case err == nil && tag.RowsAffected() == 1:
			giveUp = start.Add(p.ttl - margin)
			deadline.Reset(time.Until(giveUp))
		case err == nil:
			p.markLost("lease expired or taken over")
			return
		case !time.Now().Before(giveUp):
			p.markLost("lease not renewed in time: " + err.Error())
			return
		default:
			p.log.Warn("fetch state: renewing the lease failed, retrying", "err", err)
		}
	}
}

// stopRenew stops the renewer and waits for it.
func (p *pgState) stopRenew() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
}

// markLost closes lost once.
func (p *pgState) markLost(why string) {
	p.lostOnce.Do(func() {
		p.log.Warn("fetch state: lease lost, ending the run", "reason", why)
		close(p.lost)
	})
}

// close stops the renewer and gives the lease up.
func (p *pgState) close() error {
	p.stopRenew()
	ctx, cancel := context.WithTimeout(context.Background(), pgOpTimeout)
	defer cancel()
	if _, err := p.pool.Exec(ctx, `DELETE FROM fetch_leases WHERE account = $1 AND token = $2`, p.account, p.token); err != nil {
		// It expires by itself.
		p.log.Warn("fetch state: releasing the lease", "err", err)
	}
	return nil
}
