package maildir

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func FuzzParseName(f *testing.F) {
	for _, s := range []string{
		"1700000000.M123456P4242Q1R0123456789abcdef.mail.example.test,S=120,W=124",
		"1700000000.M123456P4242Q1R0123456789abcdef.host,S=120,W=124:2,FRS",
		"1700000000.12345_1.mutthost:2,S",
		"1700000000.P1Q2.host",
		",S=1,W=2",
		":2,S",
		"base,S=,W=x,W=3,S=18446744073709551616",
		"base,S=-1,W=+2",
		strings.Repeat("x", 100) + ",W=5",
		"caf\xc3\xa9,S=1:2,",
		"a:b:c,S=1",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		p := parseName(name)
		if p.size < -1 || p.wire < -1 {
			t.Fatalf("negative size: %+v", p)
		}
		if name != "" && p.base == "" {
			t.Fatalf("empty base for %q", name)
		}
		if !strings.HasPrefix(name, p.base) {
			t.Fatalf("base %q is not a prefix of %q", p.base, name)
		}
		if i := strings.IndexAny(name, ",:"); i > 0 && p.base != name[:i] {
			t.Fatalf("base %q, want %q", p.base, name[:i])
		}
		if p.hasInfo != strings.Contains(name, ":") {
			t.Fatalf("hasInfo %v for %q", p.hasInfo, name)
		}
		if p.hasInfo && !strings.HasSuffix(name, ":"+p.info) {
			t.Fatalf("info %q does not end %q", p.info, name)
		}
		uid := uidFor(p.base)
		if !validUID(uid) || len(uid) > 70 {
			t.Fatalf("invalid uid %q", uid)
		}
		for i := 0; i < len(uid); i++ {
			if uid[i] < 0x21 || uid[i] > 0x7e {
				t.Fatalf("uid %q has octet %#x", uid, uid[i])
			}
		}
		if uidFor(p.base) != uid {
			t.Fatal("uid not deterministic")
		}
		// Round trip of the names this package writes.
		if validUID(p.base) && !strings.ContainsAny(p.base, ",:") {
			q := parseName(formatName(p.base, 12, 34))
			if q.base != p.base || q.size != 12 || q.wire != 34 || q.hasInfo {
				t.Fatalf("round trip of %q: %+v", p.base, q)
			}
			r := parseName(formatName(p.base, 5, 7) + ":2,S")
			if r.base != p.base || r.size != 5 || r.wire != 7 || r.info != "2,S" {
				t.Fatalf("round trip with info of %q: %+v", p.base, r)
			}
		}
	})
}

// FuzzWire checks that Deliver's conversion, the wire size counter and the
// streaming reader agree with the reference definitions, whatever the
// input and chunking.
func FuzzWire(f *testing.F) {
	for _, c := range deliverCases {
		f.Add([]byte(c.in), uint8(7))
	}
	f.Add([]byte("\r\r\r\n\n\r"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		var stored bytes.Buffer
		wc, err := copyToLF(t.Context(), &stored, &chunkReader{data: in, n: int(chunk%16) + 1})
		if err != nil {
			t.Fatal(err)
		}
		if want := refStored(in); !bytes.Equal(stored.Bytes(), want) {
			t.Fatalf("stored %q, want %q", stored.Bytes(), want)
		}
		want := refWire(stored.Bytes())
		if wc.stored != int64(stored.Len()) || wc.wire() != int64(len(want)) {
			t.Fatalf("counter %d/%d, want %d/%d", wc.stored, wc.wire(), stored.Len(), len(want))
		}
		r := newWireReader(io.NopCloser(bytes.NewReader(stored.Bytes())), "fuzz", int64(len(want)))
		got, err := io.ReadAll(iotest.HalfReader(r))
		r.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("reader %q, %v; want %q", got, err, want)
		}
		if len(want) > 0 {
			r := newWireReader(io.NopCloser(bytes.NewReader(stored.Bytes())), "fuzz", int64(len(want)-1))
			_, err := io.ReadAll(r)
			r.Close()
			if err == nil {
				t.Fatal("short recorded size not detected")
			}
		}
	})
}

// chunkReader returns at most n octets per Read.
type chunkReader struct {
	data []byte
	n    int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.data)
	r.data = r.data[n:]
	return n, nil
}

func FuzzParseUIDList(f *testing.F) {
	for _, s := range []string{
		dovecotList,
		"3 V1795996373 N2 G8fe5a203d5ba0c6b0a7d000083ecc375\n1 :1795996373.M60969P32010.vm,S=17,W=20\n",
		"1 1200000000 3\n1 1199999999.P1.host:2,S\n2 1199999999.P2.host\n",
		"2 V5 N3\n1 W10 :a\n2 P :b\n",
		"3 V1 N1\n1 Pdup :a\n2 Pdup :b\n3 :a,S=1\n",
		"3 V1 N3\n1 Pa:b,c :x,S=5:2,S\n2 P:: :y\n",
		"3 V0 N1\n",
		"3 V4294967295 N4294967295\n4294967295 G P W S :x:2,S\n",
		"3 V5\nx :a\n0 :b\n5 no-colon\n6 :\n7 :a/b\n",
		"\n\n",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data string) {
		l, bad, err := parseUIDList(strings.NewReader(data), nil)
		if err != nil {
			if !errors.Is(err, errUIDList) || l != nil {
				t.Fatalf("error %v with list %v", err, l)
			}
			return
		}
		if bad < 0 || l.validity == 0 {
			t.Fatalf("bad = %d, validity = %d", bad, l.validity)
		}
		format, _ := ParseUIDLFormat(DefaultDovecotUIDLFormat)
		for base, e := range l.entries {
			if e.uid == 0 || e.name == "" || strings.ContainsAny(e.name, ":/\x00") {
				t.Fatalf("entry %+v", e)
			}
			if parseName(e.name).base != base {
				t.Fatalf("entry %+v under base %q", e, base)
			}
			u, ok := l.uidl(format, base)
			if ok != validUID(u) {
				t.Fatalf("uidl %q reported %v", u, ok)
			}
			if e.pop3 == "" && !ok {
				t.Fatalf("default format gave unusable %q", u)
			}
		}
	})
}

func FuzzParseUIDLFormat(f *testing.F) {
	for _, s := range []string{DefaultDovecotUIDLFormat, "%u", "%v.%u", "%f", "%g", "%UXv-%04u", "%10f", "100%%-%u", "%m", "%{uid}", "%", "%0", "%99u", ""} {
		f.Add(s)
	}
	l := &uidList{version: 3, validity: 0xfffffff0}
	e := uidEntry{uid: 7, name: "1700000000.M1P2.host,S=3,W=4"}
	f.Fuzz(func(t *testing.T, s string) {
		format, err := ParseUIDLFormat(s)
		if err != nil {
			if !errors.Is(err, ErrUIDLFormat) {
				t.Fatalf("error %v not ErrUIDLFormat", err)
			}
			return
		}
		u := format.expand(l, e)
		if u == "" || strings.ContainsAny(u, " \r\n") {
			t.Fatalf("%q expands to %q", s, u)
		}
	})
}
