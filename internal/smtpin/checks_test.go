package smtpin

import (
	"context"
	"io"
	"maps"
	"strings"
	"sync"
	"testing"

	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/mailauth"
	"github.com/postino-mail/postino/internal/metrics"
)

// scriptedCheck is an inbound check whose findings are set by the test:
// what it adds at each stage, keyed by what the stage sees.
type scriptedCheck struct {
	mu      sync.Mutex
	begin   inbound.Result            // added at Begin when Check is set
	mail    map[string]inbound.Result // by MAIL FROM
	rcpt    map[string]inbound.Result // by RCPT TO
	data    map[string]inbound.Result // by Subject line found in the message
	header  string                    // added at DATA
	rewrite func(string) string       // replaces the message at DATA
	seen    []string                  // stages called, in order
	ended   int
}

func (c *scriptedCheck) Name() string { return "scripted" }

func (c *scriptedCheck) log(s string) {
	c.mu.Lock()
	c.seen = append(c.seen, s)
	c.mu.Unlock()
}

func (c *scriptedCheck) Begin(ctx context.Context, conn *inbound.Conn, v *inbound.Verdict) inbound.Session {
	c.log("begin " + conn.Helo)
	if c.begin.Check != "" {
		v.Add(c.begin)
	}
	return &scriptedSession{c}
}

type scriptedSession struct{ c *scriptedCheck }

func (s *scriptedSession) Mail(ctx context.Context, from string, v *inbound.Verdict) {
	s.c.log("mail " + from)
	if r, ok := s.c.mail[from]; ok {
		v.Add(r)
	}
}

func (s *scriptedSession) Rcpt(ctx context.Context, env *inbound.Envelope, rcpt string, v *inbound.Verdict) {
	s.c.log("rcpt " + rcpt + " " + strings.Join(env.Mailboxes, ","))
	if r, ok := s.c.rcpt[rcpt]; ok {
		v.Add(r)
	}
}

type stringMessage string

func (m stringMessage) Reader() io.Reader { return strings.NewReader(string(m)) }
func (m stringMessage) Size() int64       { return int64(len(m)) }

func (s *scriptedSession) Data(ctx context.Context, env *inbound.Envelope, msg inbound.Message, v *inbound.Verdict) (inbound.Message, error) {
	b, err := io.ReadAll(msg.Reader())
	if err != nil {
		return nil, err
	}
	s.c.log("data " + strings.Join(env.Rcpts, ","))
	for subj, r := range s.c.data {
		if strings.Contains(string(b), "Subject: "+subj+"\r\n") {
			v.Add(r)
		}
	}
	if s.c.header != "" {
		v.AddHeader(s.c.header)
	}
	if s.c.rewrite != nil {
		return stringMessage(s.c.rewrite(string(b))), nil
	}
	return nil, nil
}

func (s *scriptedSession) End() {
	s.c.mu.Lock()
	s.c.ended++
	s.c.mu.Unlock()
}

func checkEnv(t *testing.T, role Role, c *scriptedCheck) *env {
	return newEnv(t, role, func(ec *envConfig) {
		ec.tls = true
		ec.opts.Checks = []inbound.Check{c}
	})
}

// TestChecksStages: every stage is called in order, each stage's demand
// refuses its own command, and what the session's checks found refuses
// at RCPT (as Postfix's smtpd_delay_reject), over plain and STARTTLS.
func TestChecksStages(t *testing.T) {
	for _, starttls := range []bool{false, true} {
		c := &scriptedCheck{
			mail: map[string]inbound.Result{
				"temp@remote.example": {Check: "scripted", Action: inbound.Tempfail, Reply: "Sender domain lookup failed", Detail: "test"},
			},
			rcpt: map[string]inbound.Result{
				"bob@example.test": {Check: "scripted", Action: inbound.Tempfail, Code: 450, Enhanced: [3]int{4, 2, 0}, Reply: "Greylisted"},
			},
			data: map[string]inbound.Result{
				"spam": {Check: "scripted", Action: inbound.Reject, Reply: "Spam refused", Detail: "test"},
			},
			header: "Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=remote.example",
		}
		e := checkEnv(t, RoleMX, c)
		cl := e.dial()
		cl.ehlo()
		if starttls {
			cl.startTLS()
			cl.ehlo()
		}
		cl.cmd(451, "4.7.1 Sender domain lookup failed", "MAIL FROM:<temp@remote.example>")
		cl.cmd(250, "", "MAIL FROM:<x@remote.example>")
		cl.cmd(450, "4.2.0 Greylisted", "RCPT TO:<bob@example.test>")
		cl.cmd(250, "", "RCPT TO:<alice@example.test>")
		cl.cmd(354, "", "DATA")
		cl.write("Subject: spam\r\n\r\nbuy\r\n.\r\n")
		cl.expect(550, "5.7.1 Spam refused")
		e.expectNoMessages("alice@example.test")
		cl.send("x@remote.example", []string{"alice@example.test"}, "Subject: hello\r\n\r\nhi\r\n")
		msgs := e.messages("alice@example.test")
		if len(msgs) != 1 {
			t.Fatalf("delivered %d messages", len(msgs))
		}
		ar := strings.Index(msgs[0], "Authentication-Results: mx.example.test; spf=pass")
		rcv := strings.Index(msgs[0], "Received: from ")
		if ar < 0 || rcv < 0 || ar > rcv || strings.Contains(msgs[0], "bob") {
			t.Fatalf("delivered message:\n%s", msgs[0])
		}
		cl.cmd(221, "", "QUIT")
		e.waitIdle()
		c.mu.Lock()
		seen := strings.Join(c.seen, "|")
		ended := c.ended
		c.mu.Unlock()
		want := "begin client.example|mail temp@remote.example|mail x@remote.example|rcpt bob@example.test bob@example.test|rcpt alice@example.test alice@example.test|data alice@example.test|mail x@remote.example|rcpt alice@example.test alice@example.test|data alice@example.test"
		if starttls {
			want = "begin client.example|" + want // a new session after STARTTLS
		}
		if seen != want || ended != 1+boolInt(starttls) {
			t.Errorf("stages:\n got %s\nwant %s\nended %d", seen, want, ended)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestChecksSessionRefusalAtRcpt: what Begin found (a blocklisted
// client) refuses every RCPT, not MAIL, over implicit TLS too.
func TestChecksSessionRefusalAtRcpt(t *testing.T) {
	c := &scriptedCheck{begin: inbound.Result{Check: "dnsbl", Action: inbound.Reject, Code: 554, Enhanced: [3]int{5, 7, 1}, Reply: "Client host blocked", Detail: "listed"}}
	e := checkEnv(t, RoleMX, c)
	for _, cl := range []*client{e.dial(), e.dialTLS()} {
		cl.ehlo()
		cl.cmd(250, "", "MAIL FROM:<x@remote.example>")
		cl.cmd(554, "5.7.1 Client host blocked", "RCPT TO:<alice@example.test>")
		cl.cmd(554, "5.7.1 Client host blocked", "RCPT TO:<bob@example.test>")
		cl.cmd(221, "", "QUIT")
	}
	e.expectNoMessages("alice@example.test")
}

// TestChecksRewriteMessage: a check that changes the message (a milter
// replacing the body) has its version delivered, to every copy.
func TestChecksRewriteMessage(t *testing.T) {
	c := &scriptedCheck{rewrite: func(m string) string {
		return strings.Replace(m, "Subject: hello", "Subject: [SPAM] hello", 1)
	}}
	e := checkEnv(t, RoleMX, c)
	cl := e.dial()
	cl.ehlo()
	cl.send("x@remote.example", []string{"alice@example.test", "bob@example.test"}, "Subject: hello\r\n\r\nhi\r\n")
	for _, u := range []string{"alice@example.test", "bob@example.test"} {
		msgs := e.messages(u)
		if len(msgs) != 1 || !strings.Contains(msgs[0], "Subject: [SPAM] hello\r\n") {
			t.Fatalf("%s got %q", u, msgs)
		}
	}
}

// TestChecksNotOnSubmission: mail submitted by an authenticated user is
// not judged by the MX's checks.
func TestChecksNotOnSubmission(t *testing.T) {
	c := &scriptedCheck{begin: inbound.Result{Check: "dnsbl", Action: inbound.Reject}}
	e := newEnv(t, RoleSubmission, func(ec *envConfig) {
		ec.tls = true
		ec.opts.Checks = []inbound.Check{c}
	})
	cl := e.dial()
	cl.ehlo()
	cl.startTLS()
	cl.ehlo()
	cl.authPlain("alice@example.test", "alice-pw", 235, "")
	cl.send("alice@example.test", []string{"bob@example.test"}, "Subject: hi\r\n\r\nhi\r\n")
	if len(e.messages("bob@example.test")) != 1 {
		t.Fatal("submitted message not delivered")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.seen) != 0 {
		t.Fatalf("checks ran on submission: %v", c.seen)
	}
}

// TestChecksTimed: each stage call of each check is observed in
// postino_check_seconds under the check's name and the stage; a session
// without checks (submission) observes nothing.
func TestChecksTimed(t *testing.T) {
	m := metrics.New()
	c := &scriptedCheck{}
	e := newEnv(t, RoleMX, func(ec *envConfig) {
		ec.opts.Checks = []inbound.Check{c}
		ec.opts.Metrics = m
	})
	cl := e.dial()
	cl.ehlo()
	cl.send("x@remote.example", []string{"alice@example.test", "bob@example.test"}, "Subject: one\r\n\r\nhi\r\n")
	cl.send("y@remote.example", []string{"alice@example.test"}, "Subject: two\r\n\r\nhi\r\n")
	cl.cmd(221, "", "QUIT")
	e.waitIdle()
	want := map[string]uint64{metrics.StageConnect: 1, metrics.StageMail: 2, metrics.StageRcpt: 3, metrics.StageData: 2}
	if got := checkCounts(t, m, "scripted"); !maps.Equal(got, want) {
		t.Errorf("observations by stage = %v, want %v", got, want)
	}
}

// checkCounts returns the number of observations of postino_check_seconds
// for check, by stage.
func checkCounts(t *testing.T, m *metrics.Metrics, check string) map[string]uint64 {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "postino_check_seconds" {
			continue
		}
		for _, mt := range f.GetMetric() {
			var name, stage string
			for _, l := range mt.GetLabel() {
				switch l.GetName() {
				case "check":
					name = l.GetValue()
				case "stage":
					stage = l.GetValue()
				}
			}
			if name == check {
				got[stage] = mt.GetHistogram().GetSampleCount()
			}
		}
	}
	return got
}

// TestSubmissionStripsForgedAuthResults: a local user cannot hand another
// local user an Authentication-Results field that claims our authserv-id
// (the MX never sees the message); other servers' fields stay. Over
// STARTTLS submission and implicit TLS.
func TestSubmissionStripsForgedAuthResults(t *testing.T) {
	e := newEnv(t, RoleSubmission, func(ec *envConfig) {
		ec.tls = true
		ec.opts.SubmissionChecks = []inbound.Check{mailauth.NewStripper("mx.example.test")}
	})
	msg := "Authentication-Results: MX.example.test; dkim=pass header.d=bank.example\r\n" +
		"Authentication-Results: other.example; spf=pass smtp.mailfrom=alice@example.test\r\n" +
		"From: alice@example.test\r\nSubject: forged\r\n\r\nhi\r\n"
	for i, cl := range []*client{e.dial(), e.dialTLS()} {
		cl.ehlo()
		if i == 0 {
			cl.startTLS()
			cl.ehlo()
		}
		cl.authPlain("alice@example.test", "alice-pw", 235, "")
		cl.send("alice@example.test", []string{"bob@example.test"}, msg)
		cl.cmd(221, "", "QUIT")
	}
	msgs := e.messages("bob@example.test")
	if len(msgs) != 2 {
		t.Fatalf("delivered %d messages", len(msgs))
	}
	for _, m := range msgs {
		if strings.Contains(m, "MX.example.test; dkim=pass") || !strings.Contains(m, "Authentication-Results: other.example; spf=pass") || !strings.Contains(m, "Subject: forged\r\n\r\nhi\r\n") {
			t.Fatalf("delivered:\n%s", m)
		}
	}
}
