package pop3check

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/dnscheck"
	"github.com/postino-mail/postino/internal/testutil"
)

// liar is a POP3 server over implicit TLS that gets everything wrong: it
// accepts TLS 1.0 and RC4, answers a wrong password without a response
// code, LIST understates a message's size, STAT disagrees with LIST, a
// unique-id has a space and is repeated, and the unique-ids change with
// every session.
func liar(t *testing.T) (addr string, cert testutil.Cert) {
	t.Helper()
	cert = testutil.NewCert(t, "127.0.0.1")
	cfg := cert.Config()
	cfg.MinVersion = tls.VersionTLS10
	cfg.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_RC4_128_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var sessions atomic.Int32
	msgs := []string{"Subject: a\r\n\r\nbody\r\n", "Subject: b\r\n\r\n.dotted\r\n"}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				fmt.Fprintf(c, "+OK liar ready\r\n")
				user := ""
				n := 0
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					f := strings.Fields(line)
					if len(f) == 0 {
						continue
					}
					switch strings.ToUpper(f[0]) {
					case "CAPA":
						fmt.Fprintf(c, "+OK\r\nUSER\r\nUIDL\r\n.\r\n")
					case "USER":
						user = f[1]
						fmt.Fprintf(c, "+OK\r\n")
					case "PASS":
						if user != "u" || f[1] != "p" {
							fmt.Fprintf(c, "-ERR no\r\n")
							continue
						}
						n = int(sessions.Add(1))
						fmt.Fprintf(c, "+OK\r\n")
					case "STAT":
						fmt.Fprintf(c, "+OK 2 999\r\n")
					case "LIST":
						fmt.Fprintf(c, "+OK\r\n1 %d\r\n2 %d\r\n.\r\n", len(msgs[0])-3, len(msgs[1]))
					case "UIDL":
						fmt.Fprintf(c, "+OK\r\n1 a b\r\n2 s%d\r\n.\r\n", n)
					case "RETR":
						i := 0
						if f[1] == "2" {
							i = 1
						}
						fmt.Fprintf(c, "+OK\r\n%s.\r\n", strings.ReplaceAll(msgs[i], "\r\n.", "\r\n.."))
					case "QUIT":
						fmt.Fprintf(c, "+OK\r\n")
						return
					default:
						fmt.Fprintf(c, "-ERR\r\n")
					}
				}
			}()
		}
	}()
	return l.Addr().String(), cert
}

// TestAuditHostileServer: every lie of the server is reported.
func TestAuditHostileServer(t *testing.T) {
	addr, cert := liar(t)
	_, port, _ := net.SplitHostPort(addr)
	fs := Audit(context.Background(), Options{Addr: "127.0.0.1:" + port, Implicit: true, Roots: cert.Pool(), User: "u", Password: "p"})
	t.Logf("\n%s", dump(fs))
	out := dump(fs)
	for _, want := range []string{
		"FAIL TLS        127.0.0.1:" + port + ": TLS 1.0 accepted (deprecated by RFC 8996)",
		"FAIL CIPHERS",
		"TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
		"WARN CODES",
		"WARN LOCK", // a second session at once is let in
		"WARN CERT", // a one-day certificate expires within 14 days
		"FAIL STAT       127.0.0.1:" + port + ": STAT says 2 messages, 999 octets; LIST lists 2 messages, 40 octets",
		"FAIL UIDL       127.0.0.1:" + port + `: message 1: "a b" has characters outside 0x21-0x7E`,
		"FAIL SIZE       127.0.0.1:" + port + ": message 1: LIST 17, RETR 20 octets",
		"FAIL UIDL       127.0.0.1:" + port + ": unique-ids changed between two sessions",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("findings lack %q", want)
		}
	}
	if !dnscheck.Failed(fs) {
		t.Error("no FAIL")
	}
}
