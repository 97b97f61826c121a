package pop3check

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/dnscheck"
	"github.com/postino-mail/postino/internal/testutil"
)

// dovecot is a private Dovecot on loopback.
type dovecot struct {
	dir, conf, pop3Addr, pop3sAddr string
	cert                           testutil.Cert
}

// startDovecot runs Dovecot with user u1@test (password "secret") and
// plaintext logins allowed (disable_plaintext_auth = no), which the
// audit must flag. A missing Dovecot fails the test under CI=true.
func startDovecot(t *testing.T) *dovecot {
	t.Helper()
	bin := testutil.NeedProgram(t, "dovecot")
	if _, err := os.Stat("/usr/lib/dovecot/dovecot-lda"); err != nil {
		testutil.SkipOrFatal(t, "dovecot-lda not installed: %v", err)
	}
	dir, err := os.MkdirTemp("", "postino-pop3check-dovecot-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	cert := testutil.NewCert(t, "127.0.0.1")
	certPEM, keyPEM := cert.PEM(t)
	os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "passwd"), []byte("u1@test:{PLAIN}secret\n"), 0o644)
	mail := filepath.Join(dir, "mail")
	os.MkdirAll(mail, 0o755)
	out, err := exec.Command("id", "-u", "mail").Output()
	if err != nil {
		t.Fatalf("id -u mail: %v", err)
	}
	uid, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	os.Chown(mail, uid, uid)
	for attempt := 1; ; attempt++ {
		a := testutil.FreeAddrs(t, 2)
		_, p1, _ := net.SplitHostPort(a[0])
		_, p2, _ := net.SplitHostPort(a[1])
		d := &dovecot{dir: dir, conf: filepath.Join(dir, "dovecot.conf"), pop3Addr: a[0], pop3sAddr: a[1], cert: cert}
		conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
instance_name = postino-pop3check-%[2]s
listen = 127.0.0.1
protocols = pop3
ssl = yes
ssl_cert = <%[1]s/cert.pem
ssl_key = <%[1]s/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:%[1]s/mail/%%u
pop3_uidl_format = %%08Xu%%08Xv
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 0
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[1]s/passwd
}
userdb {
  driver = static
  args = uid=mail gid=mail home=%[1]s/home/%%u
}
service pop3-login {
  chroot =
  inet_listener pop3 {
    port = %[2]s
  }
  inet_listener pop3s {
    port = %[3]s
    ssl = yes
  }
}
service anvil {
  chroot =
}
`, dir, p1, p2)
		os.WriteFile(d.conf, []byte(conf), 0o644)
		cmd := exec.Command(bin, "-F", "-c", d.conf)
		logs := &testutil.SyncBuffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		p, err := testutil.StartProcess(cmd)
		if err != nil {
			t.Fatal(err)
		}
		ok := p.Poll(10*time.Second, 30*time.Millisecond, func() bool {
			c, err := net.DialTimeout("tcp", d.pop3sAddr, time.Second)
			if err != nil {
				return false
			}
			c.Close()
			return true
		})
		if ok {
			t.Cleanup(func() { p.Terminate(10 * time.Second) })
			return d
		}
		p.Kill()
		if attempt < 3 {
			continue
		}
		log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
		t.Fatalf("dovecot did not start:\n%s\n%s", logs, log)
	}
}

func (d *dovecot) deliver(t *testing.T, user, msg string) {
	t.Helper()
	cmd := exec.Command("/usr/lib/dovecot/dovecot-lda", "-c", d.conf, "-d", user)
	cmd.Stdin = strings.NewReader(msg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dovecot-lda: %v\n%s", err, out)
	}
}

func find(fs []dnscheck.Finding, check string) []dnscheck.Finding {
	var out []dnscheck.Finding
	for _, f := range fs {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

func dump(fs []dnscheck.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.String() + "\n")
	}
	return b.String()
}

// TestAuditDovecot audits a real Dovecot over pop3:// (STLS) and pop3s://:
// plaintext logins before TLS are flagged, TLS 1.0/1.1 refused, the
// certificate verified, [AUTH] seen on a wrong password, and with
// credentials STAT, LIST, RETR and UIDL agree (messages with dot-stuffed
// lines and LF line ends, which Dovecot stores and serves with CRLF).
func TestAuditDovecot(t *testing.T) {
	d := startDovecot(t)
	d.deliver(t, "u1@test", "From: a@test\nSubject: one\n\nhello\n.leading dot\n..two dots\n")
	d.deliver(t, "u1@test", "From: b@test\r\nSubject: two\r\n\r\n"+strings.Repeat("line of text\r\n", 500))
	for _, implicit := range []bool{false, true} {
		addr := d.pop3Addr
		if implicit {
			addr = d.pop3sAddr
		}
		t.Run(fmt.Sprintf("implicit=%v", implicit), func(t *testing.T) {
			fs := Audit(context.Background(), Options{Addr: addr, Implicit: implicit, Roots: d.cert.Pool(), User: "u1@test", Password: "secret", ExpiryWarn: time.Hour})
			t.Logf("\n%s", dump(fs))
			want := map[string]dnscheck.Status{
				"GREETING": dnscheck.OK, "CAPA": dnscheck.OK, "CERT": dnscheck.OK, "CODES": dnscheck.OK,
				"LOGIN": dnscheck.OK, "STAT": dnscheck.OK, "UIDL": dnscheck.OK, "SIZE": dnscheck.OK,
				// Dovecot does not lock the maildrop by default
				// (pop3_lock_session = no).
				"LOCK": dnscheck.Warn,
			}
			if !implicit {
				want["STLS"] = dnscheck.OK
				want["PLAINTEXT"] = dnscheck.Fail
			}
			for check, st := range want {
				got := find(fs, check)
				if len(got) == 0 {
					t.Errorf("no %s finding", check)
				}
				for _, f := range got {
					if f.Status != st {
						t.Errorf("%s, want %s", f, st)
					}
				}
			}
			for _, f := range find(fs, "TLS") {
				if f.Status == dnscheck.Fail {
					t.Errorf("%s", f)
				}
			}
			if !strings.Contains(dump(fs), "TLS 1.3 accepted") || !strings.Contains(dump(fs), "2 messages downloaded") {
				t.Errorf("findings:\n%s", dump(fs))
			}
			if p := find(fs, "PLAINTEXT"); !implicit && (len(p) != 1 || !strings.Contains(p[0].Detail, "USER/PASS, AUTH PLAIN, AUTH LOGIN offered before TLS")) {
				t.Errorf("PLAINTEXT: %v", p)
			}
		})
	}
}
