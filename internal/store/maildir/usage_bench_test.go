package maildir

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// usageBenchStore returns a store whose test mailbox holds n messages
// (empty files with Dovecot-style names: Usage reads names only).
func usageBenchStore(b *testing.B, n int) *Store {
	s, root := newTestStore(b)
	mustDeliver(b, s, testBox, "x\n")
	newDir := filepath.Join(maildirPath(root), "new")
	for i := range n {
		name := fmt.Sprintf("17000%05d.M%dP1Q%d.bench,S=4000,W=4100", i, i, i)
		if err := os.WriteFile(filepath.Join(newDir, name), nil, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkUsage measures a quota check on a mailbox of 10000 messages:
// "cached" is the usual case (two stat calls), "listing" what a check
// costs after another program changed the Maildir (names only).
func BenchmarkUsage(b *testing.B) {
	ctx := context.Background()
	for _, mode := range []string{"cached", "listing"} {
		b.Run(mode, func(b *testing.B) {
			s := usageBenchStore(b, 10000)
			if _, _, err := s.Usage(ctx, testBox); err != nil {
				b.Fatal(err)
			}
			dir, _ := mailboxDir(testBox)
			b.ResetTimer()
			for b.Loop() {
				if mode == "listing" {
					s.forgetUsage(dir)
				}
				if n, _, err := s.Usage(ctx, testBox); err != nil || n != 10001 {
					b.Fatalf("Usage = %d, %v", n, err)
				}
			}
		})
	}
}
