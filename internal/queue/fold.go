package queue

import "io"

// maxLineLength is the longest line the queue sends, CRLF not included.
// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets with its CRLF;
// RFC 5322 §2.1.1: a line MUST be no more than 998 characters. It is
// Postfix's smtp_line_length_limit default.
const maxLineLength = 998

// folder is an io.Reader that breaks every line longer than
// maxLineLength octets by inserting CRLF and a space, as Postfix does for
// its smtp_line_length_limit ("to minimize the damage to MIME formatted
// mail"): in a header the piece that follows becomes a continuation line
// of the same field (RFC 5322 §2.2.3), and in a body a line that starts
// with a space cannot be taken for a MIME boundary, a header or the end
// of the data. Every output line is at most maxLineLength octets, the
// space included. Lines already short enough pass through untouched, so
// a conforming message is not changed at all.
type folder struct {
	src   io.Reader
	in    []byte
	obuf  []byte
	out   []byte // output not yet returned
	col   int    // octets on the current output line
	cr    bool   // a CR was read and is not written yet: it may end the line
	err   error  // the source's error, returned once out is empty
	folds int    // line breaks inserted
}

func newFolder(r io.Reader) *folder {
	return &folder{src: r, in: make([]byte, 32*1024)}
}

// Read implements io.Reader.
func (f *folder) Read(p []byte) (int, error) {
	for len(f.out) == 0 {
		if f.err != nil {
			return 0, f.err
		}
		f.fill()
	}
	n := copy(p, f.out)
	f.out = f.out[n:]
	return n, nil
}

// fill reads from the source and folds what it read into out.
func (f *folder) fill() {
	n, err := f.src.Read(f.in)
	f.out = f.obuf[:0]
	for _, b := range f.in[:n] {
		f.put(b)
	}
	if err != nil {
		if f.cr {
			// The source ended with a CR that no LF follows.
			f.cr = false
			f.emit('\r')
		}
		f.err = err
	}
	f.obuf = f.out
}

func (f *folder) put(b byte) {
	if f.cr {
		f.cr = false
		if b == '\n' {
			f.out = append(f.out, '\r', '\n')
			f.col = 0
			return
		}
		f.emit('\r') // a CR alone is part of the line
	}
	switch b {
	case '\r':
		f.cr = true
	case '\n':
		f.out = append(f.out, '\n')
		f.col = 0
	default:
		f.emit(b)
	}
}

// emit writes one octet of line content, breaking the line first when it
// is full.
func (f *folder) emit(b byte) {
	if f.col >= maxLineLength {
		f.out = append(f.out, '\r', '\n', ' ')
		f.col = 1
		f.folds++
	}
	f.out = append(f.out, b)
	f.col++
}

// anyRemote reports whether a recipient is outside the local domains: the
// message then leaves over SMTP and is folded at enqueue. Local copies
// are delivered as they came.
func anyRemote(rcpts []string, isLocal func(string) bool) bool {
	for _, r := range rcpts {
		if d := domainOf(r); d == "" || !isLocal(d) {
			return true
		}
	}
	return false
}
