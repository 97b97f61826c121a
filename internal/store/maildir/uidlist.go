package maildir

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// UIDLs imported from Dovecot
//
// A Maildir moved from Dovecot keeps Dovecot's dovecot-uidlist file. For
// every message listed there, this package answers UIDL with the UIDL
// Dovecot gave it, so that clients which leave mail on the server do not
// download everything again: the message's "P" extension (a POP3 UIDL that
// Dovecot saved or migrated) when present, otherwise Dovecot's
// pop3_uidl_format expanded for the message. The lookup key is the base of
// the file name (up to the first ',' or ':'), so the UIDL survives any
// rename of the file (flags, S= and W= fields). Messages delivered by this
// package are never looked up: their unique names
// ("<secs>.M<usecs>P<pid>Q<n>R<16 hex>...") are not Dovecot's, so even if
// Dovecot were run on the Maildir again and listed them, their UIDLs would
// not change. This package never writes dovecot-uidlist.

// DefaultDovecotUIDLFormat is Dovecot's default pop3_uidl_format: the IMAP
// UID and the UIDVALIDITY of the mailbox, each as 8 lowercase hex digits.
const DefaultDovecotUIDLFormat = "%08Xu%08Xv"

// uidlistName is Dovecot's per-Maildir UID list.
const uidlistName = "dovecot-uidlist"

// maxUIDListLine bounds one line of dovecot-uidlist (a file name is at most
// 255 octets; extensions add a few dozen).
const maxUIDListLine = 4096

// ErrUIDLFormat is wrapped by the errors of ParseUIDLFormat.
var ErrUIDLFormat = errors.New("maildir: invalid Dovecot pop3_uidl_format")

// UIDLFormat is a parsed Dovecot pop3_uidl_format template. The zero value
// expands to nothing; use ParseUIDLFormat.
type UIDLFormat struct {
	src   string
	parts []uidlPart
}

// uidlPart is a literal (v == 0) or a variable of a UIDLFormat.
type uidlPart struct {
	lit   string
	v     byte // 'u', 'v', 'f', 'g'
	width int
	zero  bool // pad with '0' to width instead of truncating to it
	hex   bool // X: the number in lowercase hex
	lower bool // L
	upper bool // U
}

// String returns the template as given to ParseUIDLFormat.
func (f UIDLFormat) String() string { return f.src }

// ParseUIDLFormat parses a Dovecot pop3_uidl_format template. It accepts
// what Dovecot 2.3 accepts for a Maildir: %u (IMAP UID), %v (UIDVALIDITY),
// %f (the message's file name as recorded in dovecot-uidlist, without the
// ":2," flags) and %g (the GUID of the "G" extension, else that same file
// name), each with an optional '0' flag and width ("%08u") and the modifiers
// X (lowercase hex, as Dovecot prints it), L and U (lower and upper case),
// and %% for '%'. %m (MD5 of the headers) is refused: Dovecot computes it
// for mbox only, and it would mean reading every message at login. The
// long forms (%{uid}) are refused like Dovecot 2.3 does in this setting.
// The template must contain at least one variable.
func ParseUIDLFormat(s string) (UIDLFormat, error) {
	f := UIDLFormat{src: s}
	var lit strings.Builder
	vars := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if c < 0x21 || c > 0x7e {
				return UIDLFormat{}, fmt.Errorf("%w: %q: octet %#x cannot be part of a UIDL", ErrUIDLFormat, s, c)
			}
			lit.WriteByte(c)
			continue
		}
		i++
		if i < len(s) && s[i] == '%' {
			lit.WriteByte('%')
			continue
		}
		p := uidlPart{}
		if i < len(s) && s[i] == '0' {
			p.zero = true
			i++
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' && p.width < 100 {
			p.width = p.width*10 + int(s[i]-'0')
			i++
		}
		for ; i < len(s); i++ {
			switch s[i] {
			case 'X':
				p.hex = true
				continue
			case 'L':
				p.lower = true
				continue
			case 'U':
				p.upper = true
				continue
			}
			break
		}
		if i >= len(s) {
			return UIDLFormat{}, fmt.Errorf("%w: %q ends inside a variable", ErrUIDLFormat, s)
		}
		switch v := s[i]; v {
		case 'u', 'v', 'f', 'g':
			p.v = v
		case 'm':
			return UIDLFormat{}, fmt.Errorf("%w: %q: %%m (MD5 of the headers) exists only for mbox in Dovecot and would need every message read", ErrUIDLFormat, s)
		default:
			return UIDLFormat{}, fmt.Errorf("%w: %q: unknown variable %%%c (use %%u, %%v, %%f, %%g or %%%%)", ErrUIDLFormat, s, v)
		}
		if p.width > 70 {
			return UIDLFormat{}, fmt.Errorf("%w: %q: width %d is longer than a UIDL", ErrUIDLFormat, s, p.width)
		}
		if lit.Len() > 0 {
			f.parts = append(f.parts, uidlPart{lit: lit.String()})
			lit.Reset()
		}
		f.parts = append(f.parts, p)
		vars++
	}
	if lit.Len() > 0 {
		f.parts = append(f.parts, uidlPart{lit: lit.String()})
	}
	if vars == 0 {
		return UIDLFormat{}, fmt.Errorf("%w: %q has no variable, so every message would get the same UIDL", ErrUIDLFormat, s)
	}
	return f, nil
}

// expand returns the UIDL of entry e of list l.
func (f UIDLFormat) expand(l *uidList, e uidEntry) string {
	b := make([]byte, 0, 32)
	var num [20]byte
	for _, p := range f.parts {
		if p.v == 0 {
			b = append(b, p.lit...)
			continue
		}
		var val []byte
		switch p.v {
		case 'u':
			val = formatNum(num[:0], uint64(e.uid), p.hex)
		case 'v':
			val = formatNum(num[:0], uint64(l.validity), p.hex)
		case 'f':
			val = []byte(e.name)
		case 'g':
			if e.guid != "" {
				val = []byte(e.guid)
			} else {
				val = []byte(e.name)
			}
		}
		if p.width > 0 {
			if p.zero {
				// Dovecot's var_expand: '0' pads on the left, never truncates.
				for n := p.width - len(val); n > 0; n-- {
					b = append(b, '0')
				}
			} else if len(val) > p.width {
				val = val[:p.width] // a width without '0' takes a prefix
			}
		}
		start := len(b)
		b = append(b, val...)
		switch {
		case p.lower:
			for i := start; i < len(b); i++ {
				if c := b[i]; c >= 'A' && c <= 'Z' {
					b[i] = c + 'a' - 'A'
				}
			}
		case p.upper:
			for i := start; i < len(b); i++ {
				if c := b[i]; c >= 'a' && c <= 'z' {
					b[i] = c - ('a' - 'A')
				}
			}
		}
	}
	return string(b)
}

// formatNum appends n in decimal or lowercase hex (Dovecot's X modifier
// prints "%llx").
func formatNum(dst []byte, n uint64, hex bool) []byte {
	if hex {
		return strconv.AppendUint(dst, n, 16)
	}
	return strconv.AppendUint(dst, n, 10)
}

// uidList is a parsed dovecot-uidlist.
type uidList struct {
	version  int
	validity uint32
	next     uint32
	entries  map[string]uidEntry // by base of the file name
}

// uidEntry is one message of a dovecot-uidlist.
type uidEntry struct {
	uid  uint32
	name string // file name as recorded, without ":2,..." flags
	guid string // "G" extension
	pop3 string // "P" extension: the POP3 UIDL saved by Dovecot
}

// errUIDList is wrapped by the errors of parseUIDList.
var errUIDList = errors.New("maildir: malformed dovecot-uidlist")

// parseUIDList reads a dovecot-uidlist: a header line, then one line per
// message. Versions 1 and 3 are understood:
//
//	1 <uidvalidity> <nextuid>
//	<uid> <file name>
//
//	3 V<uidvalidity> N<nextuid> [G<guid>] ...
//	<uid> [<ext><value> ...] :<file name>
//
// (version 2 has the layout of version 3). A malformed header is an error:
// the whole file is then ignored (the error wraps errUIDList; a read error
// does not). A malformed message line is skipped and
// counted in bad, so one damaged line costs one message its imported UIDL,
// not the whole mailbox. When a base appears twice, the first line wins.
// When keep is not nil, only the entries whose base is in keep are kept
// (the messages of the snapshot), so that memory is bounded by the
// mailbox, not by the file.
func parseUIDList(r io.Reader, keep map[string]struct{}) (l *uidList, bad int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxUIDListLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
			return nil, 0, fmt.Errorf("maildir: reading dovecot-uidlist: %w", err)
		}
		return nil, 0, fmt.Errorf("%w: empty", errUIDList)
	}
	l = &uidList{entries: make(map[string]uidEntry)}
	if err := l.parseHeader(sc.Text()); err != nil {
		return nil, 0, err
	}
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		e, ok := l.parseLine(line)
		if !ok {
			bad++
			continue
		}
		base := parseName(e.name).base
		if keep != nil {
			if _, ok := keep[base]; !ok {
				continue
			}
		}
		if _, dup := l.entries[base]; dup {
			bad++
			continue
		}
		l.entries[base] = e
	}
	if err := sc.Err(); err != nil {
		if !errors.Is(err, bufio.ErrTooLong) {
			return nil, 0, fmt.Errorf("maildir: reading dovecot-uidlist: %w", err)
		}
		// A line over maxUIDListLine stops the scanner: keep what was read.
		bad++
	}
	return l, bad, nil
}

// parseHeader parses the first line of a dovecot-uidlist.
func (l *uidList) parseHeader(h string) error {
	fields := strings.Fields(h)
	if len(fields) < 3 {
		return fmt.Errorf("%w: header %q", errUIDList, h)
	}
	switch fields[0] {
	case "1":
		l.version = 1
		v, err1 := strconv.ParseUint(fields[1], 10, 32)
		n, err2 := strconv.ParseUint(fields[2], 10, 32)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("%w: header %q", errUIDList, h)
		}
		l.validity, l.next = uint32(v), uint32(n)
	case "2", "3":
		l.version = int(fields[0][0] - '0')
		var haveV bool
		for _, f := range fields[1:] {
			switch f[0] {
			case 'V':
				v, err := strconv.ParseUint(f[1:], 10, 32)
				if err != nil {
					return fmt.Errorf("%w: header %q", errUIDList, h)
				}
				l.validity, haveV = uint32(v), true
			case 'N':
				n, err := strconv.ParseUint(f[1:], 10, 32)
				if err != nil {
					return fmt.Errorf("%w: header %q", errUIDList, h)
				}
				l.next = uint32(n)
			}
		}
		if !haveV {
			return fmt.Errorf("%w: header %q has no UIDVALIDITY", errUIDList, h)
		}
	default:
		return fmt.Errorf("%w: unknown version in header %q", errUIDList, h)
	}
	if l.validity == 0 {
		// RFC 3501 §2.3.1.1: UIDVALIDITY is a non-zero 32-bit value.
		return fmt.Errorf("%w: UIDVALIDITY 0", errUIDList)
	}
	return nil
}

// parseLine parses one message line.
func (l *uidList) parseLine(line string) (uidEntry, bool) {
	var e uidEntry
	sp := strings.IndexByte(line, ' ')
	if sp <= 0 {
		return e, false
	}
	u, err := strconv.ParseUint(line[:sp], 10, 32)
	if err != nil || u == 0 {
		// RFC 3501 §2.3.1.1: UIDs are non-zero 32-bit values.
		return e, false
	}
	e.uid = uint32(u)
	rest := line[sp+1:]
	if l.version == 1 {
		e.name = rest
	} else {
		// The file name follows the first word that starts with ':', as
		// Dovecot reads it: an extension's value (a POP3 UIDL) may
		// contain ':' itself.
		colon := -1
		if strings.HasPrefix(rest, ":") {
			colon = 0
		} else if i := strings.Index(rest, " :"); i >= 0 {
			colon = i + 1
		}
		if colon < 0 {
			return e, false
		}
		// Extensions: "<letter><value>" separated by spaces.
		for exts := rest[:colon]; exts != ""; {
			var ext string
			ext, exts, _ = strings.Cut(exts, " ")
			if ext == "" {
				continue
			}
			switch ext[0] {
			case 'G':
				e.guid = ext[1:]
			case 'P':
				e.pop3 = ext[1:]
			}
		}
		e.name = rest[colon+1:]
	}
	// The flags after ':' are not part of the recorded name.
	if i := strings.IndexByte(e.name, ':'); i >= 0 {
		e.name = e.name[:i]
	}
	if e.name == "" || strings.ContainsAny(e.name, "/\x00") {
		return e, false
	}
	return e, true
}

// uidl returns the UIDL Dovecot gave the message with base name base, and
// whether the list has one for it that can be used verbatim (1 to 70
// octets in 0x21-0x7E, RFC 1939 §7).
func (l *uidList) uidl(f UIDLFormat, base string) (string, bool) {
	if l == nil {
		return "", false
	}
	e, ok := l.entries[base]
	if !ok {
		return "", false
	}
	u := e.pop3
	if u == "" {
		u = f.expand(l, e)
	}
	return u, validUID(u)
}

// ownBase reports whether base has the form of the unique names this
// package writes: "<secs>.M<usecs>P<pid>Q<counter>R<16 hex>" optionally
// followed by "." and a host name. Dovecot's own names have no Q...R part.
func ownBase(base string) bool {
	digits := func(s string) (string, bool) {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return s[i:], i > 0
	}
	s, ok := digits(base)
	for _, sep := range []string{".M", "P", "Q"} {
		if !ok || !strings.HasPrefix(s, sep) {
			return false
		}
		s, ok = digits(s[len(sep):])
	}
	if !ok || len(s) < 17 || s[0] != 'R' {
		return false
	}
	for i := 1; i < 17; i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return len(s) == 17 || s[17] == '.'
}
