package config

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/pop3"
)

// writeFile writes content to a temporary config file and returns its path.
func writeFile(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "postino.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultValidates(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if c.Hostname == "" {
		t.Error("default hostname is empty")
	}
	if want, _ := os.Hostname(); checkHostname(want) == "" && c.Hostname != want {
		t.Errorf("default hostname = %q, want os.Hostname() = %q", c.Hostname, want)
	}
	if c.Delivery.MaxMessageSize != 50<<20 || c.SMTP.MaxMessageSize != 50<<20 {
		t.Errorf("default sizes = %d, %d; want 50 MiB", c.Delivery.MaxMessageSize, c.SMTP.MaxMessageSize)
	}
	if c.POP3.Autologout.Duration != 10*time.Minute {
		t.Errorf("autologout = %s", c.POP3.Autologout)
	}
	// Each call is independent.
	c.SMTP.LocalDomains = append(c.SMTP.LocalDomains, "example.org")
	c.POP3.Listen = "changed"
	if d := Default(); len(d.SMTP.LocalDomains) != 0 || d.POP3.Listen == "changed" {
		t.Error("Default shares state between calls")
	}
}

func TestLoadEmptyPath(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("Load(\"\") = %+v, want Default()", c)
	}
}

func TestLoadEmptyFile(t *testing.T) {
	c, err := Load(writeFile(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("Load(empty file) = %+v, want Default()", c)
	}
}

func TestWriteDefaultRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteDefault(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	c, err := Load(writeFile(t, out))
	if err != nil {
		t.Fatalf("Load(WriteDefault output) = %v\n%s", err, out)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("round trip:\n got %+v\nwant %+v", c, Default())
	}

	// The hostname is a commented-out example, so the computed default
	// applies; uncommenting it sets it.
	if !strings.Contains(out, "\n# hostname = \"mail.example.org\"\n") {
		t.Errorf("output lacks commented-out hostname line:\n%s", out)
	}
	c, err = Load(writeFile(t, strings.Replace(out, "# hostname = ", "hostname = ", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "mail.example.org" {
		t.Errorf("uncommented hostname = %q", c.Hostname)
	}

	// Every key appears with its comment, and every section has a header.
	for _, k := range knownKeys() {
		section, key, nested := strings.Cut(k, ".")
		if !nested {
			if isTopLevelSection(section) {
				if !strings.Contains(out, "\n["+section+"]\n") {
					t.Errorf("missing section header [%s]", section)
				}
				continue
			}
			key = section
		}
		if !strings.Contains(out, "\n"+key+" = ") && !strings.Contains(out, "\n# "+key+" = ") {
			t.Errorf("missing key %s", k)
		}
	}
	for i, line := range strings.Split(out, "\n") {
		if len(line) > commentWidth && strings.HasPrefix(line, "#") {
			t.Errorf("line %d longer than %d: %q", i+1, commentWidth, line)
		}
	}
}

func isTopLevelSection(name string) bool {
	for f := range fields(reflect.TypeFor[Config]()) {
		if f.Tag.Get("toml") == name {
			return isSection(f)
		}
	}
	return false
}

// Every field, including those of sections, carries the tags WriteDefault
// and Load rely on.
func TestStructTags(t *testing.T) {
	var check func(rt reflect.Type)
	check = func(rt reflect.Type) {
		for i := range rt.NumField() {
			f := rt.Field(i)
			if f.Tag.Get("toml") == "" {
				t.Errorf("%s.%s has no toml tag", rt.Name(), f.Name)
			}
			if strings.TrimSpace(f.Tag.Get("comment")) == "" {
				t.Errorf("%s.%s has no comment tag", rt.Name(), f.Name)
			}
			if isSection(f) {
				check(f.Type)
			}
		}
	}
	check(reflect.TypeFor[Config]())
}

func TestLoadOverrides(t *testing.T) {
	c, err := Load(writeFile(t, `
hostname = "pop.example.net"
data_dir = "/var/lib/postino"
log_format = "json"

[pop3]
listen = ""
plaintext_auth = "never"
autologout = "30m"
login_delay = "5m"
expire = "30"

[delivery]
max_message_size = 1048576

[smtp]
max_message_size = "10MB"
local_domains = ["example.net", "example.org"]
lmtp = "unix:/run/postino/lmtp.sock"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Hostname = "pop.example.net"
	want.DataDir = "/var/lib/postino"
	want.LogFormat = "json"
	want.POP3.Listen = ""
	want.POP3.PlaintextAuth = pop3.PlaintextNever
	want.POP3.Autologout = D(30 * time.Minute)
	want.POP3.LoginDelay = D(5 * time.Minute)
	want.POP3.Expire = "30"
	want.Delivery.MaxMessageSize = MiB
	want.SMTP.MaxMessageSize = 10_000_000
	want.SMTP.LocalDomains = []string{"example.net", "example.org"}
	want.SMTP.LMTP = "unix:/run/postino/lmtp.sock"
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got  %+v\nwant %+v", c, want)
	}
}

func TestLoadUnknownKeys(t *testing.T) {
	tests := []struct {
		name, toml string
		want       []string
	}{
		{"top level", "hostnme = \"x\"\n", []string{`unknown key "hostnme"`, `did you mean "hostname"?`}},
		{"in section", "[pop3]\nlisen = \"127.0.0.1:110\"\n", []string{`unknown key "pop3.lisen"`, `did you mean "pop3.listen"?`}},
		{"unknown section", "[imap]\nlisten = \"x\"\nport = 1\n", []string{`unknown key "imap"`}},
		{"wrong case", "[pop3]\nListen = \"127.0.0.1:110\"\n", []string{`unknown key "pop3.Listen"`, `did you mean "pop3.listen"?`}},
		{"dotted", "smtp.max_recipent = 5\n", []string{`"smtp.max_recipent"`, `"smtp.max_recipients"`}},
		{"several", "a = 1\n[tls]\nb = 2\n", []string{`unknown keys "a", "tls.b"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, tt.toml)
			_, err := Load(p)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			msg := err.Error()
			for _, w := range append(tt.want, p) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			if tt.name == "unknown section" && (strings.Contains(msg, "imap.listen") || strings.Contains(msg, "did you mean")) {
				t.Errorf("error %q repeats keys inside the unknown table or makes a far-fetched suggestion", msg)
			}
		})
	}
}

func TestLoadDecodeErrors(t *testing.T) {
	tests := []struct {
		name, toml string
		want       []string
	}{
		{"syntax", "hostname = \n", []string{":1:"}},
		{"bad duration", "[pop3]\nautologout = \"10 minutes\"\n", []string{":2:", "pop3.autologout", `invalid duration "10 minutes"`}},
		{"bare number duration", "[pop3]\nautologout = 600\n", []string{"pop3.autologout", "missing unit"}},
		{"bad size", "[delivery]\nmax_message_size = \"50XB\"\n", []string{"delivery.max_message_size", `unknown unit "XB"`}},
		{"wrong type", "[pop3]\nmax_line = \"big\"\n", []string{":2: pop3.max_line: incompatible types"}},
		{"section as value", "pop3 = 5\n", []string{":1: pop3: "}},
		{"table as duration", "[pop3.autologout]\nx = 1\n", []string{"pop3.autologout"}},
		{"duplicate key", "log_level = \"info\"\nlog_level = \"debug\"\n", []string{"log_level"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, tt.toml)
			_, err := Load(p)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range append(tt.want, p) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.toml")
	_, err := Load(p)
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), p) {
		t.Fatalf("Load(missing) = %v", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		want   string // substring of the error; "" means valid
	}{
		{"hostname empty", func(c *Config) { c.Hostname = "" }, "hostname: must not be empty"},
		{"hostname space", func(c *Config) { c.Hostname = "a b" }, "hostname: invalid host name"},
		{"data_dir empty", func(c *Config) { c.DataDir = "" }, "data_dir: must not be empty"},
		{"log_level", func(c *Config) { c.LogLevel = "verbose" }, "log_level: must be one of debug, info, warn, error"},
		{"log_format", func(c *Config) { c.LogFormat = "xml" }, "log_format: must be one of text, json"},
		{"tls.min_version", func(c *Config) { c.TLS.MinVersion = "1.1" }, "tls.min_version: must be one of 1.2, 1.3"},
		{"tls.min_version 1.3", func(c *Config) { c.TLS.MinVersion = "1.3" }, ""},
		{"tls cert without key", func(c *Config) { c.TLS.Cert = "c.pem" }, "tls.key: must be set"},
		{"tls key without cert", func(c *Config) { c.TLS.Key = "k.pem" }, "tls.cert: must be set"},
		{"tls both", func(c *Config) { c.TLS.Cert, c.TLS.Key = "c.pem", "k.pem" }, ""},
		{"pop3.listen no port", func(c *Config) { c.POP3.Listen = "127.0.0.1" }, "pop3.listen: invalid address"},
		{"pop3.listen bad port", func(c *Config) { c.POP3.Listen = "127.0.0.1:pop3" }, "pop3.listen: invalid address"},
		{"pop3.listen port range", func(c *Config) { c.POP3.Listen = ":70000" }, "pop3.listen: invalid address"},
		{"pop3.listen any host", func(c *Config) { c.POP3.Listen = ":110" }, ""},
		{"pop3.listen ipv6", func(c *Config) { c.POP3.Listen = "[::1]:110" }, ""},
		{"pop3.listen empty", func(c *Config) { c.POP3.Listen = "" }, ""},
		{"pop3.listen_tls", func(c *Config) { c.POP3.ListenTLS = "::1:995" }, "pop3.listen_tls: invalid address"},
		{"pop3.plaintext_auth", func(c *Config) { c.POP3.PlaintextAuth = pop3.PlaintextPolicy(7) }, "pop3.plaintext_auth: must be one of never, loopback, always"},
		{"pop3.plaintext_auth always", func(c *Config) { c.POP3.PlaintextAuth = pop3.PlaintextAlways }, ""},
		{"pop3.autologout", func(c *Config) { c.POP3.Autologout = D(500 * time.Millisecond) }, "pop3.autologout: must be at least 1s"},
		{"pop3.autologout short ok", func(c *Config) { c.POP3.Autologout = D(time.Second) }, ""},
		{"pop3.max_line low", func(c *Config) { c.POP3.MaxLine = 254 }, "pop3.max_line: must be between 255 and"},
		{"pop3.max_line min", func(c *Config) { c.POP3.MaxLine = 255 }, ""},
		{"pop3.max_line high", func(c *Config) { c.POP3.MaxLine = 1 << 30 }, "pop3.max_line: must be between"},
		{"pop3.max_bad_commands", func(c *Config) { c.POP3.MaxBadCommands = 0 }, "pop3.max_bad_commands: must be at least 1"},
		{"pop3.write_timeout", func(c *Config) { c.POP3.WriteTimeout = D(0) }, "pop3.write_timeout: must be at least 1s"},
		{"pop3.max_connections", func(c *Config) { c.POP3.MaxConnections = 0 }, "pop3.max_connections: must be at least 1"},
		{"pop3.max_connections_per_ip", func(c *Config) { c.POP3.MaxConnectionsPerIP = -1 }, "pop3.max_connections_per_ip: must be at least 1"},
		{"pop3.login_delay negative", func(c *Config) { c.POP3.LoginDelay = D(-time.Second) }, "pop3.login_delay: must not be negative"},
		{"pop3.login_delay fraction", func(c *Config) { c.POP3.LoginDelay = D(1500 * time.Millisecond) }, "pop3.login_delay: must be a whole number of seconds"},
		{"pop3.expire word", func(c *Config) { c.POP3.Expire = "never" }, "pop3.expire: must be NEVER or a whole number of days"},
		{"pop3.expire negative", func(c *Config) { c.POP3.Expire = "-1" }, "pop3.expire"},
		{"pop3.expire empty", func(c *Config) { c.POP3.Expire = "" }, "pop3.expire"},
		{"fetch.state unknown", func(c *Config) { c.Fetch.State = "redis" }, "fetch.state: "},
		{"fetch.state postgres without the database", func(c *Config) { c.Fetch.State = FetchStatePostgres }, "fetch.state: \"postgres\" needs storage.backend"},
		{"pop3.dovecot_uidl_format md5", func(c *Config) { c.POP3.DovecotUIDLFormat = "%m" }, "pop3.dovecot_uidl_format: maildir: invalid Dovecot pop3_uidl_format"},
		{"pop3.dovecot_uidl_format unknown", func(c *Config) { c.POP3.DovecotUIDLFormat = "%08Xn" }, "pop3.dovecot_uidl_format: "},
		{"pop3.dovecot_uidl_format constant", func(c *Config) { c.POP3.DovecotUIDLFormat = "uidl" }, "pop3.dovecot_uidl_format: "},
		{"pop3.dovecot_uidl_format space", func(c *Config) { c.POP3.DovecotUIDLFormat = "%u %v" }, "pop3.dovecot_uidl_format: "},
		{"pop3.dovecot_uidl_format v.u", func(c *Config) { c.POP3.DovecotUIDLFormat = "%v.%u" }, ""},
		{"pop3.dovecot_uidl_format f", func(c *Config) { c.POP3.DovecotUIDLFormat = "%f" }, ""},
		{"pop3.dovecot_uidl_format off", func(c *Config) { c.POP3.DovecotUIDLFormat = "" }, ""},
		{"pop3.expire days", func(c *Config) { c.POP3.Expire = "0" }, ""},
		{"users.cache_ttl", func(c *Config) { c.Users.CacheTTL = D(-time.Second) }, "users.cache_ttl: must not be negative"},
		{"users.cache_ttl zero", func(c *Config) { c.Users.CacheTTL = D(0) }, ""},
		{"users.default_quota_messages", func(c *Config) { c.Users.DefaultQuotaMessages = -1 }, "users.default_quota_messages: must be at least 0"},
		{"delivery.max_message_size", func(c *Config) { c.Delivery.MaxMessageSize = 0 }, "delivery.max_message_size: must be greater than zero"},
		{"smtp.listen", func(c *Config) { c.SMTP.Listen = "localhost" }, "smtp.listen: invalid address"},
		{"smtp.submission", func(c *Config) { c.SMTP.Submission = "x:y:z" }, "smtp.submission: invalid address"},
		{"smtp.submissions", func(c *Config) { c.SMTP.Submissions = "a b:1" }, "smtp.submissions: invalid address"},
		{"smtp.lmtp tcp", func(c *Config) { c.SMTP.LMTP = "127.0.0.1:24" }, ""},
		{"smtp.lmtp path", func(c *Config) { c.SMTP.LMTP = "/run/lmtp" }, ""},
		{"smtp.lmtp unix", func(c *Config) { c.SMTP.LMTP = "unix:lmtp.sock" }, ""},
		{"smtp.lmtp unix empty", func(c *Config) { c.SMTP.LMTP = "unix:" }, "smtp.lmtp: unix socket path is empty"},
		{"smtp.lmtp bad", func(c *Config) { c.SMTP.LMTP = "lmtp.sock" }, "smtp.lmtp: invalid address"},
		{"smtp.max_recipients", func(c *Config) { c.SMTP.MaxRecipients = 0 }, "smtp.max_recipients: must be at least 1"},
		{"smtp.max_message_size", func(c *Config) { c.SMTP.MaxMessageSize = -1 }, "smtp.max_message_size: must be greater than zero"},
		{"smtp.command_timeout", func(c *Config) { c.SMTP.CommandTimeout = D(time.Millisecond) }, "smtp.command_timeout: must be at least 1s"},
		{"smtp.data_timeout", func(c *Config) { c.SMTP.DataTimeout = D(0) }, "smtp.data_timeout: must be at least 1s"},
		{"smtp.max_errors", func(c *Config) { c.SMTP.MaxErrors = 0 }, "smtp.max_errors: must be at least 1"},
		{"smtp.max_connections", func(c *Config) { c.SMTP.MaxConnections = 0 }, "smtp.max_connections: must be at least 1"},
		{"smtp.max_connections_per_ip", func(c *Config) { c.SMTP.MaxConnectionsPerIP = 0 }, "smtp.max_connections_per_ip: must be at least 1"},
		{"smtp.trusted_networks ok", func(c *Config) {
			c.SMTP.TrustedNetworks = []string{"192.0.2.0/24", "2001:db8::/32", "198.51.100.7", "::1", "0.0.0.0/0"}
		}, ""},
		{"smtp.trusted_networks empty list", func(c *Config) { c.SMTP.TrustedNetworks = nil }, ""},
		{"smtp.trusted_networks garbage", func(c *Config) { c.SMTP.TrustedNetworks = []string{"127.0.0.0/8", "localhost"} }, `smtp.trusted_networks[1]: invalid network "localhost"`},
		{"smtp.trusted_networks bad length", func(c *Config) { c.SMTP.TrustedNetworks = []string{"10.0.0.0/33"} }, `smtp.trusted_networks[0]: invalid network "10.0.0.0/33"`},
		{"smtp.trusted_networks empty", func(c *Config) { c.SMTP.TrustedNetworks = []string{""} }, `smtp.trusted_networks[0]: invalid network ""`},
		{"smtp.trusted_networks host bits", func(c *Config) { c.SMTP.TrustedNetworks = []string{"10.1.2.3/8"} }, `smtp.trusted_networks[0]: network "10.1.2.3/8" has host bits set (did you mean "10.0.0.0/8"?)`},
		{"smtp.trusted_networks mapped", func(c *Config) { c.SMTP.TrustedNetworks = []string{"::ffff:10.0.0.0/104"} }, "smtp.trusted_networks[0]: network \"::ffff:10.0.0.0/104\" is IPv4-mapped"},
		{"smtp.trusted_networks zone", func(c *Config) { c.SMTP.TrustedNetworks = []string{"fe80::1%eth0"} }, "must not have a zone"},
		{"smtp.local_domains", func(c *Config) { c.SMTP.LocalDomains = []string{"example.org", "bad domain"} }, "smtp.local_domains[1]: invalid domain"},
		{"smtp.local_domains empty", func(c *Config) { c.SMTP.LocalDomains = []string{""} }, "smtp.local_domains[0]: empty domain"},
		{"smtp.local_domains ok", func(c *Config) { c.SMTP.LocalDomains = []string{"example.org", "mail.example.net"} }, ""},
		{"smtp.plus_separator letter", func(c *Config) { c.SMTP.PlusSeparator = "x" }, "smtp.plus_separator: must be empty or a single punctuation character"},
		{"smtp.plus_separator long", func(c *Config) { c.SMTP.PlusSeparator = "+-" }, "smtp.plus_separator"},
		{"smtp.plus_separator at", func(c *Config) { c.SMTP.PlusSeparator = "@" }, "smtp.plus_separator"},
		{"smtp.plus_separator dash", func(c *Config) { c.SMTP.PlusSeparator = "-" }, ""},
		{"smtp.plus_separator empty", func(c *Config) { c.SMTP.PlusSeparator = "" }, ""},
		{"smtp.postmaster no domain", func(c *Config) { c.SMTP.Postmaster = "root" }, "smtp.postmaster: must be empty or an address"},
		{"smtp.postmaster bad domain", func(c *Config) { c.SMTP.Postmaster = "root@bad domain" }, "smtp.postmaster"},
		{"smtp.postmaster ok", func(c *Config) { c.SMTP.Postmaster = "admin@example.org" }, ""},
		{"duplicate listener", func(c *Config) { c.SMTP.Listen = c.POP3.Listen }, `smtp.listen: address "127.0.0.1:1110" is already used by pop3.listen`},
		{"port zero may repeat", func(c *Config) { c.POP3.Listen, c.POP3.ListenTLS = "127.0.0.1:0", "127.0.0.1:0" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.modify(c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tt.want)
			}
			// Exactly one problem was introduced, so exactly one is reported.
			if n := len(c.validate()); n != 1 {
				t.Errorf("got %d problems, want 1: %v", n, err)
			}
		})
	}
}

func TestValidateReportsAll(t *testing.T) {
	c := Default()
	c.LogLevel = "loud"
	c.POP3.PlaintextAuth = pop3.PlaintextPolicy(-1)
	c.SMTP.MaxErrors = 0
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil")
	}
	for _, k := range []string{"log_level:", "pop3.plaintext_auth:", "smtp.max_errors:"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("error %q does not mention %s", err, k)
		}
	}
	if n := len(strings.Split(err.Error(), "\n")); n != 3 {
		t.Errorf("error has %d lines, want 3:\n%v", n, err)
	}
}

func TestLoadValidationErrorsNameFileAndKey(t *testing.T) {
	p := writeFile(t, "[pop3]\nmax_bad_commands = 0\nmax_line = 10\n")
	_, err := Load(p)
	if err == nil {
		t.Fatal("Load succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 error lines, got %q", err)
	}
	for i, key := range []string{"pop3.max_line: must be between 255", "pop3.max_bad_commands: must be at least 1"} {
		if !strings.HasPrefix(lines[i], "config "+p+": ") || !strings.Contains(lines[i], key) {
			t.Errorf("line %d = %q, want file name and %q", i, lines[i], key)
		}
	}
}

// TestLoadPlaintextAuthWords checks that plaintext_auth decodes into the
// one policy type the POP3 and SMTP servers use, and that an unknown word
// is refused with the file, line and key.
func TestLoadPlaintextAuthWords(t *testing.T) {
	for word, want := range map[string]pop3.PlaintextPolicy{"never": pop3.PlaintextNever, "loopback": pop3.PlaintextLoopback, "always": pop3.PlaintextAlways} {
		c, err := Load(writeFile(t, "[pop3]\nplaintext_auth = \""+word+"\"\n[smtp]\nplaintext_auth = \""+word+"\"\n"))
		if err != nil {
			t.Fatalf("%s: %v", word, err)
		}
		if c.POP3.PlaintextAuth != want || c.SMTP.PlaintextAuth != want {
			t.Errorf("%s: got pop3 %v, smtp %v", word, c.POP3.PlaintextAuth, c.SMTP.PlaintextAuth)
		}
	}
	for _, sect := range []string{"pop3", "smtp"} {
		p := writeFile(t, "["+sect+"]\nplaintext_auth = \"yes\"\n")
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), "config "+p+":2: "+sect+".plaintext_auth") || !strings.Contains(err.Error(), "must be one of never, loopback, always") {
			t.Errorf("%s: Load = %v", sect, err)
		}
	}
}

func TestPaths(t *testing.T) {
	c := Default()
	c.DataDir = "/srv/postino"
	if got := c.UsersFile(); got != "/srv/postino/users.passwd" {
		t.Errorf("UsersFile() = %q", got)
	}
	if got := c.MailDir(); got != "/srv/postino/mail" {
		t.Errorf("MailDir() = %q", got)
	}
	if got := c.TLSDir(); got != "/srv/postino/tls" {
		t.Errorf("TLSDir() = %q", got)
	}
	if got := c.AliasesFile(); got != "/srv/postino/aliases" {
		t.Errorf("AliasesFile() = %q", got)
	}
	c.Users.File = "db/users"
	c.SMTP.AliasesFile = "/etc/postino/aliases"
	c.TLS.Cert, c.TLS.Key = "certs/fullchain.pem", "/etc/ssl/key.pem"
	if got := c.UsersFile(); got != "/srv/postino/db/users" {
		t.Errorf("UsersFile() = %q", got)
	}
	if got := c.AliasesFile(); got != "/etc/postino/aliases" {
		t.Errorf("AliasesFile() = %q", got)
	}
	if cert, key := c.TLSFiles(); cert != "/srv/postino/certs/fullchain.pem" || key != "/etc/ssl/key.pem" {
		t.Errorf("TLSFiles() = %q, %q", cert, key)
	}
	c.TLS.Cert, c.TLS.Key = "", ""
	if cert, key := c.TLSFiles(); cert != "" || key != "" {
		t.Errorf("TLSFiles() = %q, %q, want empty", cert, key)
	}
	c.DataDir = "data"
	if got := c.MailDir(); got != filepath.Join("data", "mail") {
		t.Errorf("MailDir() = %q", got)
	}
}

func TestSlogLevel(t *testing.T) {
	for _, lv := range []string{"debug", "info", "warn", "error"} {
		c := Default()
		c.LogLevel = lv
		if got := strings.ToLower(c.SlogLevel().String()); got != lv {
			t.Errorf("SlogLevel(%s) = %s", lv, got)
		}
	}
}

// TestTrustedNetworks: loopback is trusted by default, the list can be
// replaced or emptied, and single addresses are one-address networks.
func TestTrustedNetworks(t *testing.T) {
	d := Default()
	if d.SMTP.MaxConnectionsPerIP != 50 {
		t.Errorf("smtp.max_connections_per_ip default %d, want 50 (Postfix's smtpd_client_connection_count_limit)", d.SMTP.MaxConnectionsPerIP)
	}
	got := d.SMTP.TrustedNetworkPrefixes()
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("default trusted networks %v, want %v", got, want)
	}
	c, err := Load(writeFile(t, "[smtp]\ntrusted_networks = [\"192.0.2.0/24\", \"198.51.100.7\", \"2001:db8::/32\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	got = c.SMTP.TrustedNetworkPrefixes()
	want = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32"), netip.MustParsePrefix("2001:db8::/32")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("trusted networks %v, want %v", got, want)
	}
	c, err = Load(writeFile(t, "[smtp]\ntrusted_networks = []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.SMTP.TrustedNetworkPrefixes(); len(got) != 0 {
		t.Errorf("emptied list gives %v", got)
	}
	if _, err := Load(writeFile(t, "[smtp]\ntrusted_networks = [\"10.0.0.1/8\"]\n")); err == nil || !strings.Contains(err.Error(), "smtp.trusted_networks[0]") {
		t.Errorf("host bits set: %v", err)
	}
}

func TestDefaultQuotaKeys(t *testing.T) {
	c, err := Load(writeFile(t, "[users]\ndefault_quota = \"1GiB\"\ndefault_quota_messages = 5000\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Users.DefaultQuota != GiB || c.Users.DefaultQuotaMessages != 5000 {
		t.Fatalf("users = %+v", c.Users)
	}
	if d := Default(); d.Users.DefaultQuota != 0 || d.Users.DefaultQuotaMessages != 0 {
		t.Fatalf("default quotas %d, %d; want none", d.Users.DefaultQuota, d.Users.DefaultQuotaMessages)
	}
}

// TestAdminAndRetentionKeys: admin.listen must name a host (an unauthenticated
// listener on every interface is refused) and may be empty; pop3.vault_days
// and pop3.sweep_interval have bounds; pop3.expire reads as days or never.
func TestAdminAndRetentionKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want string
	}{
		{"default", func(*Config) {}, ""},
		{"disabled", func(c *Config) { c.Admin.Listen = "" }, ""},
		{"every interface", func(c *Config) { c.Admin.Listen = ":9110" }, "admin.listen: must name an address"},
		{"bad address", func(c *Config) { c.Admin.Listen = "localhost" }, "admin.listen: "},
		{"same as pop3", func(c *Config) { c.Admin.Listen = c.POP3.Listen }, "admin.listen: address"},
		{"negative vault", func(c *Config) { c.POP3.VaultDays = -1 }, "pop3.vault_days: must be between 0 and"},
		{"huge vault", func(c *Config) { c.POP3.VaultDays = 100000 }, "pop3.vault_days: must be between 0 and"},
		{"fast sweep", func(c *Config) { c.POP3.SweepInterval = D(time.Second) }, "pop3.sweep_interval: must be at least"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.set(c)
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
		})
	}
	c := Default()
	if c.Admin.Listen != DefaultAdminListen || c.POP3.VaultDays != 0 {
		t.Errorf("defaults: admin.listen %q, vault_days %d", c.Admin.Listen, c.POP3.VaultDays)
	}
	for in, want := range map[string]int{"NEVER": -1, "0": 0, "30": 30} {
		c.POP3.Expire = in
		if got := c.POP3.ExpireDays(); got != want {
			t.Errorf("ExpireDays(%q) = %d, want %d", in, got, want)
		}
	}
}
