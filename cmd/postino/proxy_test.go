package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
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

// startHAProxy runs a real HAProxy in TCP mode with one frontend per
// backend address; each backend line gets its own send-proxy option and
// connects from source 127.0.0.3. It returns the frontend addresses.
func startHAProxy(t *testing.T, backends map[string]string) map[string]string {
	t.Helper()
	bin := testutil.NeedProgram(t, "haproxy")
	dir := t.TempDir()
	free := testutil.FreeAddrs(t, len(backends))
	front := map[string]string{}
	var conf strings.Builder
	conf.WriteString("global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n")
	i := 0
	for name, line := range backends {
		front[name] = free[i]
		fmt.Fprintf(&conf, "frontend f_%s\n  bind %s\n  default_backend b_%s\nbackend b_%s\n  server s1 %s source 127.0.0.3\n", name, free[i], name, name, line)
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
		ok := p.Poll(10*time.Second, 20*time.Millisecond, func() bool {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
			}
			return err == nil
		})
		if !ok {
			t.Fatalf("haproxy does not listen on %s\n%s", a, logs)
		}
	}
	return front
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

// pop3From logs in to addr from a loopback address: plain, with STLS
// first (stls), or over implicit TLS (roots set and implicit).
func pop3From(t *testing.T, from, addr, mode string, roots *x509.CertPool, user, pass string) (*pop3.Client, error) {
	t.Helper()
	conn := dialFrom(t, from, addr)
	cfg := &tls.Config{ServerName: "mail.example.test", RootCAs: roots}
	var c *pop3.Client
	var err error
	if mode == "implicit" {
		c, err = pop3.NewClient(tls.Client(conn, cfg))
	} else {
		c, err = pop3.NewClient(conn)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	if mode == "stls" {
		if err := c.StartTLS(cfg); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.Login(user, pass); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// TestHAProxyPROXYProtocol puts a real HAProxy (send-proxy-v2 for POP3
// and POP3S, send-proxy for SMTP) in front of postino, which trusts only
// HAProxy's source address 127.0.0.3: clients from 127.0.0.2 appear as
// 127.0.0.2 in the logs and the Received header, over plain POP3, STLS
// and implicit TLS, and SMTP in the clear, with STARTTLS and over
// implicit TLS; failed logins through HAProxy block 127.0.0.2 and
// not HAProxy; a forged PROXY header from an untrusted address and a
// headerless connection from HAProxy's address are refused.
func TestHAProxyPROXYProtocol(t *testing.T) {
	h := startMailHost(t, hostConf{
		smtp:     "trusted_networks = []",
		sections: "[users]\nmax_failures = 3\nfailure_delay = \"0s\"\n[proxy]\ntrusted = [\"127.0.0.3\"]\nheader_timeout = \"1s\"",
	})
	front := startHAProxy(t, map[string]string{
		"pop3": h.addr["pop3"] + " send-proxy-v2",
		// Health checks carry a v2 LOCAL header, which postino accepts.
		"pop3s":       h.addr["pop3s"] + " send-proxy-v2 check check-send-proxy inter 100ms",
		"smtp":        h.addr["smtp"] + " send-proxy",
		"submissions": h.addr["submissions"] + " send-proxy",
	})
	pem, _ := os.ReadFile(h.certFile)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)

	// Mail through HAProxy (PROXY v1) from 127.0.0.2, to the MX in the
	// clear and with STARTTLS, and to submissions (implicit TLS, AUTH):
	// each Received header names 127.0.0.2, not HAProxy.
	for i, mode := range []string{"plain", "starttls", "implicit"} {
		conn := dialFrom(t, "127.0.0.2", front["smtp"])
		if mode == "implicit" {
			conn = tls.Client(dialFrom(t, "127.0.0.2", front["submissions"]), &tls.Config{ServerName: "mail.example.test", RootCAs: roots})
		}
		sc, err := smtp.NewClient(conn, "mail.example.test")
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if err := sc.Hello("client.example.net"); err != nil {
			t.Fatal(err)
		}
		from := "bob@example.net"
		switch mode {
		case "starttls":
			if err := sc.StartTLS(&tls.Config{ServerName: "mail.example.test", RootCAs: roots}); err != nil {
				t.Fatalf("STARTTLS through HAProxy: %v", err)
			}
		case "implicit":
			if err := sc.Auth(smtp.PlainAuth("", "alice@example.test", "secret", "mail.example.test")); err != nil {
				t.Fatalf("AUTH through HAProxy: %v", err)
			}
			from = "alice@example.test"
		}
		if err := sc.Mail(from); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if err := sc.Rcpt("alice@example.test"); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		w, _ := sc.Data()
		fmt.Fprintf(w, "From: %s\r\nTo: alice@example.test\r\nSubject: via haproxy %d\r\n\r\nhello\r\n", from, i+1)
		if err := w.Close(); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		sc.Quit()
	}

	// POP3 through HAProxy (PROXY v2) from 127.0.0.2, in the three modes.
	for _, m := range []struct{ front, mode string }{{"pop3", "plain"}, {"pop3", "stls"}, {"pop3s", "implicit"}} {
		c, err := pop3From(t, "127.0.0.2", front[m.front], m.mode, roots, "alice@example.test", "secret")
		if err != nil {
			t.Fatalf("%s login through HAProxy: %v", m.mode, err)
		}
		for n := 1; n <= 3; n++ {
			r, err := c.Retr(n)
			if err != nil {
				t.Fatalf("RETR %d: %v", n, err)
			}
			msg, _ := io.ReadAll(r)
			recv, _, _ := strings.Cut(string(msg), "Subject:")
			if !strings.Contains(recv, "127.0.0.2") || strings.Contains(recv, "127.0.0.3") {
				t.Fatalf("%s: Received header of message %d does not name the client 127.0.0.2 alone:\n%s", m.mode, n, recv)
			}
		}
		c.Cmd("QUIT")
		c.Close()
	}
	t.Logf("logs:\n%s", h.logs)
	testutil.WaitFor(t, 5*time.Second, "log lines with the client address", func() bool {
		return strings.Contains(h.logs.String(), "remote=127.0.0.2:")
	})
	if strings.Contains(h.logs.String(), "remote=127.0.0.3:") {
		t.Errorf("HAProxy's address in the logs:\n%s", h.logs)
	}

	// Failed logins through HAProxy block the client, not HAProxy.
	for range 3 {
		if _, err := pop3From(t, "127.0.0.2", front["pop3"], "plain", roots, "alice@example.test", "wrong"); err == nil {
			t.Fatal("wrong password accepted")
		}
	}
	if c, err := pop3From(t, "127.0.0.2", front["pop3"], "plain", roots, "alice@example.test", "secret"); err == nil {
		c.Close()
		t.Fatal("127.0.0.2 not blocked after 3 failures")
	}
	c, err := pop3From(t, "127.0.0.4", front["pop3"], "plain", roots, "alice@example.test", "secret")
	if err != nil {
		t.Fatalf("another client through HAProxy is blocked too: %v", err)
	}
	c.Cmd("QUIT")
	c.Close()
	code, out, errs := runCmd(t, "", "block", "list", "--config", h.config)
	if code != exitOK || !strings.Contains(out, "127.0.0.2") || strings.Contains(out, "127.0.0.3") {
		t.Errorf("block list = %d\n%s%s", code, out, errs)
	}

	if l := h.logs.String(); strings.Contains(l, "connection from a trusted address refused") {
		t.Errorf("HAProxy's connections (health checks?) refused:\n%s", l)
	}

	// Attacks: a forged header from an untrusted address, and HAProxy's
	// own address without a header.
	for _, a := range []struct{ from, data string }{
		{"127.0.0.5", string(proxyproto.AppendV1(nil, proxyproto.Header{Source: mustAP("127.0.0.9:1000"), Dest: mustAP("127.0.0.1:110")}))},
		{"127.0.0.5", string(proxyproto.AppendV2(nil, proxyproto.Header{Source: mustAP("127.0.0.9:1000"), Dest: mustAP("127.0.0.1:110")}))},
		{"127.0.0.3", "CAPA\r\n"},
	} {
		conn := dialFrom(t, a.from, h.addr["pop3"])
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(conn)
		if a.from != "127.0.0.3" {
			if l, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "+OK") {
				t.Fatalf("greeting %q, %v", l, err)
			}
		}
		conn.Write([]byte(a.data + "USER alice@example.test\r\n"))
		rest, _ := io.ReadAll(br)
		conn.Close()
		if strings.Contains(string(rest), "+OK") {
			t.Errorf("from %s, %q: served: %q", a.from, a.data, rest)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "the refusals in the log", func() bool {
		l := h.logs.String()
		return strings.Contains(l, "PROXY header from an untrusted address refused") && strings.Contains(l, "connection from a trusted address refused")
	})
	if strings.Contains(h.logs.String(), "127.0.0.9") {
		t.Errorf("the forged address reached the logs:\n%s", h.logs)
	}
}

func mustAP(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
