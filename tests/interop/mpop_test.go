package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// mpop (https://marlam.de/mpop/) is driven with a configuration file (mode
// 0600, "-C FILE"), one account per mode. What it changes, per its manual:
//   - received_header (default on) prepends one Received header field;
//   - the maildir, mbox and mda deliveries convert CRLF line ends to LF;
//   - the exchange delivery writes the message with CRLF as received.
// So "exchange" with "received_header off" must give the exact bytes.

type mpopMode struct {
	transport string // plain, stls or tls (implicit)
	keep      bool
	delivery  string // exchange, maildir or mda
	received  bool
	big       bool
}

func (m mpopMode) name() string {
	keep := "delete"
	if m.keep {
		keep = "keep"
	}
	return m.transport + "-" + keep + "-" + m.delivery
}

// config writes the mpop configuration for user and returns its path and
// the folder the delivery writes to.
func (m mpopMode) config(t *testing.T, s *server, dir, user, pw string) (cfgFile, outDir string) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "account test\nuser %s\npassword %s\nauth user\n", user, pw)
	// The TLS settings are given on the command line (tlsArgs).
	switch m.transport {
	case "plain":
		fmt.Fprintf(&b, "host 127.0.0.1\nport %s\n", s.pop3Port)
	case "stls":
		fmt.Fprintf(&b, "host localhost\nport %s\n", s.pop3Port)
	case "tls":
		fmt.Fprintf(&b, "host localhost\nport %s\n", s.pop3sPort)
	}
	onOff := map[bool]string{true: "on", false: "off"}
	fmt.Fprintf(&b, "keep %s\nreceived_header %s\nuidls_file %s\n", onOff[m.keep], onOff[m.received], filepath.Join(dir, "uidls"))
	outDir = filepath.Join(dir, "out")
	switch m.delivery {
	case "exchange":
		os.MkdirAll(outDir, 0o700)
		fmt.Fprintf(&b, "delivery exchange %s\n", outDir)
	case "maildir":
		for _, sub := range []string{"cur", "new", "tmp"} {
			os.MkdirAll(filepath.Join(outDir, sub), 0o700)
		}
		fmt.Fprintf(&b, "delivery maildir %s\n", outDir)
		outDir = filepath.Join(outDir, "new")
	case "mda":
		os.MkdirAll(outDir, 0o700)
		fmt.Fprintf(&b, "delivery mda \"cat > $(mktemp %s/msg.XXXXXX)\"\n", outDir)
	}
	cfgFile = filepath.Join(dir, "mpoprc")
	writeFile0600(t, cfgFile, b.String())
	return cfgFile, outDir
}

// tlsArgs returns the command-line TLS options; mpop verifies the
// certificate against the trust file and the host name "localhost".
func (m mpopMode) tlsArgs(s *server) []string {
	switch m.transport {
	case "stls":
		return []string{"--tls=on", "--tls-starttls=on", "--tls-trust-file=" + s.certFile}
	case "tls":
		return []string{"--tls=on", "--tls-starttls=off", "--tls-trust-file=" + s.certFile}
	}
	return []string{"--tls=off"}
}

func (m mpopMode) normalizer() normalizer {
	var ns []normalizer
	if m.received {
		ns = append(ns, stripReceivedBy("(mpop-"))
	}
	if m.delivery != "exchange" {
		ns = append(ns, lfToCRLF)
	}
	return chain(append(ns, exact)...)
}

func (m mpopMode) describe() string {
	d := m.delivery
	if m.received {
		d += ", strip Received"
	} else {
		d += ", received_header off"
	}
	if m.delivery == "exchange" {
		d += ", exact bytes"
	} else {
		d += ", LF->CRLF"
	}
	return d
}

func TestMpop(t *testing.T) {
	mpop := testutil.NeedProgram(t, "mpop")
	t.Parallel()
	if out := run(t, nil, nil, mpop, "--version"); out.Code != 0 {
		t.Fatalf("mpop --version:\n%s", out)
	} else {
		t.Logf("%s", strings.SplitN(out.Output, "\n", 2)[0])
	}
	s := startServer(t)
	modes := []mpopMode{
		{transport: "stls", keep: true, delivery: "exchange", received: false, big: true},
		{transport: "tls", keep: false, delivery: "maildir", received: true},
		{transport: "plain", keep: true, delivery: "mda", received: false},
	}
	for _, m := range modes {
		t.Run(m.name(), func(t *testing.T) {
			keepMode := map[bool]string{true: "keep (leave on server)", false: "delete"}[m.keep]
			record(t, "mpop", m.transport, keepMode, m.describe())
			user := "mpop-" + m.name() + "@example.test"
			const pw = "mpop secret"
			s.addUser(t, user, pw)
			msgs := smallCorpus()
			if m.big {
				msgs = fullCorpus()
			}
			want := s.fill(t, user, msgs)
			uidsBefore := s.uidls(t, user, pw)

			dir := t.TempDir()
			cfg, out := m.config(t, s, dir, user, pw)
			env := []string{"HOME=" + dir}
			args := append([]string{"-C", cfg}, m.tlsArgs(s)...)
			args = append(args, "test")
			r := run(t, env, nil, mpop, args...)
			if r.Code != 0 {
				t.Fatalf("mpop failed:\n%s", r)
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
			// A second run finds nothing new (UIDL tracking).
			r = run(t, env, nil, mpop, args...)
			if r.Code != 0 {
				t.Fatalf("second mpop run failed:\n%s", r)
			}
			if n := len(readDirFiles(t, out)); n != len(got) {
				t.Errorf("second run delivered %d more messages, want none\n%s", n-len(got), r)
			}
			// After one more delivery, a third run fetches just that one.
			late := s.fill(t, user, []testMsg{lateMessage()})
			os.RemoveAll(out)
			m.config(t, s, dir, user, pw) // recreates the empty output folder
			r = run(t, env, nil, mpop, args...)
			if r.Code != 0 {
				t.Fatalf("third mpop run failed:\n%s", r)
			}
			compareDownloads(t, readDirFiles(t, out), late, m.normalizer())
			if n := s.stat(t, user, pw); n != len(msgs)+1 {
				t.Errorf("keep mode: %d messages on the server, want %d", n, len(msgs)+1)
			}
		})
	}
}
