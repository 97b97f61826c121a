package milter

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	gomilter "github.com/d--j/go-milter"
)

// Limits of the header block read from a message and rewritten by a
// filter.
const (
	// MaxHeaderBytes is the largest header block sent to a filter (and
	// the largest a filter's changes may make).
	MaxHeaderBytes = 1 << 20
	// MaxHeaderFields is the largest number of fields in it.
	MaxHeaderFields = 10000
	// MaxBodyReplacement is the largest body a filter may send back.
	MaxBodyReplacement = 64 << 20
)

// Errors of the header parser and of applying a filter's changes.
var (
	// ErrHeaderTooBig: the message's header block is over MaxHeaderBytes
	// or MaxHeaderFields.
	ErrHeaderTooBig = errors.New("milter: message header too big")
	// ErrBadModification: a filter sent a header change that cannot be
	// applied (an invalid field name or value).
	ErrBadModification = errors.New("milter: invalid header change")
)

// field is one header field as it is in the message: its name and the
// whole raw field, continuation lines included, ending in CRLF.
type field struct {
	name string
	raw  string
}

// value returns the field's value as sent to a filter: what follows the
// colon, without the final CRLF, folded lines joined by LF (as Postfix
// sends them), with the leading space unless leadingSpace is false.
func (f field) value(leadingSpace bool) string {
	v := f.raw[len(f.name)+1:]
	v = strings.TrimSuffix(v, "\r\n")
	v = strings.ReplaceAll(v, "\r\n", "\n")
	if !leadingSpace {
		v = strings.TrimLeft(v, " \t")
	}
	return v
}

// header is a message's header block.
type header struct {
	fields []field
	// size is the octets of the header block in the message, including
	// the empty line that ends it (when there is one): the body starts
	// there.
	size int64
}

// readHeader reads the header block of a message (CRLF line ends). A
// message without an empty line is all header. A line that is neither a
// field nor a continuation (no colon) ends the header, as in RFC 5322
// §2.2 the body follows the first line that is not a field; it is then
// the first line of the body.
func readHeader(r io.Reader) (*header, error) {
	br := bufio.NewReaderSize(r, 4096)
	h := &header{}
	var cur *field
	var total int64
	for {
		line, err := readLine(br, MaxHeaderBytes-total)
		if err != nil && err != io.EOF {
			return nil, err
		}
		if len(line) == 0 {
			return h, nil // end of message
		}
		if line == "\r\n" || line == "\n" {
			h.size = total + int64(len(line))
			return h, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur == nil {
				// RFC 5322 §2.2.3: a continuation needs a field; a
				// leading one starts the body.
				return h, nil
			}
			cur.raw += crlf(line)
		} else {
			name, _, ok := strings.Cut(line, ":")
			if !ok || !validName(name) {
				return h, nil
			}
			if len(h.fields) >= MaxHeaderFields {
				return nil, fmt.Errorf("%w: over %d fields", ErrHeaderTooBig, MaxHeaderFields)
			}
			h.fields = append(h.fields, field{name: name, raw: crlf(line)})
			cur = &h.fields[len(h.fields)-1]
		}
		total += int64(len(line))
		h.size = total
		if err == io.EOF {
			return h, nil
		}
	}
}

// readLine reads one line, refusing one that would go past room octets.
func readLine(br *bufio.Reader, room int64) (string, error) {
	var b []byte
	for {
		frag, err := br.ReadSlice('\n')
		b = append(b, frag...)
		if int64(len(b)) > room {
			return "", fmt.Errorf("%w: over %d octets", ErrHeaderTooBig, MaxHeaderBytes)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return string(b), err
	}
}

// crlf ends line with CRLF.
func crlf(line string) string {
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	return line + "\r\n"
}

// validName reports whether s is a field name: RFC 5322 §3.6.8 ftext,
// printable US-ASCII except colon, at least one character.
func validName(s string) bool {
	if s == "" || len(s) > 998 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// formatField builds a field from a filter's name and value. The value's
// lines (split at LF or CRLF) after the first are continuation lines:
// each must start with white space (one is added where a filter left it
// out, so a value can never start a new field). leadingSpace tells
// whether the filter gave the space after the colon itself.
func formatField(name, value string, leadingSpace bool) (field, error) {
	if !validName(name) {
		return field{}, fmt.Errorf("%w: field name %q", ErrBadModification, name)
	}
	if strings.ContainsAny(value, "\x00") {
		return field{}, fmt.Errorf("%w: NUL in the value of %s", ErrBadModification, name)
	}
	value = strings.ReplaceAll(value, "\r\n", "\n")
	if strings.ContainsRune(value, '\r') {
		return field{}, fmt.Errorf("%w: bare CR in the value of %s", ErrBadModification, name)
	}
	lines := strings.Split(value, "\n")
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte(':')
	for i, l := range lines {
		if i == 0 {
			if !leadingSpace || (l != "" && l[0] != ' ' && l[0] != '\t') {
				b.WriteByte(' ')
			}
		} else {
			if strings.TrimSpace(l) == "" {
				continue // RFC 5322 §3.2.2: no line of white space only
			}
			b.WriteString("\r\n")
			if l[0] != ' ' && l[0] != '\t' {
				b.WriteByte('\t')
			}
		}
		b.WriteString(l)
	}
	b.WriteString("\r\n")
	return field{name: name, raw: b.String()}, nil
}

// bytes returns the header block as it is written.
func (h *header) bytes() []byte {
	var b bytes.Buffer
	for _, f := range h.fields {
		b.WriteString(f.raw)
	}
	return b.Bytes()
}

// apply applies a filter's header changes in order, as Sendmail and
// Postfix do:
//
//   - add header (SMFIR_ADDHEADER) appends the field at the end;
//   - insert header (SMFIR_INSHEADER) puts it after the index-th field
//     (0: at the top);
//   - change header (SMFIR_CHGHEADER) replaces the index-th field of that
//     name (1-based, case-insensitive), deletes it when the value is
//     empty, and adds the field when there are fewer (Sendmail's
//     smfi_chgheader).
//
// Other modifications are not header changes and are skipped. Each
// change that cannot be applied is returned as an error (joined) and
// skipped; so is one that would take the header block over
// MaxHeaderBytes or MaxHeaderFields.
func (h *header) apply(mods []gomilter.ModifyAction, leadingSpace bool) error {
	var errs []error
	size := 0
	for _, f := range h.fields {
		size += len(f.raw)
	}
	for _, m := range mods {
		switch m.Type {
		case gomilter.ActionAddHeader, gomilter.ActionInsertHeader, gomilter.ActionChangeHeader:
		default:
			continue
		}
		if m.Type == gomilter.ActionChangeHeader && m.HeaderValue == "" {
			if i := h.nth(m.HeaderName, int(m.HeaderIndex)); i >= 0 {
				size -= len(h.fields[i].raw)
				h.fields = append(h.fields[:i], h.fields[i+1:]...)
			}
			continue
		}
		f, err := formatField(m.HeaderName, m.HeaderValue, leadingSpace)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		i := -1
		if m.Type == gomilter.ActionChangeHeader {
			i = h.nth(m.HeaderName, int(m.HeaderIndex))
		}
		grow := len(f.raw)
		if i >= 0 {
			grow -= len(h.fields[i].raw)
		}
		if size+grow > MaxHeaderBytes || (i < 0 && len(h.fields) >= MaxHeaderFields) {
			errs = append(errs, fmt.Errorf("%w: the changes make the header too big", ErrBadModification))
			continue
		}
		size += grow
		switch {
		case i >= 0:
			h.fields[i] = f
		case m.Type == gomilter.ActionInsertHeader:
			at := min(int(m.HeaderIndex), len(h.fields))
			h.fields = append(h.fields[:at], append([]field{f}, h.fields[at:]...)...)
		default:
			h.fields = append(h.fields, f)
		}
	}
	return errors.Join(errs...)
}

// nth returns the position of the index-th field named name (1-based,
// case-insensitive), or -1. Index 0 is taken as 1, as Postfix does.
func (h *header) nth(name string, index int) int {
	index = max(index, 1)
	for i, f := range h.fields {
		if strings.EqualFold(f.name, name) {
			index--
			if index == 0 {
				return i
			}
		}
	}
	return -1
}
