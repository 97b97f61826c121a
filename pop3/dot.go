package pop3

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// dotWriter writes the body of a multi-line response (RFC 1939 §3): a line
// that begins with "." gets another "." in front ("byte-stuffing"), and
// Close writes the terminating ".\r\n". Its input is expected in wire form
// (CRLF line ends); if it does not end with a line end one is added.
type dotWriter struct {
	w   *bufio.Writer
	bol bool // at the beginning of a line
}

func newDotWriter(w *bufio.Writer) *dotWriter { return &dotWriter{w: w, bol: true} }

func (d *dotWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if d.bol && p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return n, err
			}
		}
		// Only a line that starts with '.' needs attention: copy
		// everything up to the next one in one piece.
		chunk := p
		if i := bytes.Index(p, lfDot); i >= 0 {
			chunk = p[:i+1]
		}
		p = p[len(chunk):]
		d.bol = chunk[len(chunk)-1] == '\n'
		m, err := d.w.Write(chunk)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

var lfDot = []byte("\n.")

// Close ends the multi-line response.
func (d *dotWriter) Close() error {
	if !d.bol {
		d.w.WriteString("\r\n")
	}
	_, err := d.w.WriteString(".\r\n")
	return err
}

// copyTop copies the header of a wire-form message, the empty line after
// it, and at most bodyLines lines of its body (RFC 1939 §7, TOP). whole
// reports that this was all of the message.
func copyTop(dst io.Writer, src io.Reader, bodyLines int64) (n int64, whole bool, err error) {
	br := bufio.NewReaderSize(src, 4096)
	inHeader, atLineStart := true, true
	for {
		if !inHeader && atLineStart && bodyLines <= 0 {
			_, perr := br.Peek(1)
			return n, perr == io.EOF, nil
		}
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			complete := chunk[len(chunk)-1] == '\n'
			if inHeader && atLineStart && complete && (len(chunk) == 2 && chunk[0] == '\r' || len(chunk) == 1) {
				inHeader = false // the empty line ending the header is sent
			} else if !inHeader && complete {
				bodyLines--
			}
			m, werr := dst.Write(chunk)
			n += int64(m)
			if werr != nil {
				return n, false, werr
			}
			atLineStart = complete
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
}

// dotReader reads the body of a multi-line response, removing the
// byte-stuffing and stopping at the terminating line. Line ends are
// returned exactly as received.
type dotReader struct {
	r    *bufio.Reader
	bol  bool
	done bool
	err  error
	pend []byte // rest of the current line not yet returned
}

func newDotReader(r *bufio.Reader) *dotReader { return &dotReader{r: r, bol: true} }

// errMissingTerminator means the connection ended inside a multi-line
// response.
var errMissingTerminator = errors.New("pop3: connection closed inside a multi-line response")

func (d *dotReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.done {
		return 0, io.EOF
	}
	if len(d.pend) == 0 {
		line, err := d.r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if err == io.EOF {
				err = errMissingTerminator
			}
			d.err = err
			return 0, err
		}
		if d.bol && len(line) > 0 && line[0] == '.' {
			if string(line) == ".\r\n" || string(line) == ".\n" {
				d.done = true
				return 0, io.EOF
			}
			line = line[1:]
		}
		d.bol = line[len(line)-1] == '\n' && err == nil
		d.pend = line
	}
	n := copy(p, d.pend)
	d.pend = d.pend[n:]
	return n, nil
}
