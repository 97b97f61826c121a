package smtpin

import (
	"io"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/junk"
	"github.com/postino-mail/postino/internal/quarantine"
)

// junkEnv is an MX whose scripted check scores a message by its Subject
// ("score 7" adds 7) and demands quarantine for "Subject: virus"; the
// users' choices are in choices.
func junkEnv(t *testing.T, choices map[string]junk.Choice) (*env, *quarantine.Store) {
	e, q, _ := junkEnvRelay(t, choices)
	return e, q
}

func junkEnvRelay(t *testing.T, choices map[string]junk.Choice, mods ...func(*envConfig)) (*env, *quarantine.Store, *fakeRelay) {
	relay := &fakeRelay{}
	q := &quarantine.Store{Dir: t.TempDir()}
	c := &scriptedCheck{data: map[string]inbound.Result{
		"score 7":  {Check: "scripted", Score: 7, Detail: "seven"},
		"score 12": {Check: "scripted", Score: 12, Detail: "twelve"},
		"score 20": {Check: "scripted", Score: 20, Detail: "twenty"},
		"flagged":  {Check: "scripted", Action: inbound.Tag, Detail: "X-Spam: yes"},
		"virus":    {Check: "scripted", Action: inbound.Quarantine, Detail: "virus found"},
	}}
	e := newEnv(t, RoleMX, func(ec *envConfig) {
		ec.tls = true
		ec.opts.Checks = []inbound.Check{c}
		ec.opts.Relay = relay
		ec.opts.Junk = &Junk{
			Policy:     junk.Policy{TagScore: 5, QuarantineScore: 10, RejectScore: 15, Default: junk.Score, SubjectPrefix: "[SPAM]"},
			Choice:     func(mb string) junk.Choice { return choices[mb] },
			Quarantine: q,
		}
		for _, m := range mods {
			m(ec)
		}
	})
	return e, q, relay
}

func held(t *testing.T, q *quarantine.Store, user string) []string {
	t.Helper()
	l, err := q.List(user)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range l {
		_, rc, err := q.Open(e.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		out = append(out, string(b))
	}
	return out
}

// TestJunkBands: by score, the default choice tags, quarantines or
// refuses; a check's own demand (X-Spam: yes, virus) applies at any
// score; clean mail is untouched. Over plain SMTP, STARTTLS and implicit
// TLS.
func TestJunkBands(t *testing.T) {
	e, q := junkEnv(t, nil)
	for i, cl := range []*client{e.dial(), e.dial(), e.dialTLS()} {
		cl.ehlo()
		if i == 1 {
			cl.startTLS()
			cl.ehlo()
		}
		cl.dataToAlice()
		cl.write("Subject: score 20\r\n\r\nbuy\r\n.\r\n")
		cl.expect(550, "5.7.1 Message refused as spam")
		cl.cmd(221, "", "QUIT")
	}
	e.expectNoMessages("alice@example.test")
	if h := held(t, q, "alice@example.test"); len(h) != 0 {
		t.Fatalf("refused message held: %q", h)
	}
	cl := e.dial()
	cl.ehlo()
	cl.send("x@remote.example", []string{"alice@example.test"}, "Subject: clean\r\nX-Spam: yes\r\n\r\nhello\r\n")
	cl.send("x@remote.example", []string{"alice@example.test"}, "Subject: score 7\r\nX-Spam: no\r\nX-Spam-Score: -50\r\n\r\nbuy\r\n")
	cl.send("x@remote.example", []string{"alice@example.test"}, "Subject: flagged\r\n\r\nbuy\r\n")
	cl.send("x@remote.example", []string{"alice@example.test"}, "Subject: score 12\r\n\r\nbuy more\r\n")
	cl.send("x@remote.example", []string{"alice@example.test"}, "Subject: virus\r\n\r\nbad\r\n")
	msgs := e.messages("alice@example.test")
	if len(msgs) != 3 {
		t.Fatalf("delivered %d messages: %q", len(msgs), msgs)
	}
	if strings.Contains(msgs[0], "X-Spam-Score") || !strings.Contains(msgs[0], "Subject: clean\r\n") {
		t.Errorf("clean message changed:\n%s", msgs[0])
	}
	tagged := msgs[1]
	rcv := strings.Index(tagged, "Received: from ")
	xs := strings.Index(tagged, "X-Spam: yes\r\nX-Spam-Score: 7\r\n")
	if rcv < 0 || xs < rcv || !strings.Contains(tagged, "Subject: [SPAM] score 7\r\n") || strings.Contains(tagged, "X-Spam: no") || strings.Contains(tagged, "-50") {
		t.Errorf("tagged message:\n%s", tagged)
	}
	if !strings.Contains(msgs[2], "X-Spam: yes\r\nX-Spam-Score: 0\r\n") || !strings.Contains(msgs[2], "Subject: [SPAM] flagged") {
		t.Errorf("flagged message:\n%s", msgs[2])
	}
	h := held(t, q, "alice@example.test")
	if len(h) != 2 || !strings.Contains(h[0], "Subject: score 12\r\n") || !strings.Contains(h[0], "Received: from ") || !strings.Contains(h[1], "Subject: virus") {
		t.Fatalf("held: %q", h)
	}
	l, _ := q.List("alice@example.test")
	if l[0].Score != 12 || l[0].Sender != "x@remote.example" || l[0].Recipient != "alice@example.test" || !strings.Contains(l[0].Reasons, "twelve") {
		t.Errorf("held entry: %+v", l[0])
	}
}

// TestJunkPerUser: recipients with different choices get their own
// copies: tagged for one, held for another, untouched for one who turned
// it off; the message is refused only when every recipient refuses it,
// else a refusing user's copy is held.
func TestJunkPerUser(t *testing.T) {
	e, q := junkEnv(t, map[string]junk.Choice{
		"alice@example.test": junk.Tag,
		"bob@example.test":   junk.Quarantine,
	})
	cl := e.dial()
	cl.ehlo()
	cl.send("x@remote.example", []string{"alice@example.test", "bob@example.test"}, "Subject: score 7\r\n\r\nbuy\r\n")
	if m := e.messages("alice@example.test"); len(m) != 1 || !strings.Contains(m[0], "X-Spam: yes") {
		t.Errorf("alice (tag): %q", m)
	}
	e.expectNoMessages("bob@example.test")
	if h := held(t, q, "bob@example.test"); len(h) != 1 {
		t.Errorf("bob (quarantine): held %d", len(h))
	}

	e2, q2 := junkEnv(t, map[string]junk.Choice{"alice@example.test": junk.Off, "bob@example.test": junk.Reject})
	cl = e2.dial()
	cl.ehlo()
	cl.send("x@remote.example", []string{"alice@example.test", "bob@example.test"}, "Subject: score 20\r\n\r\nbuy\r\n")
	if m := e2.messages("alice@example.test"); len(m) != 1 || strings.Contains(m[0], "X-Spam") {
		t.Errorf("alice (off): %q", m)
	}
	e2.expectNoMessages("bob@example.test")
	if h := held(t, q2, "bob@example.test"); len(h) != 1 {
		t.Errorf("bob (reject, with another recipient accepting): held %d, want 1", len(h))
	}
	// Every recipient refuses: the message is refused.
	cl.cmd(250, "", "MAIL FROM:<x@remote.example>")
	cl.cmd(250, "", "RCPT TO:<bob@example.test>")
	cl.cmd(354, "", "DATA")
	cl.write("Subject: score 7\r\n\r\nbuy\r\n.\r\n")
	cl.expect(550, "5.7.1 Message refused as spam")
}

// TestJunkForwarded: a copy forwarded to a remote address is tagged (it
// cannot be held for a remote user) while the local copy is quarantined.
func TestJunkForwarded(t *testing.T) {
	e, q, relay := junkEnvRelay(t, map[string]junk.Choice{"alice@example.test": junk.Quarantine})
	cl := e.dial()
	cl.ehlo()
	cl.send("x@remote.example", []string{"fwd@example.test"}, "Subject: score 7\r\n\r\nbuy\r\n")
	e.expectNoMessages("alice@example.test")
	if h := held(t, q, "alice@example.test"); len(h) != 1 {
		t.Errorf("alice: held %d", len(h))
	}
	calls := relay.get()
	if len(calls) != 1 || !strings.Contains(calls[0].msg, "X-Spam: yes\r\nX-Spam-Score: 7\r\n") || !strings.Contains(calls[0].msg, "Subject: [SPAM] score 7") {
		t.Errorf("relayed: %+v", calls)
	}
}

// TestJunkQuarantineOverQuota: a copy to be held does not need room in
// the mailbox: a full mailbox does not refuse it.
func TestJunkQuarantineOverQuota(t *testing.T) {
	e, q, _ := junkEnvRelay(t, nil, func(c *envConfig) { c.quotas = byteQuotas{"alice@example.test": 10} })
	cl := e.dial()
	cl.ehlo()
	cl.send("x@remote.example", []string{"alice@example.test"}, "Subject: score 12\r\n\r\nbuy more\r\n")
	if h := held(t, q, "alice@example.test"); len(h) != 1 {
		t.Errorf("held %d", len(h))
	}
}
