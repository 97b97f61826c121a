package maildir

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// ErrSizeMismatch is returned by the Read method of a message opened with
// Maildrop.Open when the file on disk does not yield exactly the number of
// octets recorded for it (for example a wrong W= field written by another
// program, or a file changed in place). The reader never returns more than
// the recorded size; when the file is shorter the error also wraps
// io.ErrUnexpectedEOF. The POP3 server must then abort the transfer rather
// than send a response whose length disagrees with LIST.
var ErrSizeMismatch = errors.New("maildir: message does not match its recorded size")

// bufSize is the size of the I/O buffers used for delivery and reading.
const bufSize = 32 << 10

// The wire form of a stored message is defined as follows, and both
// wireCounter and wireReader implement exactly this definition:
//
//   - every LF not preceded by CR becomes CRLF; an existing CRLF stays;
//   - a bare CR not followed by LF is copied as is;
//   - when the stored message is not empty and its last octet is not LF,
//     CRLF is appended;
//   - an empty stored message has an empty wire form.

// wireCounter computes the wire size of stored octets fed to it in order.
type wireCounter struct {
	stored int64 // octets seen
	added  int64 // CRs to insert before bare LFs
	last   byte  // last octet seen
}

// write accounts for the next stored octets.
func (c *wireCounter) write(b []byte) {
	if len(b) == 0 {
		return
	}
	prev := c.last
	rest := b
	for {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		if i > 0 {
			prev = rest[i-1]
		}
		if prev != '\r' {
			c.added++
		}
		prev = '\n'
		rest = rest[i+1:]
	}
	c.stored += int64(len(b))
	c.last = b[len(b)-1]
}

// wire returns the wire size of everything written so far.
func (c *wireCounter) wire() int64 {
	if c.stored == 0 {
		return 0
	}
	n := c.stored + c.added
	if c.last != '\n' {
		n += 2
	}
	return n
}

var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}

// wireReader streams the wire form of a stored message and checks that it
// is exactly size octets long.
type wireReader struct {
	f      io.ReadCloser
	br     *bufio.Reader
	name   string // for error messages
	size   int64  // expected wire size
	count  int64  // octets returned so far
	last   byte   // last stored octet consumed (0 before any)
	any    bool   // at least one stored octet consumed
	pendLF bool   // an LF must be emitted after an inserted CR
	eof    bool   // the stored file is exhausted
	done   bool   // the final CRLF (if any) has been scheduled
	err    error  // sticky error
}

func newWireReader(f io.ReadCloser, name string, size int64) *wireReader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(f)
	return &wireReader{f: f, br: br, name: name, size: size}
}

// Read implements io.Reader.
func (r *wireReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.br == nil {
		return 0, os.ErrClosed
	}
	n := 0
	for n < len(p) {
		if r.pendLF {
			p[n] = '\n'
			n++
			r.pendLF = false
			continue
		}
		if r.eof {
			if !r.done {
				r.done = true
				if r.any && r.last != '\n' {
					p[n] = '\r'
					n++
					r.pendLF = true
					continue
				}
			}
			r.err = io.EOF
			break
		}
		if r.br.Buffered() == 0 {
			if _, err := r.br.Peek(1); err != nil {
				if err == io.EOF {
					r.eof = true
					continue
				}
				r.err = fmt.Errorf("maildir: reading %s: %w", r.name, err)
				break
			}
		}
		b, _ := r.br.Peek(r.br.Buffered())
		if room := len(p) - n; len(b) > room {
			b = b[:room]
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			copy(p[n:], b)
			n += len(b)
			r.last = b[len(b)-1]
			r.any = true
			_, _ = r.br.Discard(len(b))
			continue
		}
		// Copy up to the LF; there is room for at least one more octet
		// because i < len(b) <= room.
		copy(p[n:], b[:i])
		n += i
		prev := r.last
		if i > 0 {
			prev = b[i-1]
		}
		_, _ = r.br.Discard(i + 1)
		r.last = '\n'
		r.any = true
		if prev == '\r' {
			p[n] = '\n'
		} else {
			p[n] = '\r'
			r.pendLF = true
		}
		n++
	}
	if r.count+int64(n) > r.size {
		n = int(r.size - r.count)
		r.count = r.size
		r.err = fmt.Errorf("%w: %s is longer than %d octets", ErrSizeMismatch, r.name, r.size)
		return n, r.err
	}
	r.count += int64(n)
	if r.err == io.EOF && r.count != r.size {
		r.err = fmt.Errorf("%w: %s yields %d octets, %d recorded: %w",
			ErrSizeMismatch, r.name, r.count, r.size, io.ErrUnexpectedEOF)
	}
	if r.err != nil && n > 0 && r.err != io.EOF {
		// Deliver the octets read so far together with the error.
		return n, r.err
	}
	if n > 0 {
		return n, nil
	}
	return 0, r.err
}

// Close closes the underlying file. It is safe to call more than once.
func (r *wireReader) Close() error {
	if r.br == nil {
		return nil
	}
	r.br.Reset(nil)
	readerPool.Put(r.br)
	r.br = nil
	if r.err == nil {
		r.err = os.ErrClosed
	}
	return r.f.Close()
}
