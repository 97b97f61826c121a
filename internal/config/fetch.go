package config

import (
	"bufio"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
)

// Accepted values of FetchAccount.Security.
const (
	// FetchSecurityTLS is POP3 over implicit TLS (RFC 8314, port 995).
	FetchSecurityTLS = "tls"
	// FetchSecurityStartTLS is POP3 with STLS (RFC 2595, port 110); the
	// fetch fails if the server does not offer it.
	FetchSecurityStartTLS = "starttls"
	// FetchSecurityNone is POP3 in the clear; it requires allow_plaintext.
	FetchSecurityNone = "none"
)

// Accepted values of FetchConfig.State.
const (
	// FetchStateFile keeps each account's state in files of state_dir.
	FetchStateFile = "file"
	// FetchStatePostgres keeps it in PostgreSQL, shared by the nodes.
	FetchStatePostgres = "postgres"
)

// Accepted values of FetchAccount.Auth.
var FetchAuthMethods = []string{"auto", "scram-sha-256", "plain", "login", "user", "apop"}

// FetchConfig is the [fetch] section: the remote mailboxes `postino fetch`
// downloads, each a [[fetch.account]] table.
type FetchConfig struct {
	StateDir      string         `toml:"state_dir" comment:"Directory of the per-account state files (UIDLs seen and delivered); empty means DATA/fetch."`
	State         string         `toml:"state" comment:"Where the accounts' state is kept: \"file\" (state files in state_dir) or \"postgres\" (in the database of storage.postgres_dsn, with storage.backend = \"postgres\": 'postino fetch' on several nodes never fetches one account at once, an account is leased for storage.lock_ttl and renewed while fetched, and every message is delivered once across nodes)."`
	MetricsListen string         `toml:"metrics_listen" comment:"Address (host:port) where 'postino fetch --daemon' serves its Prometheus metrics (postino_fetch_runs_total) at /metrics, with /healthz and /readyz, as admin.listen does for the server. Empty: none."`
	Accounts      []FetchAccount `toml:"account" comment:"Remote POP3 accounts, each a [[fetch.account]] table; none by default. An example with every key follows."`
}

// FetchAccount is one [[fetch.account]] table. Every zero value is a safe
// default: TLS, automatic authentication, messages left on the server.
type FetchAccount struct {
	Name            string   `toml:"name" example:"work" comment:"Name of the account, used on the command line and for its state file: letters, digits, '.', '_' and '-'."`
	Server          string   `toml:"server" example:"pop.example.org" comment:"Host name or address of the POP3 server."`
	Port            int      `toml:"port" example:"995" comment:"Server port; 0 means 995 for tls and 110 otherwise."`
	Security        string   `toml:"security" example:"tls" comment:"tls (implicit TLS), starttls (STLS required) or none (cleartext, only with allow_plaintext); empty means tls."`
	AllowPlaintext  bool     `toml:"allow_plaintext" comment:"Allow security = \"none\": the password and the mail cross the network unencrypted."`
	Insecure        bool     `toml:"insecure" comment:"Accept any server certificate. Prefer fingerprint for a self-signed certificate."`
	Fingerprint     string   `toml:"fingerprint" comment:"SHA-256 fingerprint of the server's certificate, as postino serve, mpop and openssl print it (AB:CD:...) or as plain hex; when set, exactly this certificate is accepted instead of one verified against the system roots."`
	CAFile          string   `toml:"ca_file" comment:"PEM file of extra certificate authorities trusted besides the system roots."`
	User            string   `toml:"user" example:"alice@example.org" comment:"User name on the server."`
	Password        string   `toml:"password" comment:"Password. Prefer password_command; when both are empty the password is asked for on the terminal."`
	PasswordCommand string   `toml:"password_command" comment:"Shell command whose first output line is the password, e.g. \"pass show mail/work\"."`
	Auth            string   `toml:"auth" example:"auto" comment:"Authentication: auto (SCRAM-SHA-256 when offered, then APOP without TLS, SASL PLAIN, USER/PASS, LOGIN), or one of scram-sha-256, plain, login, user, apop; empty means auto."`
	Destination     string   `toml:"destination" example:"maildir:~/Maildir" comment:"Where messages go: maildir:DIR, mbox:FILE, mda:COMMAND (each message on standard input; exit 0 is success) or local:ADDRESS (a postino mailbox in data_dir)."`
	MDACheck        string   `toml:"mda_check" comment:"For mda destinations: a shell command that exits 0 if the message named by $POSTINO_FETCH_ID was already delivered and 1 if not, used after an interruption to avoid a duplicate. Without it, such a message is delivered again (never lost)."`
	Delete          bool     `toml:"delete" comment:"Delete messages from the server once they are safely delivered. By default they are left on the server and only new ones (by UIDL) are downloaded."`
	DeleteAfterDays int      `toml:"delete_after_days" comment:"When messages are left on the server, delete them this many days after they were first seen; 0 keeps them forever."`
	MaxSize         Size     `toml:"max_size" comment:"Skip (leave on the server) messages larger than this; 0 means no limit."`
	MaxMessages     int      `toml:"max_messages" comment:"Download at most this many messages per run; 0 means no limit."`
	Timeout         Duration `toml:"timeout" example:"60s" comment:"Time allowed for connecting and for each command; 0s means 60s."`
}

// isArrayTable reports whether f is a slice of tables ([[name]]).
func isArrayTable(f reflect.StructField) bool {
	return f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct
}

// arrayTableKeys lists the dotted keys valid inside arrays of tables, such
// as "fetch.account.server".
func arrayTableKeys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for f := range fields(t) {
			k := prefix + f.Tag.Get("toml")
			switch {
			case isSection(f):
				walk(f.Type, k+".")
			case isArrayTable(f):
				for g := range fields(f.Type.Elem()) {
					keys = append(keys, k+"."+g.Tag.Get("toml"))
				}
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return keys
}

// writeArrayTableExample writes an array of tables as a commented-out
// example table: "# name = []" (no tables by default) and then every key
// of one table, with its comment and example or zero value.
func writeArrayTableExample(w *bufio.Writer, f reflect.StructField, prefix string) {
	name := prefix + f.Tag.Get("toml")
	w.WriteString("\n")
	writeComment(w, f.Tag.Get("comment"))
	w.WriteString("# " + f.Tag.Get("toml") + " = []\n#\n")
	w.WriteString("# [[" + name + "]]\n")
	zero := reflect.New(f.Type.Elem()).Elem()
	for g := range fields(f.Type.Elem()) {
		line := "##"
		for _, word := range strings.Fields(g.Tag.Get("comment")) {
			if len(line) > 2 && len(line)+1+len(word) > commentWidth {
				w.WriteString(line + "\n")
				line = "##"
			}
			line += " " + word
		}
		w.WriteString(line + "\n")
		fv := zero.FieldByIndex(g.Index)
		if ex, ok := g.Tag.Lookup("example"); ok {
			fv = reflect.ValueOf(ex)
			if g.Type.Kind() == reflect.Int {
				var n int
				fmt.Sscan(ex, &n)
				fv = reflect.ValueOf(n)
			}
		}
		val, err := tomlValue(fv)
		if err != nil {
			val = `""`
		}
		w.WriteString("# " + g.Tag.Get("toml") + " = " + val + "\n")
	}
}

var (
	fetchNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	hexColonRE  = regexp.MustCompile(`^[0-9A-Fa-f:]+$`)
)

// validateFetch checks the [fetch] section.
func (c *Config) validateFetch(v *validator) {
	v.oneOf("fetch.state", c.Fetch.State, FetchStateFile, FetchStatePostgres)
	if c.Fetch.State == FetchStatePostgres && !c.UsesPostgres() {
		v.add("fetch.state", "\"postgres\" needs storage.backend = \"postgres\" (the database of storage.postgres_dsn)")
	}
	seen := map[string]int{}
	for i, a := range c.Fetch.Accounts {
		key := func(k string) string { return fmt.Sprintf("fetch.account[%d].%s", i, k) }
		if !fetchNameRE.MatchString(a.Name) {
			v.add(key("name"), "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit (got %q)", a.Name)
		} else if j, dup := seen[a.Name]; dup {
			v.add(key("name"), "%q is already the name of fetch.account[%d]", a.Name, j)
		} else {
			seen[a.Name] = i
		}
		if a.Server == "" || strings.ContainsAny(a.Server, " \t\r\n/") {
			v.add(key("server"), "must be a host name or address (got %q)", a.Server)
		}
		v.intRange(key("port"), a.Port, 0, 65535)
		v.oneOf(key("security"), a.Security, "", FetchSecurityTLS, FetchSecurityStartTLS, FetchSecurityNone)
		if a.Security == FetchSecurityNone && !a.AllowPlaintext {
			v.add(key("security"), "\"none\" sends the password in the clear; set allow_plaintext = true to allow it")
		}
		if fp := a.Fingerprint; fp != "" {
			if h := strings.ReplaceAll(fp, ":", ""); !hexColonRE.MatchString(fp) || len(h) != 64 {
				v.add(key("fingerprint"), "must be a SHA-256 fingerprint: 64 hex digits, colons allowed (got %q)", fp)
			}
		}
		if a.Password != "" && a.PasswordCommand != "" {
			v.add(key("password"), "set password or password_command, not both")
		}
		if a.Auth != "" {
			v.oneOf(key("auth"), a.Auth, FetchAuthMethods...)
		}
		if _, err := ParseFetchDestination(a.Destination); err != nil {
			v.add(key("destination"), "%s", strings.TrimPrefix(err.Error(), ErrFetchDestination.Error()+": "))
		}
		if a.DeleteAfterDays < 0 {
			v.add(key("delete_after_days"), "must not be negative (got %d)", a.DeleteAfterDays)
		}
		if a.MaxSize < 0 {
			v.add(key("max_size"), "must not be negative (got %s)", a.MaxSize)
		}
		if a.MaxMessages < 0 {
			v.add(key("max_messages"), "must not be negative (got %d)", a.MaxMessages)
		}
		if a.Timeout.Duration < 0 {
			v.add(key("timeout"), "must not be negative (got %s)", a.Timeout)
		}
	}
}

// Kinds of fetch destination, the word before the colon of
// FetchAccount.Destination.
const (
	// FetchDestMaildir is "maildir:DIR", a Maildir folder.
	FetchDestMaildir = "maildir"
	// FetchDestMbox is "mbox:FILE", an mbox file.
	FetchDestMbox = "mbox"
	// FetchDestMDA is "mda:COMMAND", a delivery agent run per message.
	FetchDestMDA = "mda"
	// FetchDestLocal is "local:ADDRESS", a postino mailbox in data_dir.
	FetchDestLocal = "local"
)

// FetchDestination is a parsed fetch destination.
type FetchDestination struct {
	// Kind is one of FetchDestMaildir, FetchDestMbox, FetchDestMDA and
	// FetchDestLocal.
	Kind string
	// Arg is what follows the colon: the folder, file, command or
	// address, as written (a leading "~/" is expanded by the user).
	Arg string
}

// String returns the destination as written in the configuration.
func (d FetchDestination) String() string { return d.Kind + ":" + d.Arg }

// ErrFetchDestination wraps every error of ParseFetchDestination.
var ErrFetchDestination = errors.New("invalid fetch destination")

// ParseFetchDestination parses a fetch destination: "maildir:DIR",
// "mbox:FILE", "mda:COMMAND" or "local:USER@DOMAIN". It is the only parser
// of this syntax: the configuration, `postino fetch --to` and the fetch
// package all use it.
func ParseFetchDestination(s string) (FetchDestination, error) {
	kind, arg, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(arg) == "" {
		return FetchDestination{}, fmt.Errorf("%w: must be maildir:DIR, mbox:FILE, mda:COMMAND or local:ADDRESS (got %q)", ErrFetchDestination, s)
	}
	switch kind {
	case FetchDestMaildir, FetchDestMbox, FetchDestMDA:
	case FetchDestLocal:
		local, domain, ok := strings.Cut(arg, "@")
		if !ok || local == "" || domain == "" || strings.ContainsAny(arg, " \t\r\n<>") {
			return FetchDestination{}, fmt.Errorf("%w: local destination %q: want local:USER@DOMAIN", ErrFetchDestination, s)
		}
	default:
		return FetchDestination{}, fmt.Errorf("%w: unknown destination type %q: want maildir, mbox, mda or local", ErrFetchDestination, kind)
	}
	return FetchDestination{Kind: kind, Arg: arg}, nil
}

// IsLocalFetchDestination reports whether s is a valid "local:ADDRESS"
// destination, one that writes in the data folder.
func IsLocalFetchDestination(s string) bool {
	d, err := ParseFetchDestination(s)
	return err == nil && d.Kind == FetchDestLocal
}
