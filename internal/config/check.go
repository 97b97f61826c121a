package config

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/postino-mail/postino/internal/aliases"
	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/tlsutil"
)

// Severity says whether a Finding makes the configuration unusable.
type Severity int

// The severities of a Finding.
const (
	// SeverityError is a problem that stops postino from working as
	// configured; "postino config check" exits with EX_CONFIG.
	SeverityError Severity = iota
	// SeverityWarning deserves attention but does not change the exit code.
	SeverityWarning
)

// String returns "error" or "warning".
func (s Severity) String() string {
	if s == SeverityWarning {
		return "warning"
	}
	return "error"
}

// Finding is one problem reported by Check.
type Finding struct {
	Severity Severity
	File     string // the file concerned; "" when none
	Line     int    // 1-based line in File; 0 when unknown
	Key      string // the configuration key concerned; "" when none
	Msg      string
}

// String formats f as "error: FILE:LINE: KEY: message", leaving out what
// is unknown.
func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Severity.String() + ": ")
	if f.File != "" {
		b.WriteString(f.File)
		if f.Line > 0 {
			b.WriteString(":" + strconv.Itoa(f.Line))
		}
		b.WriteString(": ")
	}
	if f.Key != "" {
		b.WriteString(f.Key + ": ")
	}
	b.WriteString(f.Msg)
	return b.String()
}

// CheckOptions adjusts Check.
type CheckOptions struct {
	// DataDir, when not empty, replaces data_dir (the --data flag).
	DataDir string
	// Now is the time certificates are checked against; zero means now.
	Now time.Time
}

// CheckResult is what Check found.
type CheckResult struct {
	// Config is the configuration as far as it could be decoded: keys
	// that could not be decoded keep their defaults. It is nil when the
	// file cannot be read or is not TOML.
	Config   *Config
	Findings []Finding
}

// Errors returns the number of findings of SeverityError.
func (r *CheckResult) Errors() int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == SeverityError {
			n++
		}
	}
	return n
}

// Warnings returns the number of findings of SeverityWarning.
func (r *CheckResult) Warnings() int { return len(r.Findings) - r.Errors() }

// checker accumulates findings while Check runs.
type checker struct {
	path  string
	lines map[string]int // dotted key -> line of its first appearance
	res   *CheckResult
}

func (k *checker) add(sev Severity, file string, line int, key, format string, args ...any) {
	k.res.Findings = append(k.res.Findings, Finding{Severity: sev, File: file, Line: line, Key: key, Msg: fmt.Sprintf(format, args...)})
}

// conf reports a problem of the configuration file at the line of key.
func (k *checker) conf(sev Severity, key, format string, args ...any) {
	k.add(sev, k.path, k.line(key), key, format, args...)
}

// line returns the line of key in the configuration file, trying its
// parents ("smtp.local_domains[2]" -> "smtp.local_domains" -> "smtp").
func (k *checker) line(key string) int {
	for key != "" {
		if n, ok := k.lines[key]; ok {
			return n
		}
		if i := strings.LastIndexByte(key, '['); i > 0 && strings.HasSuffix(key, "]") {
			key = key[:i]
			continue
		}
		i := strings.LastIndexByte(key, '.')
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// Check reads the configuration file at path (empty: the embedded
// defaults) and reports every problem it finds in one pass, rather than
// stopping at the first as Load does:
//
//   - TOML syntax errors (the only ones that stop the check), unknown keys
//     and values of the wrong type, each with its line;
//   - every setting Validate refuses, at the line of its key;
//   - the files the configuration names: tls.cert and tls.key
//     (tlsutil.CheckPair), the users file and the aliases file (every bad
//     line), and the DKIM keys under queue.dkim_dir;
//   - users in domains that are not local, and local domains without DKIM
//     keys (warnings);
//   - what the [[fetch.account]] tables name: local destinations that are
//     not users, missing destination folders, commands not found, CA
//     files that are not PEM certificates;
//   - listener addresses that cannot be bound (each is bound and closed at
//     once; nothing connects anywhere) and LMTP socket folders.
//
// ctx bounds the listener checks.
func Check(ctx context.Context, path string, opts CheckOptions) *CheckResult {
	k := &checker{path: path, lines: map[string]int{}, res: &CheckResult{}}
	var data []byte
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil {
			k.add(SeverityError, path, 0, "", "%v", err)
			return k.res
		}
	}
	c := k.decode(data, opts.DataDir)
	if c == nil {
		return k.res
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	k.checkTLS(c, now)
	k.checkWebFiles(c, now)
	users := k.checkUsers(c)
	domains := k.checkAliases(c)
	local := c.SMTP.LocalDomains
	if len(local) == 0 {
		for _, u := range users {
			domains = append(domains, domainOf(u))
		}
		local = domains
	} else {
		k.checkUserDomains(users)
	}
	k.checkDKIM(c, local)
	k.checkFetch(c, users)
	k.checkAntispam(c)
	k.checkStorage(c)
	k.checkListeners(ctx, c)
	return k.res
}

// decode decodes data (empty: the defaults) over Default key by key,
// applies dataDir when not empty, and reports every decoding and
// validation problem. It returns nil when data is not TOML.
func (k *checker) decode(data []byte, dataDir string) *Config {
	c := Default()
	if len(data) > 0 {
		k.lines = keyLines(data)
		var top map[string]toml.Primitive
		md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&top)
		if err != nil {
			var pe toml.ParseError
			if errors.As(err, &pe) {
				k.add(SeverityError, k.path, pe.Position.Line, pe.LastKey, "%s", pe.Message)
			} else {
				k.add(SeverityError, k.path, 0, "", "%s", strings.TrimPrefix(err.Error(), "toml: "))
			}
			return nil
		}
		k.decodeTable(md, top, reflect.ValueOf(c).Elem(), "")
	}
	if dataDir != "" {
		c.DataDir = dataDir
	}
	k.res.Config = c
	for _, err := range c.validate() {
		key, msg, ok := strings.Cut(err.Error(), ": ")
		if !ok {
			key, msg = "", err.Error()
		}
		k.conf(SeverityError, key, "%s", msg)
	}
	return c
}

// decodeTable decodes the keys of one TOML table into the struct v, key
// by key, so that every bad key is reported, not only the first.
func (k *checker) decodeTable(md toml.MetaData, table map[string]toml.Primitive, v reflect.Value, prefix string) {
	names := make([]string, 0, len(table))
	for name := range table {
		names = append(names, name)
	}
	// In file order, so that the report reads like the file.
	slices.SortFunc(names, func(a, b string) int {
		if d := k.lines[prefix+a] - k.lines[prefix+b]; d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})
	for _, name := range names {
		key := prefix + name
		f, ok := fieldByTag(v.Type(), name)
		if !ok {
			msg := "unknown key"
			if s := suggest(trimIndexes(key), append(knownKeys(), arrayTableKeys()...)); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			k.conf(SeverityError, key, "%s", msg)
			continue
		}
		prim := table[name]
		fv := v.FieldByIndex(f.Index)
		switch {
		case isSection(f):
			var sub map[string]toml.Primitive
			if err := md.PrimitiveDecode(prim, &sub); err != nil || !isTable(md, prim) {
				k.conf(SeverityError, key, "must be a table ([%s])", key)
				continue
			}
			k.decodeTable(md, sub, fv, key+".")
		case isArrayTable(f):
			var subs []map[string]toml.Primitive
			if err := md.PrimitiveDecode(prim, &subs); err != nil {
				k.conf(SeverityError, key, "must be an array of tables ([[%s]])", key)
				continue
			}
			out := reflect.MakeSlice(f.Type, len(subs), len(subs))
			for i, sub := range subs {
				k.decodeTable(md, sub, out.Index(i), fmt.Sprintf("%s[%d].", key, i))
			}
			fv.Set(out)
		default:
			nv := reflect.New(f.Type)
			if err := md.PrimitiveDecode(prim, nv.Interface()); err != nil {
				k.conf(SeverityError, key, "%s", decodeMessage(err))
				continue
			}
			fv.Set(nv.Elem())
		}
	}
}

// isTable reports whether prim holds a TOML table (decoding a string or a
// number into a map does not fail).
func isTable(md toml.MetaData, prim toml.Primitive) bool {
	var v any
	if err := md.PrimitiveDecode(prim, &v); err != nil {
		return false
	}
	_, ok := v.(map[string]any)
	return ok
}

// decodeMessage returns the toml package's decode error without its
// "toml: line N (last key ...)" prefix: the finding carries both.
func decodeMessage(err error) string {
	if m := decodeErrRE.FindStringSubmatch(err.Error()); m != nil {
		return m[3]
	}
	var pe toml.ParseError
	if errors.As(err, &pe) {
		return pe.Message
	}
	return strings.TrimPrefix(err.Error(), "toml: ")
}

// fieldByTag returns the field of the struct type t whose toml tag is name,
// compared case-sensitively, as Load compares keys.
func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for f := range fields(t) {
		if f.Tag.Get("toml") == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

var indexRE = regexp.MustCompile(`\[\d+\]`)

// trimIndexes turns "fetch.account[1].sever" into "fetch.account.sever".
func trimIndexes(key string) string { return indexRE.ReplaceAllString(key, "") }

var (
	tableLineRE = regexp.MustCompile(`^\[\s*([A-Za-z0-9_.-]+)\s*\]`)
	arrayLineRE = regexp.MustCompile(`^\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]`)
	keyLineRE   = regexp.MustCompile(`^([A-Za-z0-9_.-]+)\s*=`)
)

// keyLines maps each dotted key of a TOML document (bare keys only) to
// the line where it first appears; the n-th table of an array of tables
// is "name[n]". Lines inside multi-line values are not keys unless they
// look like "key =", which a stray match only misplaces in a report.
func keyLines(data []byte) map[string]int {
	lines := map[string]int{}
	arrays := map[string]int{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		s := strings.TrimSpace(sc.Text())
		var key string
		if m := arrayLineRE.FindStringSubmatch(s); m != nil {
			i := arrays[m[1]]
			arrays[m[1]]++
			section = fmt.Sprintf("%s[%d]", m[1], i)
			key = section
			if _, ok := lines[m[1]]; !ok {
				lines[m[1]] = n
			}
		} else if m := tableLineRE.FindStringSubmatch(s); m != nil {
			section = m[1]
			key = section
		} else if m := keyLineRE.FindStringSubmatch(s); m != nil {
			key = m[1]
			if section != "" {
				key = section + "." + key
			}
		} else {
			continue
		}
		if _, ok := lines[key]; !ok {
			lines[key] = n
		}
	}
	return lines
}

// checkTLS checks tls.cert and tls.key when they are set.
func (k *checker) checkTLS(c *Config, now time.Time) {
	if c.TLS.Cert == "" || c.TLS.Key == "" {
		return
	}
	certFile, keyFile := c.TLSFiles()
	pc := tlsutil.CheckPair(certFile, keyFile, c.Hostname, now)
	for _, e := range pc.Errors {
		k.conf(SeverityError, "tls."+e.Which, "%v", e.Err)
	}
	for _, w := range pc.Warnings {
		k.conf(SeverityWarning, "tls."+w.Which, "%v", w.Err)
	}
}

// checkUsers reports every bad line of the users file and returns the
// addresses of its users.
// With storage.backend = "postgres" the users are in the database, not
// in users.file, and nothing is reported.
func (k *checker) checkUsers(c *Config) []string {
	if c.UsesPostgres() {
		return nil
	}
	db := auth.OpenDB(c.UsersFile())
	for _, p := range db.Problems() {
		// auth.Problem: Line 0 means the file cannot be read.
		k.add(SeverityError, c.UsersFile(), p.Line, "", "%s", strings.TrimPrefix(p.Err.Error(), "auth: "))
	}
	users, err := db.List()
	if err != nil {
		return nil
	}
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = u.Address
	}
	return out
}

// lineRE matches the "line N: " that starts every aliases parse error.
var lineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// checkAliases reports every bad line of the aliases file and returns the
// domains it names.
// With storage.backend = "postgres" the aliases are in the database, and
// nothing is reported.
func (k *checker) checkAliases(c *Config) []string {
	if c.UsesPostgres() {
		return nil
	}
	file := c.AliasesFile()
	t, err := aliases.Load(file)
	if err == nil {
		return t.Domains()
	}
	errs := []error{err}
	// aliases.Load wraps the joined per-line errors of Parse in the name
	// of the file.
	if u := errors.Unwrap(err); u != nil {
		if j, ok := u.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		} else {
			errs = []error{u}
		}
	}
	for _, e := range errs {
		msg := e.Error()
		if m := lineRE.FindStringSubmatch(msg); m != nil {
			n, _ := strconv.Atoi(m[1])
			k.add(SeverityError, file, n, "", "%s", strings.TrimPrefix(m[2], "aliases: "))
			continue
		}
		k.add(SeverityError, file, 0, "", "%s", msg)
	}
	return nil
}

// domainOf returns the domain of addr, lower-cased.
func domainOf(addr string) string {
	return strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
}

// checkUserDomains warns about users whose domain is not among
// smtp.local_domains: mail to them is not delivered here.
func (k *checker) checkUserDomains(users []string) {
	local := k.res.Config.SMTP.LocalDomains
	for _, u := range users {
		if !slices.ContainsFunc(local, func(d string) bool { return strings.EqualFold(d, domainOf(u)) }) {
			k.conf(SeverityWarning, "smtp.local_domains", "user %s is in domain %s, which is not local: mail for it is not delivered to the mailbox (add the domain or delete the user)", u, domainOf(u))
		}
	}
}

// checkDKIM checks every key under the DKIM folder and warns about local
// domains without one. A missing folder means no signing and no warnings,
// unless queue.dkim_dir names it explicitly.
func (k *checker) checkDKIM(c *Config, local []string) {
	dir := c.DKIMDir()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if c.Queue.DKIMDir != "" {
			k.conf(SeverityWarning, "queue.dkim_dir", "%s does not exist: no mail is signed", dir)
		}
		return
	}
	if err != nil {
		k.conf(SeverityError, "queue.dkim_dir", "%v", err)
		return
	}
	signed := map[string]bool{}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		domain := e.Name()
		files, err := os.ReadDir(filepath.Join(dir, domain))
		if err != nil {
			k.add(SeverityError, filepath.Join(dir, domain), 0, "queue.dkim_dir", "%v", err)
			continue
		}
		for _, f := range files {
			if !strings.HasSuffix(f.Name(), ".key") {
				continue
			}
			file := filepath.Join(dir, domain, f.Name())
			data, err := os.ReadFile(file)
			if err != nil {
				k.add(SeverityError, file, 0, "queue.dkim_dir", "%v", err)
				continue
			}
			key, err := tlsutil.ParsePrivateKey(data)
			if err != nil {
				k.add(SeverityError, file, 0, "queue.dkim_dir", "bad DKIM key: %v", err)
				continue
			}
			switch key.(type) {
			// RFC 8463 §3 (ed25519-sha256) and RFC 6376 §3.3.1 (rsa-sha256).
			case ed25519.PrivateKey, *rsa.PrivateKey:
				signed[strings.ToLower(domain)] = true
			default:
				k.add(SeverityError, file, 0, "queue.dkim_dir", "bad DKIM key: %T is neither ed25519 nor RSA", key)
			}
		}
	}
	seen := map[string]bool{}
	for _, d := range local {
		d = strings.ToLower(d)
		if seen[d] || signed[d] {
			continue
		}
		seen[d] = true
		k.conf(SeverityWarning, "queue.dkim_dir", "local domain %s has no DKIM key in %s: its mail is sent unsigned (postino dkim keygen %s)", d, dir, d)
	}
}

// checkListeners binds each listener address for an instant and checks the
// folder of an LMTP unix socket.
func (k *checker) checkListeners(ctx context.Context, c *Config) {
	for _, l := range []struct{ key, addr string }{
		{"pop3.listen", c.POP3.Listen}, {"pop3.listen_tls", c.POP3.ListenTLS},
		{"smtp.listen", c.SMTP.Listen}, {"smtp.submission", c.SMTP.Submission},
		{"smtp.submissions", c.SMTP.Submissions}, {"smtp.lmtp", c.SMTP.LMTP},
		{"http.listen", c.HTTP.Listen}, {"https.listen", c.HTTPS.Listen},
	} {
		if l.addr == "" {
			continue
		}
		if l.key == "smtp.lmtp" && (strings.HasPrefix(l.addr, "/") || strings.HasPrefix(l.addr, "unix:")) {
			k.checkSocketDir(l.key, strings.TrimPrefix(l.addr, "unix:"))
			continue
		}
		if checkAddr(l.addr) != "" {
			continue // validate reported it
		}
		k.tryListen(ctx, l.key, l.addr)
	}
}

// tryListen binds addr and closes it at once.
func (k *checker) tryListen(ctx context.Context, key, addr string) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err == nil {
		ln.Close()
		return
	}
	_, port, _ := net.SplitHostPort(addr)
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		pid, name, owner := listenerOwner(port)
		switch {
		case isPostino(name):
			k.conf(SeverityWarning, key, "%s in use (is postino running? %s, pid %d)", addr, name, pid)
		case pid > 0:
			k.conf(SeverityError, key, "%s is already in use by another program (%s, pid %d)", addr, name, pid)
		case owner != "":
			k.conf(SeverityError, key, "%s is already in use by a program of user %s that this user cannot see (if it is postino, ignore this)", addr, owner)
		default:
			k.conf(SeverityError, key, "%s is already in use (by a program this user cannot see; if it is postino, ignore this)", addr)
		}
	case errors.Is(err, syscall.EACCES) && os.Geteuid() != 0:
		k.conf(SeverityWarning, key, "this user may not listen on %s (ports below 1024 need root); postino serve started as root can", addr)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		k.conf(SeverityError, key, "cannot listen on %s: the address is not one of this machine's", addr)
	default:
		k.conf(SeverityError, key, "cannot listen on %s: %v", addr, unwrapOp(err))
	}
}

// unwrapOp drops the "listen tcp ADDR:" prefix of a net.OpError.
func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// isPostino reports whether a process name is postino's.
func isPostino(name string) bool { return name == "postino" || strings.HasPrefix(name, "postino ") }

// checkSocketDir checks that the folder of a unix socket exists and that
// this user can create the socket in it.
func (k *checker) checkSocketDir(key, path string) {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case err != nil:
		k.conf(SeverityError, key, "the folder of the socket %s: %v", path, err)
	case !fi.IsDir():
		k.conf(SeverityError, key, "%s, the folder of the socket, is not a folder", dir)
	case syscall.Access(dir, 2|1) != nil: // W_OK|X_OK
		k.conf(SeverityWarning, key, "this user cannot create the socket in %s (postino serve must be able to)", dir)
	}
}

// checkFetch checks what each [[fetch.account]] names beyond its syntax,
// which validate checked.
func (k *checker) checkFetch(c *Config, users []string) {
	for i, a := range c.Fetch.Accounts {
		key := func(name string) string { return fmt.Sprintf("fetch.account[%d].%s", i, name) }
		if a.Password == "" && a.PasswordCommand == "" {
			k.conf(SeverityWarning, key("password_command"), "neither password nor password_command is set: the password is asked for on the terminal, so postino fetch cannot run unattended")
		}
		if a.PasswordCommand != "" {
			k.checkCommand(key("password_command"), a.PasswordCommand)
		}
		if a.CAFile != "" {
			file := c.ResolvePath(a.CAFile)
			if data, err := os.ReadFile(file); err != nil {
				k.conf(SeverityError, key("ca_file"), "%v", err)
			} else if !x509.NewCertPool().AppendCertsFromPEM(data) {
				k.conf(SeverityError, key("ca_file"), "%s holds no PEM certificate", file)
			}
		}
		d, err := ParseFetchDestination(a.Destination)
		if err != nil {
			continue // validate reported it
		}
		switch d.Kind {
		case FetchDestLocal:
			if !slices.ContainsFunc(users, func(u string) bool { return strings.EqualFold(u, d.Arg) }) {
				k.conf(SeverityWarning, key("destination"), "%s is not a user in %s", d.Arg, c.UsersFile())
			}
		case FetchDestMaildir, FetchDestMbox:
			p := d.Arg
			if rest, ok := strings.CutPrefix(p, "~/"); ok {
				if home, err := os.UserHomeDir(); err == nil {
					p = filepath.Join(home, rest)
				}
			}
			if d.Kind == FetchDestMbox {
				p = filepath.Dir(p)
			} else if _, err := os.Stat(p); err == nil {
				continue
			} else {
				p = filepath.Dir(filepath.Clean(p)) // a Maildir is created in an existing folder
			}
			if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
				k.conf(SeverityWarning, key("destination"), "folder %s does not exist", p)
			}
		case FetchDestMDA:
			k.checkCommand(key("destination"), d.Arg)
		}
	}
}

// checkCommand warns when the program a shell command starts with is not
// found in $PATH (the command is not run).
func (k *checker) checkCommand(key, cmd string) {
	f := strings.Fields(cmd)
	if len(f) == 0 || strings.ContainsAny(f[0], "=$`'\"(){};|&<>") {
		return // an assignment or shell syntax: leave it to the shell
	}
	if _, err := exec.LookPath(f[0]); err != nil {
		k.conf(SeverityWarning, key, "%q not found in $PATH", f[0])
	}
}
