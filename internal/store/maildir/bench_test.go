package maildir

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
)

// benchMessage returns a message of about size octets with LF line ends.
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: bench@example.test\nTo: alice@example.test\nSubject: benchmark\n\n")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "line %d of the benchmark message body, with some text to fill it up\n", i)
	}
	return b.Bytes()[:size]
}

func BenchmarkDeliver(b *testing.B) {
	s, _ := newTestStore(b)
	msg := benchMessage(10 << 10)
	crlf := bytes.ReplaceAll(msg, []byte("\n"), []byte("\r\n"))
	b.SetBytes(int64(len(crlf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Deliver(context.Background(), testBox, bytes.NewReader(crlf)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenMaildrop(b *testing.B) {
	s, root := newTestStore(b)
	openMD(b, s, testBox).Close()
	// 10,000 messages as Deliver names them, written directly (without
	// 10,000 fsyncs) to keep the setup fast.
	msg := []byte("Subject: x\n\nbody\n")
	newDir := filepath.Join(maildirPath(root), "new")
	for range 10000 {
		name := formatName(s.uniqueName(), int64(len(msg)), int64(len(refWire(msg))))
		if err := os.WriteFile(filepath.Join(newDir, name), msg, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		md := openMD(b, s, testBox)
		if n := len(md.Messages()); n != 10000 {
			b.Fatalf("%d messages", n)
		}
		md.Close()
	}
}

func BenchmarkRead(b *testing.B) {
	s, _ := newTestStore(b)
	msg := benchMessage(1 << 20)
	if _, err := s.Deliver(context.Background(), testBox, bytes.NewReader(msg)); err != nil {
		b.Fatal(err)
	}
	md := openMD(b, s, testBox)
	defer md.Close()
	size := md.Messages()[0].Size
	buf := make([]byte, 32<<10)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		rc, err := md.Open(context.Background(), 0)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{rc}, buf)
		rc.Close()
		if err != nil || n != size {
			b.Fatalf("read %d of %d: %v", n, size, err)
		}
	}
}

// BenchmarkConvert measures the in-memory conversion alone.
func BenchmarkConvert(b *testing.B) {
	stored := benchMessage(1 << 20)
	size := int64(len(refWire(stored)))
	buf := make([]byte, 32<<10)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		r := newWireReader(io.NopCloser(bytes.NewReader(stored)), "bench", size)
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{r}, buf)
		r.Close()
		if err != nil || n != size {
			b.Fatalf("read %d of %d: %v", n, size, err)
		}
	}
}

// BenchmarkDeliverConcurrent measures durable delivery of 10 KB messages
// by 20 or 100 concurrent writers into one mailbox or spread over 64,
// and reports the fsyncs of new/ per message (below 1 when deliveries
// share them).
func BenchmarkDeliverConcurrent(b *testing.B) {
	for _, writers := range []int{20, 100} {
		for _, boxes := range []int{1, 64} {
			b.Run(fmt.Sprintf("writers=%d/mailboxes=%d", writers, boxes), func(b *testing.B) {
				benchDeliverConcurrent(b, writers, boxes)
			})
		}
	}
}

func benchDeliverConcurrent(b *testing.B, writers, boxes int) {
	s, _ := newTestStore(b)
	msg := bytes.ReplaceAll(benchMessage(10<<10), []byte("\n"), []byte("\r\n"))
	mailboxes := make([]string, boxes)
	for i := range mailboxes {
		mailboxes[i] = fmt.Sprintf("u%d@example.test", i)
		if _, err := s.Deliver(context.Background(), mailboxes[i], bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
	var dirSyncs atomic.Int64
	old := syncDirFunc
	b.Cleanup(func() { syncDirFunc = old })
	syncDirFunc = func(r *os.Root, rel string) error {
		dirSyncs.Add(1)
		return old(r, rel)
	}
	var next atomic.Int64
	b.SetBytes(int64(len(msg)))
	b.SetParallelism(max(writers/runtime.GOMAXPROCS(0), 1))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mb := mailboxes[int(next.Add(1))%boxes]
			if _, err := s.Deliver(context.Background(), mb, bytes.NewReader(msg)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(dirSyncs.Load())/float64(b.N), "dirsyncs/msg")
}

// BenchmarkRetrSmall measures what a download session costs the store for
// 20 messages of 4 KB: Open, read in wire form, Close, per message.
func BenchmarkRetrSmall(b *testing.B) {
	s, _ := newTestStore(b)
	for range 20 {
		if _, err := s.Deliver(context.Background(), testBox, bytes.NewReader(benchMessage(4<<10))); err != nil {
			b.Fatal(err)
		}
	}
	md := openMD(b, s, testBox)
	defer md.Close()
	buf := make([]byte, 32<<10)
	b.ReportAllocs()
	for b.Loop() {
		for i, m := range md.Messages() {
			rc, err := md.Open(context.Background(), i)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{rc}, buf)
			rc.Close()
			if err != nil || n != m.Size {
				b.Fatalf("read %d of %d: %v", n, m.Size, err)
			}
		}
	}
}

// BenchmarkFolderDeliver stores 10 KiB messages into a Folder opened once,
// new/ fsync'd once per 64 messages (a fetch batch).
func BenchmarkFolderDeliver(b *testing.B) {
	f, err := OpenFolder(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	msg := benchMessage(10 << 10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := f.Deliver(context.Background(), bytes.NewReader(msg), FolderOptions{DeferDirSync: true}); err != nil {
			b.Fatal(err)
		}
		if n++; n%64 == 0 {
			if err := f.SyncNew(nil); err != nil {
				b.Fatal(err)
			}
		}
	}
}
