package smtp

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestForwardingSRSAndDKIM drives two postino servers with swaks as the
// hostile client: on the first one's MX port, without AUTH, it forges
// MAIL FROM:<ceo@example.test> to an alias that forwards to the second
// server. The forwarded copy carries no DKIM signature and an SRS
// envelope sender of example.test; a bounce to that SRS address comes
// back to the original sender, a forged one is refused; RCPT
// TO:<postmaster> without a domain reaches smtp.postmaster.
func TestForwardingSRSAndDKIM(t *testing.T) {
	swaks := needSwaks(t)
	remote := startServer(t, serverOpts{
		localDomains: []string{"example.test", "elsewhere.test"},
		aliases:      "@elsewhere.test: bob@example.test\n",
	})
	local := startServer(t, serverOpts{
		aliases:     defaultAliases + "fwd@example.test: friend@elsewhere.test\n",
		smtpConfig:  "postmaster = \"alice@example.test\"\n",
		extraConfig: "[queue]\nroutes = [\"elsewhere.test=" + remote.smtp + "\"]\n",
		beforeStart: func(data string) {
			if r := run(t, nil, nil, binPath, "dkim", "keygen", "example.test", "--data", data); r.Code != 0 {
				t.Fatalf("dkim keygen: %v", r)
			}
		},
	})
	fi, err := os.Stat(filepath.Join(local.data, "srs.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("srs.key: %v %v", fi, err)
	}
	tlsArgs := []string{"--tls-verify", "--tls-ca-path", local.certFile}
	srsRE := regexp.MustCompile(`(?m)^Return-Path: <(SRS0=[0-9a-z]{8}=[0-9a-z]{2}=([^=]+)=([^@]+)@example\.test)>\r$`)
	for i, c := range []struct {
		name, from string
		args       []string
	}{
		{"plain", "ceo@example.test", nil},
		{"STARTTLS", "ceo@example.test", append([]string{"--tls"}, tlsArgs...)},
		{"remote sender", "someone@elsewhere.test", nil},
	} {
		msg := testMessage("forged "+c.name, "ceo@example.test", "fwd@example.test")
		swaksOK(t, swaks, append([]string{"--server", local.smtp, "--ehlo", "attacker.test", "--from", c.from, "--to", "fwd@example.test", "--data", swaksData(t, msg)}, c.args...)...)
		got := remote.waitMailbox(t, bob, i+1, 30*time.Second)[i]
		if strings.Contains(string(got), "DKIM-Signature") {
			t.Errorf("%s: the forwarded copy is DKIM-signed:\n%s", c.name, got)
		}
		m := srsRE.FindSubmatch(got)
		if m == nil {
			t.Fatalf("%s: no SRS Return-Path:\n%s", c.name, got)
		}
		if want := c.from; string(m[3])+"@"+string(m[2]) != want {
			t.Errorf("%s: SRS address %s encodes %s@%s, want %s", c.name, m[1], m[3], m[2], want)
		}
		if c.name == "remote sender" {
			// A bounce to the SRS address reaches the original sender.
			bounce := testMessage("bounce", "MAILER-DAEMON@elsewhere.test", string(m[1]))
			swaksOK(t, swaks, "--server", local.smtp, "--ehlo", "mx.elsewhere.test", "--from", "", "--to", string(m[1]), "--data", swaksData(t, bounce))
			back := remote.waitMailbox(t, bob, i+2, 30*time.Second)[i+1]
			if !strings.Contains(string(back), "Subject: bounce") || !strings.Contains(string(back), "Delivered-To: bob@example.test") {
				t.Errorf("SRS bounce arrived as:\n%s", back)
			}
			// A forged SRS address (our format, wrong hash) is refused.
			forged := strings.Replace(string(m[1]), "=someone@", "=victim@", 1)
			r := run(t, nil, nil, swaks, "--timeout", "30", "--server", local.smtp, "--from", "", "--to", forged, "--quit-after", "RCPT")
			if !strings.Contains(r.Output, "550 5.1.1") {
				t.Errorf("forged SRS address not refused with 550 5.1.1:\n%s", r)
			}
		}
	}
	// RCPT TO:<postmaster> without a domain.
	swaksOK(t, swaks, "--server", local.smtp, "--from", "someone@elsewhere.test", "--to", "postmaster", "--data", swaksData(t, testMessage("to the postmaster", "someone@elsewhere.test", "postmaster")))
	pm := local.waitMailbox(t, alice, 1, 10*time.Second)[0]
	if !strings.Contains(string(pm), "Subject: to the postmaster") {
		t.Errorf("postmaster mail:\n%s", pm)
	}
}

// dkimpyScript verifies every DKIM signature of the message on standard
// input with dkimpy (python3-dkim), looking keys up in the records given
// as arguments ("name=value"), and prints "signatures N verified M".
const dkimpyScript = `
import sys, dkim
records = dict(a.split("=", 1) for a in sys.argv[1:])
def dns(name, timeout=5):
    return records.get(name.decode().rstrip("."), "").encode() or None
msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg)
header = msg.split(b"\r\n\r\n", 1)[0]
n = sum(1 for line in header.split(b"\r\n") if line.lower().startswith(b"dkim-signature:"))
ok = sum(1 for i in range(n) if d.verify(idx=i, dnsfunc=dns))
print("signatures %d verified %d" % (n, ok))
`

// needDkimpy returns a python3 that can import dkim (python3-dkim).
func needDkimpy(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/python3", needPython(t)} {
		if r := run(t, nil, nil, p, "-c", "import dkim"); r.Code == 0 {
			return p
		}
	}
	testutil.SkipOrFatal(t, "python3-dkim (dkimpy) is not installed")
	return ""
}

// TestDKIMVerifiedByDkimpy: dkimpy, an independent verifier, checks what
// leaves postino: mail an authenticated user submits (STARTTLS, implicit
// TLS, and plain from loopback) has exactly one signature (one key) and
// it verifies; mail a user of another domain submits as
// ceo@example.test (restrict_sender = false) has none; postino's own
// bounce of a forwarded message has one that verifies.
func TestDKIMVerifiedByDkimpy(t *testing.T) {
	swaks := needSwaks(t)
	py := needDkimpy(t)
	remote := startServer(t, serverOpts{
		localDomains: []string{"example.test", "elsewhere.test"},
		aliases:      "@elsewhere.test: bob@example.test\n",
	})
	var records []string
	local := startServer(t, serverOpts{
		aliases:     defaultAliases + "fwd@example.test: gone@refused.test\n",
		smtpConfig:  "restrict_sender = false\n",
		extraConfig: "[queue]\nroutes = [\"elsewhere.test=" + remote.smtp + "\", \"refused.test=" + remote.smtp + "\"]\n",
		beforeStart: func(data string) {
			r := run(t, nil, nil, binPath, "dkim", "keygen", "example.test", "--algo", "rsa", "--data", data)
			for _, m := range regexp.MustCompile(`(?m)^(\S+)\. IN TXT (.*)$`).FindAllStringSubmatch(r.Output, -1) {
				// The value is split in quoted strings: join them.
				value := strings.ReplaceAll(strings.Join(regexp.MustCompile(`"[^"]*"`).FindAllString(m[2], -1), ""), `"`, "")
				records = append(records, m[1]+"="+value)
			}
			if r.Code != 0 || len(records) != 1 {
				t.Fatalf("dkim keygen: %v", r)
			}
		},
	})
	verify := func(what string, msg []byte, want string) {
		t.Helper()
		r := run(t, nil, msg, py, append([]string{"-c", dkimpyScript}, records...)...)
		if r.Code != 0 || strings.TrimSpace(r.Output) != want {
			t.Errorf("%s: dkimpy says %q, want %q", what, r.Output, want)
		}
	}
	tlsArgs := []string{"--tls-verify", "--tls-ca-path", local.certFile}
	auth := func(user string) []string {
		return []string{"--auth", "PLAIN", "--auth-user", user, "--auth-password", passwd}
	}
	n := 0
	for _, c := range []struct {
		name, user, from string
		args             []string
		want             string
	}{
		{"alice STARTTLS", alice, alice, append([]string{"--server", local.sub, "--tls"}, tlsArgs...), "signatures 1 verified 1"},
		{"alice TLS", alice, alice, append([]string{"--server", local.subs, "--tls-on-connect"}, tlsArgs...), "signatures 1 verified 1"},
		{"alice plain", alice, alice, []string{"--server", local.sub}, "signatures 1 verified 1"},
		{"carol as ceo", carol, "ceo@example.test", append([]string{"--server", local.subs, "--tls-on-connect"}, tlsArgs...), "signatures 0 verified 0"},
	} {
		msg := testMessage("dkim "+c.name, c.from, "friend@elsewhere.test")
		swaksOK(t, swaks, append(append([]string{"--from", c.from, "--to", "friend@elsewhere.test", "--data", swaksData(t, msg)}, auth(c.user)...), c.args...)...)
		n++
		got := remote.waitMailbox(t, bob, n, 30*time.Second)[n-1]
		verify(c.name, got, c.want)
	}
	// A forwarded message bounces at the next hop (refused.test is not
	// the remote's); the bounce goes to the original sender, signed.
	swaksOK(t, swaks, "--server", local.smtp, "--from", "someone@elsewhere.test", "--to", "fwd@example.test", "--data", swaksData(t, testMessage("doomed", "someone@elsewhere.test", "fwd@example.test")))
	n++
	dsn := remote.waitMailbox(t, bob, n, 30*time.Second)[n-1]
	if !strings.Contains(string(dsn), "multipart/report") || !strings.Contains(string(dsn), "Return-Path: <>") {
		t.Fatalf("not a bounce:\n%s", dsn)
	}
	verify("bounce", dsn, "signatures 1 verified 1")
}
