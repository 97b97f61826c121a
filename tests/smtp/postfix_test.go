package smtp

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// postfixInstance is a private Postfix started by the test: its own
// config, queue, data and log folders under one temp folder.
type postfixInstance struct {
	t       *testing.T
	dir     string
	conf    string
	queue   string
	logFile string
	smtpd   string // its SMTP listener
}

// startPostfix configures and starts a Postfix that accepts mail for
// example.test on a free loopback port and hands it to lmtpAddr
// (host:port) over LMTP. Outbound mail is disabled (default_transport =
// error), so nothing can leave the machine. It is stopped at cleanup.
func startPostfix(t *testing.T, lmtpAddr string) *postfixInstance {
	t.Helper()
	return startPostfixTransport(t, "lmtp:inet:"+lmtpAddr)
}

// startPostfixTransport is startPostfix with the Postfix transport that
// takes example.test's mail, e.g. "smtp:[127.0.0.1]:2525".
func startPostfixTransport(t *testing.T, transport string) *postfixInstance {
	t.Helper()
	postfix := testutil.NeedProgram(t, "postfix")
	testutil.NeedProgram(t, "postconf")
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("the postfix package creates user postfix, but: %v", err)
	}
	if _, err := user.LookupGroup("postdrop"); err != nil {
		t.Fatalf("the postfix package creates group postdrop, but: %v", err)
	}
	if os.Geteuid() != 0 {
		// The master must start as root to drop to mail_owner.
		testutil.SkipOrFatal(t, "running a private Postfix needs root (euid %d)", os.Geteuid())
	}
	// Not t.TempDir(): its parents are 0700 and the paths long; Postfix's
	// daemons (running as postfix) need to reach the queue, and its unix
	// socket paths must stay short.
	dir, err := os.MkdirTemp("", "postino-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &postfixInstance{
		t:       t,
		dir:     dir,
		conf:    filepath.Join(dir, "conf"),
		queue:   filepath.Join(dir, "queue"),
		logFile: filepath.Join(dir, "log", "postfix.log"),
		smtpd:   testutil.FreeAddrs(t, 1)[0],
	}
	data := filepath.Join(dir, "data")
	for _, d := range []string{p.conf, p.queue, data, filepath.Dir(p.logFile)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pfUser.Uid)
	gid, _ := strconv.Atoi(pfUser.Gid)
	if err := os.Chown(data, uid, gid); err != nil {
		t.Fatal(err)
	}
	mainCF := fmt.Sprintf(`# written by postino's tests/smtp
compatibility_level = 3.6
queue_directory = %[1]s
data_directory = %[2]s
maillog_file = %[3]s
maillog_file_prefixes = %[4]s
myhostname = relay.postfix.test
mydomain = postfix.test
myorigin = postfix.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
default_transport = error:outbound mail is disabled in this test
virtual_mailbox_domains = example.test
virtual_transport = %[5]s
# Let postino decide which users exist: its LMTP 550 makes the bounce.
smtpd_reject_unlisted_recipient = no
local_header_rewrite_clients =
smtputf8_enable = yes
biff = no
# No DNS: Received says "unknown [127.0.0.1]".
smtpd_peername_lookup = no
smtpd_tls_security_level = none
smtp_tls_security_level = none
lmtp_tls_security_level = none
`, p.queue, data, p.logFile, filepath.Dir(p.logFile), transport)
	// Every chroot column is n: the daemons run in the queue folder.
	masterCF := testutil.PostfixMasterCF(p.smtpd)
	for name, content := range map[string]string{"main.cf": mainCF, "master.cf": masterCF} {
		if err := os.WriteFile(filepath.Join(p.conf, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if r := run(t, nil, nil, "postconf", "-c", p.conf, "-h", "mail_version"); r.Code == 0 {
		t.Logf("Postfix %s", strings.TrimSpace(r.Output))
	}
	if r := run(t, nil, nil, postfix, "-c", p.conf, "check"); r.Code != 0 || strings.Contains(r.Output, "fatal") {
		t.Fatalf("postfix check:\n%s\n%s", r, p.log())
	} else if strings.TrimSpace(r.Output) != "" {
		t.Logf("postfix check warnings:\n%s", r)
	}
	if r := run(t, nil, nil, postfix, "-c", p.conf, "start"); r.Code != 0 {
		t.Fatalf("postfix start:\n%s\nlog:\n%s", r, p.log())
	}
	t.Cleanup(func() {
		if r := run(t, nil, nil, postfix, "-c", p.conf, "stop"); r.Code != 0 {
			t.Errorf("postfix stop:\n%s", r)
		}
		if t.Failed() {
			t.Logf("Postfix log:\n%s", p.log())
		}
	})
	// The master opens the smtpd socket itself; wait until it accepts.
	deadline := time.Now().Add(15 * time.Second)
	for {
		rc, err := dialRawTry(p.smtpd)
		if err == nil {
			rc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix smtpd on %s not ready within 15s: %v\nlog:\n%s", p.smtpd, err, p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

func (p *postfixInstance) log() string {
	b, err := os.ReadFile(p.logFile)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// queueFiles lists the messages left in the queue folders.
func (p *postfixInstance) queueFiles() []string {
	var files []string
	for _, q := range []string{"incoming", "active", "deferred", "hold", "corrupt"} {
		filepath.Walk(filepath.Join(p.queue, q), func(path string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				files = append(files, path)
			}
			return nil
		})
	}
	return files
}

// waitMailbox polls POP3 until user has n messages, up to d.
func (s *server) waitMailbox(t *testing.T, user string, n int, d time.Duration) [][]byte {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msgs := s.mailbox(t, user)
		if len(msgs) >= n || time.Now().After(deadline) {
			if len(msgs) != n {
				t.Fatalf("%s has %d messages after %v, want %d:\n%s", user, len(msgs), d, n, dumpMsgs(msgs))
			}
			return msgs
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// postfixReceivedRE is the Received field Postfix's smtpd adds.
func postfixReceivedRE(helo, proto string) *regexp.Regexp {
	return regexp.MustCompile(`^Received: from ` + regexp.QuoteMeta(helo) + ` \(unknown \[127\.0\.0\.1\]\)\r\n` +
		`\tby relay\.postfix\.test \(Postfix\) with ` + proto + ` id [0-9A-F]+(?:;\r\n\t|\r\n\tfor <[^>\r\n]+>; )` +
		`[A-Z][a-z]{2}, \d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4} \([A-Za-z0-9+-]+\)\r\n$`)
}

// waitStatus waits up to d for Postfix to log the final status of its
// delivery to rcpt and returns the log line ("" if none came).
func (p *postfixInstance) waitStatus(rcpt string, d time.Duration) string {
	re := regexp.MustCompile(`(?m)^.*: to=<` + regexp.QuoteMeta(rcpt) + `>, .*status=(?:sent|bounced|deferred).*$`)
	deadline := time.Now().Add(d)
	for {
		if m := re.FindString(p.log()); m != "" || time.Now().After(deadline) {
			return m
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPostfixLMTP runs a real Postfix that takes mail for example.test by
// SMTP and delivers it to postino over LMTP: a message for alice and an
// unknown user (postino refuses the unknown one with a per-recipient 550,
// Postfix bounces it, and the bounce comes back to the sender, bob,
// through postino too), and an SMTPUTF8 message for jörg.
func TestPostfixLMTP(t *testing.T) {
	swaks := needSwaks(t)
	needPython(t)
	t.Parallel()
	s := startServer(t, serverOpts{})
	p := startPostfix(t, s.lmtp)
	lmtpPort := s.lmtp[strings.LastIndex(s.lmtp, ":")+1:]

	t.Run("alice-and-unknown-user", func(t *testing.T) {
		msg := testMessage("through Postfix", bob, alice)
		swaksOKAny(t, swaks, "--server", p.smtpd, "--ehlo", "client.test", "--from", bob,
			"--to", alice+",nobody@example.test", "--data", swaksData(t, msg))

		if line := p.waitStatus(alice, 20*time.Second); !strings.Contains(line, ", relay=127.0.0.1[127.0.0.1]:"+lmtpPort+", ") ||
			!strings.Contains(line, "status=sent (250 2.0.0 ") {
			t.Fatalf("Postfix did not deliver to alice through postino's LMTP: %q\nlog:\n%s", line, p.log())
		}
		got := s.waitMailbox(t, alice, 1, 20*time.Second)
		rec := checkStored(t, got[0], bob, alice, 2, []byte(msg))
		checkReceivedLMTP(t, rec[0], "LMTP", alice)
		if !postfixReceivedRE("client.test", "ESMTP").MatchString(rec[1]) {
			t.Errorf("Postfix's Received field:\n%q", rec[1])
		}

		// The unknown user: refused by postino at RCPT, bounced by Postfix.
		line := p.waitStatus("nobody@example.test", 20*time.Second)
		bounced := regexp.MustCompile(`postfix/lmtp\[\d+\]: [0-9A-F]+: to=<nobody@example\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:` +
			lmtpPort + `, .*dsn=5\.1\.1, status=bounced \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550 5\.1\.1 User unknown \(in reply to RCPT TO command\)\)`)
		if !bounced.MatchString(line) {
			t.Fatalf("Postfix did not bounce nobody@ with postino's 550 5.1.1: %q\nlog:\n%s", line, p.log())
		}
		got = s.waitMailbox(t, bob, 1, 20*time.Second)
		bounce := string(got[0])
		if !strings.HasPrefix(bounce, "Return-Path: <>\r\nDelivered-To: "+bob+"\r\nReceived: from relay.postfix.test ([127.0.0.1])") ||
			!strings.Contains(bounce, "\r\nSubject: Undelivered Mail Returned to Sender\r\n") ||
			!strings.Contains(bounce, "<nobody@example.test>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1 User unknown") ||
			!strings.Contains(bounce, "\r\nStatus: 5.1.1\r\n") {
			t.Errorf("bob's bounce:\n%s", bounce)
		}
	})

	t.Run("SMTPUTF8", func(t *testing.T) {
		const from = "rené@société.test"
		msg := "From: René <" + from + ">\n" +
			"To: Jörg <" + jorg + ">\n" +
			"Subject: Grüße über Postfix\n" +
			"Date: Mon, 02 Nov 2026 10:00:00 +0000\n" +
			"Message-ID: <utf8-postfix@société.test>\n" +
			"MIME-Version: 1.0\n" +
			"Content-Type: text/plain; charset=utf-8\n" +
			"Content-Transfer-Encoding: 8bit\n" +
			"\n" +
			"Schöne Grüße 🎉\n"
		rep, r := smtplibSend(t, s, "plain", p.smtpd, "none", "", from, []string{jorg}, testutil.CRLF(msg), true)
		if rep.Error != "" || len(rep.Refused) != 0 {
			t.Fatalf("smtplib to Postfix:\n%s", r)
		}
		line := p.waitStatus(jorg, 20*time.Second)
		if strings.Contains(line, "Malformed ORCPT") {
			t.Fatalf("PRODUCT BUG: postino refuses Postfix's RCPT for a UTF-8 mailbox: Postfix sends "+
				"\"RCPT TO:<jörg@example.test> ORCPT=rfc822;j+C3+B6rg@example.test\" (xtext of the UTF-8 octets) and "+
				"go-smtp v0.25.1 (DSN enabled) answers 501 5.5.4, so the message is bounced:\n%s", line)
		}
		if !strings.Contains(line, "status=sent (250 2.0.0 ") {
			t.Fatalf("Postfix did not deliver to jörg through postino: %q\nlog:\n%s", line, p.log())
		}
		got := s.waitMailbox(t, jorg, 1, 20*time.Second)
		rec := checkStored(t, got[0], from, jorg, 2, []byte(msg))
		checkReceivedLMTP(t, rec[0], "UTF8LMTP", jorg)
		if !postfixReceivedRE("py-client.test", "UTF8SMTP").MatchString(rec[1]) {
			t.Errorf("Postfix's Received field:\n%q", rec[1])
		}
	})

	// Nothing is left in Postfix's queue: no deferred retry.
	deadline := time.Now().Add(10 * time.Second)
	for len(p.queueFiles()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if files := p.queueFiles(); len(files) > 0 {
		t.Errorf("Postfix's queue still holds %v\nlog:\n%s", files, p.log())
	}
	if strings.Contains(p.log(), "status=deferred") {
		t.Errorf("Postfix deferred a delivery:\n%s", p.log())
	}
	if r := run(t, nil, nil, "postqueue", "-c", p.conf, "-p"); !strings.Contains(r.Output, "Mail queue is empty") {
		t.Errorf("postqueue -p:\n%s", r)
	}
}

// TestPostfixRelayBurst: a real Postfix with its default settings
// (20 connections per destination, connection caching, QUIT without
// waiting for the reply) relays a burst of messages to postino's MX over
// SMTP. Every message is delivered at the first attempt: no 421, nothing
// deferred. Once with the defaults (loopback is a trusted network, so
// there is no per-IP limit), once with no trusted network and a per-IP
// limit of exactly Postfix's concurrency, where a slot must be free as
// soon as Postfix closes a connection and opens the next.
func TestPostfixRelayBurst(t *testing.T) {
	smtpSource := testutil.NeedProgram(t, "smtp-source")
	const burst = 200
	for _, tc := range []struct{ name, smtpConfig string }{
		{"defaults", ""},
		{"untrusted-limit-20", "trusted_networks = []\nmax_connections_per_ip = 20\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, serverOpts{smtpConfig: tc.smtpConfig})
			p := startPostfixTransport(t, "smtp:["+strings.Replace(s.smtp, ":", "]:", 1))
			if r := run(t, nil, nil, "postconf", "-c", p.conf, "-hx", "smtp_destination_concurrency_limit", "smtp_skip_quit_response", "smtp_connection_cache_on_demand"); r.Code == 0 {
				t.Logf("Postfix smtp_destination_concurrency_limit, smtp_skip_quit_response, smtp_connection_cache_on_demand: %q", strings.Fields(r.Output))
			}
			// 20 sessions feed Postfix the burst; Postfix then relays it
			// to postino as fast as its scheduler lets it.
			if r := run(t, nil, nil, smtpSource, "-s", "20", "-m", strconv.Itoa(burst), "-l", "2000",
				"-f", "sender@remote.test", "-t", alice, p.smtpd); r.Code != 0 {
				t.Fatalf("smtp-source:\n%s", r)
			}
			sentRE := regexp.MustCompile(`(?m)^.*postfix/smtp\[\d+\]: [0-9A-F]+: to=<` + regexp.QuoteMeta(alice) + `>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=sent \(250 `)
			deadline := time.Now().Add(3 * time.Minute)
			for len(sentRE.FindAllString(p.log(), -1)) < burst && time.Now().Before(deadline) {
				time.Sleep(200 * time.Millisecond)
			}
			log := p.log()
			if n := len(sentRE.FindAllString(log, -1)); n != burst {
				t.Fatalf("Postfix relayed %d of %d messages to postino", n, burst)
			}
			if m := regexp.MustCompile(`(?m)^.*(?: 421 |status=deferred|refused to talk).*$`).FindAllString(log, 5); len(m) > 0 {
				t.Fatalf("Postfix was refused or deferred:\n%s", strings.Join(m, "\n"))
			}
			s.mustCount(t, alice, burst)
			if n := len(regexp.MustCompile(`postfix/smtp\[\d+\]: .*relay=127\.0\.0\.1`).FindAllString(log, -1)); n > 0 {
				t.Logf("%d deliveries logged by Postfix's smtp client", n)
			}
		})
	}
}

// checkReceivedLMTP checks postino's Received field for a message that
// came from the test's Postfix over LMTP.
func checkReceivedLMTP(t *testing.T, f, proto, rcpt string) {
	t.Helper()
	checkReceived(t, f, traceWant{helo: "relay.postfix.test", protocol: proto, rcpt: rcpt})
}

// swaksOKAny is swaksOK for a server that is not postino (its queue id
// reply differs).
func swaksOKAny(t *testing.T, swaks string, args ...string) testutil.Result {
	t.Helper()
	r := run(t, nil, nil, swaks, append([]string{"--timeout", "30"}, args...)...)
	if r.Code != 0 || !regexp.MustCompile(`(?m)^<[-~]  250 2\.0\.0 Ok: queued as [0-9A-F]+\s*$`).MatchString(r.Output) {
		t.Fatalf("swaks did not deliver:\n%s", r)
	}
	return r
}

// TestLMTPDirect talks LMTP to postino with Python's smtplib.LMTP and by
// hand: LHLO is required, an unknown user and a remote recipient are
// refused at RCPT, and after the data there is one reply per accepted
// recipient (RFC 2033 §4.2).
func TestLMTPDirect(t *testing.T) {
	needPython(t)
	t.Parallel()
	s := startServer(t, serverOpts{})
	msg := "Subject: LMTP from smtplib\n\n.dot\nbody\n"
	rep, r := smtplibSend(t, s, "lmtp", s.lmtp, "none", "", "someone@remote.test", []string{alice}, testutil.CRLF(msg), false)
	if rep.Error != "" || len(rep.Refused) != 0 {
		t.Fatalf("smtplib.LMTP:\n%s", r)
	}

	rc := dialRaw(t, s.lmtp)
	rc.send("EHLO mta.test\r\n")
	rc.expect("5")
	rc.send("LHLO mta.test\r\n")
	rc.expect("250")
	rc.send("MAIL FROM:<someone@remote.test>\r\n")
	rc.expect("250")
	for _, to := range []string{alice, "nobody@example.test", "victim@elsewhere.test", "sales@example.test", carol} {
		rc.send("RCPT TO:<" + to + ">\r\n")
		switch to {
		case "nobody@example.test":
			rc.expect("550 5.1.1")
		case "victim@elsewhere.test":
			rc.expect("554 5.7.1")
		default:
			rc.expect("250")
		}
	}
	msg2 := "Subject: LMTP by hand\n\nbody\n"
	rc.send("DATA\r\n")
	rc.expect("354")
	rc.send(string(testutil.CRLF(msg2)) + ".\r\n")
	for _, to := range []string{alice, "sales@example.test", carol} {
		if r := rc.expect("250 2.0.0"); !strings.Contains(r, "<"+to+">") {
			t.Errorf("LMTP reply for %s: %q", to, r)
		}
	}
	rc.send("QUIT\r\n")
	rc.expect("221")

	got := s.mustCount(t, alice, 2)
	rec := checkStored(t, got[0], "someone@remote.test", alice, 1, []byte(msg))
	checkReceived(t, rec[0], traceWant{helo: "py-client.test", protocol: "LMTP", rcpt: alice})
	rec = checkStored(t, got[1], "someone@remote.test", alice, 1, []byte(msg2))
	checkReceived(t, rec[0], traceWant{helo: "mta.test", protocol: "LMTP", rcpt: alice})
	got = s.mustCount(t, bob, 1)
	checkStored(t, got[0], "someone@remote.test", bob, 1, []byte(msg2))
	got = s.mustCount(t, carol, 1)
	checkStored(t, got[0], "someone@remote.test", carol, 1, []byte(msg2))
}

// TestLMTPUnixSocket delivers with Python's smtplib.LMTP over postino's
// LMTP unix socket (--lmtp /path); the Received field says so.
func TestLMTPUnixSocket(t *testing.T) {
	needPython(t)
	t.Parallel()
	s := startServer(t, serverOpts{lmtpUnix: true})
	msg := "Subject: LMTP over a unix socket\n\nbody\n"
	rep, r := smtplibSend(t, s, "lmtp", s.lmtp, "none", "", "someone@remote.test", []string{alice, "nobody@example.test"}, testutil.CRLF(msg), false)
	if rep.Error != "" || len(rep.Refused) != 1 || rep.Refused["nobody@example.test"][0] != float64(550) {
		t.Fatalf("smtplib.LMTP over %s: want only nobody@ refused with 550:\n%s", s.lmtp, r)
	}
	got := s.mustCount(t, alice, 1)
	rec := checkStored(t, got[0], "someone@remote.test", alice, 1, []byte(msg))
	want := "Received: from py-client.test (unix socket)\r\n\tby " + hostTag + " (postino) with LMTP id "
	if !strings.HasPrefix(rec[0], want) || !strings.Contains(rec[0], "\r\n\tfor <"+alice+">; ") {
		t.Errorf("Received field:\n%q\nwant it to start with %q", rec[0], want)
	}
}
