package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// ChunkSize is the size of the chunks a blob is stored in by PGBlobs,
// and so the most of a message held in memory at once.
const ChunkSize = 256 << 10

// ErrBlobMissing is returned by BlobStore.Get for a key that is not
// stored.
var ErrBlobMissing = errors.New("pgstore: blob missing")

// BlobStore keeps message contents under content-addressed keys (the hex
// SHA-256 of the octets). Every method is safe for concurrent use.
type BlobStore interface {
	// Has reports whether the blob is stored completely.
	Has(ctx context.Context, key string) (bool, error)
	// Put stores size octets read from r under key and returns once
	// they are durable. Putting a key again is harmless.
	Put(ctx context.Context, key string, size int64, r io.Reader) error
	// Get streams the blob; ErrBlobMissing if it is not stored.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Delete removes the blob; a missing blob is not an error.
	Delete(ctx context.Context, key string) error
}

// PGBlobs is a BlobStore in PostgreSQL: rows of blob_chunks of at most
// ChunkSize octets.
type PGBlobs struct {
	pool *pgxpool.Pool
}

// NewPGBlobs returns the blob store in the database of pool.
func NewPGBlobs(pool *pgxpool.Pool) *PGBlobs { return &PGBlobs{pool: pool} }

// Has reports whether the blob's chunks are stored. They are written in
// one transaction, so the first chunk stands for all.
func (b *PGBlobs) Has(ctx context.Context, key string) (bool, error) {
	var ok bool
	err := b.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM blob_chunks WHERE key = $1 AND seq = 0)`, key).Scan(&ok)
	return ok, err
}

// Put writes the chunks in one transaction: the blob is stored whole or
// not at all, and durable once it commits.
func (b *PGBlobs) Put(ctx context.Context, key string, size int64, r io.Reader) error {
	return b.put(ctx, key, size, r, false)
}

// put is Put; with deferred, its commit does not wait for the WAL flush
// (asyncCommit): the blob is then durable once a later synchronous
// commit in the same database has returned.
func (b *PGBlobs) put(ctx context.Context, key string, size int64, r io.Reader, deferred bool) error {
	if size <= ChunkSize {
		// One chunk: one statement, atomic and durable by itself (or,
		// deferred, with the next synchronous commit).
		buf := make([]byte, size+1)
		n, err := io.ReadFull(r, buf)
		if err != io.ErrUnexpectedEOF && err != io.EOF && err != nil {
			return err
		}
		if int64(n) != size {
			return fmt.Errorf("pgstore: blob %s: read %d octets or more, want %d", key, n, size)
		}
		const insert = `INSERT INTO blob_chunks (key, seq, data) VALUES ($1, 0, $2)
			ON CONFLICT (key, seq) DO NOTHING`
		if deferred {
			return execAsync(ctx, b.pool, insert, key, buf[:n])
		}
		_, err = b.pool.Exec(ctx, insert, key, buf[:n])
		return err
	}
	return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		if deferred {
			if _, err := tx.Exec(ctx, `SELECT set_config('synchronous_commit', 'off', true)`); err != nil {
				return err
			}
		}
		buf := make([]byte, ChunkSize)
		var total int64
		for seq := 0; ; seq++ {
			n, err := io.ReadFull(r, buf)
			if n > 0 {
				total += int64(n)
				// Content-addressed: a chunk another delivery of the same
				// content stored meanwhile is the same octets.
				if _, err := tx.Exec(ctx, `INSERT INTO blob_chunks (key, seq, data) VALUES ($1, $2, $3)
					ON CONFLICT (key, seq) DO NOTHING`, key, seq, buf[:n]); err != nil {
					return err
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				break
			}
			if err != nil {
				return err
			}
		}
		if total != size {
			return fmt.Errorf("pgstore: blob %s: read %d octets, want %d", key, total, size)
		}
		return nil
	})
}

// Get streams the blob chunk by chunk: one query per chunk, so that no
// connection is held between reads. The first chunk is read at once, so
// that a missing blob is reported before anything is sent.
func (b *PGBlobs) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	r := &chunkReader{ctx: ctx, pool: b.pool, key: key}
	if err := r.next(); err != nil {
		return nil, err
	}
	return r, nil
}

// Delete removes the blob's chunks.
func (b *PGBlobs) Delete(ctx context.Context, key string) error {
	_, err := b.pool.Exec(ctx, `DELETE FROM blob_chunks WHERE key = $1`, key)
	return err
}

// chunkReader reads a PGBlobs blob one chunk at a time.
type chunkReader struct {
	ctx  context.Context
	pool *pgxpool.Pool
	key  string
	seq  int
	buf  []byte
	eof  bool
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.eof {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// next reads the next chunk into buf; after the last, eof is set.
func (r *chunkReader) next() error {
	var data []byte
	err := r.pool.QueryRow(r.ctx, `SELECT data FROM blob_chunks WHERE key = $1 AND seq = $2`, r.key, r.seq).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		if r.seq == 0 {
			return fmt.Errorf("%w: %s", ErrBlobMissing, r.key)
		}
		r.eof = true
		return nil
	}
	if err != nil {
		return err
	}
	r.seq++
	r.buf = data
	if len(data) < ChunkSize {
		r.eof = true
	}
	return nil
}

func (r *chunkReader) Close() error { r.buf = nil; r.eof = true; return nil }
