package acmecert

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/postino-mail/postino/internal/store/pgstore"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// countingCache counts the certificates stored under each key.
type countingCache struct {
	Cache
	mu   sync.Mutex
	puts map[string]int
}

func (c *countingCache) Put(ctx context.Context, key string, data []byte) error {
	c.mu.Lock()
	c.puts[key]++
	c.mu.Unlock()
	return c.Cache.Put(ctx, key, data)
}

// TestSharedCacheOneOrder: two nodes over one PostgreSQL cache, asked
// for the same name at once, order it once (the other waits on the lock
// and finds it in the cache), and both serve the same certificate. Only
// node A listens where pebble validates: a token node B's order put in
// the cache would be answered by A, as behind a load balancer.
func TestSharedCacheOneOrder(t *testing.T) {
	dsn := pgtest.NewDB(t)
	ctx := context.Background()
	pool, err := pgstore.NewPool(ctx, dsn, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pgstore.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	tlsL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpPort := testutil.Port(t, httpL.Addr().String())
	httpL.Close() // TLS-ALPN-01 only
	p := testutil.StartPebble(t, testutil.PebbleOptions{HTTPPort: httpPort, TLSPort: testutil.Port(t, tlsL.Addr().String())})
	caClient, err := HTTPClientWithCA(p.CAFile(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	const name = "mail.postino.test"
	// The cache both nodes store into, counting.
	cache := &countingCache{Cache: pgstore.NewACMECache(pool), puts: map[string]int{}}
	var locks atomic.Int32
	nodes := make([]*Manager, 2)
	for i := range nodes {
		pc := pgstore.OpenACMECache(dsn, 4) // each node's connections and locks
		t.Cleanup(func() { pc.Close() })
		lock := func(ctx context.Context, n string) (func(), error) {
			locks.Add(1)
			return pc.Lock(ctx, n)
		}
		mg, err := New(Options{Email: "postmaster@postino.test", DirectoryURL: p.Directory, HTTPClient: caClient,
			Cache: cache, Names: []string{name}, Lock: lock, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = mg
	}
	cfg := &tls.Config{GetCertificate: nodes[0].GetCertificate, NextProtos: []string{"http/1.1", acme.ALPNProto}}
	srv := &http.Server{Handler: http.NotFoundHandler(), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(tls.NewListener(tlsL, cfg))
	t.Cleanup(func() { srv.Close() })

	certs := make([]*tls.Certificate, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, mg := range nodes {
		wg.Go(func() { certs[i], errs[i] = mg.GetCertificate(ecdsaHello(name)) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	if string(certs[0].Certificate[0]) != string(certs[1].Certificate[0]) {
		t.Error("the nodes serve different certificates")
	}
	cache.mu.Lock()
	defer cache.mu.Unlock()
	if cache.puts[name] != 1 {
		t.Errorf("certificate stored %d times; want one order (puts %v)", cache.puts[name], cache.puts)
	}
	if locks.Load() < 2 {
		t.Errorf("lock taken %d times", locks.Load())
	}
}
