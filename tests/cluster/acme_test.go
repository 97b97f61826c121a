package cluster

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestACMEOneOrder: two nodes with tls.acme and the same host name share
// the ACME cache in PostgreSQL. Only node 1 listens where pebble
// validates; whichever node orders, the name is ordered once (the other
// waits on the lock and takes the certificate from the database), and
// both serve the same certificate over POP3S.
func TestACMEOneOrder(t *testing.T) {
	c := newCluster(t)
	a := testutil.FreeAddrs(t, 4)
	https1, http1, https2, http2 := a[0], a[1], a[2], a[3]
	p := testutil.StartPebble(t, testutil.PebbleOptions{TLSPort: testutil.Port(t, https1), HTTPPort: testutil.Port(t, http1)})
	caFile := p.CAFile(t, c.dir)
	start := func(name, https, http string) (*node, string) {
		n := &node{}
		var pop3s string
		n.Serve = testutil.StartServe(t, testutil.ServeConfig{
			Bin: binPath, FreeAddrs: 3, Retry: true,
			Setup: func(free []string) ([]string, map[string]string) {
				n.pop3, pop3s, n.smtp = free[0], free[1], free[2]
				n.config = c.configTLS(t, name, c.dsn, n.pop3, pop3s, n.smtp)
				b, _ := os.ReadFile(n.config)
				cfg := strings.Replace(string(b), fmt.Sprintf("hostname = %q", name+".example.test"), `hostname = "pop.example.test"`, 1)
				cfg += fmt.Sprintf("[tls]\nacme = true\nacme_email = \"postmaster@example.test\"\nacme_directory = %q\nacme_ca_file = %q\n[https]\nlisten = %q\n[http]\nlisten = %q\n",
					p.Directory, caFile, https, http)
				os.WriteFile(n.config, []byte(cfg), 0o600)
				return []string{"serve", "--config", n.config}, map[string]string{"pop3": n.pop3, "pop3s": pop3s}
			},
		})
		t.Cleanup(func() { n.Stop(t, 15*time.Second, n.Stderr) })
		return n, pop3s
	}
	n1, pop3s1 := start("node1", https1, http1)
	n2, pop3s2 := start("node2", https2, http2)
	roots := p.Roots(t)
	serial := func(n *node, addr string) (string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
			&tls.Config{ServerName: "pop.example.test", RootCAs: roots})
		if err != nil {
			return "", err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	var s1, s2 string
	var last error
	deadline := time.Now().Add(2 * time.Minute)
	for s1 == "" || s2 == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no certificate on both nodes: %v\nnode1:\n%s\nnode2:\n%s", last, n1.Stderr, n2.Stderr)
		}
		if s1 == "" {
			s1, last = serial(n1, pop3s1)
		}
		if s2 == "" {
			s2, last = serial(n2, pop3s2)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if s1 != s2 {
		t.Errorf("the nodes serve different certificates (serials %s and %s): the name was ordered twice", s1, s2)
	}
	logs := n1.Stderr.String() + n1.Stdout.String() + n2.Stderr.String() + n2.Stdout.String()
	if k := strings.Count(logs, "acme: certificate obtained"); k != 1 {
		t.Errorf("%d certificates obtained in the logs of both nodes; want 1", k)
	}
}
