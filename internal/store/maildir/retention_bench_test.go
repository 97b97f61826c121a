package maildir

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// retentionBox fills a mailbox with n messages, half of them recorded as
// downloaded now.
func retentionBox(b *testing.B, n int) *Store {
	s, _ := newTestStore(b)
	ctx := context.Background()
	for i := range n {
		mustDeliver(b, s, testBox, fmt.Sprintf("Subject: %d\n\nbody\n", i))
	}
	md := openMD(b, s, testBox)
	var idx []int
	for i := 0; i < n; i += 2 {
		idx = append(idx, i)
	}
	if err := md.RecordDownloads(ctx, idx); err != nil {
		b.Fatal(err)
	}
	md.Close()
	return s
}

// BenchmarkRecordDownloads is what RecordDownloads adds to a QUIT in a
// mailbox of 1,000 messages with 500 recorded: one that downloaded
// nothing (the usual QUIT of a client that leaves mail on the server and
// found nothing new), and one that downloaded again a message already
// recorded (the record is read, nothing is written).
func BenchmarkRecordDownloads(b *testing.B) {
	s := retentionBox(b, 1000)
	ctx := context.Background()
	md := openMD(b, s, testBox)
	defer md.Close()
	for _, bc := range []struct {
		name string
		idx  []int
	}{{"nothing", nil}, {"again", []int{0}}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if err := md.RecordDownloads(ctx, bc.idx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSweepIdle is the hourly visit of a mailbox of 1,000 messages
// with 500 downloaded, none due: lock, snapshot, record, unlock.
func BenchmarkSweepIdle(b *testing.B) {
	s := retentionBox(b, 1000)
	ctx := context.Background()
	p := SweepPolicy{Expire: 30 * 24 * time.Hour}
	b.ResetTimer()
	for b.Loop() {
		if res, err := s.Sweep(ctx, testBox, p); err != nil || res.Expired != 0 {
			b.Fatal(res, err)
		}
	}
}
