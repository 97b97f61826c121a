package cluster

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/queue"
	"github.com/postino-mail/postino/internal/testutil"
)

// TestImportCommand: "postino import DATA_DIR" moves a single server's
// data folder into the cluster's database: the schema is created, the
// users and a message waiting in the queue folder are copied (a second
// run copies nothing again), and a node of the cluster delivers the
// queued message, with its remaining recipient only.
func TestImportCommand(t *testing.T) {
	c := newCluster(t)
	sink := testutil.NewSMTPSink(t)
	single := filepath.Join(c.dir, "single")
	if r := postino(t, nil, "init", "--data", single); r.Code != 0 {
		t.Fatalf("init: %s", r)
	}
	if r := postino(t, []byte(alicePW+"\n"), "user", "add", "dave@example.test", "--password-stdin", "--data", single); r.Code != 0 {
		t.Fatalf("user add: %s", r)
	}
	// A message the single server had queued: one recipient already
	// delivered, one still to do.
	qs, err := queue.OpenFileStore(filepath.Join(single, "queue"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	id := envelope.NewMessageID(now)
	body := "From: dave@example.test\r\nSubject: imported from the queue\r\n\r\nbody\r\n"
	e := &queue.Entry{Version: 1, ID: id + ".1", MessageID: id, Domain: "sink.test", From: "dave@example.test",
		AuthUser: "dave@example.test", Size: int64(len(body)), Arrival: now, Expires: now.Add(24 * time.Hour), NextAttempt: now,
		Recipients: []queue.Recipient{{Addr: "done@sink.test", Status: queue.StatusSent}, {Addr: "todo@sink.test", Status: queue.StatusPending}}}
	if err := qs.AddMessage(context.Background(), id, strings.NewReader(body), []*queue.Entry{e}); err != nil {
		t.Fatal(err)
	}
	qs.Close()

	// Every configuration the cluster writes routes sink.test to the sink.
	c.tweak = func(cfg string) string {
		return cfg + "[queue]\nroutes = [\"sink.test=" + sink.Addr + "\"]\nmin_backoff = \"1s\"\n"
	}
	cfg := c.config(t, "node1", c.dsn, "127.0.0.1:0", "127.0.0.1:0")

	r := postino(t, nil, "import", single, "--config", cfg)
	for _, want := range []string{"users: 1 imported, 0 already there", "queued messages: 1 imported, 0 already there"} {
		if r.Code != 0 || !strings.Contains(r.Stdout, want) {
			t.Fatalf("import: %s, want %q", r, want)
		}
	}
	r = postino(t, nil, "import", single, "--config", cfg)
	for _, want := range []string{"users: 0 imported, 1 already there", "queued messages: 0 imported, 1 already there"} {
		if r.Code != 0 || !strings.Contains(r.Stdout, want) {
			t.Fatalf("import again: %s, want %q", r, want)
		}
	}
	if r := postino(t, nil, "import", "--config", cfg); r.Code != 64 {
		t.Fatalf("import without DATA_DIR: %s, want exit 64", r)
	}

	c.imported = true // the cluster's own users are not needed here
	n := c.start(t, "node1", c.dsn)
	deadline := time.Now().Add(20 * time.Second)
	for len(sink.Messages()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	msgs, rcpts := sink.Messages(), sink.Recipients()
	if len(msgs) != 1 || !strings.Contains(msgs[0], "Subject: imported from the queue") || strings.Join(rcpts, ",") != "todo@sink.test" {
		t.Fatalf("sink got %d messages for %v\nnode log:\n%s", len(msgs), rcpts, n.Stderr)
	}
}
