package milter

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/testutil"
)

type stringMessage string

func (m stringMessage) Reader() io.Reader { return strings.NewReader(string(m)) }
func (m stringMessage) Size() int64       { return int64(len(m)) }

// runTx runs one transaction through a check and returns the verdict and
// the message as the check left it.
func runTx(t *testing.T, c *Check, from string, rcpts []string, msg string) (*inbound.Verdict, string) {
	t.Helper()
	ctx := context.Background()
	conn := &inbound.Conn{ID: "S1", Remote: netip.MustParseAddr("192.0.2.7"), Helo: "client.example", Hostname: "mx.example.org"}
	v := &inbound.Verdict{}
	s := c.Begin(ctx, conn, v)
	defer s.(inbound.Ender).End()
	s.(inbound.MailStage).Mail(ctx, from, v)
	env := &inbound.Envelope{ID: "T1", From: from}
	for _, r := range rcpts {
		s.(inbound.RcptStage).Rcpt(ctx, env, r, v)
		env.Rcpts = append(env.Rcpts, r)
	}
	repl, err := s.(inbound.DataStage).Data(ctx, env, stringMessage(msg), v)
	if err != nil {
		t.Fatalf("Data: %v", err)
	}
	if repl == nil {
		return v, msg
	}
	b, err := io.ReadAll(repl.Reader())
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != repl.Size() {
		t.Errorf("replacement Size() %d, read %d octets", repl.Size(), len(b))
	}
	return v, string(b)
}

func testMessage(subject, body string) string {
	return "From: Sender <sender@example.net>\r\nTo: user@example.org\r\nSubject: " + subject +
		"\r\nDate: Mon, 30 Nov 2026 01:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", "") + "@example.net>\r\n\r\n" + body + "\r\n"
}

// TestRspamd runs the check against a real rspamd as a milter: GTUBE is
// refused, the "add header" GTUBE is tagged with a score, "rewrite
// subject" changes the Subject, clean mail passes; with rspamd stopped
// the filter's on_failure setting decides.
func TestRspamd(t *testing.T) {
	r := testutil.StartRspamd(t)
	c := New(Config{Name: "rspamd", Network: "tcp", Address: r.Addr, Timeout: 30 * time.Second})

	v, _ := runTx(t, c, "sender@example.net", []string{"user@example.org"}, testMessage("gtube", testutil.GTUBE))
	res, ok := v.Strongest()
	if !ok || res.Action != inbound.Reject || res.Code/100 != 5 {
		t.Fatalf("GTUBE: strongest %+v %v, want a 5xx Reject\n%s", res, ok, r.Log())
	}
	t.Logf("GTUBE refused: %d %v %q", res.Code, res.Enhanced, res.Reply)

	v, out := runTx(t, c, "sender@example.net", []string{"user@example.org"}, testMessage("tagged rspamd-score-7.5", "Buy now"))
	res, ok = v.Strongest()
	if !ok || res.Action != inbound.Tag {
		t.Errorf("add-header GTUBE: strongest %+v %v, want Tag; results %+v", res, ok, v.Results())
	}
	if v.Score() < 7.5 || v.Score() > 9 {
		t.Errorf("add-header: score %v, want rspamd's (7.5 and a little); results %+v", v.Score(), v.Results())
	}
	if strings.Contains(out, "\r\nX-Spam: ") {
		t.Errorf("X-Spam copied into the message (junk handling writes its own):\n%s", out)
	}

	_, out = runTx(t, c, "sender@example.net", []string{"user@example.org"}, testMessage("subject", testutil.GTUBERewriteSubject))
	if !strings.Contains(out, "Subject: ") || strings.Contains(out, "\r\nSubject: subject\r\n") {
		t.Errorf("rewrite subject: Subject not changed:\n%s", out)
	}

	v, out = runTx(t, c, "sender@example.net", []string{"user@example.org"}, testMessage("clean", "Hello, this is a normal message.\r\nSee you."))
	if res, ok := v.Strongest(); ok {
		t.Errorf("clean mail: %+v", res)
	}
	if v.Score() >= 6 {
		t.Errorf("clean mail: score %v", v.Score())
	}
	if !strings.HasSuffix(out, "\r\n\r\nHello, this is a normal message.\r\nSee you.\r\n") {
		t.Errorf("clean mail body changed:\n%q", out)
	}

	r.Stop()
	v, _ = runTx(t, c, "sender@example.net", []string{"user@example.org"}, testMessage("down", "body"))
	if res, ok := v.Strongest(); !ok || res.Action != inbound.Tempfail || res.Code != 451 {
		t.Errorf("rspamd stopped, on_failure tempfail: %+v %v", res, ok)
	}
	acc := New(Config{Name: "rspamd", Network: "tcp", Address: r.Addr, AcceptOnFailure: true})
	v, _ = runTx(t, acc, "sender@example.net", []string{"user@example.org"}, testMessage("down", "body"))
	if res, ok := v.Strongest(); ok {
		t.Errorf("rspamd stopped, on_failure accept: %+v", res)
	}
}
