package mailauth

import (
	"strings"
	"testing"
)

// FuzzParseAuthservID feeds Authentication-Results values to the parser:
// it must not panic, an id it returns is not blank and has no line end,
// and an id written as we write it reads back the same.
func FuzzParseAuthservID(f *testing.F) {
	for _, s := range []string{
		"mx.example.org; spf=pass smtp.mailfrom=a@b",
		"(comment) mx.example.org 1; none",
		`"quoted id"; dkim=pass`,
		"((a)(b)) x;",
		`"\"`, "(\\", "", ";", "a\r\n\tb",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseAuthservID(s)
		if err != nil {
			return
		}
		if id == "" {
			t.Fatalf("empty id from %q", s)
		}
		if strings.ContainsAny(id, "\r\n") {
			t.Fatalf("id %q from %q has a line end", id, s)
		}
		// What we write reads back the same (control characters are
		// dropped when written).
		if strings.IndexFunc(id, func(r rune) bool { return r < ' ' || r == 0x7f }) < 0 {
			if back, err := ParseAuthservID(value(id) + "; none"); err != nil || back != id {
				t.Fatalf("id %q written as %q reads back as %q, %v", id, value(id), back, err)
			}
		}
	})
}

// FuzzReadHeader feeds messages to the header reader: it must not panic,
// and the fields and the end it returns are exactly the header block.
func FuzzReadHeader(f *testing.F) {
	for _, s := range []string{
		"From: a@b\r\nSubject: x\r\n\r\nbody\r\n",
		"A: 1\r\n folded\r\n\r\n",
		"no header",
		"X: y",
		" starts folded\r\n\r\n",
		"A: 1\n\nbody",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := readHeader(strings.NewReader(s))
		if err != nil {
			return
		}
		var b strings.Builder
		for _, fl := range h.fields {
			b.Write(fl.raw)
		}
		b.Write(h.end)
		if b.String() != s[:h.size] {
			t.Fatalf("header block %q is not the message's first %d octets of %q", b.String(), h.size, s)
		}
	})
}

// FuzzAuthorDomain feeds header blocks to the author-domain reader of
// DMARC (RFC 7489 §6.6.1) and DKIM-Signature fields to the tag reader:
// no panic, and a domain found is lower case, without white space or @.
func FuzzAuthorDomain(f *testing.F) {
	for _, s := range []string{
		"From: Alice <alice@Example.ORG>\r\n\r\n",
		"From: a@b.example, c@b.example\r\n\r\n",
		"From: a@x.example\r\nFrom: b@y.example\r\n\r\n",
		"From: \"weird <x@y>\" <real@z.example>\r\n\r\n",
		"From: undisclosed-recipients:;\r\n\r\n",
		"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel;\r\n b=abc def; bh=x\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := readHeader(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, fl := range h.get("DKIM-Signature") {
			tagList(fl.value())
		}
		d, err := authorDomain(h)
		if err != nil {
			return
		}
		if d == "" || d != strings.ToLower(d) || strings.ContainsAny(d, "@ \t\r\n") {
			t.Fatalf("author domain %q from %q", d, s)
		}
		orgDomain(d)
	})
}
