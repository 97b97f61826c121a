package maildir

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
)

// maxUIDLen is the longest UID allowed by RFC 1939 §7.
const maxUIDLen = 70

// fileName is a parsed Maildir file name of the form
//
//	<base>[,<field>]...[:<info>]
//
// where the fields of interest are Dovecot's S=<file size> and
// W=<wire size>, and info is usually "2,<flags>".
type fileName struct {
	// base is the unique part of the name: everything before the first ','
	// or ':'. When that part is empty, base is the whole name up to the first
	// ':' (or the whole name if that is empty too) so that distinct files
	// never share a base.
	base string
	// size is the S= value (stored file size), or -1 when absent or invalid.
	size int64
	// wire is the W= value (wire size), or -1 when absent or invalid.
	wire int64
	// info is the text after the first ':' (e.g. "2,S"), without the colon.
	info string
	// hasInfo reports whether the name contains ':'.
	hasInfo bool
}

// parseName splits a Maildir file name into its parts. It never fails: a
// name without fields is a plain base.
func parseName(name string) fileName {
	p := fileName{size: -1, wire: -1}
	head := name
	for i := 0; i < len(name); i++ {
		if name[i] == ':' {
			head = name[:i]
			p.info = name[i+1:]
			p.hasInfo = true
			break
		}
	}
	end := len(head)
	for i := 0; i < len(head); i++ {
		if head[i] == ',' {
			end = i
			break
		}
	}
	p.base = head[:end]
	if p.base == "" {
		p.base = head
		if p.base == "" {
			p.base = name
		}
	}
	// Fields after the base, separated by ','.
	rest := head[end:]
	for len(rest) > 0 {
		rest = rest[1:] // skip ','
		j := 0
		for j < len(rest) && rest[j] != ',' {
			j++
		}
		field := rest[:j]
		rest = rest[j:]
		if len(field) < 3 || field[1] != '=' {
			continue
		}
		v, ok := parseSize(field[2:])
		if !ok {
			continue
		}
		switch field[0] {
		case 'S':
			p.size = v
		case 'W':
			p.wire = v
		}
	}
	return p
}

// parseSize parses a non-negative decimal number of at most 18 digits.
func parseSize(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 18 {
		return 0, false
	}
	var v int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

// formatName builds the file name this package gives a delivered message in
// new/: "<base>,S=<size>,W=<wire>".
func formatName(base string, size, wire int64) string {
	b := make([]byte, 0, len(base)+48)
	b = append(b, base...)
	b = append(b, ",S="...)
	b = strconv.AppendInt(b, size, 10)
	b = append(b, ",W="...)
	b = strconv.AppendInt(b, wire, 10)
	return string(b)
}

// validUID reports whether s can be used verbatim as a POP3 UID: 1 to 70
// characters in the range 0x21 to 0x7E.
func validUID(s string) bool {
	if len(s) == 0 || len(s) > maxUIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// uidFor returns the UID of a message whose base name is base: the base
// itself when it is a valid UID, otherwise "H" followed by the first 32 hex
// digits of the SHA-256 of the base.
func uidFor(base string) string {
	if validUID(base) {
		return base
	}
	sum := sha256.Sum256([]byte(base))
	return "H" + hex.EncodeToString(sum[:16])
}

// orderKey extracts the delivery time encoded at the start of a Maildir
// base name ("<secs>.M<usecs>..." as written by Dovecot and this package,
// or "<secs>.<anything>" as written by other agents). Missing parts are 0.
func orderKey(base string) (secs, usecs int64) {
	i := 0
	for i < len(base) && i < 18 && base[i] >= '0' && base[i] <= '9' {
		secs = secs*10 + int64(base[i]-'0')
		i++
	}
	if i+1 < len(base) && base[i] == '.' && base[i+1] == 'M' {
		j := i + 2
		for j < len(base) && j-i-2 < 9 && base[j] >= '0' && base[j] <= '9' {
			usecs = usecs*10 + int64(base[j]-'0')
			j++
		}
	}
	return secs, usecs
}
