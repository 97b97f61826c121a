package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
)

// crlf turns every line end of b into CRLF.
func crlf(b string) string {
	return strings.ReplaceAll(strings.ReplaceAll(b, "\r\n", "\n"), "\n", "\r\n")
}

// dropFetchmailReceived removes the Received header field fetchmail
// adds (with its continuation lines) from a message.
func dropFetchmailReceived(m string) string {
	lines := strings.SplitAfter(m, "\r\n")
	for i := 0; i < len(lines); i++ {
		if lines[i] == "\r\n" {
			break
		}
		if !strings.HasPrefix(lines[i], "Received: ") {
			continue
		}
		j := i + 1
		for j < len(lines) && (strings.HasPrefix(lines[j], "\t") || strings.HasPrefix(lines[j], " ")) {
			j++
		}
		if strings.Contains(strings.Join(lines[i:j], ""), "(fetchmail-") {
			return strings.Join(append(lines[:i:i], lines[j:]...), "")
		}
	}
	return m
}

// readDir returns the contents of every file in dir, sorted.
func readDir(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	sort.Strings(out)
	return out
}

// TestThreeNodes runs real clients against three nodes sharing one
// database: swaks delivers through node 1 in the clear, through node 2
// with STARTTLS and through node 3's submission port over implicit TLS;
// mpop downloads through node 2 with STLS and through node 3 over
// implicit TLS, and fetchmail through node 3 in the clear, each getting
// exactly what POP3 serves, byte for byte. The maildrop lock holds across the
// three nodes, and a node killed with SIGKILL while holding it frees it
// within lock_ttl without applying the deletion its session marked.
func TestThreeNodes(t *testing.T) {
	swaks := testutil.NeedProgram(t, "swaks")
	mpop := testutil.NeedProgram(t, "mpop")
	fetchmail := testutil.NeedProgram(t, "fetchmail")
	c := newCluster(t)
	nodes := c.startNodes(t, 3, c.dsn)

	// Delivery through node 1 in the clear, node 2 with STARTTLS (RFC
	// 3207) and node 3's submission port over implicit TLS with AUTH
	// (RFC 8314, RFC 4954).
	var sent []string
	for i, tc := range []struct {
		addr, from string
		args       []string
	}{
		{nodes[0].smtp, "bob@remote.example", nil},
		{nodes[1].smtp, "bob@remote.example", []string{"--tls"}},
		{nodes[2].submissions, alice, []string{"--tls-on-connect", "--auth", "PLAIN", "--auth-user", alice, "--auth-password", alicePW}},
	} {
		msg := strings.Replace(smallMessage(alice, fmt.Sprintf("swaks through node %d", i+1)), "From: bob@remote.example", "From: "+tc.from, 1)
		file := filepath.Join(t.TempDir(), "msg.eml")
		os.WriteFile(file, []byte(strings.TrimSuffix(strings.ReplaceAll(msg, "\r\n", "\n"), "\n")), 0o600)
		r := run(t, nil, nil, swaks, append([]string{"--timeout", "30", "--server", tc.addr, "--ehlo", "client.example.test",
			"--from", tc.from, "--to", alice, "--data", "@" + file}, tc.args...)...)
		if r.Code != 0 || !strings.Contains(r.Stdout, "<-  250 2.0.0 OK") && !strings.Contains(r.Stdout, "<~  250 2.0.0 OK") {
			t.Fatalf("swaks through node %d:\n%s", i+1, r)
		}
		if tc.args != nil && !strings.Contains(r.Stdout, "<~ ") {
			t.Fatalf("swaks did not use STARTTLS:\n%s", r)
		}
		sent = append(sent, msg)
	}

	// What node 3 serves: the messages sent, after the receiving
	// nodes' trace headers.
	p3, err := nodes[2].login(t)
	if err != nil {
		t.Fatal(err)
	}
	served := mailtest.RetrAll(t, p3, "node 3")
	p3.Cmd("QUIT")
	if len(served) != len(sent) {
		t.Fatalf("node 3 serves %d messages, want %d", len(served), len(sent))
	}
	var want []string
	for i, m := range served {
		if !strings.HasSuffix(string(m), "\r\n"+sent[i]) {
			t.Fatalf("message %d as served by node 3:\n%q\nwant the end:\n%q", i+1, m, sent[i])
		}
		want = append(want, string(m))
	}
	sort.Strings(want)

	// mpop through node 2 with STLS (RFC 2595) and through node 3 over
	// implicit TLS (RFC 8314), keeping the mail; "delivery exchange"
	// writes the octets as received.
	for _, m := range []struct {
		n        *node
		addr     string
		starttls string
	}{{nodes[1], nodes[1].pop3, "on"}, {nodes[2], nodes[2].pop3s, "off"}} {
		dir := t.TempDir()
		out := filepath.Join(dir, "out")
		os.Mkdir(out, 0o700)
		cfg := filepath.Join(dir, "mpoprc")
		_, port, _ := strings.Cut(m.addr, "127.0.0.1:")
		os.WriteFile(cfg, fmt.Appendf(nil, "account test\nhost localhost\nport %s\nuser %s\npassword %s\nauth user\nkeep on\nreceived_header off\nuidls_file %s\ndelivery exchange %s\n",
			port, alice, alicePW, filepath.Join(dir, "uidls"), out), 0o600)
		r := run(t, []string{"HOME=" + dir}, nil, mpop, "-C", cfg, "--tls=on", "--tls-starttls="+m.starttls,
			"--tls-trust-file="+filepath.Join(c.dir, m.n.name, "tls", "cert.pem"), "-q", "test")
		if r.Code != 0 {
			t.Fatalf("mpop through %s (STLS %s):\n%s", m.n.name, m.starttls, r)
		}
		if got := readDir(t, out); strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			t.Fatalf("mpop through %s got %d messages, different from what node 3 serves:\n%q\nwant\n%q", m.n.name, len(got), got, want)
		}
	}

	// fetchmail through node 3 in the clear, keeping the mail; it adds
	// a Received header of its own and may turn line ends into LF.
	home := t.TempDir()
	fout := filepath.Join(home, "out")
	os.Mkdir(fout, 0o700)
	_, port, _ := strings.Cut(nodes[2].pop3, "127.0.0.1:")
	rc := filepath.Join(home, ".fetchmailrc")
	os.WriteFile(rc, fmt.Appendf(nil, "set no syslog\nset no bouncemail\npoll 127.0.0.1 protocol pop3 port %s uidl\n  user %q there with password %q is %q here\n  sslproto \"\"\n  keep\n  no stripcr\n  mda \"cat > $(mktemp %s/msg.XXXXXX)\"\n",
		port, alice, alicePW, "postino-test", fout), 0o600)
	r := run(t, []string{"HOME=" + home}, nil, fetchmail, "--nodetach", "--fetchmailrc", rc,
		"--idfile", filepath.Join(home, ".fetchids"), "--pidfile", filepath.Join(home, ".fetchmail.pid"))
	if r.Code != 0 {
		t.Fatalf("fetchmail through node 3:\n%s", r)
	}
	got := readDir(t, fout)
	if len(got) != len(want) {
		t.Fatalf("fetchmail got %d messages, want %d:\n%s", len(got), len(want), r)
	}
	for _, g := range got {
		g = dropFetchmailReceived(crlf(g))
		found := false
		for _, w := range want {
			found = found || g == w
		}
		if !found {
			t.Fatalf("fetchmail through node 3 got a message node 3 does not serve:\n%q", g)
		}
	}

	// The lock holds across the three nodes (RFC 1939 §4: exclusive
	// access; RFC 2449 §8.1.1 [IN-USE]).
	held, err := nodes[0].login(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		if _, err := n.login(t); err == nil || !strings.Contains(err.Error(), "IN-USE") {
			t.Fatalf("login on %s while node 1 holds the lock: %v, want -ERR [IN-USE]", n.name, err)
		}
	}
	// Node 1 marks a deletion, then dies without QUIT.
	if _, err := held.Cmd("DELE 2"); err != nil {
		t.Fatal(err)
	}
	nodes[0].kill9(t)
	start := time.Now()
	for {
		p, err := nodes[2].login(t)
		if err == nil {
			got := mailtest.RetrAll(t, p, "after the kill")
			if len(got) != len(served) || string(got[1]) != string(served[1]) {
				t.Fatalf("after the kill node 3 serves %d messages, want the same %d: the dead session's deletion was applied?", len(got), len(served))
			}
			p.Cmd("QUIT")
			break
		}
		if !strings.Contains(err.Error(), "IN-USE") {
			t.Fatalf("login on node 3 after the kill: %v", err)
		}
		if time.Since(start) > lockTTL+2*time.Second {
			t.Fatalf("lock still held %v after node 1 died (lock_ttl %v)", time.Since(start), lockTTL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("lock freed %v after SIGKILL (lock_ttl %v)", time.Since(start), lockTTL)

	// A node stopped with SIGTERM while a session holds the lock ends
	// the session without applying its deletions and frees the lock at
	// once, without waiting for lock_ttl.
	held, err = nodes[1].login(t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Cmd("DELE 1"); err != nil {
		t.Fatal(err)
	}
	nodes[1].stop(t)
	stopped := time.Now()
	p, err := nodes[2].login(t)
	if err != nil {
		t.Fatalf("login on node 3 right after node 2 stopped: %v, want the lock free at once", err)
	}
	if got := mailtest.RetrAll(t, p, "after the stop"); len(got) != len(served) || string(got[0]) != string(served[0]) {
		t.Fatalf("after node 2 stopped node 3 serves %d messages, want the same %d: the ended session's deletion was applied?", len(got), len(served))
	}
	p.Cmd("QUIT")
	t.Logf("lock free %v after node 2 exited", time.Since(stopped))
}
