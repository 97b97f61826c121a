package maildir

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkOpenMaildropScale measures OpenMaildrop (lock, journal check,
// snapshot) of mailboxes of 1k, 10k and 100k messages laid out as after
// Dovecot has opened them: in cur/ with a ":2," info suffix. "list" forces
// a directory listing every time (new/ is touched before each open);
// "unchanged" opens an unchanged mailbox, as repeated logins do.
func BenchmarkOpenMaildropScale(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		s, root := newTestStore(b)
		openMD(b, s, testBox).Close()
		msg := []byte("Subject: x\n\nbody\n")
		md := maildirPath(root)
		for range n {
			name := formatName(s.uniqueName(), int64(len(msg)), int64(len(refWire(msg)))) + ":2,"
			if err := os.WriteFile(filepath.Join(md, "cur", name), msg, 0o600); err != nil {
				b.Fatal(err)
			}
		}
		touch := filepath.Join(md, "new", ".bench-touch")
		b.Run(fmt.Sprintf("list/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := os.WriteFile(touch, nil, 0o600); err != nil {
					b.Fatal(err)
				}
				os.Remove(touch)
				m := openMD(b, s, testBox)
				if got := len(m.Messages()); got != n {
					b.Fatalf("%d messages", got)
				}
				m.Close()
			}
		})
		// Let the directories age past the racy-timestamp margin.
		time.Sleep(2100 * time.Millisecond)
		b.Run(fmt.Sprintf("unchanged/%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				m := openMD(b, s, testBox)
				if got := len(m.Messages()); got != n {
					b.Fatalf("%d messages", got)
				}
				m.Close()
			}
		})
	}
}
