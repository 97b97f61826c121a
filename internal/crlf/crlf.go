// Package crlf normalises the line ends of a message: every way a message
// enters postino (SMTP intake, the outbound queue, and therefore deliver,
// forwarding and DSNs) goes through the same Normalizer, so no hop after
// postino can see a line end postino did not see.
package crlf

import (
	"errors"
	"io"
)

// ErrNUL is the error of a Normalizer that rejects NUL octets and met one.
var ErrNUL = errors.New("NUL octet in message data")

// Normalizer passes message data through, rewriting every bare CR and
// every bare LF as CRLF (RFC 5321 §2.3.8: they must not appear in SMTP
// data; rewriting them means no later hop can read a line end we did not
// read, which is what SMTP smuggling exploits). With RejectNUL it fails
// with ErrNUL on a NUL octet. It reads from its source in chunks and
// never holds more than two chunks.
type Normalizer struct {
	src       io.Reader
	buf       []byte
	out       []byte // pending output
	pendingCR bool
	rejectNUL bool
	err       error
	bare      int // number of bare CR or LF rewritten
}

// NewNormalizer returns a Normalizer reading from r; rejectNUL makes a NUL
// octet an error (ErrNUL) instead of data.
func NewNormalizer(r io.Reader, rejectNUL bool) *Normalizer {
	return &Normalizer{src: r, buf: make([]byte, 32*1024), rejectNUL: rejectNUL}
}

// Bare returns how many bare CRs and bare LFs were rewritten so far.
func (n *Normalizer) Bare() int { return n.bare }

// Read implements io.Reader.
func (n *Normalizer) Read(p []byte) (int, error) {
	for len(n.out) == 0 {
		if n.err != nil {
			return 0, n.err
		}
		k, err := n.src.Read(n.buf)
		n.process(n.buf[:k])
		if err != nil {
			if err == io.EOF && n.pendingCR {
				n.pendingCR = false
				n.bare++
				n.out = append(n.out, '\r', '\n')
			}
			if n.err == nil {
				n.err = err
			}
		}
	}
	c := copy(p, n.out)
	n.out = n.out[c:]
	return c, nil
}

func (n *Normalizer) process(chunk []byte) {
	if n.err != nil {
		return
	}
	out := n.out[:0]
	for _, c := range chunk {
		if n.pendingCR {
			n.pendingCR = false
			out = append(out, '\r', '\n')
			if c == '\n' {
				continue
			}
			n.bare++ // a CR not followed by LF
		}
		switch c {
		case '\r':
			n.pendingCR = true
		case '\n':
			n.bare++ // an LF without CR
			out = append(out, '\r', '\n')
		case 0:
			if n.rejectNUL {
				n.err = ErrNUL
				n.out = nil
				return
			}
			out = append(out, c)
		default:
			out = append(out, c)
		}
	}
	n.out = out
}
