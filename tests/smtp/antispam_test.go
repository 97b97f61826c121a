package smtp

import (
	"bufio"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPostfixWaitsForPregreet: a real Postfix with its default settings
// relays to postino's MX with the pregreet test on and no trusted
// network: Postfix's SMTP client waits for the greeting, so its mail is
// delivered at the first attempt, while a client that talks first is
// refused.
func TestPostfixWaitsForPregreet(t *testing.T) {
	swaks := needSwaks(t)
	s := startServer(t, serverOpts{smtpConfig: "trusted_networks = []\n",
		extraConfig: "[antispam]\npregreet_wait = \"2s\"\npregreet_pass_ttl = \"0s\"\n"})
	p := startPostfixTransport(t, "smtp:["+strings.Replace(s.smtp, ":", "]:", 1))

	// Talking first is refused.
	c, err := net.Dial("tcp", s.smtp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("EHLO spam.example\r\n"))
	if line, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(line, "554 5.5.1 ") {
		t.Fatalf("a client that talked first got %q", line)
	}

	msg := testMessage("through Postfix, after the pregreet wait", bob, alice)
	swaksOKAny(t, swaks, "--server", p.smtpd, "--ehlo", "client.test", "--from", bob, "--to", alice, "--data", swaksData(t, msg))
	line := p.waitStatus(alice, 30*time.Second)
	if !regexp.MustCompile(`relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent \(250 2\.0\.0 `).MatchString(line) {
		t.Fatalf("Postfix did not relay to postino: %q\nlog:\n%s", line, p.log())
	}
	s.waitMailbox(t, alice, 1, 20*time.Second)
	if strings.Contains(p.log(), "status=deferred") {
		t.Errorf("Postfix deferred:\n%s", p.log())
	}
}
