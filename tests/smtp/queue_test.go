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

// TestOutboundQueue sends through submission on one postino to another
// postino acting as the remote domain's mail exchanger (a static route on
// loopback), and checks delivery, DKIM signing and a bounce.
func TestOutboundQueue(t *testing.T) {
	needPython(t)
	// The "remote" side: elsewhere.test is local there, caught by bob.
	remote := startServer(t, serverOpts{
		localDomains: []string{"example.test", "elsewhere.test"},
		aliases:      "@elsewhere.test: bob@example.test\n",
	})
	// The sending side routes elsewhere.test and refused.test to it; the
	// remote refuses refused.test as a relay attempt (554 5.7.1).
	local := startServer(t, serverOpts{
		extraConfig: fmt.Sprintf("[queue]\nroutes = [\"elsewhere.test=%s\", \"refused.test=%s\"]\n", remote.smtp, remote.smtp),
		beforeStart: func(data string) {
			if r := run(t, nil, nil, binPath, "dkim", "keygen", "example.test", "--data", data); r.Code != 0 || !strings.Contains(r.Output, "_domainkey.example.test") {
				t.Fatalf("dkim keygen: %v", r)
			}
		},
	})

	msg := testutil.CRLF("From: alice@example.test\nTo: friend@elsewhere.test\nSubject: over the wire\n\nHello from the queue.\n")
	rep, r := smtplibSend(t, local, "starttls", local.sub, "PLAIN", alice, alice, []string{"friend@elsewhere.test"}, msg, false)
	if rep.Error != "" || len(rep.Refused) != 0 {
		t.Fatalf("submission: %v", r)
	}
	got := remote.waitMailbox(t, bob, 1, 30*time.Second)[0]
	for _, want := range []string{"Delivered-To: ", "Return-Path: <alice@example.test>\r\n",
		"DKIM-Signature:", "d=example.test", "Subject: over the wire\r\n", "\r\n\r\nHello from the queue.\r\n"} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("message at the remote side lacks %q:\n%s", want, got)
		}
	}
	if n := bytes.Count(got, []byte("\r\nReceived: ")); n < 1 {
		t.Errorf("expected the remote's and our Received headers:\n%s", got)
	}

	// A permanent refusal comes back to alice as an RFC 3464 report.
	rep, r = smtplibSend(t, local, "starttls", local.sub, "PLAIN", alice, alice, []string{"someone@refused.test"},
		testutil.CRLF("Subject: doomed\n\nThis will bounce.\n"), false)
	if rep.Error != "" || len(rep.Refused) != 0 {
		t.Fatalf("submission: %v", r)
	}
	dsn := string(local.waitMailbox(t, alice, 1, 30*time.Second)[0])
	for _, want := range []string{"Return-Path: <>", "Content-Type: multipart/report", "report-type=delivery-status",
		"message/delivery-status", "Final-Recipient: rfc822; someone@refused.test", "Action: failed", "Status: 5.7.1",
		"Subject: doomed"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("bounce lacks %q:\n%s", want, dsn)
		}
	}
	// Nothing is left in the queue.
	deadline := time.Now().Add(10 * time.Second)
	for {
		q := run(t, nil, nil, binPath, "queue", "list", "--config", filepath.Join(local.data, "postino.toml"), "--data", local.data)
		if strings.Contains(q.Output, "queue is empty") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue not empty:\n%v", q)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
