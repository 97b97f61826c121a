package queue

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message"

	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/testutil"
)

// dsnParts parses a DSN with go-message and returns its header and parts
// (content type -> body).
type dsn struct {
	header message.Header
	types  []string
	bodies []string
}

func parseDSN(t testing.TB, raw string) *dsn {
	t.Helper()
	m, err := message.Read(strings.NewReader(raw))
	if err != nil {
		t.Fatalf("parsing DSN: %v\n%s", err, raw)
	}
	d := &dsn{header: m.Header}
	ct, params, _ := m.Header.ContentType()
	if ct != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("DSN content type %q %v", ct, params)
	}
	mr := m.MultipartReader()
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pt, _, _ := p.Header.ContentType()
		b, _ := io.ReadAll(p.Body)
		d.types = append(d.types, pt)
		d.bodies = append(d.bodies, string(b))
	}
	if len(d.types) != 3 || d.types[0] != "text/plain" {
		t.Fatalf("DSN parts %v", d.types)
	}
	return d
}

func (d *dsn) status() string { return d.bodies[1] }

// route sets up one MX for a domain at a test server.
func (e *env) route(domain string, srv *testServer) {
	e.net.addMX(domain, "mx."+domain, 10)
	e.nextIP++
	e.net.host("mx."+domain, fmt.Sprintf("127.0.1.%d", e.nextIP), srv)
}

func TestDeliverBasic(t *testing.T) {
	e := newEnv(t, nil)
	srv := newServer(t, srvConfig{})
	srv2 := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	e.net.addMX("other.test", "mx.other.test", 5)
	e.net.host("mx.other.test", "127.0.0.3", srv2)
	id := e.enqueue("alice@example.test", []string{"bob@remote.test", "carol@remote.test", "dan@other.test"}, envelope.DSNParams{}, simpleMsg("basic"))
	if got := e.entries(); len(got) != 2 || got[0].MessageID != id {
		t.Fatalf("entries %+v", got)
	}
	e.runOnce()
	msgs := srv.messages()
	if len(msgs) != 1 || strings.Join(msgs[0].rcpts, ",") != "bob@remote.test,carol@remote.test" {
		t.Fatalf("remote.test got %+v", msgs)
	}
	if !strings.Contains(msgs[0].data, "\r\n.a line with a dot\r\n") || !strings.HasPrefix(msgs[0].data, "From: alice") {
		t.Errorf("data not transparent: %q", msgs[0].data)
	}
	if !strings.Contains(msgs[0].mailLine, "SIZE=") || strings.Contains(msgs[0].mailLine, "BODY=8BITMIME") {
		t.Errorf("MAIL line %q", msgs[0].mailLine)
	}
	if m2 := srv2.messages(); len(m2) != 1 || m2[0].rcpts[0] != "dan@other.test" {
		t.Fatalf("other.test got %+v", m2)
	}
	if got := e.entries(); len(got) != 0 {
		t.Fatalf("entries left: %+v", got)
	}
	if n := len(e.mailbox("alice@example.test")); n != 0 {
		t.Errorf("sender got %d messages", n)
	}
}

// TestPipeliningAndReuse: the server reads the whole MAIL/RCPT/DATA group
// before answering (a client that waits for each reply would hang), and
// three messages to one domain share one connection.
func TestPipeliningAndReuse(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxPerDomain = 1 })
	srv := newServer(t, srvConfig{strictPipelining: true})
	e.route("remote.test", srv)
	for i := range 3 {
		e.enqueue("alice@example.test", []string{"bob@remote.test", "x@remote.test"}, envelope.DSNParams{}, simpleMsg(fmt.Sprint("p", i)))
	}
	e.runOnce()
	if n := len(srv.messages()); n != 3 {
		t.Fatalf("%d messages", n)
	}
	if n := srv.connCount(); n != 1 {
		t.Errorf("%d connections, want 1 (reuse)", n)
	}
}

func TestPerDomainConcurrency(t *testing.T) {
	var mu sync.Mutex
	cur, peak := 0, 0
	e := newEnv(t, func(o *Options) { o.MaxPerDomain = 2 })
	srv := newServer(t, srvConfig{onData: func(int) bool {
		mu.Lock()
		cur++
		peak = max(peak, cur)
		mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		mu.Lock()
		cur--
		mu.Unlock()
		return true
	}})
	e.route("remote.test", srv)
	for i := range 6 {
		e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg(fmt.Sprint("c", i)))
	}
	e.runOnce()
	if n := len(srv.messages()); n != 6 {
		t.Fatalf("%d messages", n)
	}
	if peak != 2 || srv.connCount() != 2 {
		t.Errorf("peak concurrency %d with %d connections, want 2 and 2", peak, srv.connCount())
	}
}

func TestSTARTTLS(t *testing.T) {
	cfg, _ := testTLS(t)
	e := newEnv(t, nil)
	srv := newServer(t, srvConfig{tls: cfg})
	plain := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	e.route("plain.test", plain)
	e.enqueue("alice@example.test", []string{"bob@remote.test", "bob@plain.test"}, envelope.DSNParams{}, simpleMsg("tls"))
	e.runOnce()
	if m := srv.messages(); len(m) != 1 || !m[0].tls {
		t.Errorf("TLS server: %+v", m)
	}
	if m := plain.messages(); len(m) != 1 || m[0].tls {
		t.Errorf("server without STARTTLS: %+v", m)
	}
	// A broken TLS setup on the server: delivered in cleartext.
	e2 := newEnv(t, nil)
	bad := newServer(t, srvConfig{tls: &tls.Config{}}) // no certificate: handshake fails
	e2.route("remote.test", bad)
	e2.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("tls2"))
	e2.runOnce()
	if m := bad.messages(); len(m) != 1 || m[0].tls {
		t.Errorf("after failed handshake: %+v", m)
	}
}

func TestSmarthost(t *testing.T) {
	cfg, pool := testTLS(t)
	srv := newServer(t, srvConfig{tls: cfg, auth: "u:secret", name: "smarthost.test"})
	e := newEnv(t, func(o *Options) {
		o.MaxPerDomain = 1
		o.Smarthost = &Smarthost{Addr: "smarthost.test:587", Username: "u", Password: "secret", RequireTLS: true, TLS: &tls.Config{RootCAs: pool, ServerName: "smarthost.test"}}
	})
	e.net.host("smarthost.test", "127.0.0.9", nil)
	e.net.routes["127.0.0.9:587"] = srv.addr()
	e.enqueue("alice@example.test", []string{"bob@remote.test", "x@elsewhere.test"}, envelope.DSNParams{}, simpleMsg("smart"))
	e.runOnce()
	m := srv.messages()
	if len(m) != 2 || !m[0].tls || !m[0].authed || srv.connCount() != 1 {
		t.Fatalf("smarthost got %+v over %d connections", m, srv.connCount())
	}
	// RequireTLS with a smarthost that offers none: deferred, not sent.
	plain := newServer(t, srvConfig{auth: "u:secret"})
	e2 := newEnv(t, func(o *Options) { o.Smarthost = &Smarthost{Addr: "127.0.0.9:587", RequireTLS: true} })
	e2.net.routes["127.0.0.9:587"] = plain.addr()
	e2.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("smart2"))
	e2.runOnce()
	if len(plain.messages()) != 0 {
		t.Fatal("sent without TLS")
	}
	en := e2.entries()
	if len(en) != 1 || en[0].Recipients[0].Status != StatusPending || !strings.Contains(en[0].Recipients[0].Reply, "TLS is required") {
		t.Fatalf("entry %+v", en[0].Recipients)
	}
}

// TestMXOrder: preference order, equal preferences shuffled, the next MX
// when one is down, the implicit MX without MX records.
func TestMXOrder(t *testing.T) {
	e := newEnv(t, nil)
	good := newServer(t, srvConfig{})
	e.net.addMX("remote.test", "mx3.remote.test", 30)
	e.net.addMX("remote.test", "mx1.remote.test", 10)
	e.net.addMX("remote.test", "mx2.remote.test", 20)
	e.net.host("mx1.remote.test", "127.0.0.11", nil) // refuses
	e.net.host("mx2.remote.test", "127.0.0.12", nil) // refuses
	e.net.host("mx3.remote.test", "127.0.0.13", good)
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("mx"))
	e.runOnce()
	if len(good.messages()) != 1 {
		t.Fatal("not delivered to the last MX")
	}
	if d := strings.Join(e.net.dialed(), " "); d != "127.0.0.11:25 127.0.0.12:25 127.0.0.13:25" {
		t.Errorf("dial order %s", d)
	}

	// Implicit MX: no MX records, the domain's own address.
	e.net.host("bare.test", "127.0.0.20", good)
	e.enqueue("alice@example.test", []string{"bob@bare.test"}, envelope.DSNParams{}, simpleMsg("implicit"))
	e.runOnce()
	if len(good.messages()) != 2 {
		t.Fatal("implicit MX not used")
	}

	// Equal preferences are shuffled.
	seen := map[string]bool{}
	for range 40 {
		hosts, f := e.q.lookupMX(context.Background(), "eq.test")
		if f == nil {
			seen[hosts[0].name] = true
		}
		e.net.mu.Lock()
		if _, ok := e.net.mx["eq.test"]; !ok {
			e.net.mx["eq.test"] = []*net.MX{{Host: "a.eq.test.", Pref: 5}, {Host: "b.eq.test.", Pref: 5}, {Host: "c.eq.test.", Pref: 1}, {Host: "d.eq.test.", Pref: 1}}
		}
		e.net.mu.Unlock()
	}
	if !seen["c.eq.test"] || !seen["d.eq.test"] || seen["a.eq.test"] || seen["b.eq.test"] {
		t.Errorf("first hosts seen %v", seen)
	}

	// We are an MX of the domain: only better hosts are used.
	e.net.addMX("self.test", "backup.self.test", 50)
	e.net.addMX("self.test", "postino.test", 20)
	e.net.addMX("self.test", "primary.self.test", 10)
	hosts, f := e.q.lookupMX(context.Background(), "self.test")
	if f != nil || len(hosts) != 1 || hosts[0].name != "primary.self.test" {
		t.Errorf("self MX: %v %v", hosts, f)
	}
}

func onlyEntry(t *testing.T, e *env) *Entry {
	t.Helper()
	en := e.entries()
	if len(en) != 1 {
		t.Fatalf("%d entries", len(en))
	}
	return en[0]
}

// bounceFor runs a scenario that must bounce at once and returns the DSN.
func bounceFor(t *testing.T, e *env, rcpt string, params envelope.DSNParams, body string) *dsn {
	t.Helper()
	e.enqueue("alice@example.test", []string{rcpt}, params, body)
	e.runOnce() // the attempt, then the DSN queued for local delivery
	e.runOnce()
	if en := e.entries(); len(en) != 0 {
		t.Fatalf("entries left: %+v", en[0].Recipients)
	}
	box := e.mailbox("alice@example.test")
	if len(box) != 1 {
		t.Fatalf("sender has %d messages", len(box))
	}
	if !strings.HasPrefix(box[0], "Return-Path: <>\r\n") {
		t.Errorf("DSN not sent with the null sender: %.80q", box[0])
	}
	return parseDSN(t, box[0])
}

func TestBounces(t *testing.T) {
	tests := []struct {
		name   string
		srv    srvConfig
		rcpt   string
		setup  func(e *env, srv *testServer)
		body   string
		status string // in the delivery-status part
	}{
		{name: "5xx RCPT", srv: srvConfig{rcpt: func(string) string { return "550 5.1.1 no such user" }}, status: "Status: 5.1.1"},
		{name: "5xx after DATA", srv: srvConfig{dataDone: func(int, string) string { return "554 5.7.1 spam" }}, status: "Diagnostic-Code: smtp; 554 5.7.1 spam"},
		{name: "5xx MAIL", srv: srvConfig{mail: func(string) string { return "553 5.7.1 sender refused" }}, status: "Status: 5.7.1"},
		{name: "no SMTPUTF8", srv: srvConfig{ext: []string{"PIPELINING", "8BITMIME"}}, rcpt: "bj\u00f6rn@remote.test", status: "Status: 5.6.7"},
		{name: "no 8BITMIME", srv: srvConfig{ext: []string{"PIPELINING"}}, body: "Subject: x\r\n\r\ncaf\xc3\xa9\r\n", status: "Status: 5.6.3"},
		{name: "over SIZE", srv: srvConfig{ext: []string{"SIZE 20"}}, status: "Status: 5.3.4"},
		{name: "null MX", setup: func(e *env, srv *testServer) {
			e.net.mu.Lock()
			e.net.mx["remote.test"] = []*net.MX{{Host: ".", Pref: 0}}
			e.net.mu.Unlock()
		}, status: "Status: 5.1.10"},
		{name: "NXDOMAIN", setup: func(e *env, srv *testServer) {
			e.net.mu.Lock()
			delete(e.net.mx, "remote.test")
			e.net.mu.Unlock()
		}, status: "Status: 5.4.4"},
		{name: "malformed address", rcpt: "nobody-at-all", status: "Status: 5.1"},
		{name: "bad domain", rcpt: "bob@bad..domain", status: "Status: 5.1.2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			srv := newServer(t, tc.srv)
			e.route("remote.test", srv)
			if tc.setup != nil {
				tc.setup(e, srv)
			}
			rcpt := tc.rcpt
			if rcpt == "" {
				rcpt = "bob@remote.test"
			}
			body := tc.body
			if body == "" {
				body = simpleMsg("bounce")
			}
			d := bounceFor(t, e, rcpt, envelope.DSNParams{}, body)
			if !strings.Contains(d.status(), tc.status) || !strings.Contains(d.status(), "Action: failed") {
				t.Errorf("status part lacks %q:\n%s", tc.status, d.status())
			}
			if d.header.Get("Subject") != "Undelivered Mail Returned to Sender" || !strings.HasPrefix(d.header.Get("From"), "Mail Delivery System <MAILER-DAEMON@postino.test>") {
				t.Errorf("DSN header %v", d.header)
			}
			if len(srv.messages()) != 0 {
				t.Errorf("message delivered anyway")
			}
		})
	}
}

// TestDSNParams: RET=FULL returns the message (of an authenticated
// submitter), ENVID and ORCPT are echoed,
// NOTIFY=NEVER and NOTIFY=SUCCESS,DELAY suppress the failure DSN, and
// parameters are passed to a DSN-capable server.
func TestDSNParams(t *testing.T) {
	e := newEnv(t, nil)
	srv := newServer(t, srvConfig{rcpt: func(a string) string {
		if strings.HasPrefix(a, "ok") {
			return ""
		}
		return "550 5.1.1 unknown"
	}})
	e.route("remote.test", srv)
	params := envelope.DSNParams{Return: "FULL", AuthUser: "alice@example.test", EnvelopeID: "env-42", Recipients: []envelope.RecipientDSN{
		{OriginalRecipientType: "rfc822", OriginalRecipient: "Bob@Alias.test"},
		{Notify: []string{"NEVER"}},
		{Notify: []string{"SUCCESS", "DELAY"}},
		{Notify: []string{"SUCCESS", "FAILURE"}, OriginalRecipientType: "rfc822", OriginalRecipient: "ok+x@remote.test"},
	}}
	e.enqueue("alice@example.test", []string{"bob@remote.test", "never@remote.test", "nofail@remote.test", "ok@remote.test"}, params, simpleMsg("full"))
	e.runOnce()
	e.runOnce()
	m := srv.messages()
	if len(m) != 1 || !strings.Contains(m[0].mailLine, "RET=FULL") || !strings.Contains(m[0].mailLine, "ENVID=env-42") ||
		m[0].rcptLines[0] != "RCPT TO:<ok@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;ok+2Bx@remote.test" {
		t.Fatalf("remote got %+v", m)
	}
	box := e.mailbox("alice@example.test")
	if len(box) != 1 {
		t.Fatalf("%d DSNs, want 1", len(box))
	}
	d := parseDSN(t, box[0])
	st := d.status()
	for _, want := range []string{"Original-Envelope-Id: env-42", "Final-Recipient: rfc822; bob@remote.test", "Original-Recipient: rfc822; Bob@Alias.test", "Remote-MTA: dns; mx.remote.test", "Reporting-MTA: dns; postino.test"} {
		if !strings.Contains(st, want) {
			t.Errorf("status part lacks %q:\n%s", want, st)
		}
	}
	for _, not := range []string{"never@", "nofail@", "ok@"} {
		if strings.Contains(st, not) {
			t.Errorf("status part reports %s:\n%s", not, st)
		}
	}
	if d.types[1] != "message/delivery-status" || d.types[2] != "message/rfc822" || !strings.Contains(d.bodies[2], "Hello.") {
		t.Errorf("RET=FULL parts %v: %q", d.types, d.bodies[2])
	}

	// RET=HDRS (and the default): headers only.
	e2 := newEnv(t, nil)
	e2.route("remote.test", srv)
	d2 := bounceFor(t, e2, "bob@remote.test", envelope.DSNParams{}, simpleMsg("hdrs"))
	if d2.types[2] != "text/rfc822-headers" || strings.Contains(d2.bodies[2], "Hello.") || !strings.Contains(d2.bodies[2], "Subject: hdrs") {
		t.Errorf("headers part %v %q", d2.types, d2.bodies[2])
	}
}

// TestSuccessRelayed: NOTIFY=SUCCESS with a server without DSN gets a
// "relayed" report; local recipients via the queue get "delivered".
func TestSuccessRelayed(t *testing.T) {
	e := newEnv(t, nil)
	srv := newServer(t, srvConfig{ext: []string{"PIPELINING", "8BITMIME"}})
	e.route("remote.test", srv)
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{Recipients: []envelope.RecipientDSN{{Notify: []string{"SUCCESS"}}}}, simpleMsg("ok"))
	e.runOnce()
	e.runOnce()
	box := e.mailbox("alice@example.test")
	if len(box) != 1 {
		t.Fatalf("%d reports", len(box))
	}
	d := parseDSN(t, box[0])
	if !strings.Contains(d.status(), "Action: relayed") || !strings.Contains(d.status(), "Status: 2.0.0") {
		t.Errorf("status:\n%s", d.status())
	}
}

func TestNullSenderNeverBounced(t *testing.T) {
	e := newEnv(t, nil)
	srv := newServer(t, srvConfig{rcpt: func(string) string { return "550 5.1.1 unknown" }})
	e.route("remote.test", srv)
	e.enqueue("", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("null"))
	e.runOnce()
	e.runOnce()
	if len(e.entries()) != 0 {
		t.Fatal("entry left")
	}
	// Nothing was queued as a bounce: the store only saw the one message.
	if n := len(e.mailbox("alice@example.test")); n != 0 {
		t.Fatalf("%d messages", n)
	}
}

// TestLocalRecipients: recipients in local domains are stored through the
// Deliverer, never sent out; an unknown local user bounces.
func TestLocalRecipients(t *testing.T) {
	e := newEnv(t, nil)
	e.enqueue("carol@remote.test", []string{"bob@example.test", "ghost@example.test"}, envelope.DSNParams{}, simpleMsg("local"))
	srv := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	e.runOnce()
	box := e.mailbox("bob@example.test")
	if len(box) != 1 || !strings.HasPrefix(box[0], "Return-Path: <carol@remote.test>\r\nDelivered-To: bob@example.test\r\n") {
		t.Fatalf("bob's mailbox %q", box)
	}
	if len(e.net.dialed()) != 0 {
		t.Errorf("dialed %v for local mail", e.net.dialed())
	}
	e.runOnce() // the bounce for ghost goes to carol@remote.test over SMTP
	m := srv.messages()
	if len(m) != 1 || m[0].mailLine != "MAIL FROM:<> SIZE="+strings.TrimPrefix(m[0].mailLine, "MAIL FROM:<> SIZE=") || !strings.Contains(m[0].data, "ghost@example.test") {
		t.Fatalf("bounce to remote sender: %+v", m)
	}
}

// TestRetryTemporary: 4xx, a dropped connection in DATA, garbage and a
// hanging server are all retried, and the message arrives once when the
// server recovers.
func TestRetryTemporary(t *testing.T) {
	var mu sync.Mutex
	fail := true
	failing := func(r string) func() string {
		return func() string {
			mu.Lock()
			defer mu.Unlock()
			if fail {
				return r
			}
			return ""
		}
	}
	cases := []struct {
		name   string
		cfg    func() srvConfig
		reply  string
		broken func() srvConfig
	}{
		{name: "4xx RCPT", cfg: func() srvConfig {
			f := failing("451 4.3.0 try later")
			return srvConfig{rcpt: func(string) string { return f() }}
		}, reply: "451 4.3.0 try later"},
		{name: "4xx DATA", cfg: func() srvConfig {
			f := failing("452 4.3.1 full")
			return srvConfig{dataDone: func(int, string) string { return f() }}
		}, reply: "452 4.3.1 full"},
		{name: "4xx greeting", broken: func() srvConfig { return srvConfig{greeting: "421 4.3.2 busy"} }, reply: "421"},
		{name: "drop in DATA", broken: func() srvConfig { return srvConfig{dropInData: 2} }, reply: "lost connection"},
		{name: "garbage", broken: func() srvConfig { return srvConfig{garbage: true} }, reply: "protocol error"},
		{name: "hang at greeting", broken: func() srvConfig { return srvConfig{hang: "greeting"} }, reply: "timeout"},
		{name: "hang after data", broken: func() srvConfig { return srvConfig{hang: "data-done"} }, reply: "timeout"},
		{name: "connection refused", broken: func() srvConfig { return srvConfig{} }, reply: "refused"},
		{name: "DNS failure", broken: func() srvConfig { return srvConfig{} }, reply: "4.4.3"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			fail = true
			mu.Unlock()
			e := newEnv(t, func(o *Options) {
				o.CommandTimeout = 300 * time.Millisecond
				o.DataDoneTimeout = 300 * time.Millisecond
			})
			var srv *testServer
			if tc.cfg != nil {
				srv = newServer(t, tc.cfg())
				e.route("remote.test", srv)
			} else {
				bad := newServer(t, tc.broken())
				switch tc.name {
				case "connection refused":
					e.net.addMX("remote.test", "mx.remote.test", 10)
					e.net.host("mx.remote.test", "127.0.0.2", nil)
				case "DNS failure":
					e.net.mxErr["remote.test"] = &net.DNSError{Err: "server misbehaving", Name: "remote.test", IsTemporary: true}
				default:
					e.route("remote.test", bad)
				}
			}
			e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("retry"))
			e.runOnce()
			en := onlyEntry(t, e)
			r := en.Recipients[0]
			if r.Status != StatusPending || !strings.Contains(strings.ToLower(r.Reply), strings.ToLower(tc.reply)) {
				t.Fatalf("after the first attempt: %+v", r)
			}
			if en.Failures != 1 || !en.NextAttempt.Equal(e.clock.Now().Add(5*time.Minute)) || en.InFlight != nil || len(en.Attempts) != 1 {
				t.Fatalf("entry %+v", en)
			}
			// Not due yet: nothing happens.
			e.runOnce()
			if len(onlyEntry(t, e).Attempts) != 1 {
				t.Fatal("retried too early")
			}
			// The server recovers.
			mu.Lock()
			fail = false
			mu.Unlock()
			if srv == nil {
				srv = newServer(t, srvConfig{})
				e.net.mu.Lock()
				e.net.mx = map[string][]*net.MX{}
				e.net.mxErr = map[string]error{}
				e.net.hosts = map[string][]string{}
				e.net.mu.Unlock()
				e.route("remote.test", srv)
			}
			e.clock.Advance(5 * time.Minute)
			e.runOnce()
			if len(e.entries()) != 0 || len(srv.messages()) != 1 {
				t.Fatalf("after recovery: %d entries, %d messages", len(e.entries()), len(srv.messages()))
			}
		})
	}
}

// TestBackoffExpiryPOP3: the retry schedule with a fake clock (5 min,
// doubling, at most 4000 s), then expiry after 5 days, and the DSN read
// by the sender over POP3.
func TestBackoffExpiryPOP3(t *testing.T) {
	e := newEnv(t, nil)
	srv := newServer(t, srvConfig{rcpt: func(string) string { return "450 4.2.0 mailbox busy" }})
	e.route("remote.test", srv)
	start := e.clock.Now()
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{EnvelopeID: "E1"}, simpleMsg("expire"))
	var gaps []time.Duration
	prev := start
	for i := 0; i < 200; i++ {
		e.runOnce()
		en := e.entries()
		if len(en) == 0 || en[0].DSN {
			break
		}
		next := en[0].NextAttempt
		gaps = append(gaps, next.Sub(prev))
		prev = next
		e.clock.Set(next)
	}
	want := []time.Duration{300 * time.Second, 600 * time.Second, 1200 * time.Second, 2400 * time.Second, 4000 * time.Second, 4000 * time.Second}
	for i, w := range want {
		if i >= len(gaps) || gaps[i] != w {
			t.Fatalf("gaps %v, want prefix %v", gaps[:min(len(gaps), 8)], want)
		}
	}
	for _, g := range gaps {
		if g > 4000*time.Second {
			t.Fatalf("gap %v over the maximum", g)
		}
	}
	if end := e.clock.Now(); end.Sub(start) != 5*24*time.Hour {
		t.Errorf("bounced after %v, want 120h", end.Sub(start))
	}
	e.runOnce() // deliver the DSN locally
	if en := e.entries(); len(en) != 0 {
		t.Fatalf("entries left %+v", en)
	}
	raw := popRetrieve(t, e, "alice@example.test")
	if len(raw) != 1 {
		t.Fatalf("%d messages over POP3", len(raw))
	}
	d := parseDSN(t, raw[0])
	for _, want := range []string{"Action: failed", "Status: 4.2.0", "Diagnostic-Code: smtp; 450 4.2.0 mailbox busy", "Original-Envelope-Id: E1", "Final-Recipient: rfc822; bob@remote.test"} {
		if !strings.Contains(d.status(), want) {
			t.Errorf("status lacks %q:\n%s", want, d.status())
		}
	}
}

func TestDelayWarning(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.DelayWarning = 4 * time.Hour })
	srv := newServer(t, srvConfig{rcpt: func(string) string { return "451 4.3.0 later" }})
	e.route("remote.test", srv)
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("delay"))
	for range 12 {
		e.runOnce()
		for _, en := range e.entries() {
			if !en.DSN {
				e.clock.Set(en.NextAttempt)
			}
		}
	}
	e.runOnce()
	box := e.mailbox("alice@example.test")
	if len(box) != 1 {
		t.Fatalf("%d warnings, want 1", len(box))
	}
	d := parseDSN(t, box[0])
	if !strings.Contains(d.status(), "Action: delayed") || !strings.Contains(d.status(), "Will-Retry-Until:") || d.header.Get("Subject") != "Delayed Mail (still being retried)" {
		t.Errorf("warning:\n%s", d.status())
	}
}

func TestOperations(t *testing.T) {
	e := newEnv(t, nil)
	srv := newServer(t, srvConfig{rcpt: func(string) string { return "451 4.3.0 later" }})
	e.route("remote.test", srv)
	e.route("other.test", srv)
	id1 := e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("op1"))
	e.clock.Advance(time.Second)
	id2 := e.enqueue("alice@example.test", []string{"bob@remote.test", "x@other.test"}, envelope.DSNParams{}, simpleMsg("op2"))
	e.runOnce()
	ctx := context.Background()
	list, _ := e.q.List(ctx)
	if len(list) != 3 || list[0].MessageID != id1 {
		t.Fatalf("list %+v", list)
	}
	got, err := e.q.Show(ctx, id2)
	if err != nil || len(got) != 2 {
		t.Fatalf("show %s: %v %v", id2, got, err)
	}
	if got, err := e.q.Show(ctx, id1+".1"); err != nil || len(got) != 1 || got[0].Recipients[0].Reply != "451 4.3.0 later" {
		t.Fatalf("show entry: %+v %v", got, err)
	}
	if _, err := e.q.Show(ctx, "../../etc/passwd"); !errors.Is(err, ErrNotFound) {
		t.Errorf("show bad id: %v", err)
	}
	// Delete while a delivery holds the entry: busy.
	rel, err := e.q.store.Claim(ctx, id1+".1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.q.Delete(ctx, id1); !errors.Is(err, ErrBusy) {
		t.Errorf("delete of a claimed entry: %v", err)
	}
	rel()
	if n, err := e.q.Delete(ctx, id1); err != nil || n != 1 {
		t.Fatalf("delete: %d %v", n, err)
	}
	// Retry all: due now.
	n, err := e.q.Retry(ctx, "")
	if err != nil || n != 2 {
		t.Fatalf("retry: %d %v", n, err)
	}
	e.runOnce()
	if l, _ := e.q.List(ctx); len(l) != 2 || len(l[0].Attempts) != 2 {
		t.Fatalf("after retry: %+v", l)
	}
	if len(e.mailbox("alice@example.test")) != 0 {
		t.Error("delete bounced")
	}
}

// TestRunNoticesOtherProcess: a queue working in Run notices an entry made
// due by another Queue on the same folder (the `postino queue retry` CLI)
// and the two never deliver one entry twice.
func TestRunNoticesOtherProcess(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.PollInterval = 20 * time.Millisecond; o.Clock = nil })
	srv := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	co := defaultOptions()
	co.Clock, co.Resolver, co.Dialer = e.opts.Clock, e.net, e.net
	cli, err := Open(e.dir+"/queue", co)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for _, q := range []*Queue{e.q, cli} {
		wg.Add(1)
		go func() { defer wg.Done(); q.Run(ctx) }()
	}
	for i := range 20 {
		if _, err := cli.Enqueue(ctx, "alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, strings.NewReader(simpleMsg(fmt.Sprint("two", i)))); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, 20*time.Second, "delivery", func() bool { return len(srv.messages()) >= 20 && len(e.entries()) == 0 })
	time.Sleep(100 * time.Millisecond)
	cancel()
	wg.Wait()
	seen := map[string]int{}
	for _, m := range srv.messages() {
		seen[m.data]++
	}
	for k, n := range seen {
		if n != 1 {
			t.Errorf("delivered %d times: %.60q", n, k)
		}
	}
	if len(seen) != 20 {
		t.Errorf("%d distinct messages", len(seen))
	}
}

func TestEnqueueDetection(t *testing.T) {
	e := newEnv(t, nil)
	ctx := context.Background()
	cases := []struct {
		from, rcpt, body string
		eight, utf8      bool
	}{
		{"alice@example.test", "bob@remote.test", "Subject: a\r\n\r\nplain\r\n", false, false},
		{"alice@example.test", "bob@remote.test", "Subject: a\r\n\r\ncaf\xc3\xa9\r\n", true, false},
		{"alice@example.test", "bob@remote.test", "Subject: caf\xc3\xa9\r\n\r\nx\r\n", true, true},
		{"alice@example.test", "j\u00f6@remote.test", "Subject: a\r\n\r\nx\r\n", false, true},
	}
	for _, c := range cases {
		id, err := e.q.Enqueue(ctx, c.from, []string{c.rcpt}, envelope.DSNParams{}, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		en, _ := e.q.Show(ctx, id)
		if en[0].Need8BitMIME != c.eight || en[0].NeedSMTPUTF8 != c.utf8 {
			t.Errorf("%q: 8bit %v utf8 %v", c.body, en[0].Need8BitMIME, en[0].NeedSMTPUTF8)
		}
	}
	if _, err := e.q.Enqueue(ctx, "a@example.test", nil, envelope.DSNParams{}, strings.NewReader("x")); err == nil {
		t.Error("no recipients accepted")
	}
	if _, err := e.q.Enqueue(ctx, "a@example.test", []string{"b@x.test"}, envelope.DSNParams{}, strings.NewReader("")); err == nil {
		t.Error("empty message accepted")
	}
	e2 := newEnv(t, func(o *Options) { o.MaxMessageSize = 10 })
	if _, err := e2.q.Enqueue(ctx, "a@example.test", []string{"b@x.test"}, envelope.DSNParams{}, strings.NewReader(simpleMsg("big"))); err == nil {
		t.Error("oversized message accepted")
	}
}

type fakeSigner struct{ domains []string }

func (f *fakeSigner) Sign(ctx context.Context, domain string, msg io.Reader) (string, error) {
	f.domains = append(f.domains, domain)
	io.Copy(io.Discard, msg)
	return "DKIM-Signature: v=1; d=" + domain + "; b=xyz\r\n", nil
}

// TestSignerHook: only mail that an authenticated user of a local domain
// submitted is signed, as that user's domain. A sender address of a
// local domain, without an authenticated submitter (a forgery on the MX
// port, forwarded mail), or with a submitter of another domain, is not.
func TestSignerHook(t *testing.T) {
	sg := &fakeSigner{}
	e := newEnv(t, func(o *Options) { o.Signer = sg })
	srv := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{AuthUser: "alice@example.test"}, simpleMsg("signed"))
	e.enqueue("ceo@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("forged"))
	e.enqueue("ceo@example.test", []string{"bob@remote.test"}, envelope.DSNParams{AuthUser: "carol@remote.test"}, simpleMsg("foreign"))
	e.enqueue("carol@remote.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("unsigned"))
	e.runOnce()
	if strings.Join(sg.domains, ",") != "example.test" {
		t.Errorf("signed for %v", sg.domains)
	}
	var signed []string
	for _, m := range srv.messages() {
		if strings.Contains(m.data, "DKIM-Signature:") {
			signed = append(signed, m.data[strings.Index(m.data, "Subject: "):][:15])
		}
	}
	if len(signed) != 1 || signed[0] != "Subject: signed" || len(srv.messages()) != 4 {
		t.Errorf("signed %q of %d", signed, len(srv.messages()))
	}
}

// TestInterruptedRecovery: an entry left InFlight (a crash) is tried again
// at once, and only for recipients not recorded as sent.
func TestInterruptedRecovery(t *testing.T) {
	e := newEnv(t, nil)
	srv := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	e.enqueue("alice@example.test", []string{"bob@remote.test", "done@remote.test"}, envelope.DSNParams{}, simpleMsg("crash"))
	ctx := context.Background()
	en := onlyEntry(t, e)
	t0 := e.clock.Now()
	en.InFlight = &t0
	en.NextAttempt = t0.Add(time.Hour)
	en.Attempts = []Attempt{{Start: t0}}
	en.Recipients[1].Status = StatusSent
	rel, err := e.q.store.Claim(ctx, en.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.q.store.Update(ctx, en); err != nil {
		t.Fatal(err)
	}
	rel()
	e.runOnce()
	m := srv.messages()
	if len(m) != 1 || strings.Join(m[0].rcpts, ",") != "bob@remote.test" {
		t.Fatalf("resent %+v", m)
	}
}

func TestSweep(t *testing.T) {
	e := newEnv(t, nil)
	fs := e.q.store.(*FileStore)
	fs.root.WriteFile("msg/ORPHAN", []byte("x"), 0o600)
	fs.root.WriteFile("tmp/junk", []byte("x"), 0o600)
	old := time.Now().Add(-2 * time.Hour)
	fs.root.Chtimes("msg/ORPHAN", old, old)
	fs.root.Chtimes("tmp/junk", old, old)
	id := e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{}, simpleMsg("keep"))
	fs.root.Chtimes("msg/"+id, old, old)
	if err := fs.Sweep(time.Hour); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"msg/ORPHAN", "tmp/junk"} {
		if _, err := fs.root.Stat(n); err == nil {
			t.Errorf("%s not swept", n)
		}
	}
	if _, err := fs.root.Stat("msg/" + id); err != nil {
		t.Errorf("queued message swept: %v", err)
	}
}
