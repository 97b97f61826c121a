package mtasts

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy(strings.NewReader("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\nmax_age: 604800\r\nfuture: ignored\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != ModeEnforce || p.MaxAge != 604800*time.Second || len(p.MX) != 2 || p.MX[1] != "*.example.net" {
		t.Fatalf("%+v", p)
	}
	// LF only, no mx in mode none.
	if p, err := ParsePolicy(strings.NewReader("version: STSv1\nmode: none\nmax_age: 0\n")); err != nil || p.Mode != ModeNone {
		t.Fatalf("%+v %v", p, err)
	}
	bad := map[string]string{
		"no version":     "mode: enforce\nmx: a.b\nmax_age: 1\n",
		"bad version":    "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n",
		"bad mode":       "version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n",
		"no mx":          "version: STSv1\nmode: testing\nmax_age: 1\n",
		"no max_age":     "version: STSv1\nmode: testing\nmx: a.b\n",
		"max_age big":    "version: STSv1\nmode: testing\nmx: a.b\nmax_age: 31557601\n",
		"max_age sign":   "version: STSv1\nmode: testing\nmx: a.b\nmax_age: -1\n",
		"mode repeated":  "version: STSv1\nmode: testing\nmode: enforce\nmx: a.b\nmax_age: 1\n",
		"no colon":       "version: STSv1\nmode testing\n",
		"bad pattern":    "version: STSv1\nmode: testing\nmx: a..b\nmax_age: 1\n",
		"double star":    "version: STSv1\nmode: testing\nmx: *.*.b\nmax_age: 1\n",
		"too big":        "version: STSv1\nmode: testing\nmx: a.b\nmax_age: 1\n" + strings.Repeat("x: y\n", MaxPolicySize/5+1),
		"line too long":  "version: STSv1\nmode: testing\nmx: " + strings.Repeat("a", 2000) + "\n",
		"too many mx":    "version: STSv1\nmode: testing\nmax_age: 1\n" + strings.Repeat("mx: a.b\n", maxMX+1),
		"mode mixedcase": "version: STSv1\nmode: Enforce\nmx: a.b\nmax_age: 1\n",
	}
	for name, text := range bad {
		_, err := ParsePolicy(strings.NewReader(text))
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%s: %v, want a ParseError", name, err)
		}
	}
}

func TestMatchMX(t *testing.T) {
	for _, c := range []struct {
		pat, host string
		want      bool
	}{
		{"mx.example.com", "mx.example.com", true},
		{"mx.example.com", "MX.Example.com.", true},
		{"mx.example.com", "mx2.example.com", false},
		// RFC 8461 §4.1: the wildcard covers one label, the leftmost.
		{"*.example.com", "mx.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "a.mx.example.com", false},
		{"*.example.com", ".example.com", false},
		{"*.example.com", "mx.example.com.evil.test", false},
		{"*.example.com", "mxexample.com", false},
	} {
		if got := MatchMX(c.pat, c.host); got != c.want {
			t.Errorf("MatchMX(%q, %q) = %v", c.pat, c.host, got)
		}
	}
	p := &Policy{MX: []string{"a.test", "*.b.test"}}
	if !p.Matches("x.b.test") || p.Matches("b.test") || !p.Matches("a.test") {
		t.Error("Policy.Matches")
	}
}

func TestParseRecord(t *testing.T) {
	for txt, want := range map[string]string{
		"v=STSv1; id=20160831085700Z;": "20160831085700Z",
		"v=STSv1;id=abc":               "abc",
		"v=STSv1; id=abc; ext=1":       "abc",
	} {
		if id, err := ParseRecord(txt); err != nil || id != want {
			t.Errorf("%q: %q %v", txt, id, err)
		}
	}
	for _, txt := range []string{"", "v=STSv1", "id=1; v=STSv1", "v=STSv1; id=a-b", "v=STSv1; id=" + strings.Repeat("a", 33), "v=STSv1; id=a; id=b", "v=STSv1; junk", strings.Repeat("v=STSv1; ", 200)} {
		if _, err := ParseRecord(txt); err == nil {
			t.Errorf("%q parsed", txt)
		}
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n")
	f.Add("version: STSv1\nmode: none\nmax_age: 0\n")
	f.Add("version: STSv1\nmode: testing\nmx: a..b\nmax_age: 1\n")
	f.Add("mode testing")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePolicy(strings.NewReader(s))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %T", err)
			}
			return
		}
		if p.Mode != ModeEnforce && p.Mode != ModeTesting && p.Mode != ModeNone {
			t.Fatalf("mode %q", p.Mode)
		}
		if p.MaxAge < 0 || p.MaxAge > MaxMaxAge*time.Second || len(p.Text) > MaxPolicySize {
			t.Fatalf("limits: %+v", p)
		}
		for _, m := range p.MX {
			if !validPattern(m) {
				t.Fatalf("pattern %q", m)
			}
		}
	})
}

func FuzzParseRecord(f *testing.F) {
	f.Add("v=STSv1; id=20160831085700Z;")
	f.Add("v=STSv1;id=abc; ext=1")
	f.Add("id=1; v=STSv1")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseRecord(s)
		if err == nil && (id == "" || len(id) > 32) {
			t.Fatalf("id %q", id)
		}
	})
}
