package smtp

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawMX is a loopback SMTP server that keeps every command line and the
// raw octets of every DATA phase, exactly as they came over the wire.
type rawMX struct {
	ln   net.Listener
	mu   sync.Mutex
	cmds []string
	data [][]byte
}

func startRawMX(t *testing.T) *rawMX {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &rawMX{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go m.serve(c)
		}
	}()
	return m
}

func (m *rawMX) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	fmt.Fprint(c, "220 mx.elsewhere.test ESMTP\r\n")
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		m.mu.Lock()
		m.cmds = append(m.cmds, strings.TrimRight(line, "\r\n"))
		m.mu.Unlock()
		switch verb := strings.ToUpper(strings.Fields(line + " x")[0]); verb {
		case "EHLO", "HELO":
			fmt.Fprint(c, "250-mx.elsewhere.test\r\n250 8BITMIME\r\n")
		case "DATA":
			fmt.Fprint(c, "354 go on\r\n")
			// The raw octets up to the first CRLF.CRLF: what a
			// conforming server takes for the end of the data.
			var raw []byte
			for !bytes.HasSuffix(raw, []byte("\r\n.\r\n")) {
				b, err := br.ReadByte()
				if err != nil {
					return
				}
				raw = append(raw, b)
			}
			m.mu.Lock()
			m.data = append(m.data, raw)
			m.mu.Unlock()
			fmt.Fprint(c, "250 2.0.0 queued\r\n")
		case "QUIT":
			fmt.Fprint(c, "221 bye\r\n")
			return
		default:
			fmt.Fprint(c, "250 ok\r\n")
		}
	}
}

func (m *rawMX) snapshot() ([]string, [][]byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.cmds...), append([][]byte(nil), m.data...)
}

// TestDeliverForwardNoSmuggling: a message given to `postino deliver` with
// bare CRs and bare LFs around a "." line (SMTP smuggling) and forwarded
// by an alias reaches the next hop with CRLF line ends only, as one
// message: the next hop never reads the payload's commands as commands.
func TestDeliverForwardNoSmuggling(t *testing.T) {
	mx := startRawMX(t)
	s := startServer(t, serverOpts{
		aliases:     defaultAliases + "fwd@example.test: friend@elsewhere.test\n",
		extraConfig: fmt.Sprintf("[queue]\nroutes = [\"elsewhere.test=%s\"]\n", mx.ln.Addr()),
	})
	conf := filepath.Join(s.data, "postino.toml")
	msg := "Subject: smuggled\r\n\r\nhello\r.\r\nMAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@elsewhere.test>\r\nDATA\r\n" +
		"bare LF\n.\nMAIL FROM:<cfo@bank.example>\nend\r"
	if r := run(t, nil, []byte(msg), binPath, "deliver", "--config", conf, "--data", s.data, "--from", "sender@remote.test", "fwd@example.test"); r.Code != 0 {
		t.Fatalf("deliver: %v", r)
	}
	deadline := time.Now().Add(30 * time.Second)
	var cmds []string
	var data [][]byte
	for {
		cmds, data = mx.snapshot()
		if len(data) > 0 && len(cmds) > 0 && cmds[len(cmds)-1] == "QUIT" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(data) != 1 {
		t.Fatalf("the next hop got %d messages; commands %q", len(data), cmds)
	}
	raw := data[0]
	for i, c := range raw {
		if c == '\r' && (i+1 == len(raw) || raw[i+1] != '\n') || c == '\n' && (i == 0 || raw[i-1] != '\r') {
			t.Fatalf("bare CR or LF at %d of what the next hop got: %q", i, raw)
		}
	}
	for _, c := range cmds {
		if strings.Contains(c, "bank.example") || strings.Contains(c, "victim@") {
			t.Fatalf("the next hop read the payload as a command %q; all: %q", c, cmds)
		}
	}
	for _, want := range []string{"\r\n..\r\nMAIL FROM:<ceo@bank.example>\r\n", "bare LF\r\n..\r\nMAIL FROM:<cfo@bank.example>\r\nend\r\n.\r\n"} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("the next hop's data lacks %q: %q", want, raw)
		}
	}
}
