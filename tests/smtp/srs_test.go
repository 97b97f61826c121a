package smtp

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
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
