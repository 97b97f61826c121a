package fetch_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// TestMoveFromDovecot follows the README's "Moving from Dovecot": real
// clients that leave mail on the server download a mailbox from a real
// Dovecot; the Maildir (with its dovecot-uidlist) and the passwd-file are
// copied to postino; the same clients, pointed at postino, download
// nothing again, and a message delivered to postino afterwards exactly
// once.
func TestMoveFromDovecot(t *testing.T) {
	mpop := testutil.NeedProgram(t, "mpop")
	for _, c := range []struct {
		name     string
		dovecot  []string // Dovecot settings
		postino  []string // [pop3] settings of postino
		wantUIDL string   // the form of Dovecot's first UIDL
		starttls bool     // postino fetch uses STLS, not implicit TLS (mpop: plain)
	}{
		{"default-format", nil, nil, "00000001", false},
		{"format-v.u",
			[]string{"pop3_uidl_format = %v.%u"},
			[]string{`dovecot_uidl_format = "%v.%u"`}, ".1", true},
		// pop3_save_uidl makes Dovecot write each UIDL it sends into
		// dovecot-uidlist (extension P), which wins over postino's
		// format setting, here left at its default.
		{"saved-uidls",
			[]string{"pop3_uidl_format = %u-%f", "pop3_save_uidl = yes"},
			nil, "1-", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dv := startDovecot(t, c.dovecot...)
			const user, pw = "u1@test", "secret"
			for i := 1; i <= 3; i++ {
				dv.deliver(t, user, testMessage(i, 2000))
			}

			// Before the move: both clients download, leaving the mail.
			mp := newMpop(t, mpop)
			if n := mp.run(t, dv.pop3Addr, user, pw); n != 3 {
				t.Fatalf("mpop from Dovecot: %d messages, want 3", n)
			}
			a := account{server: dv.pop3sAddr, user: user, pw: pw, extra: []string{"--fingerprint", dv.fingerprint}}
			if c.starttls {
				a = account{server: dv.pop3Addr, user: user, pw: pw, extra: []string{"--security", "starttls", "--fingerprint", dv.fingerprint}}
			}
			d := newDestination(t, "maildir")
			state := t.TempDir()
			if r := fetch(t, nil, a, d, state); r.Code != exitNewMail {
				t.Fatalf("fetch from Dovecot: exit %d:\n%s", r.Code, r.Output)
			}
			checkExactlyOnce(t, d, ids(1, 3))
			dovecotUIDLs := uidls(t, dv.pop3Addr, user, pw)
			if len(dovecotUIDLs) != 3 || !strings.Contains(dovecotUIDLs[0], c.wantUIDL) {
				t.Fatalf("Dovecot's UIDLs %q, want 3 like %q", dovecotUIDLs, c.wantUIDL)
			}
			if c.name == "saved-uidls" {
				list, _ := os.ReadFile(filepath.Join(dv.dir, "mail", user, "dovecot-uidlist"))
				if !strings.Contains(string(list), " P1-") {
					t.Fatalf("Dovecot saved no UIDL:\n%s", list)
				}
			}

			// The move: the Maildir with its dovecot-uidlist, and the
			// passwd-file as it is.
			ps := startPostino(t, c.postino...)
			box := filepath.Join(ps.data, "mail", "test", "u1")
			os.MkdirAll(box, 0o700)
			if r := run(t, nil, nil, "cp", "-a", filepath.Join(dv.dir, "mail", user), filepath.Join(box, "Maildir")); r.Code != 0 {
				t.Fatalf("cp: %s", r.Output)
			}
			if r := run(t, nil, nil, "cp", filepath.Join(dv.dir, "passwd"), filepath.Join(ps.data, "users.passwd")); r.Code != 0 {
				t.Fatalf("cp: %s", r.Output)
			}
			if got := uidls(t, ps.pop3Addr, user, pw); strings.Join(got, " ") != strings.Join(dovecotUIDLs, " ") {
				t.Fatalf("postino's UIDLs %q, Dovecot's %q", got, dovecotUIDLs)
			}

			// After the move: nothing is downloaded again...
			if n := mp.run(t, ps.pop3Addr, user, pw); n != 0 {
				t.Fatalf("mpop from postino downloaded %d messages again", n)
			}
			pa := account{server: ps.pop3sAddr, user: user, pw: pw, extra: []string{"--fingerprint", ps.fingerprint}}
			if c.starttls {
				pa = account{server: ps.pop3Addr, user: user, pw: pw, extra: []string{"--security", "starttls", "--fingerprint", ps.fingerprint}}
			}
			if r := fetch(t, nil, pa, d, state, "--verbose"); r.Code != exitNoMail || strings.Contains(r.Output, "another UIDL") {
				t.Fatalf("fetch from postino: exit %d:\n%s", r.Code, r.Output)
			}
			// ...and a message delivered to postino is downloaded once.
			ps.deliver(t, user, testMessage(4, 2000))
			if n := mp.run(t, ps.pop3Addr, user, pw); n != 1 {
				t.Fatalf("mpop: %d new messages, want 1", n)
			}
			if r := fetch(t, nil, pa, d, state); r.Code != exitNewMail {
				t.Fatalf("fetch: exit %d:\n%s", r.Code, r.Output)
			}
			checkExactlyOnce(t, d, ids(1, 4))
			if n := mp.run(t, ps.pop3Addr, user, pw); n != 0 {
				t.Fatalf("mpop: %d new messages, want 0", n)
			}
			if r := fetch(t, nil, pa, d, state); r.Code != exitNoMail {
				t.Fatalf("fetch: exit %d:\n%s", r.Code, r.Output)
			}
			if got := mp.total(t); got != 4 {
				t.Fatalf("mpop holds %d messages, want 4", got)
			}
			// The imported UIDLs stay, beside postino's own.
			after := uidls(t, ps.pop3Addr, user, pw)
			if len(after) != 4 || strings.Join(after[:3], " ") != strings.Join(dovecotUIDLs, " ") {
				t.Fatalf("postino's UIDLs after new mail %q, Dovecot's %q", after, dovecotUIDLs)
			}
		})
	}
}

// mpopClient is one mpop account, kept across servers: the same UIDL file
// and the same output Maildir, as a user's mail client would.
type mpopClient struct {
	bin, dir, out string
	seen          int
}

func newMpop(t *testing.T, bin string) *mpopClient {
	dir := t.TempDir()
	out := filepath.Join(dir, "Maildir")
	for _, sub := range []string{"cur", "new", "tmp"} {
		os.MkdirAll(filepath.Join(out, sub), 0o700)
	}
	return &mpopClient{bin: bin, dir: dir, out: out}
}

// run fetches from addr with mail kept on the server and returns the
// number of messages it downloaded.
func (m *mpopClient) run(t *testing.T, addr, user, pw string) int {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	cfg := filepath.Join(m.dir, "mpoprc")
	conf := fmt.Sprintf("account test\nhost %s\nport %s\nuser %s\npassword %s\nauth user\ntls off\nkeep on\nuidls_file %s\ndelivery maildir %s\n",
		host, port, user, pw, filepath.Join(m.dir, "uidls"), m.out)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := run(t, []string{"HOME=" + m.dir}, nil, m.bin, "-C", cfg, "test"); r.Code != 0 {
		t.Fatalf("mpop: exit %d:\n%s", r.Code, r.Output)
	}
	n := m.total(t)
	got := n - m.seen
	m.seen = n
	return got
}

// total checks and counts the messages mpop delivered.
func (m *mpopClient) total(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(m.out, "new"))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int]bool{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(m.out, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m := testIDRE.FindSubmatch(b)
		if m == nil {
			t.Fatalf("mpop: no X-Test-Id in %q", head(b))
		}
		id, _ := strconv.Atoi(string(m[1]))
		if !bytes.HasSuffix(bytes.TrimRight(b, "\r\n"), []byte(fmt.Sprintf("END-%d", id))) {
			t.Fatalf("mpop: message %d is truncated: ends %q", id, tail(b))
		}
		if ids[id] {
			t.Fatalf("mpop downloaded message %d twice", id)
		}
		ids[id] = true
	}
	return len(ents)
}
