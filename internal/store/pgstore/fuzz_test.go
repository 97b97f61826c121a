package pgstore

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/postino-mail/postino/internal/store"
)

// wireReference is the wire form by its definition, one octet at a time.
func wireReference(in []byte) []byte {
	var out []byte
	var prev byte
	for _, c := range in {
		if c == '\n' && prev != '\r' {
			out = append(out, '\r')
		}
		out = append(out, c)
		prev = c
	}
	if len(in) > 0 && prev != '\n' {
		out = append(out, '\r', '\n')
	}
	return out
}

// wireSeeds are messages whose line ends exercise the wire form.
var wireSeeds = []string{"", "a", "\n", "\r", "\r\n", "a\nb", "a\r\nb\r\n", "\r\r\n\n", "x\r", ".\r\n", "\x00\n\xff"}

// FuzzWireForm: whatever a message holds and however it is split into
// writes, wireWriter produces its wire form by the definition (and
// wireBytes that of whole lines). It runs in memory; TestSpoolWireForm
// checks that spool, which writes through it to a file, agrees.
func FuzzWireForm(f *testing.F) {
	for _, s := range wireSeeds {
		f.Add([]byte(s), uint8(0))
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, in []byte, split uint8) {
		var out bytes.Buffer
		w := &wireWriter{w: bufio.NewWriter(&out)}
		// Written in pieces of split+1 octets (1 to 256).
		for rest := in; len(rest) > 0; {
			n := min(int(split)+1, len(rest))
			w.Write(rest[:n])
			rest = rest[n:]
		}
		if err := w.finish(); err != nil {
			t.Fatal(err)
		}
		want := wireReference(in)
		if !bytes.Equal(out.Bytes(), want) || w.n != int64(len(want)) {
			t.Fatalf("in %q: got %q (n %d), want %q", in, out.Bytes(), w.n, want)
		}
		if len(in) > 0 && in[len(in)-1] == '\n' && !bytes.Equal(wireBytes(in), want) {
			// A prefix of whole lines: its wire form alone.
			t.Fatalf("wireBytes(%q) = %q, want %q", in, wireBytes(in), want)
		}
	})
}

// TestSpoolWireForm: spool stores the wire form, its size and its
// SHA-256, read in one piece or octet by octet; empty is ErrMalformed.
func TestSpoolWireForm(t *testing.T) {
	dir := t.TempDir()
	for _, s := range append(wireSeeds, strings.Repeat("line\n", 20000)) {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(s)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			sp, err := spool(dir, r)
			if s == "" {
				if !errors.Is(err, store.ErrMalformed) {
					t.Fatalf("empty message: %v", err)
				}
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(sp.reader())
			sp.close()
			want := wireReference([]byte(s))
			sum := sha256.Sum256(want)
			if err != nil || !bytes.Equal(got, want) || sp.size != int64(len(want)) || sp.key != hex.EncodeToString(sum[:]) {
				t.Fatalf("in %q: got %q (size %d, key %s, %v)", s, got, sp.size, sp.key, err)
			}
		}
	}
}

// FuzzSizedReader: a blob longer or shorter than its recorded size is
// an error, never more or fewer octets than recorded.
func FuzzSizedReader(f *testing.F) {
	f.Add([]byte("hello\r\n"), int64(7))
	f.Add([]byte("hello\r\n"), int64(3))
	f.Add([]byte("hi"), int64(9))
	f.Fuzz(func(t *testing.T, blob []byte, size int64) {
		if size < 0 || size > 1<<20 {
			return
		}
		r := &sizedReader{rc: io.NopCloser(iotest.HalfReader(bytes.NewReader(blob))), left: size, cancel: func() {}}
		got, err := io.ReadAll(r)
		if int64(len(got)) > size {
			t.Fatalf("read %d octets, recorded %d", len(got), size)
		}
		if (int64(len(blob)) == size) != (err == nil) {
			t.Fatalf("blob %d octets, recorded %d: err %v", len(blob), size, err)
		}
	})
}
