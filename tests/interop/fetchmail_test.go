package interop

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// fetchmail (https://www.fetchmail.info/) reads $HOME/.fetchmailrc, which
// must be mode 0600; HOME is a temporary folder, which also holds its
// .fetchids (UIDL tracking) and pid file. Each message is handed to an MDA
// that writes it to its own file. What it changes, per its manual:
//   - it prepends one Received header field (always, unless "invisible");
//   - it places that field before the message's first Received field if
//     it has one, at the top otherwise;
//   - it ends a header-only message (no empty line) with an empty line;
//   - "stripcr", on by default when an MDA is used, removes the CR of every
//     CRLF; with "no stripcr" the message keeps its CRLF line ends.
// fetchmail with keep retrieves with "TOP n 99999999", so this also
// exercises TOP with a huge line count.

type fetchmailMode struct {
	transport string // plain, stls or tls (implicit)
	keep      bool
	stripCR   bool
	big       bool
}

func (m fetchmailMode) name() string {
	keep := "delete"
	if m.keep {
		keep = "keep"
	}
	cr := "nostripcr"
	if m.stripCR {
		cr = "stripcr"
	}
	return m.transport + "-" + keep + "-" + cr
}

func (m fetchmailMode) describe() string {
	if m.stripCR {
		return "mda, stripcr, strip Received+hdr-only sep, LF->CRLF"
	}
	return "mda, no stripcr, strip Received+hdr-only sep, exact"
}

func (m fetchmailMode) normalizer() normalizer {
	if m.stripCR {
		return chain(stripReceivedBy("(fetchmail-"), lfToCRLF, dropAddedSeparator)
	}
	return chain(stripReceivedBy("(fetchmail-"), dropAddedSeparator)
}

// dropAddedSeparator undoes fetchmail's one change to a header-only message
// (one without an empty line): it writes an empty line after the header.
// So an empty line that is the message's last line and its only one was
// added by fetchmail.
func dropAddedSeparator(b []byte) ([]byte, error) {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 && i == len(b)-4 {
		return b[:len(b)-2], nil
	}
	return b, nil
}

// rc returns the .fetchmailrc for this mode.
func (m fetchmailMode) rc(s *server, user, pw, outDir string) string {
	var b strings.Builder
	b.WriteString("set no syslog\nset no bouncemail\n")
	port := s.pop3Port
	if m.transport == "tls" {
		port = s.pop3sPort
	}
	// fetchmail verifies the certificate name, so connect to localhost.
	fmt.Fprintf(&b, "poll localhost protocol pop3 port %s uidl\n", port)
	fmt.Fprintf(&b, "  user %q there with password %q is %q here\n", user, pw, "postino-test")
	switch m.transport {
	case "plain":
		b.WriteString("  sslproto \"\"\n") // no opportunistic STLS
	case "stls":
		fmt.Fprintf(&b, "  sslproto \"tls1.2+\" sslcertck sslcertfile %q\n", s.certFile)
	case "tls":
		fmt.Fprintf(&b, "  ssl sslproto \"tls1.2+\" sslcertck sslcertfile %q\n", s.certFile)
	}
	if m.keep {
		b.WriteString("  keep\n")
	} else {
		b.WriteString("  no keep\n")
	}
	if !m.stripCR {
		b.WriteString("  no stripcr\n")
	}
	fmt.Fprintf(&b, "  mda \"cat > $(mktemp %s/msg.XXXXXX)\"\n", outDir)
	return b.String()
}

func TestFetchmail(t *testing.T) {
	fetchmail := testutil.NeedProgram(t, "fetchmail")
	testutil.NeedProgram(t, "mktemp")
	t.Parallel()
	if r := run(t, []string{"HOME=" + t.TempDir()}, nil, fetchmail, "--version"); !strings.Contains(r.Output, "fetchmail release") {
		t.Fatalf("fetchmail --version:\n%s", r)
	} else if i := strings.Index(r.Output, "This is fetchmail release"); i >= 0 {
		t.Logf("%s", strings.SplitN(r.Output[i:], "\n", 2)[0])
	}
	s := startServer(t)
	modes := []fetchmailMode{
		{transport: "stls", keep: true, stripCR: false, big: true},
		{transport: "tls", keep: false, stripCR: true},
		{transport: "plain", keep: true, stripCR: true},
	}
	for _, m := range modes {
		t.Run(m.name(), func(t *testing.T) {
			keepMode := map[bool]string{true: "keep (leave on server)", false: "delete"}[m.keep]
			record(t, "fetchmail", m.transport, keepMode, m.describe())
			user := "fm-" + m.name() + "@example.test"
			const pw = "fetchmail secret"
			s.addUser(t, user, pw)
			msgs := smallCorpus()
			if m.big {
				msgs = fullCorpus()
			}
			want := s.fill(t, user, msgs)
			uidsBefore := s.uidls(t, user, pw)

			home := t.TempDir()
			out := filepath.Join(home, "out")
			os.MkdirAll(out, 0o700)
			rcFile := filepath.Join(home, ".fetchmailrc")
			writeFile0600(t, rcFile, m.rc(s, user, pw, out))
			env := []string{"HOME=" + home}
			fetch := func() testutil.Result {
				return run(t, env, nil, fetchmail, "--nodetach", "--verbose", "--fetchmailrc", rcFile,
					"--idfile", filepath.Join(home, ".fetchids"), "--pidfile", filepath.Join(home, ".fetchmail.pid"))
			}
			// Exit codes: 0 = mail retrieved, 1 = no mail.
			r := fetch()
			if r.Code != 0 {
				t.Fatalf("fetchmail failed:\n%s", r)
			}
			if m.transport != "plain" && !strings.Contains(r.Output, "SSL/TLS: using protocol TLSv1.") {
				t.Errorf("fetchmail output does not show a TLS session:\n%s", r)
			}
			if m.transport == "plain" && strings.Contains(r.Output, "POP3> STLS") {
				t.Errorf("fetchmail used STLS although sslproto \"\":\n%s", r)
			}
			got := readDirFiles(t, out)
			compareDownloads(t, got, want, m.normalizer())

			if !m.keep {
				if n := s.stat(t, user, pw); n != 0 {
					t.Errorf("delete mode: %d messages left on the server, want 0\n%s", n, r)
				}
				return
			}
			if uids := s.uidls(t, user, pw); strings.Join(uids, " ") != strings.Join(uidsBefore, " ") {
				t.Errorf("keep mode: UIDLs changed from %v to %v", uidsBefore, uids)
			}
			// A second run finds nothing new (UIDL tracking in .fetchids).
			r = fetch()
			if r.Code != 1 {
				t.Errorf("second fetchmail run: exit %d, want 1 (no new mail)\n%s", r.Code, r)
			}
			if n := len(readDirFiles(t, out)); n != len(got) {
				t.Errorf("second run delivered %d more messages, want none\n%s", n-len(got), r)
			}
			// After one more delivery, a third run fetches just that one.
			late := s.fill(t, user, []testMsg{lateMessage()})
			os.RemoveAll(out)
			os.MkdirAll(out, 0o700)
			r = fetch()
			if r.Code != 0 {
				t.Fatalf("third fetchmail run failed:\n%s", r)
			}
			compareDownloads(t, readDirFiles(t, out), late, m.normalizer())
			if n := s.stat(t, user, pw); n != len(msgs)+1 {
				t.Errorf("keep mode: %d messages on the server, want %d", n, len(msgs)+1)
			}
		})
	}
}
