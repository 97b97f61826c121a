package blackbox

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestAntispamWithSwaks runs the real binary with the [antispam] checks
// against a real DNS server (NSD) and sends with swaks from different
// loopback addresses: a blocklisted client is refused at RCPT with the
// list named, a "query refused" answer blocks nobody, an allowlisted
// client passes, greylisting tempfails and then accepts, and a client
// that talks before the greeting is refused while swaks, which waits,
// delivers.
func TestAntispamWithSwaks(t *testing.T) {
	swaks := testutil.NeedProgram(t, "swaks")
	dns := testutil.StartDNS(t, map[string]string{
		"bl.test": "2.0.0.127 A 127.0.0.2\n3.0.0.127 A 127.255.255.254\n4.0.0.127 A 127.0.0.2\n",
		"wl.test": "4.0.0.127 A 127.0.10.1\n",
	})
	data := t.TempDir()
	addUser(t, data, "alice@example.test", "alice-pw")
	conf := filepath.Join(data, "postino.toml")
	err := os.WriteFile(conf, []byte(`[smtp]
trusted_networks = ["127.0.0.1/32"]
[dns]
server = "`+dns.Addr+`"
[antispam]
dnsbl_sites = ["bl.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].1*-5"]
dnsbl_threshold = 3
pregreet_wait = "500ms"
greylist = true
greylist_delay = "1s"
greylist_retry_window = "1h"
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if r := postino(t, nil, "config", "check", conf, "--data", data); r.Code != 0 {
		t.Fatalf("config check: %s", r)
	}
	mx := testutil.FreeAddrs(t, 1)[0]
	s := startServer(t, serverOpts{data: data, extraArgs: []string{"--config", conf, "--smtp", mx}})
	if !s.Poll(10*time.Second, 20*time.Millisecond, func() bool {
		c, err := net.Dial("tcp", mx)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		t.Fatalf("MX %s not up:\n%s", mx, s.Stderr)
	}
	send := func(src, from string) testutil.Result {
		t.Helper()
		return run(t, nil, nil, swaks, "--timeout", "30", "--server", mx, "--local-interface", src,
			"--ehlo", "client.example.org", "--from", from, "--to", "alice@example.test")
	}
	delivered := func(r testutil.Result) bool { return r.Code == 0 && strings.Contains(r.Stdout, "250 2.0.0 OK") }

	// Listed: refused at RCPT, the list named, as Postfix does.
	if r := send("127.0.0.2", "s@spam.example"); delivered(r) || !strings.Contains(r.Stdout, "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test") {
		t.Errorf("listed client:\n%s", r)
	}
	// The list refused the query: greylisted (first attempt), not
	// blocked; then, after the delay, delivered.
	r := send("127.0.0.3", "a@sender.example")
	if delivered(r) || !strings.Contains(r.Stdout, "450 4.2.0 Greylisted, try again later") {
		t.Errorf("first attempt:\n%s", r)
	}
	time.Sleep(1100 * time.Millisecond)
	if r := send("127.0.0.3", "a@sender.example"); !delivered(r) {
		t.Errorf("retry after the delay:\n%s", r)
	}
	// Listed and allowlisted: greylisted, then delivered.
	send("127.0.0.4", "b@sender.example")
	time.Sleep(1100 * time.Millisecond)
	if r := send("127.0.0.4", "b@sender.example"); !delivered(r) {
		t.Errorf("allowlisted client:\n%s", r)
	}
	// A client that talks before the greeting.
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}).Dial("tcp", mx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("EHLO spam.example\r\n"))
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.HasPrefix(line, "554 5.5.1 ") {
		t.Errorf("pregreet client got %q", line)
	}
	if !s.Poll(5*time.Second, 20*time.Millisecond, func() bool { return strings.Contains(s.Stderr.String(), "pregreet") }) {
		t.Errorf("pregreet refusal not logged:\n%s", s.Stderr)
	}

	// Each refusal is one "smtp: refused" line naming the check.
	for _, want := range []string{"dnsbl: listed by bl.test*3", "greylist: greylisted for 1s", "the list refused the query"} {
		if !strings.Contains(s.Stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, s.Stderr)
		}
	}

	cl := s.login("alice@example.test", "alice-pw")
	defer cl.Quit()
	if n, _, err := cl.Stat(); err != nil || n != 2 {
		t.Errorf("STAT: %d messages, %v; want 2", n, err)
	}
}
