package smtp

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestDeliverForwardNoSmuggling: a message given to `postino deliver` with
// bare CRs and bare LFs around a "." line (SMTP smuggling) and forwarded
// by an alias reaches the next hop with CRLF line ends only, as one
// message: the next hop never reads the payload's commands as commands.
func TestDeliverForwardNoSmuggling(t *testing.T) {
	mx := testutil.NewSMTPSink(t)
	s := startServer(t, serverOpts{
		aliases:     defaultAliases + "fwd@example.test: friend@elsewhere.test\n",
		extraConfig: fmt.Sprintf("[queue]\nroutes = [\"elsewhere.test=%s\"]\n", mx.Addr),
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
		cmds, data = mx.Commands(), mx.Raw()
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
