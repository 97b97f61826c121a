package mailauth

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxHeaderBytes is the largest header block (all header fields up to the
// empty line) the checks read. A message with a larger header is refused:
// a forged Authentication-Results field could otherwise hide past the
// part that was read.
const MaxHeaderBytes = 1 << 20

// MaxHeaderFields is the largest number of header fields the checks read.
const MaxHeaderFields = 10000

// HeaderError is a header block that cannot be read within the limits.
type HeaderError struct {
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *HeaderError) Error() string { return "mailauth: message header: " + e.Reason }

// field is one header field as it is in the message.
type field struct {
	// name is the field name, without the white space that may precede
	// the colon.
	name string
	// colon is the offset of the colon in raw.
	colon int
	// raw is the whole field, every line with its CRLF.
	raw []byte
}

// value returns the field's body unfolded (RFC 5322 §2.2.3): the text
// after the colon with the CRLFs of folding removed.
func (f field) value() string {
	v := f.raw[f.colon+1:]
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return strings.TrimSpace(string(v))
}

// is reports whether the field is named name (case-insensitively, RFC
// 5322 §1.2.2).
func (f field) is(name string) bool { return strings.EqualFold(f.name, name) }

// header is a message's header block.
type header struct {
	fields []field
	// size is the length of the block in the message, including the empty
	// line that ends it when there is one.
	size int64
	// end is the empty line that ends the block ("" at EOF).
	end []byte
}

// get returns the fields named name, in order.
func (h *header) get(name string) []field {
	var out []field
	for _, f := range h.fields {
		if f.is(name) {
			out = append(out, f)
		}
	}
	return out
}

// readHeader reads the header block of a message (RFC 5322 §2.2: fields
// up to the first empty line; a message that is all header ends at EOF)
// without reading the body. Lines end in CRLF (the MX spools CRLF); a bare
// LF is accepted as a line end too. It returns a *HeaderError for a block
// over MaxHeaderBytes or MaxHeaderFields, or a line that is neither a
// field nor its continuation.
func readHeader(r io.Reader) (*header, error) {
	br := bufio.NewReaderSize(r, 4<<10)
	h := &header{}
	for {
		line, err := readLine(br, MaxHeaderBytes-h.size)
		if err != nil {
			return nil, err
		}
		if len(line) == 0 { // EOF: all header
			return h, nil
		}
		h.size += int64(len(line))
		if bytes.Equal(line, []byte("\r\n")) || bytes.Equal(line, []byte("\n")) {
			h.end = line
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(h.fields) == 0 {
				return nil, &HeaderError{Reason: "continuation line before the first field"}
			}
			last := &h.fields[len(h.fields)-1]
			last.raw = append(last.raw, line...)
			continue
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, &HeaderError{Reason: fmt.Sprintf("line %d is not a header field", len(h.fields)+1)}
		}
		name := string(bytes.TrimRight(line[:colon], " \t"))
		// RFC 5322 §3.6.8: a field name is printable ASCII but colon.
		for i := 0; i < len(name); i++ {
			if name[i] <= ' ' || name[i] > '~' {
				return nil, &HeaderError{Reason: fmt.Sprintf("invalid field name %q", name)}
			}
		}
		if len(h.fields) == MaxHeaderFields {
			return nil, &HeaderError{Reason: fmt.Sprintf("more than %d fields", MaxHeaderFields)}
		}
		h.fields = append(h.fields, field{name: name, colon: colon, raw: append([]byte(nil), line...)})
	}
}

// readLine reads one line with its line end, at most limit octets; an
// empty result means EOF.
func readLine(br *bufio.Reader, limit int64) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if int64(len(line)) > limit {
			return nil, &HeaderError{Reason: fmt.Sprintf("larger than %d octets", MaxHeaderBytes)}
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return line, nil
		default:
			return nil, err
		}
	}
}
