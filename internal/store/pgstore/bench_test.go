package pgstore

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/pop3backend"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
	"github.com/postino-mail/postino/pop3"
)

// Run with: flock /tmp/postino-bench.lock go test -run '^$' -bench . ./internal/store/pgstore/

// queryCounter counts the round trips to PostgreSQL (n: a statement, or
// a pipelined batch of them) and the statements (stmts; BEGIN and COMMIT
// included).
type queryCounter struct{ n, stmts atomic.Int64 }

func (c *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	c.stmts.Add(1)
	return ctx
}

func (c *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *queryCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *queryCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {
	c.stmts.Add(1)
}

func (c *queryCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// benchStores returns a Maildir store, a PostgreSQL store, and a
// PostgreSQL store with a blob cache (each with its statement counter;
// nil for Maildir).
func benchStores(b *testing.B) []struct {
	name string
	st   store.Store
	qc   *queryCounter
} {
	md, err := maildir.New(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { md.Close() })
	pg, qc := benchPG(b, Options{})
	cache, err := OpenBlobCache(b.TempDir(), 1<<30, nil)
	if err != nil {
		b.Fatal(err)
	}
	pgc, qcc := benchPG(b, Options{Cache: cache})
	return []struct {
		name string
		st   store.Store
		qc   *queryCounter
	}{{"maildir", md, nil}, {"postgres", pg, qc}, {"postgres-cache", pgc, qcc}}
}

// benchPG returns a PostgreSQL store on a new database, with a pool of 8
// connections that counts its statements.
func benchPG(b *testing.B, o Options) (*Store, *queryCounter) {
	dsn := pgtest.NewDB(b)
	pool, err := NewPool(context.Background(), dsn, 8)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := Migrate(context.Background(), pool); err != nil {
		b.Fatal(err)
	}
	pool.Close()
	pc, _ := pgxpool.ParseConfig(dsn)
	pc.MaxConns = 8
	qc := &queryCounter{}
	pc.ConnConfig.Tracer = qc
	pool, err = pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		b.Fatal(err)
	}
	o.SpoolDir = b.TempDir()
	pg := newStore(pool, o)
	b.Cleanup(pg.Close)
	return pg, qc
}

// corpus is 20 messages of about 20 KB.
func corpus() []string {
	var msgs []string
	for i := range 20 {
		var sb strings.Builder
		fmt.Fprintf(&sb, "From: bob@example.test\nSubject: message %d\n\n", i)
		for j := range 300 {
			fmt.Fprintf(&sb, "line %d of message %d, some text to fill it up\n", j, i)
		}
		msgs = append(msgs, sb.String())
	}
	return msgs
}

// benchBackend serves a store over POP3 with every login accepted.
type benchBackend struct{ st store.Store }

func (benchBackend) Authenticate(_ context.Context, _ *pop3.ConnInfo, user, _ string) (string, error) {
	return user, nil
}

func (b benchBackend) OpenMaildrop(ctx context.Context, _ *pop3.ConnInfo, user string) (pop3.Maildrop, error) {
	md, err := b.st.OpenMaildrop(ctx, user)
	if err != nil {
		return nil, err
	}
	return pop3backend.NewMaildrop(md), nil
}

// BenchmarkPOP3 measures whole POP3 sessions over loopback against each
// store on the same corpus: "download" logs in, lists, downloads every
// message and quits (leaving them); "poll" logs in, asks UIDL and quits,
// as a client that already has everything. It reports sessions/s and,
// for PostgreSQL, statements (round trips) per session.
func BenchmarkPOP3(b *testing.B) {
	for _, s := range benchStores(b) {
		d := &delivery.Deliverer{Store: s.st, SpoolDir: b.TempDir()}
		for _, m := range corpus() {
			// As SMTP stores it: Return-Path, Delivered-To and Received
			// added for the recipient.
			sp, err := d.Spool(context.Background(), strings.NewReader(m))
			if err != nil {
				b.Fatal(err)
			}
			_, err = d.DeliverSpooled(context.Background(), "bob@example.test", "alice@example.test", "alice@example.test", sp, "Received: from client by bench\r\n")
			sp.Close()
			if err != nil {
				b.Fatal(err)
			}
		}
		srv := &pop3.Server{Backend: benchBackend{s.st}, Plaintext: pop3.PlaintextAlways, Implementation: "bench"}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(l)
		b.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		})
		for _, mode := range []string{"download", "poll"} {
			b.Run(s.name+"/"+mode, func(b *testing.B) {
				var before, beforeStmts int64
				if s.qc != nil {
					before, beforeStmts = s.qc.n.Load(), s.qc.stmts.Load()
				}
				start := time.Now()
				for b.Loop() {
					c, err := pop3.Dial(context.Background(), l.Addr().String())
					if err != nil {
						b.Fatal(err)
					}
					if err := c.Login("alice@example.test", "x"); err != nil {
						b.Fatal(err)
					}
					if _, err := c.UIDL(); err != nil {
						b.Fatal(err)
					}
					if mode == "download" {
						list, err := c.List()
						if err != nil {
							b.Fatal(err)
						}
						for _, e := range list {
							r, err := c.Retr(e.Number)
							if err != nil {
								b.Fatal(err)
							}
							if _, err := io.Copy(io.Discard, r); err != nil {
								b.Fatal(err)
							}
						}
					}
					if _, err := c.Cmd("QUIT"); err != nil {
						b.Fatal(err)
					}
					c.Close()
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "sessions/s")
				if s.qc != nil {
					b.ReportMetric(float64(s.qc.n.Load()-before)/float64(b.N), "roundtrips/session")
					b.ReportMetric(float64(s.qc.stmts.Load()-beforeStmts)/float64(b.N), "statements/session")
				}
			})
		}
	}
}

// BenchmarkDeliver measures one delivery of a 20 KB message into each
// store, and PostgreSQL's statements per delivery.
func BenchmarkDeliver(b *testing.B) {
	msg := corpus()[0]
	for _, s := range benchStores(b) {
		b.Run(s.name, func(b *testing.B) {
			var before, beforeStmts int64
			if s.qc != nil {
				before, beforeStmts = s.qc.n.Load(), s.qc.stmts.Load()
			}
			i := 0
			for b.Loop() {
				i++
				// A distinct message each time: no blob is shared.
				if _, err := s.st.Deliver(context.Background(), "bob@example.test", strings.NewReader(fmt.Sprintf("X-N: %d\n%s", i, msg))); err != nil {
					b.Fatal(err)
				}
			}
			if s.qc != nil {
				b.ReportMetric(float64(s.qc.n.Load()-before)/float64(b.N), "roundtrips/op")
				b.ReportMetric(float64(s.qc.stmts.Load()-beforeStmts)/float64(b.N), "statements/op")
			}
		})
	}
}

// BenchmarkRenew10k measures the one statement that renews 10,000
// maildrop leases of a node (every lock_ttl/3), through a pool of 4
// connections.
func BenchmarkRenew10k(b *testing.B) {
	s := node(b, pgtest.NewDB(b), Options{MaxConns: 4})
	var mds []store.Maildrop
	for i := range 10000 {
		md, err := s.OpenMaildrop(context.Background(), fmt.Sprintf("u%d@example.test", i))
		if err != nil {
			b.Fatal(err)
		}
		mds = append(mds, md)
	}
	for b.Loop() {
		s.locks.renew(context.Background())
	}
	b.StopTimer()
	if c := s.Pool().Stat().TotalConns(); c > 4 {
		b.Fatalf("%d connections", c)
	}
	for _, md := range mds {
		md.Close()
	}
}
