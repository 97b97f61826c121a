package junk

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/postino-mail/postino/internal/inbound"
)

func TestDecide(t *testing.T) {
	p := &Policy{TagScore: 5, QuarantineScore: 10, RejectScore: 15, Default: Score}
	A, T, Q, R := inbound.Accept, inbound.Tag, inbound.Quarantine, inbound.Reject
	for _, tc := range []struct {
		score    float64
		demanded inbound.Action
		c        Choice
		want     inbound.Action
	}{
		{0, A, Default, A}, {4.9, A, Default, A}, {5, A, Default, T}, {9.9, A, Default, T},
		{10, A, Default, Q}, {15, A, Default, R}, {100, A, Default, R},
		{0, T, Default, T}, {0, Q, Default, Q}, {20, Q, Default, R},
		{12, A, Tag, T}, {16, A, Tag, R}, {0, T, Tag, T}, {3, A, Tag, A},
		{6, A, Quarantine, Q}, {16, A, Quarantine, R}, {3, A, Quarantine, A},
		{6, A, Reject, R}, {3, A, Reject, A}, {0, T, Reject, R},
		{100, A, Off, A}, {100, T, Off, A}, {0, Q, Off, Q},
		{12, A, Score, Q},
	} {
		if got := p.Decide(tc.score, tc.demanded, tc.c); got != tc.want {
			t.Errorf("Decide(%v, %v, %v) = %v, want %v", tc.score, tc.demanded, tc.c, got, tc.want)
		}
	}
	p.Default = Quarantine
	if got := p.Decide(6, A, Default); got != Q {
		t.Errorf("default quarantine: %v", got)
	}
}

func TestParseChoice(t *testing.T) {
	for _, s := range []string{"score", "tag", "QUARANTINE", "reject", "off"} {
		c, err := ParseChoice(s)
		if err != nil || !strings.EqualFold(c.String(), s) {
			t.Errorf("ParseChoice(%q) = %v %v", s, c, err)
		}
	}
	for _, s := range []string{"", "drop", "default"} {
		if _, err := ParseChoice(s); err == nil {
			t.Errorf("ParseChoice(%q): no error", s)
		}
	}
}

func TestFormatScore(t *testing.T) {
	for f, want := range map[float64]string{12.3: "12.3", 5: "5", -0.5: "-0.5", 7.456: "7.46", -0.001: "0"} {
		if got := FormatScore(f); got != want {
			t.Errorf("FormatScore(%v) = %q, want %q", f, got, want)
		}
	}
}

func tagged(t *testing.T, msg string, score float64, prefix string) string {
	t.Helper()
	b, err := io.ReadAll(Tagged(iotest.OneByteReader(strings.NewReader(msg)), score, prefix))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTagged(t *testing.T) {
	msg := "Received: from x\r\nX-Spam: no\r\nX-Spam-Score: -100\r\n folded forged\r\nSubject: Cheap\r\n watches\r\nFrom: a@b\r\n\r\nX-Spam: no\r\nSubject: body\r\n"
	got := tagged(t, msg, 12.34, "[SPAM]")
	want := "X-Spam: yes\r\nX-Spam-Score: 12.34\r\nReceived: from x\r\nSubject: [SPAM] Cheap\r\n watches\r\nFrom: a@b\r\n\r\nX-Spam: no\r\nSubject: body\r\n"
	if got != want {
		t.Errorf("tagged:\n%q\nwant\n%q", got, want)
	}
	// Already prefixed, no prefix, no Subject, no body.
	if got := tagged(t, "Subject: [SPAM] x\r\n\r\nb", 6, "[SPAM] "); got != "X-Spam: yes\r\nX-Spam-Score: 6\r\nSubject: [SPAM] x\r\n\r\nb" {
		t.Errorf("prefixed twice: %q", got)
	}
	if got := tagged(t, "Subject: x\r\n\r\nb", 6, ""); got != "X-Spam: yes\r\nX-Spam-Score: 6\r\nSubject: x\r\n\r\nb" {
		t.Errorf("no prefix: %q", got)
	}
	if got := tagged(t, "From: a\r\n", 6, "[S]"); got != "X-Spam: yes\r\nX-Spam-Score: 6\r\nFrom: a\r\n" {
		t.Errorf("header only: %q", got)
	}
	// A huge body streams through unchanged.
	body := strings.Repeat("x", 100000) + "\r\n"
	if got := tagged(t, "Subject: s\r\n\r\n"+body, 6, ""); !strings.HasSuffix(got, "\r\n\r\n"+body) {
		t.Errorf("body changed")
	}
}

func FuzzTagged(f *testing.F) {
	f.Add("Subject: a\r\nX-Spam: no\r\n x\r\n\r\nbody", "[SPAM] ")
	f.Add("X-Spam-Score:1\r\n", "")
	f.Add("\r\nbody only", "p")
	f.Fuzz(func(t *testing.T, msg, prefix string) {
		b, err := io.ReadAll(Tagged(strings.NewReader(msg), 7.5, prefix))
		if err != nil {
			t.Fatal(err)
		}
		out := string(b)
		if !strings.HasPrefix(out, "X-Spam: yes\r\nX-Spam-Score: 7.5\r\n") {
			t.Fatalf("not tagged: %q", out)
		}
		hdr, _, _ := strings.Cut(out[len("X-Spam: yes\r\nX-Spam-Score: 7.5\r\n"):], "\r\n\r\n")
		for _, l := range strings.Split(hdr, "\r\n") {
			n, _, _ := strings.Cut(l, ":")
			if strings.EqualFold(strings.TrimSpace(n), "X-Spam") || strings.EqualFold(strings.TrimSpace(n), "X-Spam-Score") {
				if len(msg) < MaxHeaderBytes && !strings.Contains(msg, "\n\n") {
					t.Fatalf("sender's %q kept in %q", l, out)
				}
			}
		}
		// The body after the first empty line comes through unchanged.
		if i := strings.Index(msg, "\r\n\r\n"); i >= 0 && !strings.Contains(msg[:i+4], "\n\n") && !strings.HasPrefix(msg, "\r\n") && !strings.HasPrefix(msg, "\n") {
			if !strings.HasSuffix(out, msg[i:]) {
				t.Fatalf("body changed: %q -> %q", msg, out)
			}
		}
	})
}
