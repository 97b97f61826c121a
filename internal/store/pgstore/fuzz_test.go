package pgstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
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

// FuzzWireForm: whatever a message holds and however it is split into
// reads, the spooled octets, size and key are those of its wire form.
func FuzzWireForm(f *testing.F) {
	for _, s := range []string{"", "a", "\n", "\r", "\r\n", "a\nb", "a\r\nb\r\n", "\r\r\n\n", "x\r", ".\r\n", "\x00\n\xff"} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, in []byte, oneByte bool) {
		var r io.Reader = bytes.NewReader(in)
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		sp, err := spool(dir, r)
		if len(in) == 0 {
			if !errors.Is(err, store.ErrMalformed) {
				t.Fatalf("empty message: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		defer sp.close()
		want := wireReference(in)
		got, err := io.ReadAll(sp.reader())
		if err != nil {
			t.Fatal(err)
		}
		if in[len(in)-1] == '\n' && !bytes.Equal(wireBytes(in), want) {
			// A prefix of whole lines: its wire form alone.
			t.Fatalf("wireBytes(%q) = %q, want %q", in, wireBytes(in), want)
		}
		sum := sha256.Sum256(want)
		if !bytes.Equal(got, want) || sp.size != int64(len(want)) || sp.key != hex.EncodeToString(sum[:]) {
			t.Fatalf("in %q: got %q (size %d, key %s), want %q", in, got, sp.size, sp.key, want)
		}
	})
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
