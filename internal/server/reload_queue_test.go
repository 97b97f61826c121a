package server

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/testutil"
)

// sink is a loopback SMTP server that accepts every message and keeps
// its data.
type sink struct {
	l    net.Listener
	mu   sync.Mutex
	msgs []string
}

func newSink(t *testing.T) *sink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *sink) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	fmt.Fprintf(c, "220 sink.test ESMTP\r\n")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		switch cmd := strings.ToUpper(strings.TrimRight(line, "\r\n")); {
		case strings.HasPrefix(cmd, "EHLO"):
			fmt.Fprintf(c, "250-sink.test\r\n250 8BITMIME\r\n")
		case cmd == "DATA":
			fmt.Fprintf(c, "354 go\r\n")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, b.String())
			s.mu.Unlock()
			fmt.Fprintf(c, "250 accepted\r\n")
		case cmd == "QUIT":
			fmt.Fprintf(c, "221 bye\r\n")
			return
		default:
			fmt.Fprintf(c, "250 ok\r\n")
		}
	}
}

func (s *sink) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

// TestReloadQueue: a reload gives the running queue a new route and a new
// DKIM key folder: the next message goes to the new route, signed with
// the key found in the new folder.
func TestReloadQueue(t *testing.T) {
	cfg := testConfig(t)
	first, second := newSink(t), newSink(t)
	cfg.Queue.Routes = []string{"routed.test=" + first.l.Addr().String()}
	logger := slog.New(slog.DiscardHandler)
	srv, addr, _ := startForReload(t, cfg, logger)
	cl := &clients{t: t}
	submit := func(subject string) {
		c := cl.dial(addr["submission"], false, "")
		c.expect("220", c.line())
		c.expect("250", c.cmd("EHLO client.example.test"))
		c.expect("235", c.cmd("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00alice-pw"))))
		c.expect("250", c.cmd("MAIL FROM:<alice@example.test>"))
		c.expect("250", c.cmd("RCPT TO:<bob@routed.test>"))
		c.expect("354", c.cmd("DATA"))
		c.expect("250", c.cmd("From: alice@example.test\r\nSubject: %s\r\n\r\nhello\r\n.", subject))
		c.expect("221", c.cmd("QUIT"))
	}
	submit("before")
	testutil.WaitFor(t, 15*time.Second, "delivery to the first route", func() bool { return len(first.messages()) == 1 })
	if m := first.messages()[0]; strings.Contains(m, "DKIM-Signature") {
		t.Fatalf("signed without a key:\n%s", m)
	}

	keys := filepath.Join(cfg.DataDir, "dkim-2")
	if _, err := dkim.Keygen(keys, "example.test", dkim.AlgoEd25519, "s1"); err != nil {
		t.Fatal(err)
	}
	next := *srv.Config()
	next.Queue.Routes = []string{"routed.test=" + second.l.Addr().String()}
	next.Queue.DKIMDir = keys
	if _, err := srv.Reload(&next, logger); err != nil {
		t.Fatal(err)
	}
	submit("after")
	testutil.WaitFor(t, 15*time.Second, "delivery to the second route", func() bool { return len(second.messages()) == 1 })
	if m := second.messages()[0]; !strings.Contains(m, "DKIM-Signature:") || !strings.Contains(m, "d=example.test") || !strings.Contains(m, "s=s1") {
		t.Errorf("not signed with the new folder's key:\n%s", m)
	}
	if n := len(first.messages()); n != 1 {
		t.Errorf("the first route got %d messages", n)
	}
}
