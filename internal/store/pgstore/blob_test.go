package pgstore

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// TestBlobStores: both blob stores keep octets under their key, report a
// missing blob as ErrBlobMissing before any read, accept a key put twice
// (also at once) and delete idempotently.
func TestBlobStores(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newNode func(Options) *Store) {
		bs := newNode(Options{}).blobs
		ctx := context.Background()
		key := strings.Repeat("ab", 32)
		data := strings.Repeat("0123456789", ChunkSize/5) // two chunks
		if _, err := bs.Get(ctx, key); !errors.Is(err, ErrBlobMissing) {
			t.Fatalf("Get of a missing blob: %v", err)
		}
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := bs.Put(ctx, key, int64(len(data)), strings.NewReader(data)); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if ok, err := bs.Has(ctx, key); !ok || err != nil {
			t.Fatalf("Has = %v, %v", ok, err)
		}
		rc, err := bs.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(got) != data {
			t.Fatalf("read %d octets (%v), want %d", len(got), err, len(data))
		}
		for range 2 {
			if err := bs.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
		if ok, _ := bs.Has(ctx, key); ok {
			t.Fatal("blob still there after Delete")
		}
	})
}

// TestPGBlobShortPut: a Put whose reader yields fewer octets than
// announced stores nothing.
func TestPGBlobShortPut(t *testing.T) {
	s := node(t, pgtest.NewDB(t), Options{})
	key := strings.Repeat("cd", 32)
	if err := s.blobs.Put(context.Background(), key, 100, strings.NewReader("short")); err == nil {
		t.Fatal("short Put succeeded")
	}
	if ok, _ := s.blobs.Has(context.Background(), key); ok {
		t.Fatal("a short Put left a blob")
	}
}
