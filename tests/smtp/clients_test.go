package smtp

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// testMessage returns a message that exercises the data path: a line
// starting with a dot (dot-stuffed by the client, and again by POP3), a
// line that is only a dot, a line of two dots, trailing white space, a
// tab-indented line, an empty line inside the body, and a 900-octet line.
// Its line ends are LF; every client must send them as CRLF.
func testMessage(subject, from, to string) string {
	return "From: Sender <" + from + ">\n" +
		"To: <" + to + ">\n" +
		"Subject: " + subject + "\n" +
		"Date: Mon, 02 Nov 2026 10:00:00 +0000\n" +
		"Message-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@client.test>\n" +
		"MIME-Version: 1.0\n" +
		"Content-Type: text/plain; charset=us-ascii\n" +
		"\n" +
		"Hello,\n" +
		".a line starting with a dot\n" +
		".\n" +
		"..\n" +
		"trailing spaces   \n" +
		"\tindented with a tab\n" +
		"\n" +
		strings.Repeat("0123456789", 90) + "\n" +
		"-- \n" +
		"The end\n"
}

// swaksData writes msg for swaks' --data: swaks turns LF into CRLF and
// stuffs leading dots itself, and appends "\r\n." to the data, so the
// file must not end with a line end (or the message gets an empty line
// more).
func swaksData(t *testing.T, msg string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "msg.eml")
	if err := os.WriteFile(p, []byte(strings.TrimSuffix(msg, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	return "@" + p
}

// swaksOK runs swaks and fails unless it exits 0 and the message was
// accepted.
func swaksOK(t *testing.T, swaks string, args ...string) testutil.Result {
	t.Helper()
	r := run(t, nil, nil, swaks, append([]string{"--timeout", "30"}, args...)...)
	if r.Code != 0 || !regexp.MustCompile(`(?m)^<[-~]  250 2\.0\.0 OK: queued as [0-9A-F]{19}\s*$`).MatchString(r.Output) {
		t.Fatalf("swaks did not deliver:\n%s", r)
	}
	return r
}

func TestSwaks(t *testing.T) {
	swaks := needSwaks(t)
	t.Parallel()
	s := startServer(t, serverOpts{})
	const sender = "someone@remote.test"
	tlsArgs := []string{"--tls-verify", "--tls-ca-path", s.certFile}
	cases := []struct {
		name  string
		args  []string
		from  string
		trace traceWant
	}{
		{"MX", []string{"--server", s.smtp}, sender,
			traceWant{helo: "mx-client.test", protocol: "ESMTP", rcpt: alice}},
		{"MX-STARTTLS", append([]string{"--server", s.smtp, "--tls"}, tlsArgs...), sender,
			traceWant{helo: "mx-client.test", protocol: "ESMTPS", tls: true, rcpt: alice}},
		{"submission-STARTTLS-PLAIN", append([]string{"--server", s.sub, "--tls", "--auth", "PLAIN", "--auth-user", bob, "--auth-password", passwd}, tlsArgs...), bob,
			traceWant{helo: "mx-client.test", protocol: "ESMTPSA", tls: true, user: bob, rcpt: alice}},
		{"submission-STARTTLS-LOGIN", append([]string{"--server", s.sub, "--tls", "--auth", "LOGIN", "--auth-user", bob, "--auth-password", passwd}, tlsArgs...), bob,
			traceWant{helo: "mx-client.test", protocol: "ESMTPSA", tls: true, user: bob, rcpt: alice}},
		{"submissions-PLAIN", append([]string{"--server", s.subs, "--tls-on-connect", "--auth", "PLAIN", "--auth-user", bob, "--auth-password", passwd}, tlsArgs...), bob,
			traceWant{helo: "mx-client.test", protocol: "ESMTPSA", tls: true, user: bob, rcpt: alice}},
		{"submissions-LOGIN", append([]string{"--server", s.subs, "--tls-on-connect", "--auth", "LOGIN", "--auth-user", bob, "--auth-password", passwd}, tlsArgs...), bob,
			traceWant{helo: "mx-client.test", protocol: "ESMTPSA", tls: true, user: bob, rcpt: alice}},
	}
	var want []string
	for _, c := range cases {
		msg := testMessage("swaks "+c.name, c.from, alice)
		r := swaksOK(t, swaks, append([]string{"--ehlo", "mx-client.test", "--from", c.from, "--to", alice, "--data", swaksData(t, msg)}, c.args...)...)
		if c.trace.tls && !strings.Contains(r.Output, "=== TLS started with cipher") {
			t.Errorf("%s: swaks did not use TLS:\n%s", c.name, r)
		}
		want = append(want, msg)
	}
	got := s.mustCount(t, alice, len(cases))
	for i, c := range cases {
		rec := checkStored(t, got[i], cases[i].from, alice, 1, []byte(want[i]))
		checkReceived(t, rec[0], c.trace)
		t.Logf("%s: %q", c.name, rec[0])
	}
}

// smtplibScript sends one message with Python's smtplib and prints a JSON
// report: the refused recipients, or the SMTP error.
const smtplibScript = `
import json, smtplib, ssl, sys

mode, host, port, mech, user, pw, cafile, sender, rcpts, msgfile, utf8 = sys.argv[1:12]
ctx = ssl.create_default_context(cafile=cafile)
if mode == "starttls12":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    mode = "starttls"
report = {}
try:
    if mode == "lmtp":
        s = smtplib.LMTP(host, int(port or 0), local_hostname="py-client.test", timeout=30)
    elif mode == "ssl":
        s = smtplib.SMTP_SSL(host, int(port), local_hostname="py-client.test", context=ctx, timeout=30)
    else:
        s = smtplib.SMTP(host, int(port), local_hostname="py-client.test", timeout=30)
    s.ehlo()
    if mode == "starttls":
        s.starttls(context=ctx)
        s.ehlo()
    report["esmtp"] = sorted(s.esmtp_features.keys())
    report["tls"] = isinstance(s.sock, ssl.SSLSocket)
    if mech != "none":
        s.user, s.password = user, pw
        code, resp = s.auth(mech, getattr(s, "auth_" + mech.lower()))
        report["auth"] = [code, resp.decode()]
    opts = ["SMTPUTF8"] if utf8 == "1" else []
    with open(msgfile, "rb") as f:
        msg = f.read()
    report["refused"] = {k: [v[0], v[1].decode()] for k, v in s.sendmail(sender, rcpts.split(","), msg, mail_options=opts).items()}
    report["quit"] = list(s.quit())[0]
except smtplib.SMTPRecipientsRefused as e:
    report["error"] = "recipients refused"
    report["refused"] = {k: [v[0], v[1].decode()] for k, v in e.recipients.items()}
except smtplib.SMTPResponseException as e:
    report["error"] = type(e).__name__
    report["code"] = e.smtp_code
    report["message"] = e.smtp_error.decode("utf-8", "replace")
print(json.dumps(report))
`

type smtplibReport struct {
	ESMTP   []string          `json:"esmtp"`
	TLS     bool              `json:"tls"`
	Auth    []any             `json:"auth"`
	Refused map[string][2]any `json:"refused"`
	Error   string            `json:"error"`
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Quit    int               `json:"quit"`
}

// smtplibSend sends msg (sent as is: give it CRLF line ends) with Python's
// smtplib. mode is plain, starttls, ssl or lmtp; mech is none, PLAIN or
// LOGIN.
func smtplibSend(t *testing.T, s *server, mode, addr, mech, user, sender string, rcpts []string, msg []byte, utf8 bool) (smtplibReport, testutil.Result) {
	t.Helper()
	python := needPython(t)
	dir := t.TempDir()
	script := filepath.Join(dir, "send.py")
	msgFile := filepath.Join(dir, "msg.eml")
	if err := os.WriteFile(script, []byte(smtplibScript), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(msgFile, msg, 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":") // a unix socket path has no port
	u := "0"
	if utf8 {
		u = "1"
	}
	r := run(t, nil, nil, python, script, mode, host, port, mech, user, passwd, s.certFile, sender, strings.Join(rcpts, ","), msgFile, u)
	var rep smtplibReport
	if r.Code != 0 || json.Unmarshal([]byte(r.Output), &rep) != nil {
		t.Fatalf("smtplib script failed:\n%s", r)
	}
	return rep, r
}

func TestPythonSmtplib(t *testing.T) {
	needPython(t)
	t.Parallel()
	s := startServer(t, serverOpts{})
	const sender = "someone@remote.test"
	cases := []struct {
		name, mode, addr, mech, from string
		trace                        traceWant
	}{
		{"MX", "plain", s.smtp, "none", sender,
			traceWant{helo: "py-client.test", protocol: "ESMTP", rcpt: alice}},
		{"MX-STARTTLS", "starttls", s.smtp, "none", sender,
			traceWant{helo: "py-client.test", protocol: "ESMTPS", tls: true, rcpt: alice}},
		{"submission-STARTTLS-PLAIN", "starttls", s.sub, "PLAIN", bob,
			traceWant{helo: "py-client.test", protocol: "ESMTPSA", tls: true, user: bob, rcpt: alice}},
		{"submission-STARTTLS-LOGIN", "starttls", s.sub, "LOGIN", bob,
			traceWant{helo: "py-client.test", protocol: "ESMTPSA", tls: true, user: bob, rcpt: alice}},
		{"submissions-PLAIN", "ssl", s.subs, "PLAIN", bob,
			traceWant{helo: "py-client.test", protocol: "ESMTPSA", tls: true, user: bob, rcpt: alice}},
		{"submission-TLS1.2-PLAIN", "starttls12", s.sub, "PLAIN", bob,
			traceWant{helo: "py-client.test", protocol: "ESMTPSA", tls: true, user: bob, rcpt: alice}},
		{"submissions-LOGIN", "ssl", s.subs, "LOGIN", bob,
			traceWant{helo: "py-client.test", protocol: "ESMTPSA", tls: true, user: bob, rcpt: alice}},
	}
	var want []string
	for _, c := range cases {
		msg := testMessage("smtplib "+c.name, c.from, alice)
		rep, r := smtplibSend(t, s, c.mode, c.addr, c.mech, bob, c.from, []string{alice}, testutil.CRLF(msg), false)
		if rep.Error != "" || len(rep.Refused) != 0 || rep.Quit != 221 || rep.TLS != c.trace.tls {
			t.Fatalf("%s: smtplib did not deliver as expected:\n%s", c.name, r)
		}
		if c.mech != "none" && (len(rep.Auth) == 0 || rep.Auth[0] != float64(235)) {
			t.Errorf("%s: AUTH reply %v, want 235", c.name, rep.Auth)
		}
		want = append(want, msg)
	}
	got := s.mustCount(t, alice, len(cases))
	for i, c := range cases {
		rec := checkStored(t, got[i], cases[i].from, alice, 1, []byte(want[i]))
		checkReceived(t, rec[0], c.trace)
		switch {
		case c.mode == "starttls12" && !regexp.MustCompile(`\(using TLSv1\.2 with cipher TLS_ECDHE_(?:ECDSA|RSA)_WITH_[A-Z0-9_]+\)`).MatchString(rec[0]):
			t.Errorf("%s: Received does not show the TLS 1.2 session:\n%q", c.name, rec[0])
		case c.trace.tls && c.mode != "starttls12" && !strings.Contains(rec[0], "(using TLSv1.3 with cipher TLS_"):
			t.Errorf("%s: Received does not show the TLS 1.3 session:\n%q", c.name, rec[0])
		}
		t.Logf("%s: %q", c.name, rec[0])
	}
}
