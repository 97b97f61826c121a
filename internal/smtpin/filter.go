package smtpin

import (
	"errors"
	"io"
)

// errNUL rejects a message containing a NUL octet.
var errNUL = errors.New("NUL octet in message data")

// normalizer passes message data through, rewriting every bare CR and
// every bare LF as CRLF (RFC 5321 §2.3.8: they must not appear in SMTP
// data; rewriting them means no later hop can see a line end we did not
// see) and failing with errNUL on a NUL octet. It reads from its source in
// chunks and never holds more than two chunks.
type normalizer struct {
	src       io.Reader
	buf       []byte
	out       []byte // pending output
	pendingCR bool
	err       error
	bare      int // number of bare CR or LF rewritten
}

func newNormalizer(r io.Reader) *normalizer {
	return &normalizer{src: r, buf: make([]byte, 32*1024)}
}

func (n *normalizer) Read(p []byte) (int, error) {
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

func (n *normalizer) process(chunk []byte) {
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
			n.err = errNUL
			n.out = nil
			return
		default:
			out = append(out, c)
		}
	}
	n.out = out
}
