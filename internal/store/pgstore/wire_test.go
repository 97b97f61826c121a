package pgstore

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCleanSpool: the temporary files a crash leaves in the spool folder
// are removed; anything else stays.
func TestCleanSpool(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"pgstore-123.eml", "queue-456", "spool-789", "keep.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "pgstore-dir"), 0o700)
	cleanSpool(dir)
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != "keep.txt pgstore-dir spool-789" {
		t.Fatalf("left %v", left)
	}
}

// TestSpoolMemoryAndFile: a message whose wire form fits in memSpool is
// kept in memory (no file is made), a larger one goes to an unlinked
// temporary file; both read back as their wire form, under its SHA-256.
func TestSpoolMemoryAndFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		file bool
	}{
		{"small", 100, false},
		{"at the limit", memSpool, false},
		{"over the limit", memSpool + 1, true},
		{"large", 3 * ChunkSize, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// LF lines that become CRLF: the wire form is larger than the
			// input, and the size that counts is the wire form's.
			var in strings.Builder
			for in.Len()+in.Len()/9 < tc.size-20 {
				in.WriteString("12345678\n")
			}
			want := strings.ReplaceAll(in.String(), "\n", "\r\n")
			for len(want) < tc.size {
				want += "x"
			}
			want = want[:tc.size-2] + "\r\n"
			src := strings.ReplaceAll(want, "\r\n", "\n")
			dir := t.TempDir()
			sp, err := spool(dir, strings.NewReader(src))
			if err != nil {
				t.Fatal(err)
			}
			defer sp.close()
			if (sp.f != nil) != tc.file {
				t.Fatalf("in a file: %v, want %v", sp.f != nil, tc.file)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("%d names left in the spool folder", len(ents))
			}
			got, err := io.ReadAll(sp.reader())
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(want))
			if string(got) != want || sp.size != int64(len(want)) || sp.key != hex.EncodeToString(sum[:]) {
				t.Fatalf("read %d octets (size %d), want %d; key right: %v", len(got), sp.size, len(want), sp.key == hex.EncodeToString(sum[:]))
			}
		})
	}
}
