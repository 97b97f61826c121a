package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestDKIMBothNodes: keys made once with "postino dkim keygen" into the
// database sign the mail submitted on either node; dkimpy verifies both
// messages against the DNS records keygen printed.
func TestDKIMBothNodes(t *testing.T) {
	py := testutil.NeedPython(t, "dkim", "nacl")
	sink := testutil.NewSMTPSink(t)
	c := newCluster(t)
	c.tweak = func(cfg string) string {
		// Submission with STARTTLS on a free port, mail for
		// elsewhere.test routed to the sink.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		cfg = strings.Replace(cfg, "submission = \"\"\n", "submission = \""+addr+"\"\n", 1)
		return cfg + "[queue]\nroutes = [\"elsewhere.test=" + sink.Addr + "\"]\n"
	}
	admin := c.config(t, "admin", c.dsn, "127.0.0.1:0", "127.0.0.1:0")
	if r := postino(t, nil, "db", "migrate", "--config", admin); r.Code != 0 {
		t.Fatalf("db migrate: %s", r)
	}
	r := postino(t, nil, "dkim", "keygen", "example.test", "--config", admin)
	if r.Code != 0 {
		t.Fatalf("dkim keygen: %s", r)
	}
	// The records, as a zone for dkimpy's dnsfunc.
	zone := map[string]string{}
	quoted := regexp.MustCompile(`"([^"]*)"`)
	for _, line := range strings.Split(r.Stdout, "\n") {
		name, rest, ok := strings.Cut(line, ". IN TXT ")
		if !ok {
			continue
		}
		var v strings.Builder
		for _, m := range quoted.FindAllStringSubmatch(rest, -1) {
			v.WriteString(m[1])
		}
		zone[name+"."] = v.String()
	}
	if len(zone) != 2 {
		t.Fatalf("keygen printed %d records: %s", len(zone), r)
	}
	n1 := c.start(t, "node1", c.dsn)
	n2 := c.start(t, "node2", c.dsn)
	for i, n := range []*node{n1, n2} {
		submit(t, c, n, "node"+string(rune('1'+i)))
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(sink.Messages()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d messages reached the remote MX, want 2", len(sink.Messages()))
		}
		time.Sleep(200 * time.Millisecond)
	}
	zj, _ := json.Marshal(zone)
	script := `
import sys, json, dkim
zone = json.loads(sys.argv[2])
def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    v = zone.get(n)
    return v.encode() if v else None
msg = open(sys.argv[1], 'rb').read()
n = msg.count(b"DKIM-Signature:")
print(json.dumps([dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc) for i in range(n)]))
`
	for i, m := range sink.Messages() {
		file := filepath.Join(t.TempDir(), "msg.eml")
		os.WriteFile(file, []byte(m), 0o600)
		out, err := exec.Command(py, "-c", script, file, string(zj)).CombinedOutput()
		if err != nil {
			t.Fatalf("dkimpy: %v\n%s", err, out)
		}
		var ok []bool
		if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &ok); err != nil {
			t.Fatalf("dkimpy said %q: %v", out, err)
		}
		if len(ok) != 2 || !ok[0] || !ok[1] {
			t.Errorf("message %d: dkimpy verified %v, want both signatures:\n%.600s", i+1, ok, m)
		}
	}
}

// submit sends a message from alice to friend@elsewhere.test through the
// node's submission port (STARTTLS, AUTH PLAIN).
func submit(t *testing.T, c *cluster, n *node, via string) {
	t.Helper()
	b, err := os.ReadFile(n.config)
	if err != nil {
		t.Fatal(err)
	}
	addr := regexp.MustCompile(`submission = "([^"]+)"`).FindStringSubmatch(string(b))[1]
	pem, err := os.ReadFile(filepath.Join(c.dir, filepath.Base(strings.TrimSuffix(n.config, ".toml")), "tls", "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	cl, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.StartTLS(&tls.Config{ServerName: "localhost", RootCAs: roots}); err != nil {
		t.Fatalf("STARTTLS on %s: %v", via, err)
	}
	if err := cl.Auth(smtp.PlainAuth("", alice, alicePW, "127.0.0.1")); err != nil {
		t.Fatalf("AUTH on %s: %v", via, err)
	}
	if err := cl.Mail(alice); err != nil {
		t.Fatal(err)
	}
	if err := cl.Rcpt("friend@elsewhere.test"); err != nil {
		t.Fatal(err)
	}
	w, err := cl.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("From: alice@example.test\r\nTo: friend@elsewhere.test\r\nSubject: via " + via + "\r\n\r\nsigned by the cluster\r\n"))
	if err := w.Close(); err != nil {
		t.Fatalf("DATA on %s: %v", via, err)
	}
	cl.Quit()
}
