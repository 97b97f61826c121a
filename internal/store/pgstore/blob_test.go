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

// TestCorruptBlobFailsRead: content changed in the blob store behind
// postino's back (same length) fails the read at its end, so a POP3
// transfer is cut before its terminating dot.
func TestCorruptBlobFailsRead(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newNode func(Options) *Store) {
		s := newNode(Options{})
		deliver(t, s, alice, "Subject: pay\n\nto account 1111\n")
		md, err := s.OpenMaildrop(context.Background(), alice)
		if err != nil {
			t.Fatal(err)
		}
		defer md.Close()
		key := md.(*Maildrop).keys[0]
		forged := "Subject: pay\r\n\r\nto account 6666\r\n"
		if _, isS3 := s.blobs.(*S3Blobs); isS3 {
			if err := s.blobs.Put(context.Background(), key, int64(len(forged)), strings.NewReader(forged)); err != nil {
				t.Fatal(err)
			}
		} else if _, err := s.Pool().Exec(context.Background(), `UPDATE blob_chunks SET data = $2 WHERE key = $1`, key, []byte(forged)); err != nil {
			t.Fatal(err)
		}
		rc, err := md.Open(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		if _, err := io.ReadAll(rc); !errors.Is(err, ErrBlobCorrupt) {
			t.Fatalf("reading a forged blob: %v, want ErrBlobCorrupt", err)
		}
	})
}
