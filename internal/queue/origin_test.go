package queue

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	netsmtp "net/smtp"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/aliases"
	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/smtpin"
	"github.com/postino-mail/postino/internal/srs"
)

// origin is a postino front end (MX and submission over plain, STARTTLS
// and implicit TLS, on loopback) feeding this queue, with DKIM keys for
// example.test and SRS on, and test servers for the remote domains.
type origin struct {
	e              *env
	recs           []dkim.Record
	srs            *srs.Rewriter
	pool           *x509.CertPool
	mx, sub, subs  string // listener addresses
	remote, sender *testServer
}

const originAliases = `team@example.test: bob@example.test, bob@remote.test
fwd@example.test: gone@refuse.test
`

func newOrigin(t *testing.T) *origin {
	t.Helper()
	return newOriginWith(t, nil)
}

// newOriginWith is newOrigin with mod applied to the options of each
// front end.
func newOriginWith(t *testing.T, mod func(*smtpin.Options)) *origin {
	t.Helper()
	keys := filepath.Join(t.TempDir(), "dkim")
	// One key: a message signed once carries exactly one signature.
	rec, err := dkim.Keygen(keys, localDomain, dkim.AlgoRSA, "")
	if err != nil {
		t.Fatal(err)
	}
	rw, err := srs.New([]byte("the secret of the origin server"))
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{recs: []dkim.Record{rec}, srs: rw}
	o.e = newEnv(t, func(opts *Options) {
		opts.Signer = dkim.NewSigner(keys)
		opts.Hostname = "mail.example.test"
		opts.SRS = rw
	})
	o.remote = newServer(t, srvConfig{})
	o.sender = newServer(t, srvConfig{})
	o.e.route("remote.test", o.remote)
	o.e.route("sender.test", o.sender)
	o.e.route("refuse.test", newServer(t, srvConfig{rcpt: func(string) string { return "550 5.1.1 no such user" }}))

	db := auth.OpenDB(filepath.Join(o.e.dir, "users.passwd"))
	db.Argon2 = auth.Argon2Parameters{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	for _, u := range []string{"alice@example.test", "bob@example.test", "carol@other.test"} {
		h, err := db.HashPassword(u + "-pw")
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Add(context.Background(), u, h); err != nil {
			t.Fatal(err)
		}
	}
	tab, err := aliases.Parse([]byte(originAliases))
	if err != nil {
		t.Fatal(err)
	}
	var tc *tls.Config
	tc, o.pool = testTLS(t)
	d := &delivery.Deliverer{Store: o.e.store, Users: dbUsers{db}, SpoolDir: o.e.dir}
	start := func(role smtpin.Role, implicit bool) string {
		so := smtpin.ConfigOptions(config.Default(), role)
		so.Hostname, so.TLS = "mail.example.test", tc
		so.LocalDomains = []string{localDomain, "other.test"}
		so.AllowAnySender = true // restrict_sender = false
		so.Users, so.Deliverer, so.Aliases, so.Relay, so.SRS = db, d, tab, o.e.q, rw
		so.Logger = testLogger(t)
		if mod != nil {
			mod(&so)
		}
		srv, err := smtpin.New(so)
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if implicit {
			go srv.ServeTLS(l)
		} else {
			go srv.Serve(l)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		})
		return l.Addr().String()
	}
	o.mx = start(smtpin.RoleMX, false)
	sub := start(smtpin.RoleSubmission, false)
	o.sub, o.subs = sub, start(smtpin.RoleSubmission, true)
	return o
}

type dbUsers struct{ db *auth.DB }

func (u dbUsers) LookupAddress(a string) (string, bool) {
	usr, ok := u.db.Lookup(a)
	return usr.Address, ok
}

// send sends one message with net/smtp: mode is "plain", "starttls" or
// "tls" (implicit); user "" does not authenticate.
func (o *origin) send(t *testing.T, addr, mode, user, from string, rcpts []string, msg string) error {
	t.Helper()
	var conn net.Conn
	var err error
	tc := &tls.Config{RootCAs: o.pool, ServerName: "mx.test"}
	if mode == "tls" {
		conn, err = tls.Dial("tcp", addr, tc)
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	c, err := netsmtp.NewClient(conn, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if mode == "starttls" {
		if err := c.StartTLS(tc); err != nil {
			t.Fatal(err)
		}
	}
	if user != "" {
		if err := c.Auth(netsmtp.PlainAuth("", user, user+"-pw", "127.0.0.1")); err != nil {
			t.Fatalf("AUTH %s: %v", user, err)
		}
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	w.Write([]byte(msg))
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// deliver runs the queue until srv has n messages and returns the last.
func (o *origin) deliver(t *testing.T, srv *testServer, n int) gotMsg {
	t.Helper()
	for i := 0; i < 5 && len(srv.messages()) < n; i++ {
		o.e.runOnce()
	}
	m := srv.messages()
	if len(m) != n {
		t.Fatalf("%d messages at the remote server, want %d", len(m), n)
	}
	return m[n-1]
}

// ourSignatures returns the verifications of DKIM signatures of our
// domain in msg.
func (o *origin) ourSignatures(t *testing.T, msg string) (ok, bad int) {
	t.Helper()
	for _, v := range verifyDKIM(t, msg, o.recs) {
		if v.Domain != localDomain {
			continue
		}
		if v.Err != nil {
			bad++
		} else {
			ok++
		}
	}
	return ok, bad
}

func fromOf(mailLine string) string {
	return addrOf(mailLine)
}

// TestForgedSenderNotSigned is the attack: an unauthenticated client on
// the MX port claims MAIL FROM:<ceo@example.test> (and From: the same) to
// an alias that forwards to a remote address. The remote server gets the
// message with no DKIM signature of example.test, and with an SRS envelope
// sender of our domain that reverses to the claimed sender.
func TestForgedSenderNotSigned(t *testing.T) {
	o := newOrigin(t)
	n := 0
	for _, mode := range []string{"plain", "starttls"} {
		msg := "From: CEO <ceo@example.test>\r\nTo: team@example.test\r\nSubject: wire the money (" + mode + ")\r\n\r\nNow.\r\n"
		if err := o.send(t, o.mx, mode, "", "ceo@example.test", []string{"team@example.test"}, msg); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		n++
		m := o.deliver(t, o.remote, n)
		if strings.Contains(m.data, "DKIM-Signature") {
			t.Errorf("%s: forged mail reached the remote server signed:\n%s", mode, m.data)
		}
		from := fromOf(m.mailLine)
		if !strings.HasPrefix(from, "SRS0=") || !strings.HasSuffix(from, "@example.test") {
			t.Errorf("%s: envelope sender %q, want an SRS address", mode, from)
		}
		if orig, err := o.srs.Reverse(from); err != nil || orig != "ceo@example.test" {
			t.Errorf("%s: SRS sender reverses to %q, %v", mode, orig, err)
		}
	}
}

// TestSubmissionSignedOnce: an authenticated user of example.test gets
// exactly one signature (one key), which verifies, over plain (loopback),
// STARTTLS and implicit TLS; the envelope sender is kept.
func TestSubmissionSignedOnce(t *testing.T) {
	o := newOrigin(t)
	for i, c := range []struct{ mode, addr string }{{"plain", o.sub}, {"starttls", o.sub}, {"tls", o.subs}} {
		msg := "From: Alice <alice@example.test>\r\nTo: bob@remote.test\r\nSubject: hello over " + c.mode + "\r\n\r\nHi.\r\n"
		if err := o.send(t, c.addr, c.mode, "alice@example.test", "alice@example.test", []string{"bob@remote.test"}, msg); err != nil {
			t.Fatalf("%s: %v", c.mode, err)
		}
		m := o.deliver(t, o.remote, i+1)
		if n := strings.Count(m.data, "DKIM-Signature:"); n != 1 {
			t.Errorf("%s: %d signatures:\n%s", c.mode, n, m.data)
		}
		if ok, bad := o.ourSignatures(t, m.data); ok != 1 || bad != 0 {
			t.Errorf("%s: %d good and %d bad signatures of example.test", c.mode, ok, bad)
		}
		if from := fromOf(m.mailLine); from != "alice@example.test" {
			t.Errorf("%s: envelope sender %q", c.mode, from)
		}
	}
	// Through a forwarding alias too: the user wrote it.
	if err := o.send(t, o.subs, "tls", "alice@example.test", "alice@example.test", []string{"team@example.test"}, "From: alice@example.test\r\nSubject: team\r\n\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := o.ourSignatures(t, o.deliver(t, o.remote, 4).data); ok != 1 {
		t.Error("authenticated mail to a forwarding alias not signed")
	}
}

// TestOtherDomainUserNotSigned: a user of another domain, allowed any
// sender (restrict_sender = false), who claims ceo@example.test is not
// signed as example.test, over each transport.
func TestOtherDomainUserNotSigned(t *testing.T) {
	o := newOrigin(t)
	for i, c := range []struct{ mode, addr string }{{"plain", o.sub}, {"starttls", o.sub}, {"tls", o.subs}} {
		msg := "From: ceo@example.test\r\nTo: bob@remote.test\r\nSubject: " + c.mode + "\r\n\r\nx\r\n"
		if err := o.send(t, c.addr, c.mode, "carol@other.test", "ceo@example.test", []string{"bob@remote.test"}, msg); err != nil {
			t.Fatalf("%s: %v", c.mode, err)
		}
		m := o.deliver(t, o.remote, i+1)
		if strings.Contains(m.data, "d="+localDomain) || strings.Contains(m.data, "DKIM-Signature") {
			t.Errorf("%s: signed:\n%s", c.mode, m.data)
		}
	}
}

// TestBounceSignedAndSRSRoundTrip: a message forwarded from
// orig@sender.test bounces at the next hop; postino's bounce reaches
// orig@sender.test (behind the SRS address) signed as example.test. A
// remote server's bounce to the SRS address reaches the original sender
// too, and a forged SRS address is refused.
func TestBounceSignedAndSRSRoundTrip(t *testing.T) {
	o := newOrigin(t)
	if err := o.send(t, o.mx, "plain", "", "orig@sender.test", []string{"fwd@example.test"}, "From: orig@sender.test\r\nSubject: forwarded\r\n\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	dsn := o.deliver(t, o.sender, 1)
	if fromOf(dsn.mailLine) != "" || strings.Join(dsn.rcpts, ",") != "orig@sender.test" || !strings.Contains(dsn.data, "multipart/report") {
		t.Fatalf("bounce %q to %v:\n%s", dsn.mailLine, dsn.rcpts, dsn.data)
	}
	if ok, bad := o.ourSignatures(t, dsn.data); ok != 1 || bad != 0 {
		t.Errorf("bounce: %d good and %d bad signatures of example.test:\n%s", ok, bad, dsn.data)
	}

	// A bounce from elsewhere to the SRS address we would use.
	addr, err := o.srs.Forward("orig@sender.test", localDomain)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.send(t, o.mx, "plain", "", "", []string{addr}, "From: MAILER-DAEMON@remote.test\r\nSubject: bounce\r\n\r\nx\r\n"); err != nil {
		t.Fatal(err)
	}
	m := o.deliver(t, o.sender, 2)
	if strings.Join(m.rcpts, ",") != "orig@sender.test" || fromOf(m.mailLine) != "" || !strings.Contains(m.data, "Subject: bounce") {
		t.Errorf("SRS bounce relayed as %q to %v", m.mailLine, m.rcpts)
	}
	other, _ := srs.New([]byte("somebody else's secret entirely"))
	forged, _ := other.Forward("victim@sender.test", localDomain)
	err = o.send(t, o.mx, "starttls", "", "", []string{forged}, "Subject: spam\r\n\r\nx\r\n")
	if err == nil || !strings.Contains(err.Error(), "550") || !strings.Contains(err.Error(), "5.1.1") {
		t.Errorf("forged SRS address: %v", err)
	}
	o.e.runOnce()
	if n := len(o.sender.messages()); n != 2 {
		t.Errorf("%d messages reached sender.test", n)
	}
}
