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

// BenchmarkOpenMaildropDovecot measures the listing of a mailbox moved
// from Dovecot (10k messages in cur/ and their dovecot-uidlist) with the
// UIDLs imported ("import") and with dovecot-uidlist ignored ("ignore"):
// the difference is the cost of reading the list at login.
func BenchmarkOpenMaildropDovecot(b *testing.B) {
	const n = 10000
	s, root := newTestStore(b)
	openMD(b, s, testBox).Close()
	md := maildirPath(root)
	msg := []byte("Subject: x\n\nbody\n")
	list := []byte("3 V1795996373 N10001 G8fe5a203d5ba0c6b0a7d000083ecc375\n")
	for i := range n {
		name := fmt.Sprintf("%d.M%dP%d.vm,S=%d,W=%d", 1700000000+i, i%1000000, 30000+i, len(msg), len(refWire(msg)))
		if err := os.WriteFile(filepath.Join(md, "cur", name+":2,S"), msg, 0o600); err != nil {
			b.Fatal(err)
		}
		list = fmt.Appendf(list, "%d :%s\n", i+1, name)
	}
	if err := os.WriteFile(filepath.Join(md, uidlistName), list, 0o600); err != nil {
		b.Fatal(err)
	}
	touch := filepath.Join(md, "new", ".bench-touch")
	for _, mode := range []string{"import", "ignore"} {
		b.Run(mode, func(b *testing.B) {
			format := DefaultDovecotUIDLFormat
			if mode == "ignore" {
				format = ""
			}
			if err := s.SetDovecotUIDLFormat(format); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				os.WriteFile(touch, nil, 0o600)
				os.Remove(touch)
				m := openMD(b, s, testBox)
				if got := m.Messages(); len(got) != n || (mode == "import") != (got[0].UID == "000000016b0cbad5") {
					b.Fatalf("%d messages, first UIDL %q", len(got), got[0].UID)
				}
				m.Close()
			}
		})
	}
}
