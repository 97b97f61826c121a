package smtp

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// junkUser gives user a userdb_junk choice in the data folder's user
// database.
func junkUser(t *testing.T, data, user, choice string) {
	t.Helper()
	p := filepath.Join(data, "users.passwd")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if strings.HasPrefix(l, user+":") {
			l += "::::::userdb_junk=" + choice
		}
		out = append(out, l)
	}
	if err := os.WriteFile(p, []byte(strings.Join(out, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRspamdMilter sends real mail through the MX with rspamd as a
// milter, with swaks and Python's smtplib, and reads it over POP3: GTUBE
// is refused with rspamd's reply (its "add header" variant tagged), spam is tagged for alice (X-Spam,
// X-Spam-Score, subject prefix) and quarantined for bob (userdb_junk),
// released with "postino quarantine release", and clean mail passes
// untouched. Once rspamd is stopped, mail is tempfailed (451).
func TestRspamdMilter(t *testing.T) {
	swaks := needSwaks(t)
	needPython(t)
	rsp := testutil.StartRspamd(t)
	s := startServer(t, serverOpts{
		extraConfig: "[[milter]]\nname = \"rspamd\"\naddress = \"" + rsp.Addr + "\"\n\n[junk]\nsubject_prefix = \"[SPAM]\"\n",
		beforeStart: func(data string) { junkUser(t, data, bob, "quarantine") },
	})
	const sender = "someone@remote.test"
	tlsArgs := []string{"--tls", "--tls-verify", "--tls-ca-path", s.certFile}

	// GTUBE: refused with rspamd's own reply, over plain and STARTTLS.
	for _, extra := range [][]string{nil, tlsArgs} {
		msg := testMessage("gtube", sender, alice) + testutil.GTUBE + "\n"
		args := append([]string{"--timeout", "30", "--server", s.smtp, "--ehlo", "mx-client.test", "--from", sender, "--to", alice, "--data", swaksData(t, msg)}, extra...)
		r := run(t, nil, nil, swaks, args...)
		if r.Code == 0 || !regexp.MustCompile(`(?m)^<[~*]\* +554 5\.7\.1 Gtube pattern`).MatchString(r.Output) {
			t.Fatalf("GTUBE not refused with rspamd's reply:\n%s\n%s", r, rsp.Log())
		}
	}

	// Spam by score (6 and what rspamd's rules add: rspamd's add header,
	// postino's tag band).
	spam := strings.ReplaceAll(testMessage("offer rspamd-score-6", sender, alice), "\n", "\r\n")
	rep, r := smtplibSend(t, s, "starttls", s.smtp, "none", "", sender, []string{alice, bob}, []byte(spam), false)
	if rep.Error != "" || len(rep.Refused) != 0 {
		t.Fatalf("spam not accepted:\n%s", r)
	}
	// rspamd's "add header" GTUBE: tagged, as rspamd's actions say.
	gtubeTag := testMessage("gtube tag", sender, alice) + testutil.GTUBEAddHeader + "\n"
	swaksOK(t, swaks, "--server", s.smtp, "--ehlo", "mx-client.test", "--from", sender, "--to", alice, "--data", swaksData(t, gtubeTag))
	// Clean mail.
	clean := testMessage("clean", sender, alice)
	swaksOK(t, swaks, "--server", s.smtp, "--ehlo", "mx-client.test", "--from", sender, "--to", alice, "--data", swaksData(t, clean))

	got := s.mustCount(t, alice, 3)
	tagged, gtubeTagged, plain := got[0], got[1], got[2]
	if !bytes.Contains(gtubeTagged, []byte("\r\nX-Spam: yes\r\n")) || !bytes.Contains(gtubeTagged, []byte("\r\nSubject: [SPAM] gtube tag\r\n")) {
		t.Errorf("add-header GTUBE not tagged:\n%s", gtubeTagged)
	}
	if !regexp.MustCompile(`\r\nX-Spam: yes\r\nX-Spam-Score: [5-9](\.[0-9]+)?\r\n`).Match(tagged) || !bytes.Contains(tagged, []byte("\r\nSubject: [SPAM] offer rspamd-score-6\r\n")) ||
		!bytes.Contains(tagged, []byte("X-Spam-Status: Yes, score=")) {
		t.Errorf("tagged message:\n%s", tagged)
	}
	if bytes.Index(tagged, []byte("Received: from ")) > bytes.Index(tagged, []byte("X-Spam: yes")) {
		t.Errorf("X-Spam above Received:\n%s", tagged)
	}
	// Clean: as sent, with rspamd's verdict field added.
	if bytes.Contains(plain, []byte("X-Spam: ")) {
		t.Errorf("clean message tagged:\n%s", plain)
	}
	plain = regexp.MustCompile(`X-Spam-Status: No, score=[0-9.]+\r\n`).ReplaceAll(plain, nil)
	checkStored(t, plain, sender, alice, 1, []byte(strings.ReplaceAll(clean, "\n", "\r\n")))

	// bob chose quarantine: nothing in his mailbox, one message held.
	s.mustCount(t, bob, 0)
	lr := run(t, nil, nil, binPath, "quarantine", "list", bob, "--config", filepath.Join(s.data, "postino.toml"), "--data", s.data)
	id := regexp.MustCompile(`\d{8}T\d{6}-[0-9a-f]{16}`).FindString(lr.Output)
	if lr.Code != 0 || id == "" || !strings.Contains(lr.Output, "offer rspamd-score-6") {
		t.Fatalf("quarantine list:\n%s", lr)
	}
	rr := run(t, nil, nil, binPath, "quarantine", "release", id, "--config", filepath.Join(s.data, "postino.toml"), "--data", s.data)
	if rr.Code != 0 {
		t.Fatalf("quarantine release:\n%s", rr)
	}
	rel := s.mustCount(t, bob, 1)[0]
	if !bytes.HasPrefix(rel, []byte("Return-Path: <"+sender+">\r\nDelivered-To: "+bob+"\r\n")) || !bytes.Contains(rel, []byte("Subject: offer rspamd-score-6")) || bytes.Contains(rel, []byte("X-Quarantine")) {
		t.Errorf("released message:\n%s", rel)
	}

	// rspamd stopped: on_failure = tempfail (the default).
	rsp.Stop()
	r = run(t, nil, nil, swaks, "--timeout", "30", "--server", s.smtp, "--ehlo", "mx-client.test", "--from", sender, "--to", alice, "--data", swaksData(t, testMessage("while down", sender, alice)))
	if r.Code == 0 || !regexp.MustCompile(`(?m)^<[~*]\* +451 4\.7\.1 `).MatchString(r.Output) {
		t.Fatalf("rspamd down: not tempfailed:\n%s", r)
	}
	s.mustCount(t, alice, 3)
}

// TestMilterDownAccept: a filter with on_failure = "accept" that cannot be
// reached lets mail through.
func TestMilterDownAccept(t *testing.T) {
	swaks := needSwaks(t)
	dead := testutil.FreeAddrs(t, 1)[0]
	s := startServer(t, serverOpts{extraConfig: "[[milter]]\nname = \"clamav\"\naddress = \"" + dead + "\"\non_failure = \"accept\"\n"})
	msg := testMessage("filter down", "someone@remote.test", alice)
	swaksOK(t, swaks, "--server", s.smtp, "--ehlo", "mx-client.test", "--from", "someone@remote.test", "--to", alice, "--data", swaksData(t, msg))
	s.mustCount(t, alice, 1)
}
