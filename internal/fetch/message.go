package fetch

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"
)

// MarkerHeader is the header field prepended to every message postino
// fetch delivers: "X-Postino-Fetch: ACCOUNT KEY SHA256". It is how a
// message is recognised at its destination after an interruption.
const MarkerHeader = "X-Postino-Fetch"

// ID names one downloaded message: the account, its key (UIDL or derived
// identity) and the SHA-256 of its content as downloaded.
type ID struct {
	Account string
	Key     string
	SHA256  string
}

// Marker returns the header line (without line end) that identifies the
// message at its destination.
func (id ID) Marker() string {
	return MarkerHeader + ": " + id.Account + " " + id.Key + " " + id.SHA256
}

// Token returns a short file-name-safe digest of the ID, used in Maildir
// file names.
func (id ID) Token() string {
	h := sha256.Sum256([]byte(id.Account + "\x00" + id.Key + "\x00" + id.SHA256))
	return hex.EncodeToString(h[:12])
}

// String returns "ACCOUNT KEY SHA256", the value of $POSTINO_FETCH_ID.
func (id ID) String() string { return id.Account + " " + id.Key + " " + id.SHA256 }

// Message is a downloaded message held in a temporary file.
type Message struct {
	ID
	// Size is the downloaded size in octets.
	Size int64
	// HeaderSHA256 is the hex SHA-256 of the header section and the empty
	// line after it, which is what TOP n 0 returns.
	HeaderSHA256 string
	// BodySHA256 is the hex SHA-256 of the body (what follows the header
	// section's empty line) with LF line ends, as a Maildir or mbox stores
	// it, and BodySize its length in octets.
	BodySHA256 string
	BodySize   int64
	// At is when the message was downloaded.
	At time.Time

	f   *os.File
	off int64 // where the message starts in f
	num int   // its number in the server's listing
}

// Want returns what Find checks a stored copy of m against.
func (m *Message) Want() Want {
	return Want{ID: m.ID, BodySHA256: m.BodySHA256, BodySize: m.BodySize}
}

// Open returns a reader over the message as downloaded (CRLF line ends).
func (m *Message) Open() io.Reader { return io.NewSectionReader(m.f, m.off, m.Size) }

// WithMarker returns the message with the marker header prepended, with
// CRLF line ends, or with LF line ends when lf is set.
func (m *Message) WithMarker(lf bool) io.Reader {
	if lf {
		return io.MultiReader(strings.NewReader(m.Marker()+"\n"), &crlfToLF{r: m.Open()})
	}
	return io.MultiReader(strings.NewReader(m.Marker()+"\r\n"), m.Open())
}

// ReturnPath returns the address of the message's first Return-Path
// header field, or "" if it has none.
func (m *Message) ReturnPath() string {
	br := bufio.NewReader(io.LimitReader(m.Open(), 256*1024))
	for {
		line, err := br.ReadString('\n')
		t := strings.TrimRight(line, "\r\n")
		if t == "" {
			return ""
		}
		if len(t) > 12 && strings.EqualFold(t[:12], "Return-Path:") {
			v := strings.TrimSpace(t[12:])
			v = strings.TrimSuffix(strings.TrimPrefix(v, "<"), ">")
			if strings.ContainsAny(v, " \t<>") {
				return ""
			}
			return v
		}
		if err != nil {
			return ""
		}
	}
}

// spooler downloads the messages of a batch one after the other into one
// reusable temporary file.
type spooler struct {
	f   *os.File
	end int64 // where the next message goes
}

func newSpooler(dir string) (*spooler, error) {
	f, err := os.CreateTemp(dir, ".spool-*")
	if err != nil {
		return nil, fmt.Errorf("spool file: %w", err)
	}
	os.Remove(f.Name()) // nothing is left behind by a crash
	return &spooler{f: f}, nil
}

func (s *spooler) close() { s.f.Close() }

// reset empties the spool file: the messages spooled so far are no
// longer needed.
func (s *spooler) reset() error {
	s.end = 0
	return s.f.Truncate(0)
}

// spool reads a message into the spool file after the messages already
// there, computing its hashes.
func (s *spooler) spool(r io.Reader, progress func(int)) (*Message, error) {
	full := sha256.New()
	body := &lfHasher{h: sha256.New()}
	hh := &headerHasher{h: sha256.New(), bol: true, body: body}
	w := bufio.NewWriterSize(io.MultiWriter(io.NewOffsetWriter(s.f, s.end), full, hh), 64*1024)
	buf := make([]byte, 32*1024)
	var n int64
	for {
		k, err := r.Read(buf)
		if k > 0 {
			w.Write(buf[:k])
			n += int64(k)
			if progress != nil {
				progress(k)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("spool file: %w", err)
	}
	off := s.end
	s.end += n
	return &Message{
		ID:           ID{SHA256: hex.EncodeToString(full.Sum(nil))},
		Size:         n,
		HeaderSHA256: hex.EncodeToString(hh.h.Sum(nil)),
		BodySHA256:   body.sum(),
		BodySize:     body.n,
		At:           time.Now(),
		f:            s.f,
		off:          off,
	}, nil
}

// headerHasher hashes its input up to and including the first empty line,
// and passes what follows (the body) to body, if set.
type headerHasher struct {
	h    hash.Hash
	body io.Writer
	bol  bool // at the beginning of a line
	cr   bool // the line so far is just "\r"
	done bool
}

func (x *headerHasher) Write(p []byte) (int, error) {
	if x.done {
		if x.body != nil {
			x.body.Write(p)
		}
		return len(p), nil
	}
	for i, c := range p {
		switch {
		case c == '\n' && (x.bol || x.cr):
			x.h.Write(p[:i+1])
			x.done = true
			if x.body != nil {
				x.body.Write(p[i+1:])
			}
			return len(p), nil
		case c == '\n':
			x.bol, x.cr = true, false
		case c == '\r' && x.bol:
			x.bol, x.cr = false, true
		default:
			x.bol, x.cr = false, false
		}
	}
	x.h.Write(p)
	return len(p), nil
}

// lfHasher hashes and counts its input with CRLF line ends converted to LF
// (lone CRs are kept), as crlfToLF converts it.
type lfHasher struct {
	h  hash.Hash
	n  int64
	cr bool // the last octet was a CR not yet passed on
}

func (x *lfHasher) Write(p []byte) (int, error) {
	start := 0
	for i, c := range p {
		if x.cr {
			x.cr = false
			if c != '\n' {
				x.put([]byte{'\r'})
			}
		}
		if c == '\r' {
			x.put(p[start:i])
			start = i + 1
			x.cr = true
		}
	}
	x.put(p[start:])
	return len(p), nil
}

func (x *lfHasher) put(b []byte) {
	x.h.Write(b)
	x.n += int64(len(b))
}

// sum passes on a final lone CR and returns the hex digest.
func (x *lfHasher) sum() string {
	if x.cr {
		x.cr = false
		x.put([]byte{'\r'})
	}
	return hex.EncodeToString(x.h.Sum(nil))
}

// HeaderHash returns the hex SHA-256 of the header section of msg and the
// empty line after it (all of msg when it has no empty line), as
// Message.HeaderSHA256 does. It is applied to TOP n 0 responses.
func HeaderHash(r io.Reader) (string, error) {
	hh := &headerHasher{h: sha256.New(), bol: true}
	if _, err := io.Copy(hh, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(hh.h.Sum(nil)), nil
}

// crlfToLF converts CRLF line ends to LF; lone CRs are kept.
type crlfToLF struct {
	r      io.Reader
	cr     bool // the last byte read was a CR not yet passed on
	in     []byte
	out    []byte
	err    error
	inited bool
}

func (c *crlfToLF) Read(p []byte) (int, error) {
	if !c.inited {
		c.in = make([]byte, 32*1024)
		c.inited = true
	}
	for len(c.out) == 0 {
		if c.err != nil {
			if c.cr {
				c.cr = false
				c.out = append(c.out[:0], '\r')
				break
			}
			return 0, c.err
		}
		n, err := c.r.Read(c.in)
		c.err = err
		out := c.out[:0]
		for _, b := range c.in[:n] {
			if c.cr {
				c.cr = false
				if b != '\n' {
					out = append(out, '\r')
				}
			}
			if b == '\r' {
				c.cr = true
				continue
			}
			out = append(out, b)
		}
		c.out = out
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// lfLines calls fn with each line of r converted to LF line ends
// (including the final "\n", if any).
func lfLines(r io.Reader, fn func(line []byte) error) error {
	br := bufio.NewReaderSize(r, 64*1024)
	var long []byte
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long, line...)
			continue
		}
		if long != nil {
			line = append(long, line...)
			long = nil
		}
		if len(line) > 0 {
			if n := len(line); n >= 2 && line[n-1] == '\n' && line[n-2] == '\r' {
				line = append(line[:n-2:n-2], '\n')
			}
			if ferr := fn(line); ferr != nil {
				return ferr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// isFromLine reports whether an mbox line must be quoted (mboxrd): it is
// "From " preceded by any number of '>'.
func isFromLine(line []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(line, ">"), []byte("From "))
}
