package pgstore

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// blobCount returns the rows of blobs and whether key's octets are stored.
func blobState(t *testing.T, s *Store, key string) (rows int, stored bool) {
	t.Helper()
	s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM blobs`).Scan(&rows)
	stored, err := s.blobs.Has(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return rows, stored
}

// TestCollectBlobs: a blob is kept while a message refers to it or within
// the grace period of its last touch, and collected after.
func TestCollectBlobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newNode func(Options) *Store) {
		grace := time.Second
		s := newNode(Options{BlobGrace: grace})
		deliver(t, s, alice, "keep\n")
		deliver(t, s, alice, "drop\n")
		md, _ := s.OpenMaildrop(context.Background(), alice)
		key := md.(*Maildrop).keys[1]
		kept := md.(*Maildrop).keys[0]
		if err := md.Commit(context.Background(), []int{1}); err != nil {
			t.Fatal(err)
		}
		md.Close()
		if n, err := s.CollectBlobs(context.Background(), 100); err != nil || n != 0 {
			t.Fatalf("within the grace period: collected %d, %v", n, err)
		}
		time.Sleep(grace + 100*time.Millisecond)
		if n, err := s.CollectBlobs(context.Background(), 100); err != nil || n != 1 {
			t.Fatalf("after the grace period: collected %d, %v; want 1", n, err)
		}
		if rows, stored := blobState(t, s, key); rows != 1 || stored {
			t.Fatalf("after collection: %d rows, octets stored %v", rows, stored)
		}
		if _, stored := blobState(t, s, kept); !stored {
			t.Fatal("a referenced blob was collected")
		}
		md, _ = s.OpenMaildrop(context.Background(), alice)
		defer md.Close()
		if got := readMsg(t, md, 0); got != "keep\r\n" {
			t.Fatalf("kept message reads %q", got)
		}
	})
}

// TestCollectDuringDelivery: the collector runs between a delivery's
// blob write and its metadata transaction, once the blob has aged past
// the grace period (a slow delivery): the delivery notices, stores the
// blob again and the message is complete.
func TestCollectDuringDelivery(t *testing.T) {
	forEachBackend(t, func(t *testing.T, newNode func(Options) *Store) {
		collectMidDelivery(t, newNode, false)
	})
}

// collectMidDelivery delivers a message while the collector runs between
// its blob write and its metadata transaction, after the grace period,
// and checks that the message is complete; with existing, into a mailbox
// that already has a message (the pipelined path).
func collectMidDelivery(t *testing.T, newNode func(Options) *Store, existing bool) {
	t.Helper()
	grace := 500 * time.Millisecond
	s := newNode(Options{BlobGrace: grace})
	n := 0
	if existing {
		deliver(t, s, alice, "first\n")
		n = 1
	}
	collected := 0
	var once sync.Once
	s.afterBlobPut = func() {
		once.Do(func() {
			time.Sleep(grace + 100*time.Millisecond)
			c, err := s.CollectBlobs(context.Background(), 100)
			if err != nil {
				t.Error(err)
			}
			collected = c
		})
	}
	deliver(t, s, alice, "raced\n")
	if collected != 1 {
		t.Fatalf("collector removed %d blobs, want the in-flight one", collected)
	}
	md, err := s.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	if got := readMsg(t, md, n); got != "raced\r\n" {
		t.Fatalf("message reads %q", got)
	}
}

// TestCollectorWaitsForDelivery: a collector running while a delivery's
// metadata transaction holds the blob row skips it; the blob survives.
func TestCollectorWaitsForDelivery(t *testing.T) {
	s := node(t, pgtest.NewDB(t), Options{BlobGrace: time.Hour})
	s.afterBlobPut = func() {
		// Age the row as if the delivery were slow, but still within
		// the grace period: the collector must leave it alone.
		s.Pool().Exec(context.Background(), `UPDATE blobs SET touched_at = now() - interval '59 minutes'`)
		if n, err := s.CollectBlobs(context.Background(), 100); err != nil || n != 0 {
			t.Errorf("collector removed %d blobs (%v) of a delivery in flight", n, err)
		}
	}
	deliver(t, s, alice, "safe\n")
	md, _ := s.OpenMaildrop(context.Background(), alice)
	defer md.Close()
	if got := readMsg(t, md, 0); got != "safe\r\n" {
		t.Fatalf("message reads %q", got)
	}
}

// TestDeliverChecksContentInMetadataTransaction: with the contents in
// PostgreSQL, the metadata transaction refers to a content only if it
// sees the content's chunks itself (the content's statements commit
// without waiting for their WAL flush, and could have reached another
// server than the one the transaction runs on). A content gone between
// the two steps is stored again, for a first delivery (general path)
// and for a later one (pipelined path), small and large.
func TestDeliverChecksContentInMetadataTransaction(t *testing.T) {
	s := node(t, pgtest.NewDB(t), Options{})
	removed := 0
	s.afterBlobPut = func() {
		if removed%2 == 0 {
			// The content being delivered: the one no message refers
			// to yet.
			tag, err := s.Pool().Exec(context.Background(), `DELETE FROM blob_chunks c
				WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_key = c.key)`)
			if err != nil {
				t.Error(err)
			}
			if tag.RowsAffected() == 0 {
				t.Error("no content to remove")
			}
		}
		removed++
	}
	msgs := []string{"first, general path\n", "second, pipelined\n", sizedMsg(3, ChunkSize+1000)}
	for _, m := range msgs {
		deliver(t, s, alice, m)
	}
	if removed != 2*len(msgs) {
		t.Fatalf("%d attempts, want %d (each delivery stored its content twice)", removed, 2*len(msgs))
	}
	md, err := s.OpenMaildrop(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	for i, m := range msgs {
		if got := readMsg(t, md, i); got != strings.ReplaceAll(m, "\n", "\r\n") {
			t.Fatalf("message %d reads %d octets, want %d", i+1, len(got), len(m))
		}
	}
}
