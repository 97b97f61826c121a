package cluster

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// TestPostgresRestart stops PostgreSQL (pg_ctl stop -m immediate: a
// crash) while SMTP mail flows into three nodes and POP3 sessions are in
// progress, then starts it again. While it is down the nodes answer the
// end of DATA with 451 4.3.0, POP3 logins with -ERR [SYS/TEMP] and
// "postino deliver" exits 75; a session in progress ends with -ERR
// [SYS/TEMP] and a QUIT in progress gets no +OK, neither applying its
// deletions. Once PostgreSQL is back the nodes recover by themselves,
// and every message acknowledged with 250 is present exactly once, byte
// for byte.
func TestPostgresRestart(t *testing.T) {
	c := newCluster(t)
	nodes := c.startNodes(t, 3, c.dsn)
	// Something in carol's mailbox for the sessions in progress.
	for i := range 2 {
		if l := smtpSend(t, nodes[0].smtp, smallMessage(carol, fmt.Sprintf("before %d", i)), carol); !strings.HasPrefix(l, "250") {
			t.Fatalf("SMTP before the stop: %q", l)
		}
	}
	tr := startTraffic(t, alice, nodes[0].smtp, nodes[1].smtp, nodes[2].smtp)
	defer tr.finish()
	tr.waitAcked(t, 10, 30*time.Second, "mail flowing before the stop")

	// A session on node 2 marks a deletion and stays; after the stop it
	// must end by itself with [SYS/TEMP].
	held, err := nodes[1].loginAs(t, carol)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Cmd("DELE 1"); err != nil {
		t.Fatal(err)
	}
	// A session on node 3 marks a deletion and sends QUIT once
	// PostgreSQL is down: it must not get +OK nor apply anything.
	quitter, err := nodes[2].loginAs(t, alice)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := quitter.Cmd("DELE 1"); err != nil {
		t.Fatal(err)
	}
	pgtest.Halt(t)
	stopped := time.Now()
	if _, err := quitter.Cmd("QUIT"); err == nil {
		t.Fatal("QUIT with PostgreSQL down got +OK")
	} else {
		t.Logf("QUIT with PostgreSQL down: %v", err)
	}
	restarted := false
	defer func() {
		if !restarted {
			pgtest.Restart(t)
		}
	}()
	// The senders meet the failure answer: 451 4.3.0 (RFC 3463 §3.4:
	// mail system temporarily unavailable).
	before451 := tr.replied("451 4.3.0")
	testutil.WaitFor(t, 30*time.Second, "451 4.3.0 answers with PostgreSQL down", func() bool { return tr.replied("451 4.3.0") >= before451+3 })
	// The held session ends within lock_ttl with -ERR [SYS/TEMP]
	// (RFC 3206 §4).
	testutil.WaitFor(t, lockTTL+5*time.Second, "the session in progress ended", func() bool {
		_, err := held.Cmd("NOOP")
		if err != nil && !strings.Contains(err.Error(), "SYS/TEMP") {
			t.Fatalf("session in progress after the stop: %v, want -ERR [SYS/TEMP]", err)
		}
		return err != nil
	})
	t.Logf("session in progress ended %v after the stop", time.Since(stopped))
	if _, err := nodes[2].loginAs(t, carol); err == nil || !strings.Contains(err.Error(), "SYS/TEMP") {
		t.Fatalf("POP3 login with PostgreSQL down: %v, want -ERR [SYS/TEMP]", err)
	}
	if r := postino(t, []byte("Subject: x\n\nx\n"), "deliver", "--config", nodes[0].config, "--from", "x@remote.example", alice); r.Code != 75 {
		t.Fatalf("deliver with PostgreSQL down: %s, want exit 75 (EX_TEMPFAIL)", r)
	}
	if l := smtpSend(t, nodes[2].smtp, smallMessage(alice, "while down"), alice); !strings.HasPrefix(l, "451 4.3.0") {
		t.Fatalf("SMTP with PostgreSQL down: %q, want 451 4.3.0", l)
	}
	acked := tr.ackedCount()

	pgtest.Restart(t)
	restarted = true
	t.Logf("PostgreSQL down for %v", time.Since(stopped))
	// The nodes recover by themselves: mail is acknowledged again
	// through each of them.
	tr.waitAcked(t, 15, 60*time.Second, "mail acknowledged again after the restart")
	for _, n := range nodes {
		testutil.WaitFor(t, 30*time.Second, "SMTP through "+n.name+" after the restart", func() bool {
			_, _, err := trySend(n.smtp, smallMessage(carol, "after through "+n.name), carol)
			return err == nil
		})
	}
	tr.finish()
	if tr.ackedCount() <= acked {
		t.Fatal("nothing acknowledged after the restart")
	}
	total, present := tr.verify(t, nodes[1].pop3, alice)
	t.Logf("%d messages acknowledged, %d present; replies to the senders %v", total, present, tr.replies)

	// The session that was cut applied nothing: carol still has both
	// messages from before, and the three sent after the restart.
	p := nodes[2].loginWait(t, carol)
	got := mailtest.RetrAll(t, p, "carol")
	p.Cmd("QUIT")
	if len(got) != 5 || !strings.Contains(string(got[0]), "Subject: before 0\r\n") {
		t.Fatalf("carol has %d messages, want 5 starting with \"before 0\": the cut session's deletion was applied?", len(got))
	}
}

// TestStandbyPromotion runs two nodes on a primary with a synchronous
// streaming-replication standby (postgres_dsn lists both hosts, with
// target_session_attrs=read-write). While SMTP mail flows, the primary
// dies (pg_ctl stop -m immediate) and the standby is promoted; the
// senders retry what was refused during the switch (451), and the nodes
// carry on with the new primary by themselves. Every message
// acknowledged with 250, before or after the switch, is present exactly
// once, byte for byte: a synchronous standby has every commit the
// primary acknowledged.
func TestStandbyPromotion(t *testing.T) {
	primary := pgtest.NewInstance(t, pgtest.PrimaryConf)
	standby := primary.NewStandby(t)
	primary.NewDB(t, "postino")
	dsn := fmt.Sprintf("postgres://postgres@%s,%s/postino?sslmode=disable&target_session_attrs=read-write", primary.Addr(), standby.Addr())
	c := newCluster(t)
	nodes := c.startNodes(t, 2, dsn)

	tr := startTraffic(t, alice, nodes[0].smtp, nodes[1].smtp, nodes[0].smtp, nodes[1].smtp)
	defer tr.finish()
	tr.waitAcked(t, 20, 30*time.Second, "mail flowing before the switch")
	primary.Stop(t)
	stopped := time.Now()
	ackedBefore := tr.ackedCount()
	standby.Promote(t)
	t.Logf("standby promoted %v after the primary died (%d messages acknowledged by then)", time.Since(stopped), ackedBefore)
	tr.waitAcked(t, 20, 60*time.Second, "mail acknowledged after the promotion")
	t.Logf("mail acknowledged again %v after the primary died", time.Since(stopped))
	tr.finish()
	total, present := tr.verify(t, nodes[1].pop3, alice)
	t.Logf("%d messages acknowledged, %d present; replies to the senders %v", total, present, tr.replies)
}
