package cluster

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/proxyproto"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/pop3"
)

// haproxySource is the address HAProxy connects to the nodes from: the
// one address the nodes trust to send a PROXY header.
const haproxySource = "127.0.0.3"

// startHAProxy runs a real HAProxy in TCP mode with, for each name, a
// frontend balancing round-robin over the servers given (address and
// options), connecting from haproxySource. It returns the frontends.
func startHAProxy(t *testing.T, backends map[string][]string) map[string]string {
	t.Helper()
	bin := testutil.NeedProgram(t, "haproxy")
	dir := t.TempDir()
	free := testutil.FreeAddrs(t, len(backends))
	front := map[string]string{}
	var conf strings.Builder
	conf.WriteString("global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n")
	i := 0
	for name, servers := range backends {
		front[name] = free[i]
		fmt.Fprintf(&conf, "frontend f_%s\n  bind %s\n  default_backend b_%s\nbackend b_%s\n  balance roundrobin\n", name, free[i], name, name)
		for j, s := range servers {
			fmt.Fprintf(&conf, "  server s%d %s source %s\n", j+1, s, haproxySource)
		}
		i++
	}
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(conf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s\n%s", err, out, conf.String())
	}
	logs := &testutil.SyncBuffer{}
	cmd := exec.Command(bin, "-db", "-f", file)
	cmd.Stdout, cmd.Stderr = logs, logs
	p, err := testutil.StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Terminate(5 * time.Second) })
	for _, a := range front {
		// A probe of the frontend would reach a node and count as a
		// connection of HAProxy's: wait for the listening socket only.
		ok := p.Poll(10*time.Second, 20*time.Millisecond, func() bool { return listening(a) })
		if !ok {
			t.Fatalf("haproxy does not listen on %s\n%s", a, logs)
		}
	}
	return front
}

// listening reports whether a TCP socket listens on addr, from
// /proc/net/tcp, without connecting to it.
func listening(addr string) bool {
	_, port, _ := net.SplitHostPort(addr)
	var p int
	fmt.Sscan(port, &p)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false
	}
	// local_address is 0100007F:PORT in hex; state 0A is LISTEN.
	want := fmt.Sprintf("0100007F:%04X 00000000:0000 0A", p)
	return strings.Contains(string(b), want)
}

// dialFrom connects to addr from the loopback address from.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

// pop3From logs in as alice to addr from a loopback address.
func pop3From(t *testing.T, from, addr, pass string) (*pop3.Client, error) {
	t.Helper()
	c, err := pop3.NewClient(dialFrom(t, from, addr))
	if err != nil {
		return nil, err
	}
	if err := c.Login(alice, pass); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// TestHAProxy puts a real HAProxy in front of three nodes, balancing
// round-robin, with the PROXY protocol (v2 for POP3, v1 for SMTP); the
// nodes trust HAProxy's source address only. Mail sent from 127.0.0.2
// through HAProxy carries 127.0.0.2 in its Received header whichever node
// took it, and every node logs the client's address, not HAProxy's.
// Failed logins from 127.0.0.2 through HAProxy block 127.0.0.2 on the
// nodes, not HAProxy: another client through HAProxy still logs in on
// every node. Login failures are counted by each node on its own (the
// user database is a file here), so the test makes each node see enough
// of them.
func TestHAProxy(t *testing.T) {
	c := newCluster(t)
	const maxFailures = 3
	c.smtp = "trusted_networks = []"
	c.user = fmt.Sprintf("max_failures = %d\nfailure_delay = \"0s\"", maxFailures)
	c.extra = fmt.Sprintf("[proxy]\ntrusted = [%q]\nheader_timeout = \"2s\"\n", haproxySource)
	nodes := c.startNodes(t, 3, c.dsn)
	var pop3s, smtps []string
	for _, n := range nodes {
		pop3s = append(pop3s, n.pop3+" send-proxy-v2")
		smtps = append(smtps, n.smtp+" send-proxy")
	}
	front := startHAProxy(t, map[string][]string{"pop3": pop3s, "smtp": smtps})

	// One message through each node, from 127.0.0.2.
	for i := range nodes {
		sc, err := smtp.NewClient(dialFrom(t, "127.0.0.2", front["smtp"]), "mx.example.test")
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.Hello("client.example.net"); err != nil {
			t.Fatal(err)
		}
		if err := sc.Mail("bob@example.net"); err != nil {
			t.Fatal(err)
		}
		if err := sc.Rcpt(alice); err != nil {
			t.Fatal(err)
		}
		w, err := sc.Data()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(w, "From: bob@example.net\r\nTo: %s\r\nSubject: via haproxy %d\r\n\r\nhello\r\n", alice, i+1)
		if err := w.Close(); err != nil {
			t.Fatalf("message %d through HAProxy: %v", i+1, err)
		}
		sc.Quit()
	}
	// POP3 through HAProxy: one session per node, each sees the three.
	for i := range nodes {
		p, err := pop3From(t, "127.0.0.2", front["pop3"], alicePW)
		if err != nil {
			t.Fatalf("login %d through HAProxy: %v", i+1, err)
		}
		for n := 1; n <= len(nodes); n++ {
			r, err := p.Retr(n)
			if err != nil {
				t.Fatalf("RETR %d: %v", n, err)
			}
			msg, _ := io.ReadAll(r)
			recv, _, _ := strings.Cut(string(msg), "Subject:")
			if !strings.Contains(recv, "127.0.0.2") || strings.Contains(recv, haproxySource) {
				t.Fatalf("the trace headers of message %d do not name the client 127.0.0.2 alone:\n%s", n, recv)
			}
		}
		if _, err := p.Cmd("QUIT"); err != nil {
			t.Fatal(err)
		}
		p.Close()
	}
	for _, n := range nodes {
		testutil.WaitFor(t, 5*time.Second, n.name+" logging the client's address", func() bool {
			return strings.Contains(n.Stderr.String(), "remote=127.0.0.2:")
		})
		if strings.Contains(n.Stderr.String(), "remote="+haproxySource+":") {
			t.Errorf("HAProxy's address in the log of %s:\n%s", n.name, n.Stderr)
		}
	}

	// Failed logins from 127.0.0.2 through HAProxy: max_failures on each
	// node, then every node refuses 127.0.0.2 even with the password.
	for range maxFailures * len(nodes) {
		if p, err := pop3From(t, "127.0.0.2", front["pop3"], "wrong password"); err == nil {
			p.Close()
			t.Fatal("wrong password accepted")
		}
	}
	for i := range nodes {
		if p, err := pop3From(t, "127.0.0.2", front["pop3"], alicePW); err == nil {
			p.Close()
			t.Fatalf("attempt %d: 127.0.0.2 not blocked after %d failures on each node", i+1, maxFailures)
		}
	}
	// HAProxy itself is not blocked: another client logs in on every node.
	for i := range nodes {
		p, err := pop3From(t, "127.0.0.4", front["pop3"], alicePW)
		if err != nil {
			t.Fatalf("attempt %d: another client through HAProxy is refused: %v", i+1, err)
		}
		p.Cmd("QUIT")
		p.Close()
	}
	// An attacker who connects to a node directly with a PROXY header
	// naming an address that is not blocked is not served.
	forged := proxyproto.AppendV2(nil, proxyproto.Header{Source: netip.MustParseAddrPort("127.0.0.4:1000"), Dest: netip.MustParseAddrPort("127.0.0.1:110")})
	for _, n := range nodes {
		conn := dialFrom(t, "127.0.0.5", n.pop3)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write(append(forged, "USER "+alice+"\r\nPASS "+alicePW+"\r\n"...))
		rest, _ := io.ReadAll(conn)
		conn.Close()
		if strings.Count(string(rest), "+OK") > 1 {
			t.Errorf("%s served a forged PROXY header from an untrusted address: %q", n.name, rest)
		}
		testutil.WaitFor(t, 5*time.Second, n.name+" logging the refusal", func() bool {
			return strings.Contains(n.Stderr.String(), "PROXY header from an untrusted address refused")
		})
		if strings.Contains(n.Stderr.String(), "127.0.0.4:1000") {
			t.Errorf("the forged address reached the log of %s", n.name)
		}
	}
	for _, n := range nodes {
		r := postino(t, nil, "block", "list", "--config", n.config)
		if r.Code != 0 || !strings.Contains(r.Stdout, "127.0.0.2") || strings.Contains(r.Stdout, haproxySource) {
			t.Errorf("block list on %s: %s", n.name, r)
		}
	}
}
