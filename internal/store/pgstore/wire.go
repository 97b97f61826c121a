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

// spooled is a message converted to its wire form: in memory when it is
// small (memSpool), else in a temporary file.
type spooled struct {
	mem  []byte   // the wire form, when small
	f    *os.File // the wire form, when not
	size int64
	key  string // hex SHA-256 of the wire form
}

// memSpool is the largest wire form spool keeps in memory: the contents
// a delivery sends with its blob row's statement (inlineBlob), which it
// reads into memory anyway. A larger one goes to a file as it arrives.
//
// Making and deleting a temporary file per message is not free: at a
// thousand deliveries a second, ext4 spends more CPU finding a free inode
// that was not recently deleted than postino spends on the delivery.
const memSpool = inlineBlob

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

// spool converts msg to its wire form, hashing it on the way: in memory
// up to memSpool octets, in a temporary file in dir beyond. An empty
// message is store.ErrMalformed.
func spool(dir string, msg io.Reader) (*spooled, error) {
	h := sha256.New()
	sw := &spillWriter{dir: dir, limit: memSpool}
	w := &wireWriter{w: bufio.NewWriterSize(io.MultiWriter(sw, h), 32<<10)}
	_, err := io.Copy(w, msg)
	if err == nil {
		err = w.finish()
	}
	if err == nil && w.n == 0 {
		err = fmt.Errorf("%w: empty message", store.ErrMalformed)
	}
	if err != nil {
		if sw.f != nil {
			sw.f.Close()
		}
		return nil, err
	}
	sp := &spooled{size: w.n, key: hex.EncodeToString(h.Sum(nil))}
	if sw.f == nil {
		sp.mem = sw.buf
		return sp, nil
	}
	if _, err := sw.f.Seek(0, io.SeekStart); err != nil {
		sw.f.Close()
		return nil, err
	}
	sp.f = sw.f
	return sp, nil
}

// spillWriter keeps what is written in memory up to limit octets, then
// moves it to a temporary file in dir and writes there.
type spillWriter struct {
	dir   string
	limit int
	buf   []byte
	f     *os.File
}

func (w *spillWriter) Write(p []byte) (int, error) {
	if w.f == nil && len(w.buf)+len(p) <= w.limit {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	if w.f == nil {
		f, err := os.CreateTemp(w.dir, "pgstore-*.eml")
		if err != nil {
			return 0, err
		}
		// Unlinked at once: only the descriptor is used, and nothing is
		// left behind by a crash.
		os.Remove(f.Name())
		w.f = f
		if _, err := f.Write(w.buf); err != nil {
			return 0, err
		}
		w.buf = nil
	}
	return w.f.Write(p)
}

// reader returns the spooled octets from the start.
func (s *spooled) reader() io.Reader {
	if s.f == nil {
		return bytes.NewReader(s.mem)
	}
	return io.NewSectionReader(s.f, 0, s.size)
}

func (s *spooled) close() {
	if s.f != nil {
		s.f.Close()
	}
}

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
