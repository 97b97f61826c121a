package config

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// checkFile writes content as a configuration file in a new folder whose
// data_dir is that folder, runs Check and returns its result.
func checkFile(t *testing.T, content string) (*CheckResult, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "postino.toml")
	content = fmt.Sprintf("data_dir = %q\n", dir) + content
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return Check(context.Background(), path, CheckOptions{}), path
}

// quietListeners are listener settings that Check can always bind.
const quietListeners = `
[pop3]
listen = "127.0.0.1:0"
listen_tls = ""
[smtp]
listen = ""
submission = ""
submissions = ""
`

// TestCheckReportsEveryDecodeError: Load stops at the first bad key;
// Check reports them all, each at its line.
func TestCheckReportsEveryDecodeError(t *testing.T) {
	res, path := checkFile(t, `hostnme = "mail.example.test"
[pop3]
listen = "127.0.0.1:0"
listen_tls = ""
autologout = "10 minutes"
max_line = "long"
colour = "blue"
[smtp]
listen = ""
submission = ""
submissions = ""
command_timeout = "5"
[bogus]
x = 1
`)
	want := []string{
		path + `:2: hostnme: unknown key (did you mean "hostname"?)`,
		path + `:6: pop3.autologout: invalid duration "10 minutes"`,
		path + `:7: pop3.max_line: incompatible types`,
		path + `:8: pop3.colour: unknown key`,
		path + `:13: smtp.command_timeout: invalid duration "5": missing unit`,
		path + `:14: bogus: unknown key`,
	}
	if res.Errors() != len(want) {
		t.Fatalf("%d errors, want %d:\n%s", res.Errors(), len(want), findings(res))
	}
	for i, w := range want {
		if got := res.Findings[i].String(); !strings.HasPrefix(got, "error: "+w) {
			t.Errorf("finding %d = %q, want prefix %q", i, got, "error: "+w)
		}
	}
	// The good keys around the bad ones were applied.
	if res.Config == nil || res.Config.POP3.Listen != "127.0.0.1:0" || res.Config.SMTP.Listen != "" {
		t.Errorf("good keys not decoded: %+v", res.Config)
	}
}

// TestCheckValidationAtKeyLine: the checks of Validate are reported at the
// line of their key, all of them, alongside decode errors.
func TestCheckValidationAtKeyLine(t *testing.T) {
	res, path := checkFile(t, quietListeners+`local_domains = ["ok.test", "bad..test"]
max_recipients = 0
[[fetch.account]]
name = "a"
server = "pop.example.test"
destination = "nowhere:x"
[[fetch.account]]
name = "b"
server = "pop.example.test"
destination = "maildir:/tmp/x"
sever = "typo"
`)
	got := findings(res)
	for _, w := range []string{
		path + ":10: smtp.local_domains[1]: invalid domain",
		path + ":11: smtp.max_recipients: must be at least 1",
		path + ":15: fetch.account[0].destination:",
		path + `:20: fetch.account[1].sever: unknown key (did you mean "fetch.account.server"?)`,
	} {
		if !strings.Contains(got, "error: "+w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
}

// TestCheckSyntaxError: a file that is not TOML is one error at its line.
func TestCheckSyntaxError(t *testing.T) {
	res, path := checkFile(t, "[pop3\nlisten = 1\n")
	if res.Errors() != 1 || !strings.HasPrefix(res.Findings[0].String(), "error: "+path+":3: expected '.' or ']'") || res.Config != nil {
		t.Fatalf("findings:\n%s", findings(res))
	}
}

// TestCheckClean: a sound file has no findings.
func TestCheckClean(t *testing.T) {
	res, _ := checkFile(t, quietListeners)
	if len(res.Findings) != 0 {
		t.Fatalf("findings on a clean file:\n%s", findings(res))
	}
}

// TestCheckListenerInUse: an address another program listens on is an
// error naming that program; an unknown local address cannot be bound.
func TestCheckListenerInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	res, path := checkFile(t, fmt.Sprintf("[pop3]\nlisten = \"\"\nlisten_tls = \"\"\n[smtp]\nlisten = \"\"\n"+
		"submission = %q\nsubmissions = \"192.0.2.1:25\"\n", ln.Addr()))
	got := findings(res)
	for _, w := range []string{
		fmt.Sprintf("error: %s:7: smtp.submission: %s is already in use by another program (", path, ln.Addr()),
		fmt.Sprintf("pid %d)", os.Getpid()),
		"error: " + path + ":8: smtp.submissions: cannot listen on 192.0.2.1:25",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
}

// TestCheckLMTPSocketDir: the folder of an LMTP socket must exist.
func TestCheckLMTPSocketDir(t *testing.T) {
	res, _ := checkFile(t, quietListeners+"lmtp = \"unix:/nonexistent-postino-dir/lmtp.sock\"\n")
	if res.Errors() != 1 || !strings.Contains(res.Findings[0].String(), "smtp.lmtp: the folder of the socket") {
		t.Fatalf("findings:\n%s", findings(res))
	}
}

// TestCheckFiles: the users file, the aliases file and DKIM keys are
// checked line by line, and users outside local_domains are warned about.
func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	hash := "{PLAIN}secret"
	os.WriteFile(filepath.Join(dir, "users.passwd"), []byte("a@local.test:"+hash+"\nbroken line\nb@elsewhere.test:"+hash+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "aliases"), []byte("x@local.test: a@local.test\nno colon\ny@local.test: /etc/passwd\n"), 0o600)
	os.MkdirAll(filepath.Join(dir, "dkim", "local.test"), 0o700)
	os.WriteFile(filepath.Join(dir, "dkim", "local.test", "s1.key"), []byte("not a key\n"), 0o600)
	path := filepath.Join(dir, "postino.toml")
	os.WriteFile(path, []byte(fmt.Sprintf("data_dir = %q\n", dir)+quietListeners+"local_domains = [\"local.test\", \"other.test\"]\n"), 0o600)
	res := Check(context.Background(), path, CheckOptions{})
	got := findings(res)
	for _, w := range []string{
		"error: " + filepath.Join(dir, "users.passwd") + ":2: ",
		"error: " + filepath.Join(dir, "aliases") + ":2: syntax error: missing ':'",
		"error: " + filepath.Join(dir, "aliases") + ":3: target: ",
		"error: " + filepath.Join(dir, "dkim", "local.test", "s1.key") + ": queue.dkim_dir: bad DKIM key",
		"warning: " + path + ":10: smtp.local_domains: user b@elsewhere.test is in domain elsewhere.test, which is not local",
		"warning: " + path + ": queue.dkim_dir: local domain local.test has no DKIM key",
		"warning: " + path + ": queue.dkim_dir: local domain other.test has no DKIM key",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if res.Errors() != 4 || res.Warnings() != 3 {
		t.Errorf("%d errors and %d warnings, want 4 and 3:\n%s", res.Errors(), res.Warnings(), got)
	}
}

func findings(r *CheckResult) string {
	var b strings.Builder
	for _, f := range r.Findings {
		b.WriteString(f.String() + "\n")
	}
	return b.String()
}

func TestKeyLines(t *testing.T) {
	got := keyLines([]byte("a = 1\n[s]\nb = 2\n# c = 3\n[[arr]]\nx = 1\n[[arr]]\nx = 2\n"))
	want := map[string]int{"a": 1, "s": 2, "s.b": 3, "arr": 5, "arr[0]": 5, "arr[0].x": 6, "arr[1]": 7, "arr[1].x": 8}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("line of %q = %d, want %d", k, got[k], v)
		}
	}
	keys := make([]string, 0, len(got))
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(got) != len(want) {
		t.Errorf("keys = %q", keys)
	}
}

// TestCheckFetch: what fetch accounts name is checked beyond its syntax.
func TestCheckFetch(t *testing.T) {
	res, path := checkFile(t, quietListeners+`
[[fetch.account]]
name = "a"
server = "pop.example.test"
destination = "local:nobody@example.test"
password_command = "no-such-program-postino-test show x"
ca_file = "/nonexistent/ca.pem"
[[fetch.account]]
name = "b"
server = "pop.example.test"
destination = "mbox:/nonexistent-postino/mbox"
[[fetch.account]]
name = "c"
server = "pop.example.test"
password = "pw"
destination = "mda:sh -c 'cat > /dev/null'"
`)
	got := findings(res)
	for _, w := range []string{
		"warning: " + path + ":14: fetch.account[0].destination: nobody@example.test is not a user",
		"warning: " + path + `:15: fetch.account[0].password_command: "no-such-program-postino-test" not found in $PATH`,
		"error: " + path + ":16: fetch.account[0].ca_file: open /nonexistent/ca.pem",
		"warning: " + path + ":17: fetch.account[1].password_command: neither password nor password_command is set",
		"warning: " + path + ":20: fetch.account[1].destination: folder /nonexistent-postino does not exist",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if res.Errors() != 1 || res.Warnings() != 4 {
		t.Errorf("%d errors and %d warnings, want 1 and 4 (account c is sound):\n%s", res.Errors(), res.Warnings(), got)
	}
}

// TestCheckSectionNotTable: a section given a plain value is one error,
// not a crash or silence.
func TestCheckSectionNotTable(t *testing.T) {
	res, path := checkFile(t, "pop3 = 5\nsmtp = \"x\"\nusers = [1]\n[tls]\nmin_version = \"1.3\"\n")
	got := findings(res)
	for _, w := range []string{
		"error: " + path + ":2: pop3: must be a table ([pop3])",
		"error: " + path + ":3: smtp: must be a table ([smtp])",
		"error: " + path + ":4: users: must be a table ([users])",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, got)
		}
	}
	if res.Config == nil || res.Config.TLS.MinVersion != "1.3" {
		t.Errorf("the good table was not decoded")
	}
}

// FuzzCheckAgreesWithLoad: the key-by-key decoding of Check accepts
// exactly what Load accepts, and decodes it to the same configuration.
func FuzzCheckAgreesWithLoad(f *testing.F) {
	f.Add([]byte(""))
	f.Add([]byte("hostname = \"h\"\n[pop3]\nlisten = \"127.0.0.1:110\"\nautologout = \"20m\"\n"))
	f.Add([]byte("[pop3]\nautologout = 5\nmax_line = \"x\"\ncolour = 1\n"))
	f.Add([]byte("[[fetch.account]]\nname = \"a\"\nserver = \"h\"\ndestination = \"mbox:/x\"\nmax_size = \"1MB\"\n"))
	f.Add([]byte("pop3 = 5\n[smtp]\nLocal_Domains = [\"a.test\"]\n"))
	f.Add([]byte("[delivery]\nmax_message_size = 1000\n[tls]\nmin_version = \"1.3\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "postino.toml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		loaded, loadErr := Load(p)
		k := &checker{path: p, lines: map[string]int{}, res: &CheckResult{}}
		checked := k.decode(data, "")
		if (loadErr == nil) != (len(k.res.Findings) == 0) {
			t.Fatalf("Load: %v\nCheck:\n%s", loadErr, findings(k.res))
		}
		if loadErr == nil && !reflect.DeepEqual(loaded, checked) {
			t.Fatalf("Load and Check decode differently:\n%+v\n%+v", loaded, checked)
		}
	})
}
