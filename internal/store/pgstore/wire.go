package pgstore

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/postino-mail/postino/internal/store"
)

// The wire form of a message, which is what a blob holds (RFC 1939 §3:
// POP3 sends CRLF line ends), is defined as in internal/store/maildir:
//
//   - every LF not preceded by CR becomes CRLF; an existing CRLF stays;
//   - a bare CR not followed by LF is copied as is;
//   - when the message is not empty and its last octet is not LF, CRLF
//     is appended.

// spooled is a message converted to its wire form in a temporary file.
type spooled struct {
	f    *os.File
	size int64
	key  string // hex SHA-256 of the wire form
}

// spool writes msg's wire form to a temporary file in dir, hashing it on
// the way. An empty message is store.ErrMalformed.
// spoolPrefixes name the temporary files of deliveries (pgstore-) and of
// the queue's messages (queue-, internal/queue), each unlinked right after
// it is made.
var spoolPrefixes = []string{"pgstore-", "queue-"}

// cleanSpool removes the temporary files a crash between making and
// unlinking them left in dir (SIGKILL in that instant). A process still
// writing one holds it open: removing its name changes nothing for it.
// Only the node's own spool folder is cleaned, never os.TempDir().
func cleanSpool(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		for _, p := range spoolPrefixes {
			if e.Type().IsRegular() && strings.HasPrefix(e.Name(), p) {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}

func spool(dir string, msg io.Reader) (*spooled, error) {
	f, err := os.CreateTemp(dir, "pgstore-*.eml")
	if err != nil {
		return nil, err
	}
	// Unlinked at once: only the descriptor is used, and nothing is left
	// behind by a crash.
	os.Remove(f.Name())
	h := sha256.New()
	w := &wireWriter{w: bufio.NewWriterSize(io.MultiWriter(f, h), 32<<10)}
	if _, err := io.Copy(w, msg); err != nil {
		f.Close()
		return nil, err
	}
	if err := w.finish(); err != nil {
		f.Close()
		return nil, err
	}
	if w.n == 0 {
		f.Close()
		return nil, fmt.Errorf("%w: empty message", store.ErrMalformed)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return &spooled{f: f, size: w.n, key: hex.EncodeToString(h.Sum(nil))}, nil
}

// reader returns the spooled octets from the start.
func (s *spooled) reader() io.Reader { return io.NewSectionReader(s.f, 0, s.size) }

func (s *spooled) close() { s.f.Close() }

// wireWriter writes the wire form of what is written to it.
type wireWriter struct {
	w    *bufio.Writer
	last byte  // last octet received
	n    int64 // octets written out
}

func (w *wireWriter) Write(p []byte) (int, error) {
	for i, c := range p {
		if c == '\n' && w.last != '\r' {
			if err := w.w.WriteByte('\r'); err != nil {
				return i, err
			}
			w.n++
		}
		if err := w.w.WriteByte(c); err != nil {
			return i, err
		}
		w.n++
		w.last = c
	}
	return len(p), nil
}

// finish ends the message with CRLF if needed and flushes.
func (w *wireWriter) finish() error {
	if w.n > 0 && w.last != '\n' {
		w.w.WriteString("\r\n")
		w.n += 2
	}
	return w.w.Flush()
}

// wireBytes returns the wire form of b, which ends in LF (or is empty):
// no CRLF is appended.
func wireBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	var out bytes.Buffer
	w := &wireWriter{w: bufio.NewWriter(&out)}
	w.Write(b)
	w.w.Flush()
	return out.Bytes()
}
