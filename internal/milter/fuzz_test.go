package milter

import (
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"
)

func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"554 5.7.1 Spam message rejected", "550-5.7.1 a\r\n550 5.7.1 b", "451 4.7.1", "550 9.9.9 x", "599 5.999.999 y", "4", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		code, enh, text, ok := parseReply(s)
		if !ok {
			return
		}
		if code < 400 || code > 599 {
			t.Fatalf("code %d", code)
		}
		if enh != [3]int{} && enh[0] != code/100 {
			t.Fatalf("enhanced %v for %d", enh, code)
		}
		if len(text) > maxReplyText || strings.ContainsAny(text, "\r\n\x00") {
			t.Fatalf("text %q", text)
		}
	})
}

// FuzzHeaderChanges reads a header block and applies a filter's changes
// (encoded in the second argument) to it: the result is always a valid
// header block within the limits, whose fields each start with a name and
// a colon and whose lines end in CRLF.
func FuzzHeaderChanges(f *testing.F) {
	f.Add("Subject: a\r\n b\r\nX: 1\r\n\r\nbody", "a X-New:v\nc Subject:1:\ni X-T:0:top\nc X:1:new\n")
	f.Add("X: 1\r\n", "a Bad Name:v\na Y:line1\nline2\r\n")
	f.Add("no colon line\r\n", "c X:0:\n")
	f.Fuzz(func(t *testing.T, hdr, script string) {
		// The MX hands over messages with CRLF line ends only (bare CR
		// and LF are rewritten on receipt).
		if len(hdr) > 1<<16 || strings.Count(hdr, "\r") != strings.Count(hdr, "\r\n") || strings.Count(hdr, "\n") != strings.Count(hdr, "\r\n") {
			return
		}
		h, err := readHeader(strings.NewReader(hdr))
		if err != nil {
			return
		}
		if h.size > int64(len(hdr)) {
			t.Fatalf("header size %d over the message's %d", h.size, len(hdr))
		}
		var mods []gomilter.ModifyAction
		for line := range strings.SplitSeq(script, "\n") {
			if len(line) < 2 {
				continue
			}
			name, rest, _ := strings.Cut(line[2:], ":")
			m := gomilter.ModifyAction{HeaderName: name, HeaderValue: rest}
			switch line[0] {
			case 'a':
				m.Type = gomilter.ActionAddHeader
			case 'i', 'c':
				m.Type = gomilter.ActionInsertHeader
				if line[0] == 'c' {
					m.Type = gomilter.ActionChangeHeader
				}
				idx, val, _ := strings.Cut(rest, ":")
				n := 0
				for _, d := range idx {
					if d >= '0' && d <= '9' && n < 1e6 {
						n = n*10 + int(d-'0')
					}
				}
				m.HeaderIndex, m.HeaderValue = uint32(n), val
			default:
				continue
			}
			mods = append(mods, m)
		}
		h.apply(mods, false)
		out := string(h.bytes())
		if len(out) > MaxHeaderBytes || len(h.fields) > MaxHeaderFields {
			t.Fatalf("header over the limits: %d octets, %d fields", len(out), len(h.fields))
		}
		for _, fl := range h.fields {
			if !validName(fl.name) || !strings.HasPrefix(fl.raw, fl.name+":") || !strings.HasSuffix(fl.raw, "\r\n") {
				t.Fatalf("bad field %q", fl.raw)
			}
			lines := strings.Split(strings.TrimSuffix(fl.raw, "\r\n"), "\r\n")
			for _, l := range lines[1:] {
				if l == "" || (l[0] != ' ' && l[0] != '\t') {
					t.Fatalf("continuation line %q starts a new field in %q", l, fl.raw)
				}
			}
			if strings.ContainsAny(strings.ReplaceAll(fl.raw, "\r\n", ""), "\r\n") {
				t.Fatalf("bare CR or LF in %q", fl.raw)
			}
		}
	})
}
