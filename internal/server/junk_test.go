package server

import (
	"context"
	"log/slog"
	"net"
	"testing"

	gomilter "github.com/d--j/go-milter"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/quarantine"
)

// scoringFilter is a milter that gives every message the score in its
// X-Spam-Score field, or rejects it.
type scoringFilter struct {
	gomilter.NoOpMilter
	reject bool
}

func (f *scoringFilter) EndOfMessage(m gomilter.Modifier) (*gomilter.Response, error) {
	if f.reject {
		return gomilter.RejectWithCodeAndReason(554, "5.7.1 Spam message rejected")
	}
	if err := m.AddHeader("X-Spam-Score", "12"); err != nil {
		return nil, err
	}
	return gomilter.RespAccept, nil
}

func startFilter(t *testing.T, reject bool) string {
	t.Helper()
	srv := gomilter.NewServer(gomilter.WithMilter(func() gomilter.Milter { return &scoringFilter{reject: reject} }),
		gomilter.WithActions(gomilter.OptAddHeader))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestReloadMilterAndJunk: the [[milter]] filters and the [junk] section
// apply to the MX at start and after a reload: a rejecting filter refuses
// mail with its reply; a scoring one has the message quarantined for a
// user whose userdb_junk says so (the default being tag).
func TestReloadMilterAndJunk(t *testing.T) {
	cfg := testConfig(t)
	logger := slog.New(slog.DiscardHandler)
	cfg.Milters = []config.MilterConfig{{Name: "strict", Address: startFilter(t, true)}}
	srv, addr, _ := startForReload(t, cfg, logger)
	cl := &clients{t: t}
	send := func(want string) {
		c := cl.ehlo(addr["smtp"])
		c.expect("250", c.cmd("MAIL FROM:<x@remote.test>"))
		c.expect("250", c.cmd("RCPT TO:<alice@example.test>"))
		c.expect("354", c.cmd("DATA"))
		c.expect(want, c.cmd("Subject: offer\r\n\r\nbuy\r\n."))
		c.expect("221", c.cmd("QUIT"))
	}
	send("554 5.7.1 Spam message rejected")

	if err := srv.Users().SetJunk(context.Background(), "alice@example.test", "quarantine"); err != nil {
		t.Fatal(err)
	}
	next := *srv.Config()
	next.Milters = []config.MilterConfig{{Name: "scoring", Address: startFilter(t, false)}}
	next.Junk.DefaultAction = "tag"
	if _, err := srv.Reload(&next, logger); err != nil {
		t.Fatal(err)
	}
	send("250 ")
	held, err := (&quarantine.Store{Dir: next.QuarantineDir()}).List("alice@example.test")
	if err != nil || len(held) != 1 || held[0].Score != 12 {
		t.Fatalf("held: %+v %v", held, err)
	}
}
