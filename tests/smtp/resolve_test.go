package smtp

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// resolveAliases adds, to the default aliases, one that forwards to a
// remote address.
const resolveAliases = defaultAliases + "fwd@example.test: friend@elsewhere.test\n"

// TestDeliverResolvesAsSMTP sends the same recipients through the MX and
// through `postino deliver` (with the server running on the same data
// folder) and checks that both put the message in the same places:
// postmaster, a local alias, a plus-address, a catch-all, an alias
// forwarding to a remote address (queued with the same SRS sender, and
// picked up by the running server), and an unknown user and a forged SRS
// address (refused by both, nothing stored).
func TestDeliverResolvesAsSMTP(t *testing.T) {
	s := startServer(t, serverOpts{aliases: resolveAliases, smtpConfig: "postmaster = \"" + bob + "\"\nsrs = true\n"})
	conf := filepath.Join(s.data, "postino.toml")
	cases := []struct{ name, rcpt string }{
		{"postmaster", "postmaster@example.test"},
		{"postmaster of a domain", "PostMaster@Catch.Test"},
		{"alias", "sales@example.test"},
		{"plus", "alice+lists@example.test"},
		{"catch-all", "whoever@catch.test"},
		{"forward", "fwd@example.test"},
		{"unknown", "nobody@example.test"},
		{"forged SRS", "SRS0=AAAA=ZZ=remote.test=victim@example.test"},
	}
	for _, c := range cases {
		// Over SMTP (MX).
		rc := dialRaw(t, s.smtp)
		rc.ehlo("resolve.test")
		rc.send("MAIL FROM:<sender@remote.test>\r\nRCPT TO:<" + c.rcpt + ">\r\n")
		rc.expect("250")
		refused := c.name == "unknown" || c.name == "forged SRS"
		if refused {
			rc.expect("550 5.1.1")
		} else {
			rc.expect("250")
			rc.send("DATA\r\n")
			rc.expect("354")
			rc.send("Subject: smtp " + c.name + "\r\n\r\nbody\r\n.\r\n")
			rc.expect("250 2.")
		}
		rc.send("QUIT\r\n")
		rc.close()
		// Through `postino deliver`.
		r := run(t, nil, []byte("Subject: deliver "+c.name+"\n\nbody\n"), binPath, "deliver", "--config", conf, "--data", s.data, "--from", "sender@remote.test", c.rcpt)
		want := 0
		if refused {
			want = 67 // EX_NOUSER
		}
		if r.Code != want {
			t.Fatalf("%s: deliver exited %d, want %d:\n%s", c.name, r.Code, want, r)
		}
	}

	// Local copies: for each case, the mailboxes and Delivered-To fields
	// must be the same for both ways in.
	got := map[string][]string{} // "smtp NAME" / "deliver NAME" -> "mailbox Delivered-To"
	for _, user := range []string{alice, bob, carol} {
		for _, m := range s.mailbox(t, user) {
			subj, dt := field(m, "Subject"), field(m, "Delivered-To")
			got[subj] = append(got[subj], user+" "+dt)
		}
	}
	for _, c := range cases {
		a, b := got["smtp "+c.name], got["deliver "+c.name]
		slices.Sort(a)
		slices.Sort(b)
		if !slices.Equal(a, b) {
			t.Errorf("%s: SMTP stored %q, deliver stored %q", c.name, a, b)
		}
		wantLocal := map[string]int{"postmaster": 1, "postmaster of a domain": 1, "alias": 2, "plus": 1, "catch-all": 1}[c.name]
		if len(a) != wantLocal {
			t.Errorf("%s: %d local copies %q, want %d", c.name, len(a), a, wantLocal)
		}
	}
	if d := got["deliver plus"]; len(d) != 1 || d[0] != alice+" alice+lists@example.test" {
		t.Errorf("plus: deliver stored %q", d)
	}

	// The forwarding alias: one queue entry each, with the same sender and
	// recipient; the running server attempts the one deliver queued. The
	// entries are read from the queue folder: with the PostgreSQL store
	// the queue is in the database, where tests/cluster and
	// internal/queue check it (TestQueueCommands, TestOnPostgres).
	if os.Getenv(backendEnv) == "postgres" {
		return
	}
	type entry struct {
		Msg      string `json:"msg"`
		From     string `json:"from"`
		Failures int    `json:"failures"`
		Rcpts    []struct {
			Addr  string `json:"addr"`
			ORcpt string `json:"orcpt"`
		} `json:"rcpts"`
		Attempts []json.RawMessage `json:"attempts"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		names, _ := filepath.Glob(filepath.Join(s.data, "queue", "entries", "*"))
		bySubject := map[string]entry{}
		for _, n := range names {
			data, err := os.ReadFile(n)
			if err != nil {
				continue
			}
			var e entry
			if err := json.Unmarshal(data, &e); err != nil {
				t.Fatalf("%s: %v", n, err)
			}
			body, err := os.ReadFile(filepath.Join(s.data, "queue", "msg", e.Msg))
			if err != nil {
				t.Fatal(err)
			}
			bySubject[field(body, "Subject")] = e
		}
		se, sok := bySubject["smtp forward"]
		de, dok := bySubject["deliver forward"]
		if len(bySubject) != len(names) || len(names) > 2 {
			t.Fatalf("queue holds %d entries: %v", len(names), names)
		}
		if sok && dok {
			if se.From != de.From || len(se.Rcpts) != 1 || len(de.Rcpts) != 1 || se.Rcpts[0] != de.Rcpts[0] || de.Rcpts[0].Addr != "friend@elsewhere.test" || !strings.HasPrefix(de.From, "SRS0=") {
				t.Fatalf("SMTP queued %+v, deliver queued %+v", se, de)
			}
			if len(de.Attempts) > 0 || de.Failures > 0 {
				break // the server picked it up
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not attempt the queued entries (smtp %v %+v, deliver %v %+v)", sok, se, dok, de)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// field returns the first header field called name in msg, unfolded.
func field(msg []byte, name string) string {
	head, _, _ := strings.Cut(strings.ReplaceAll(string(msg), "\r\n", "\n"), "\n\n")
	for _, l := range strings.Split(head, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
