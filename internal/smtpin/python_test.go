package smtpin

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/pop3"
)

// pythonClient sends one message with Python's smtplib and returns the
// reply text of DATA and, with TLS, the negotiated cipher and version.
const pythonClient = `
import json, smtplib, ssl, sys
mode, host, port, cafile, user, pw, sender, rcpt = sys.argv[1:9]
msg = sys.stdin.buffer.read()
ctx = ssl.create_default_context(cafile=cafile) if cafile else None
if mode == "tls":
    s = smtplib.SMTP_SSL(host, int(port), local_hostname="py.example", context=ctx, timeout=20)
else:
    s = smtplib.SMTP(host, int(port), local_hostname="py.example", timeout=20)
s.ehlo()
if mode == "starttls":
    s.starttls(context=ctx)
    s.ehlo()
if user:
    if mode == "tls":
        s.user, s.password = user, pw
        code, resp = s.auth("LOGIN", s.auth_login)
    else:
        code, resp = s.login(user, pw)
s.mail(sender)
code, resp = s.rcpt(rcpt)
assert code == 250, (code, resp)
code, resp = s.data(msg)
out = {"code": code, "reply": resp.decode()}
if mode != "plain":
    c = s.sock.cipher()
    out["cipher"], out["version"] = c[0], c[1]
s.quit()
print(json.dumps(out))
`

type pyResult struct {
	Code    int    `json:"code"`
	Reply   string `json:"reply"`
	Cipher  string `json:"cipher"`
	Version string `json:"version"`
}

func TestPythonSmtplib(t *testing.T) {
	py := testutil.NeedPython(t)
	mx := newEnv(t, RoleMX, nil)
	sub := newEnv(t, RoleSubmission, func(c *envConfig) { c.tls = true; c.opts.PlaintextAuth = pop3.PlaintextNever })
	cafile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(cafile, sub.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	msg := "From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: from python\r\n\r\nLine one.\r\n.A line starting with a dot\r\n\r\nLast line.\r\n"

	// carol's own message: submission refuses a header From the user
	// does not own.
	msgCarol := strings.Replace(msg, "Alice <alice@example.test>", "Carol <carol@other.test>", 1)

	run := func(mode, addr, ca, user, pw, from, rcpt string) pyResult {
		t.Helper()
		host, port, _ := strings.Cut(addr, ":")
		cmd := exec.Command(py, "-c", pythonClient, mode, host, port, ca, user, pw, from, rcpt)
		cmd.Stdin = strings.NewReader(msg)
		if user == "carol@other.test" {
			cmd.Stdin = strings.NewReader(msgCarol)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("python %s: %v\n%s", mode, err, stderr.String())
		}
		var r pyResult
		if err := json.Unmarshal(out, &r); err != nil || r.Code != 250 {
			t.Fatalf("python %s: %q: %v", mode, out, err)
		}
		return r
	}
	header := func(r pyResult, from, rcpt, with, user string) string {
		h := "Return-Path: <" + from + ">\r\nDelivered-To: " + rcpt + "\r\n" +
			"Received: from py.example ([127.0.0.1])\r\n"
		if r.Cipher != "" {
			h += "\t(using " + r.Version + " with cipher " + r.Cipher + ")\r\n"
		}
		if user != "" {
			h += "\t(authenticated as " + user + ")\r\n"
		}
		return h + "\tby mx.example.test (postino) with " + with + " id " + queueID(r.Reply) + "\r\n" +
			"\tfor <" + rcpt + ">; " + dateStr + "\r\n"
	}

	r := run("plain", mx.addr, "", "", "", "someone@remote.example", "bob@example.test")
	want := header(r, "someone@remote.example", "bob@example.test", "ESMTP", "") + msg
	if got := mx.messages("bob@example.test"); len(got) != 1 || got[0] != want {
		t.Fatalf("plain: stored\n%q\nwant\n%q", got, want)
	}

	r1 := run("starttls", sub.addr, cafile, "alice@example.test", "alice-pw", "alice@example.test", "bob@example.test")
	r2 := run("tls", sub.tlsAddr, cafile, "carol@other.test", "carol-pw", "carol@other.test", "bob@example.test")
	got := sub.messages("bob@example.test")
	want1 := header(r1, "alice@example.test", "bob@example.test", "ESMTPSA", "alice@example.test") + msg
	want2 := header(r2, "carol@other.test", "bob@example.test", "ESMTPSA", "carol@other.test") + msgCarol
	if len(got) != 2 || got[0] != want1 || got[1] != want2 {
		t.Fatalf("submission: stored\n%q\nwant\n%q\n%q", got, want1, want2)
	}
}
