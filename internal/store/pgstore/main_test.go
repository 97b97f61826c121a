package pgstore

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/postino-mail/postino/internal/testutil/pgtest"
	"github.com/postino-mail/postino/internal/testutil/s3test"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// node opens a Store (one cluster node) on dsn with its own pool.
func node(t testing.TB, dsn string, o Options) *Store {
	t.Helper()
	o.DSN = dsn
	o.Migrate = true
	if o.SpoolDir == "" {
		o.SpoolDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// s3Blobs starts versitygw and returns a blob store in a new bucket.
func s3Blobs(t *testing.T) *S3Blobs {
	t.Helper()
	srv := s3test.Start(t)
	b, err := NewS3Blobs(S3Options{Endpoint: srv.Endpoint, Bucket: "postino-mail", AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	c, err := minio.New(strings.TrimPrefix(srv.Endpoint, "http://"), &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MakeBucket(context.Background(), "postino-mail", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	return b
}

// backends are the blob stores the contract tests run over.
var backends = []struct {
	name  string
	blobs func(t *testing.T) BlobStore
}{
	{"postgres", func(*testing.T) BlobStore { return nil }},
	{"s3", func(t *testing.T) BlobStore { return s3Blobs(t) }},
}

// forEachBackend runs f once per blob backend, each with a fresh database.
func forEachBackend(t *testing.T, f func(t *testing.T, newNode func(o Options) *Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			dsn := pgtest.NewDB(t)
			blobs := b.blobs(t)
			f(t, func(o Options) *Store {
				if o.Blobs == nil && blobs != nil {
					o.Blobs = blobs
				}
				return node(t, dsn, o)
			})
		})
	}
}

func deliver(t *testing.T, s *Store, mailbox, msg string) string {
	t.Helper()
	uid, err := s.Deliver(context.Background(), mailbox, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return uid
}

func readMsg(t *testing.T, md interface {
	Open(context.Context, int) (io.ReadCloser, error)
}, i int) string {
	t.Helper()
	rc, err := md.Open(context.Background(), i)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
