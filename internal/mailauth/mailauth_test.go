package mailauth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/resolver"
	"github.com/postino-mail/postino/internal/testutil"
)

// bmsg is a spooled message in memory.
type bmsg []byte

func (m bmsg) Reader() io.Reader { return bytes.NewReader(m) }
func (m bmsg) Size() int64       { return int64(len(m)) }

// world is NSD serving the test domains, and a signer holding the keys
// of pass.test (ed25519 and RSA).
type world struct {
	res    *resolver.Resolver
	signer *dkim.Signer
	logs   *bytes.Buffer
}

// zoneTXT writes a DKIM record as zone-file TXT strings of at most 255
// octets (RFC 1035 §3.3.14).
func zoneTXT(r dkim.Record) string {
	var parts []string
	for v := r.Value; v != ""; {
		n := min(len(v), 255)
		parts = append(parts, `"`+v[:n]+`"`)
		v = v[n:]
	}
	return strings.TrimSuffix(r.Name, "."+r.Domain) + " TXT " + strings.Join(parts, " ") + "\n"
}

func newWorld(t *testing.T) *world {
	t.Helper()
	dir := t.TempDir()
	var passKeys string
	for _, algo := range []string{dkim.AlgoEd25519, dkim.AlgoRSA} {
		r, err := dkim.Keygen(dir, "pass.test", algo, algo)
		if err != nil {
			t.Fatal(err)
		}
		passKeys += zoneTXT(r)
	}
	var hosts, limit string
	for i := 1; i <= 11; i++ {
		hosts += fmt.Sprintf("h%d A 192.0.2.%d\n", i, i)
		limit += fmt.Sprintf(" a:h%d.perm.test", i)
	}
	srv := testutil.StartDNS(t, map[string]string{
		"pass.test": `@ TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc TXT "v=DMARC1; p=reject"
mail TXT "v=spf1 ip4:127.0.0.1 -all"
` + passKeys,
		"fail.test": `@ TXT "v=spf1 ip4:192.0.2.1 -all"
_dmarc TXT "v=DMARC1; p=reject"
`,
		"soft.test": `@ TXT "v=spf1 ip4:192.0.2.1 ~all"
_dmarc TXT "v=DMARC1; p=quarantine"
`,
		"none.test": `@ A 192.0.2.1
`,
		"perm.test": `@ TXT "v=spf1` + limit + ` -all"
_dmarc TXT "v=DMARC1; p=none"
syntax TXT "v=spf1 bogus:thing -all"
void TXT "v=spf1 a:n1.perm.test a:n2.perm.test a:n3.perm.test -all"
` + hosts,
		"strict.test": `@ TXT "v=spf1 ip4:127.0.0.1 -all"
mail TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc TXT "v=DMARC1; p=reject; aspf=s; sp=quarantine"
`,
		"pct.test": `@ TXT "v=spf1 -all"
_dmarc TXT "v=DMARC1; p=reject; pct=50"
`,
		"tempspf.test": `@ TXT "v=spf1 include:gone.test -all"
_dmarc TXT "v=DMARC1; p=reject"
`,
		"two.test": `@ TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc TXT "v=DMARC1; p=reject"
_dmarc TXT "v=DMARC1; p=none"
`,
	})
	res, err := resolver.New(srv.Addr, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &world{res: res, signer: dkim.NewSigner(dir), logs: &bytes.Buffer{}}
}

// check returns the check with opts over the world's resolver.
func (w *world) check(o Options) *Check {
	o.Resolver = w.res
	o.AuthservID = "mx.postino.test"
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	o.Logger = slog.New(slog.NewTextHandler(w.logs, nil))
	return New(o)
}

// message makes a message from the given From field.
func message(from, extra string) []byte {
	return []byte("From: " + from + "\r\nTo: bob@example.test\r\nSubject: hello\r\nDate: Mon, 30 Nov 2026 02:00:00 +0000\r\nMessage-ID: <1@x>\r\n" + extra + "\r\nHello, world.\r\n")
}

// sign prepends the signatures of the keys of domain.
func (w *world) sign(t *testing.T, domain string, msg []byte) []byte {
	t.Helper()
	sig, err := w.signer.Sign(context.Background(), domain, bytes.NewReader(msg))
	if err != nil || sig == "" {
		t.Fatalf("sign: %q %v", sig, err)
	}
	return append([]byte(sig), msg...)
}

// outcome is what a transaction through the check gave.
type outcome struct {
	mail, rcpt, data *inbound.Verdict
	header           string // the Authentication-Results field added
	delivered        []byte // the message after the check (nil: unchanged)
}

// strongest returns the strongest demand of v ("" for none) as
// "action code enhanced".
func strongest(v *inbound.Verdict) string {
	r, ok := v.Strongest()
	if !ok {
		return ""
	}
	s := r.Action.String()
	if r.Code != 0 {
		s += fmt.Sprintf(" %d %d.%d.%d", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])
	}
	return s
}

// run sends one transaction through c as the MX would: from 127.0.0.1
// with HELO helo.
func run(t *testing.T, c *Check, helo, mailFrom string, msg []byte) outcome {
	t.Helper()
	ctx := context.Background()
	conn := &inbound.Conn{ID: "s1", Remote: netip.MustParseAddr("127.0.0.1"), Helo: helo, Hostname: "mx.postino.test"}
	sess := c.Begin(ctx, conn, &inbound.Verdict{})
	defer sess.(inbound.Ender).End()
	o := outcome{mail: &inbound.Verdict{}, rcpt: &inbound.Verdict{}, data: &inbound.Verdict{}}
	sess.(inbound.MailStage).Mail(ctx, mailFrom, o.mail)
	env := &inbound.Envelope{ID: "tx1", From: mailFrom, Rcpts: []string{"bob@example.test"}}
	sess.(inbound.RcptStage).Rcpt(ctx, env, "bob@example.test", o.rcpt)
	repl, err := sess.(inbound.DataStage).Data(ctx, env, bmsg(msg), o.data)
	if err != nil {
		t.Fatalf("Data: %v", err)
	}
	o.header = o.data.Headers()
	if repl != nil {
		b, err := io.ReadAll(repl.Reader())
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != repl.Size() {
			t.Errorf("replacement Size %d, has %d octets", repl.Size(), len(b))
		}
		o.delivered = b
	}
	return o
}

// unfold joins a folded field onto one line.
func unfold(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\r\n", " ")), " ")
}

func TestSPFAndDMARCResults(t *testing.T) {
	w := newWorld(t)
	c := w.check(Options{DMARC: true})
	cases := []struct {
		name, helo, from, hdrFrom string
		want                      []string // in the unfolded A-R field
		demand                    string   // strongest demand after DATA
	}{
		{"pass", "mail.pass.test", "alice@pass.test", "alice@pass.test",
			[]string{"spf=pass smtp.mailfrom=alice@pass.test", "dkim=none", "dmarc=pass (p=reject dis=NONE) header.from=pass.test"}, ""},
		{"fail reject", "x", "eve@fail.test", "eve@fail.test",
			[]string{"spf=fail smtp.mailfrom=eve@fail.test", "dmarc=fail (p=reject dis=REJECT) header.from=fail.test"}, "reject 550 5.7.1"},
		{"softfail quarantine", "x", "eve@soft.test", "eve@soft.test",
			[]string{"spf=softfail smtp.mailfrom=eve@soft.test", "dmarc=fail (p=quarantine dis=QUARANTINE) header.from=soft.test"}, "quarantine"},
		{"none", "x", "joe@none.test", "joe@none.test",
			[]string{"spf=none smtp.mailfrom=joe@none.test", "dmarc=none header.from=none.test"}, ""},
		// RFC 7208 §4.6.4: 11 DNS-querying terms exceed the limit of 10.
		{"permerror lookup limit", "x", "joe@perm.test", "joe@perm.test",
			[]string{"spf=permerror", "lookup limit", "dmarc=fail (p=none dis=NONE)"}, ""},
		// RFC 7208 §4.6.4: more than 2 lookups that find nothing.
		{"permerror void lookups", "x", "joe@void.perm.test", "joe@perm.test",
			[]string{"spf=permerror (void lookup limit reached) smtp.mailfrom=joe@void.perm.test"}, ""},
		{"permerror syntax", "x", "joe@syntax.perm.test", "joe@perm.test",
			[]string{"spf=permerror", "smtp.mailfrom=joe@syntax.perm.test"}, ""},
		// gone.test is not served: REFUSED, a temporary error.
		{"temperror", "x", "joe@gone.test", "joe@gone.test",
			[]string{"spf=temperror (DNS error) smtp.mailfrom=joe@gone.test", "dmarc=temperror"}, ""},
		// An aligned SPF check that could not be done: the DMARC fail
		// may not be real, so the sender retries.
		{"temperror aligned", "x", "joe@tempspf.test", "joe@tempspf.test",
			[]string{"spf=temperror", "dmarc=fail (p=reject dis=REJECT)"}, "tempfail 451 4.4.3"},
		// Relaxed alignment: the envelope's subdomain aligns with the
		// organizational domain.
		{"relaxed alignment", "x", "bounce@mail.pass.test", "alice@pass.test",
			[]string{"spf=pass smtp.mailfrom=bounce@mail.pass.test", "dmarc=pass"}, ""},
		// Strict SPF alignment: mail.strict.test is not strict.test.
		{"strict alignment", "x", "bounce@mail.strict.test", "alice@strict.test",
			[]string{"spf=pass", "dmarc=fail (p=reject dis=REJECT) header.from=strict.test"}, "reject 550 5.7.1"},
		// No record at the subdomain: the organizational domain's sp=.
		{"subdomain policy", "x", "eve@fail.test", "eve@sub.strict.test",
			[]string{"dmarc=fail (p=quarantine dis=QUARANTINE) header.from=sub.strict.test"}, "quarantine"},
		// RFC 7489 §6.6.3: two DMARC records are no policy.
		{"two records", "x", "eve@fail.test", "eve@two.test",
			[]string{"dmarc=none header.from=two.test"}, ""},
		// RFC 7208 §2.4: the null sender's identity is the HELO name.
		{"null sender helo", "mail.pass.test", "", "mailer-daemon@pass.test",
			[]string{"spf=pass smtp.helo=mail.pass.test", "dmarc=pass"}, ""},
		// RFC 7489 §6.6.1: no single author domain.
		{"two from domains", "x", "alice@pass.test", "a@pass.test, b@fail.test",
			[]string{"dmarc=permerror (the From field has addresses in several domains)"}, "reject 550 5.7.1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := run(t, c, tc.helo, tc.from, message(tc.hdrFrom, ""))
			ar := unfold(o.header)
			if !strings.HasPrefix(ar, "Authentication-Results: mx.postino.test; spf=") || strings.Contains(ar, "127.0.0.1") {
				t.Errorf("field %q", ar)
			}
			for _, want := range tc.want {
				if !strings.Contains(ar, want) {
					t.Errorf("field %q lacks %q", ar, want)
				}
			}
			if got := strongest(o.data); got != tc.demand {
				t.Errorf("demand %q, want %q", got, tc.demand)
			}
			if got := strongest(o.mail) + strongest(o.rcpt); got != "" {
				t.Errorf("MAIL/RCPT refused (%q) under spf_fail=dmarc", got)
			}
		})
	}
}

func TestDKIMVerification(t *testing.T) {
	w := newWorld(t)
	c := w.check(Options{DMARC: true})
	signed := w.sign(t, "pass.test", message("alice@pass.test", ""))

	// Two signatures (ed25519-sha256 of RFC 8463 and rsa-sha256), both
	// pass; DMARC passes on DKIM alone though SPF fails.
	o := run(t, c, "x", "eve@fail.test", signed)
	ar := unfold(o.header)
	for _, want := range []string{"spf=fail", "dmarc=pass"} {
		if !strings.Contains(ar, want) {
			t.Errorf("field %q lacks %q", ar, want)
		}
	}
	if n := strings.Count(ar, "dkim=pass header.d=pass.test header.s="); n != 2 {
		t.Errorf("%d dkim=pass, want 2: %q", n, ar)
	}
	for _, sel := range []string{"header.s=ed25519 header.b=", "header.s=rsa header.b="} {
		if !strings.Contains(ar, sel) {
			t.Errorf("field %q lacks %q", ar, sel)
		}
	}
	if got := strongest(o.data); got != "" {
		t.Errorf("demand %q", got)
	}

	// A changed body fails both; DMARC then fails and p=reject refuses.
	tampered := bytes.Replace(signed, []byte("Hello, world."), []byte("Hello, w0rld."), 1)
	o = run(t, c, "x", "eve@fail.test", tampered)
	ar = unfold(o.header)
	if n := strings.Count(ar, "dkim=fail (body hash did not verify) header.d=pass.test"); n != 2 {
		t.Errorf("%d dkim=fail, want 2: %q", n, ar)
	}
	if got := strongest(o.data); got != "reject 550 5.7.1" {
		t.Errorf("demand %q, want reject", got)
	}

	// A signature whose key does not exist: permerror, reported without
	// naming our DNS server.
	nokey := strings.Replace(string(signed), "s=ed25519", "s=nokey", 1)
	o = run(t, c, "x", "alice@pass.test", []byte(nokey))
	if ar := unfold(o.header); !strings.Contains(ar, "dkim=permerror (no key for signature) header.d=pass.test header.s=nokey") || strings.Contains(ar, "127.0.0.1") {
		t.Errorf("field %q", ar)
	}

	// A signature whose key cannot be fetched (gone.test is not served):
	// temperror.
	gone := strings.Replace(string(signed), "d=pass.test", "d=gone.test", 1)
	o = run(t, c, "x", "alice@pass.test", []byte(gone))
	ar = unfold(o.header)
	if !strings.Contains(ar, "dkim=temperror (key unavailable) header.d=gone.test header.s=ed25519") {
		t.Errorf("field %q: no temperror for the unreachable key", ar)
	}
	if !strings.Contains(ar, "dkim=pass header.d=pass.test header.s=rsa") || !strings.Contains(ar, "dmarc=pass") {
		t.Errorf("field %q: the good signature must still pass", ar)
	}
}

// TestDKIMLimits: at most MaxSignatures signatures are verified (RFC
// 6376 §6.1), and a message that cannot be read whole has no passing
// signature.
func TestDKIMLimits(t *testing.T) {
	w := newWorld(t)
	c := w.check(Options{DMARC: true})
	msg := message("alice@pass.test", "")
	for range 5 { // 2 signatures each
		msg = w.sign(t, "pass.test", msg)
	}
	ar := unfold(run(t, c, "x", "alice@pass.test", msg).header)
	if n := strings.Count(ar, "dkim="); n != MaxSignatures {
		t.Errorf("%d dkim results for 10 signatures, want %d: %q", n, MaxSignatures, ar)
	}
	// All header: no empty line, so no body to hash.
	hdrOnly := bytes.TrimSuffix(w.sign(t, "pass.test", message("alice@pass.test", "")), []byte("\r\nHello, world.\r\n"))
	hdrOnly = bytes.TrimSuffix(hdrOnly, []byte("\r\n"))
	ar = unfold(run(t, c, "x", "eve@fail.test", hdrOnly).header)
	if strings.Contains(ar, "dkim=pass") || !strings.Contains(ar, "dkim=permerror") {
		t.Errorf("header-only message: %q", ar)
	}
}

func TestSPFFailPolicies(t *testing.T) {
	w := newWorld(t)
	msg := message("eve@fail.test", "")
	// mail: refused at MAIL FROM with RFC 7372's 5.7.23.
	o := run(t, w.check(Options{SPFFail: SPFFailMail}), "x", "eve@fail.test", msg)
	if got := strongest(o.mail); got != "reject 550 5.7.23" {
		t.Errorf("mail: MAIL demand %q", got)
	}
	// rcpt: MAIL goes through, RCPT is refused.
	o = run(t, w.check(Options{SPFFail: SPFFailRcpt}), "x", "eve@fail.test", msg)
	if got := strongest(o.mail); got != "" {
		t.Errorf("rcpt: MAIL demand %q", got)
	}
	if got := strongest(o.rcpt); got != "reject 550 5.7.23" {
		t.Errorf("rcpt: RCPT demand %q", got)
	}
	// tag: delivered marked as spam (DMARC not enforced here).
	o = run(t, w.check(Options{SPFFail: SPFFailTag}), "x", "eve@fail.test", msg)
	if got := strongest(o.mail) + strongest(o.rcpt); got != "" {
		t.Errorf("tag: refused at %q", got)
	}
	if got := strongest(o.data); got != "tag" {
		t.Errorf("tag: DATA demand %q", got)
	}
	// A pass is never refused.
	o = run(t, w.check(Options{SPFFail: SPFFailMail, DMARC: true}), "x", "alice@pass.test", message("alice@pass.test", ""))
	if got := strongest(o.mail) + strongest(o.rcpt) + strongest(o.data); got != "" {
		t.Errorf("pass refused: %q", got)
	}
	// DMARC off: reported, not enforced.
	o = run(t, w.check(Options{}), "x", "eve@fail.test", msg)
	if got := strongest(o.data); got != "" || !strings.Contains(o.header, "dmarc=fail") {
		t.Errorf("dmarc off: demand %q, field %q", got, o.header)
	}
}

func TestDMARCPercent(t *testing.T) {
	w := newWorld(t)
	msg := message("eve@pct.test", "")
	// pct=50: a draw under 50 applies p=reject; 50 and over, the next
	// milder policy (RFC 7489 §6.6.4).
	o := run(t, w.check(Options{DMARC: true, Rand: func(int) int { return 49 }}), "x", "eve@pct.test", msg)
	if got := strongest(o.data); got != "reject 550 5.7.1" {
		t.Errorf("sampled in: %q", got)
	}
	o = run(t, w.check(Options{DMARC: true, Rand: func(int) int { return 50 }}), "x", "eve@pct.test", msg)
	if got := strongest(o.data); got != "quarantine" {
		t.Errorf("sampled out: %q", got)
	}
}

func TestForgedAuthResultsRemoved(t *testing.T) {
	w := newWorld(t)
	c := w.check(Options{DMARC: true})
	forged := "Authentication-Results: mx.postino.test; spf=pass smtp.mailfrom=ceo@pass.test\r\n" +
		"Authentication-Results: (comment) \"MX.Postino.TEST\" 1;\r\n dkim=pass header.d=pass.test\r\n" +
		"Authentication-Results: other.example; dkim=pass header.d=other.example\r\n" +
		"Authentication-Results: (unterminated\r\n"
	msg := message("eve@soft.test", forged)
	o := run(t, c, "x", "eve@soft.test", msg)
	if o.delivered == nil {
		t.Fatal("forged fields not removed")
	}
	got := string(o.delivered)
	if strings.Contains(strings.ToLower(got), "mx.postino.test") || strings.Contains(got, "unterminated") {
		t.Errorf("forged field kept:\n%s", got)
	}
	if !strings.Contains(got, "Authentication-Results: other.example; dkim=pass header.d=other.example\r\n") {
		t.Errorf("another server's field removed:\n%s", got)
	}
	if !strings.HasSuffix(got, "\r\n\r\nHello, world.\r\n") || !strings.HasPrefix(got, "From: eve@soft.test\r\n") {
		t.Errorf("message damaged:\n%q", got)
	}
	// Nothing to remove: the message is not replaced.
	if o := run(t, c, "x", "eve@soft.test", message("eve@soft.test", "")); o.delivered != nil {
		t.Error("message replaced with nothing to remove")
	}
}

func TestHeaderLimits(t *testing.T) {
	w := newWorld(t)
	c := w.check(Options{DMARC: true})
	big := []byte("From: a@pass.test\r\n")
	for len(big) <= MaxHeaderBytes {
		big = append(big, "X-Filler: "+strings.Repeat("x", 980)+"\r\n"...)
	}
	big = append(big, "Authentication-Results: mx.postino.test; spf=pass\r\n\r\nbody\r\n"...)
	o := run(t, c, "x", "a@pass.test", big)
	if got := strongest(o.data); got != "reject 552 5.6.0" {
		t.Errorf("huge header: demand %q", got)
	}
	if _, err := readHeader(strings.NewReader("no colon here\r\n\r\n")); err == nil {
		t.Error("a line that is no field was accepted")
	}
	if _, err := readHeader(strings.NewReader(" folded first\r\n\r\n")); err == nil {
		t.Error("a continuation line first was accepted")
	}
}

func TestParseAuthservID(t *testing.T) {
	for in, want := range map[string]string{
		"mx.example.org; spf=pass":                   "mx.example.org",
		"  (c (nested) \\) ) mx.example.org 1; none": "mx.example.org",
		`"quoted\"id"; none`:                         `quoted"id`,
		"mx.example.org":                             "mx.example.org",
		"\r\n\tmx.example.org;\r\n\tspf=pass":        "mx.example.org",
	} {
		got, err := ParseAuthservID(in)
		if err != nil || got != want {
			t.Errorf("ParseAuthservID(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "(unterminated", `"open`, "; spf=pass", "id (", "a@b; none", strings.Repeat("(", 40) + "x" + strings.Repeat(")", 40), strings.Repeat("x", MaxAuthResLen+1)} {
		if got, err := ParseAuthservID(bad); err == nil {
			t.Errorf("ParseAuthservID(%q) = %q, want an error", bad, got)
		}
	}
}

func TestFormatAuthRes(t *testing.T) {
	got := formatAuthRes("mx.example.org", []resinfo{
		{method: "spf", result: "pass", props: [][2]string{{"smtp.mailfrom", "a.b+c@example.com"}}},
		{method: "dkim", result: "fail", comment: "bad (sig)", props: [][2]string{{"header.d", "example.com"}, {"header.b", "ab/c+d=="}}},
		{method: "spf", result: "pass", props: [][2]string{{"smtp.mailfrom", `"odd local"@example.com`}}},
	})
	want := "Authentication-Results: mx.example.org;\r\n\tspf=pass smtp.mailfrom=a.b+c@example.com;\r\n\tdkim=fail (bad \\(sig\\)) header.d=example.com header.b=\"ab/c+d==\";\r\n\tspf=pass smtp.mailfrom=\"\\\"odd local\\\"@example.com\""
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if id, err := ParseAuthservID(strings.TrimPrefix(got, "Authentication-Results:")); err != nil || id != "mx.example.org" {
		t.Errorf("our own field reads back as %q, %v", id, err)
	}
}
