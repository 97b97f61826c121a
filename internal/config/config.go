// Package config defines postino's configuration: one typed struct, Config,
// which is the single source of truth for every setting, its TOML key, its
// documentation and its default.
//
// Default returns the embedded defaults, Load reads a TOML file strictly over
// them (unknown keys are errors) and validates the result, and WriteDefault
// generates the fully commented default configuration file from the struct
// by reflection, using each field's toml and comment struct tags.
//
// A field whose default is computed at run time (only hostname) carries an
// example struct tag; WriteDefault writes it as a commented-out line with
// the example value, so that loading the generated file keeps the computed
// default.
//
// Relative file paths in the configuration (users.file, smtp.aliases_file,
// tls.cert, tls.key, tls.certificate, tls.acme_ca_file) are relative to
// data_dir; data_dir itself is relative to
// the working directory.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/pop3"
)

// ExpireNever is the POP3Config.Expire value meaning messages are never
// deleted by the server (RFC 2449 EXPIRE NEVER).
const ExpireNever = "NEVER"

// Config is the whole postino configuration. Its zero value is not useful;
// start from Default or Load. Each field is documented by its comment struct
// tag, which WriteDefault copies into the generated configuration file.
type Config struct {
	Hostname  string `toml:"hostname" reload:"restart" example:"mail.example.org" comment:"Name of this server, used in greetings, trace headers and the self-signed certificate. Default: this machine's host name, or \"localhost\" if it cannot be determined."`
	DataDir   string `toml:"data_dir" reload:"restart" comment:"Directory holding mailboxes (DATA/mail), the user database (DATA/users.passwd), aliases and the self-signed certificate (DATA/tls). Relative paths elsewhere in this file are relative to it; it is itself relative to the working directory."`
	LogLevel  string `toml:"log_level" comment:"Minimum level of log messages: debug, info, warn or error."`
	LogFormat string `toml:"log_format" reload:"restart" comment:"Log format: text (key=value lines) or json."`
	RunAs     string `toml:"run_as" reload:"restart" comment:"Unprivileged user that 'postino serve', started as root, switches to once its ports are open (the data folder is handed to that user). Empty: stay as started; as root that is allowed only with loopback listeners."`

	TLS      TLSConfig      `toml:"tls" comment:"TLS settings shared by every listener that offers TLS."`
	POP3     POP3Config     `toml:"pop3" comment:"POP3 server (RFC 1939, with STLS, SASL and the RFC 2449 capabilities)."`
	Users    UsersConfig    `toml:"users" comment:"User database."`
	Delivery DeliveryConfig `toml:"delivery" comment:"Local delivery into mailboxes."`
	SMTP     SMTPConfig     `toml:"smtp" comment:"SMTP intake, submission and LMTP."`
	Queue    QueueConfig    `toml:"queue" comment:"Outbound queue: delivery of submitted mail to other domains, retries and bounces."`
	Fetch    FetchConfig    `toml:"fetch" comment:"Downloading remote POP3 mailboxes with 'postino fetch'."`
	DNS      DNSConfig      `toml:"dns" comment:"DNS lookups."`
	MailAuth MailAuthConfig `toml:"mailauth" comment:"Sender authentication of mail received on the MX: SPF, DKIM, DMARC and Authentication-Results."`
	HTTP     HTTPConfig     `toml:"http" comment:"Plain HTTP listener: ACME HTTP-01 challenges and the client autoconfiguration documents."`
	HTTPS    HTTPSConfig    `toml:"https" comment:"HTTPS listener: ACME TLS-ALPN-01 challenges, the MTA-STS policy and the client autoconfiguration documents."`
	MTASTS   MTASTSConfig   `toml:"mta_sts" comment:"MTA-STS policy (RFC 8461) served on https://mta-sts.DOMAIN/.well-known/mta-sts.txt for each local domain when https.listen is set."`
	Proxy    ProxyConfig    `toml:"proxy" comment:"PROXY protocol from TCP load balancers."`
	Admin    AdminConfig    `toml:"admin" comment:"Admin HTTP listener: Prometheus metrics and health probes."`
	Antispam AntispamConfig `toml:"antispam" comment:"Spam defence at the door of the MX (smtp.listen): DNS blocklists and allowlists, reverse DNS, HELO checks, clients that talk before the greeting, greylisting. Clients in smtp.trusted_networks are never judged."`
	Milters  []MilterConfig `toml:"milter" comment:"External filters (milters) every message to the MX goes through, each a [[milter]] table, in order; none by default. An example with every key follows."`
	Junk     JunkConfig     `toml:"junk" comment:"Spam handling for POP3 users: tagging, quarantine and refusal by score."`
	Storage  StorageConfig  `toml:"storage" reload:"restart" comment:"Where mailboxes are kept: Maildir folders in data_dir (one server), or PostgreSQL with message contents in PostgreSQL or an S3 bucket (several servers sharing the mailboxes)."`
}

// TLSConfig is the [tls] section.
type TLSConfig struct {
	Cert       string `toml:"cert" comment:"PEM certificate chain file. When cert and key are both empty, a self-signed certificate is generated in DATA/tls on first start. Both files are watched and reloaded when they change."`
	Key        string `toml:"key" comment:"PEM private key file matching cert."`
	MinVersion string `toml:"min_version" reload:"restart" comment:"Oldest TLS version accepted: \"1.2\" or \"1.3\"."`

	Names         []string           `toml:"names" reload:"restart" comment:"Further public host names of this server besides hostname (e.g. the MX and POP3 names of other domains); with acme, a certificate is obtained for each."`
	ACME          bool               `toml:"acme" reload:"restart" comment:"Obtain and renew certificates automatically from an ACME certificate authority (Let's Encrypt by default) for hostname and names (and, with https.listen, mta-sts.D, autoconfig.D and autodiscover.D of each local domain D). Needs https.listen on port 443 (TLS-ALPN-01) or http.listen on port 80 (HTTP-01), reachable from the Internet. Certificates are kept in DATA/tls/acme. Files in cert/key and [[tls.certificate]] still win for the names they cover."`
	ACMEEmail     string             `toml:"acme_email" reload:"restart" comment:"Contact address of the ACME account (expiry and policy notices); required with acme."`
	ACMEDirectory string             `toml:"acme_directory" reload:"restart" comment:"Directory URL of the ACME certificate authority. For tests against Let's Encrypt use https://acme-staging-v02.api.letsencrypt.org/directory."`
	ACMECAFile    string             `toml:"acme_ca_file" reload:"restart" comment:"PEM file of the root that signs the ACME directory's own HTTPS certificate, for a private CA; empty: the system roots."`
	Certificates  []CertificateFiles `toml:"certificate" comment:"Further certificates, each a [[tls.certificate]] table, for the other host names this server answers as: every TLS listener picks the certificate whose names match the name the client asks for (SNI); a client that asks for none gets the one of hostname. None by default. An example follows."`
}

// CertificateFiles is one [[tls.certificate]] table.
type CertificateFiles struct {
	Cert string `toml:"cert" example:"/etc/postino/mail.example.net.crt" comment:"PEM certificate chain file; watched and reloaded when it changes."`
	Key  string `toml:"key" example:"/etc/postino/mail.example.net.key" comment:"PEM private key file matching cert."`
}

// POP3Config is the [pop3] section.
type POP3Config struct {
	Listen              string               `toml:"listen" reload:"restart" comment:"Address for plain POP3 with STLS (host:port); empty disables it. The standard port is 110."`
	ListenTLS           string               `toml:"listen_tls" reload:"restart" comment:"Address for POP3 over implicit TLS (host:port); empty disables it. The standard port is 995."`
	PlaintextAuth       pop3.PlaintextPolicy `toml:"plaintext_auth" comment:"Whether USER/PASS and SASL PLAIN/LOGIN are allowed on a connection without TLS: never, loopback (only from 127.0.0.0/8 and ::1) or always."`
	Autologout          Duration             `toml:"autologout" comment:"Idle time after which a session is closed. RFC 1939 requires at least 10m; shorter values are accepted (down to 1s) but violate the RFC."`
	MaxLine             int                  `toml:"max_line" comment:"Longest command line accepted, in octets including CRLF (at least 255, as RFC 2449 requires)."`
	MaxBadCommands      int                  `toml:"max_bad_commands" comment:"Number of failed or unknown commands after which the connection is closed."`
	WriteTimeout        Duration             `toml:"write_timeout" comment:"Time allowed for a single write to the client before the connection is dropped."`
	MaxConnections      int                  `toml:"max_connections" comment:"Maximum number of simultaneous POP3 connections."`
	MaxConnectionsPerIP int                  `toml:"max_connections_per_ip" comment:"Maximum number of simultaneous POP3 connections from one IP address."`
	LoginDelay          Duration             `toml:"login_delay" comment:"Minimum time between logins by one user, advertised as the LOGIN-DELAY capability (RFC 2449); must be whole seconds. 0s disables it."`
	Expire              string               `toml:"expire" comment:"EXPIRE capability (RFC 2449): NEVER, or the number of days the server keeps messages once a POP3 session that ended with QUIT has downloaded them (RETR, or TOP of the whole message); a background sweep then removes them. A user's userdb_pop3_expire extra field in the user database overrides it."`
	VaultDays           int                  `toml:"vault_days" comment:"Days that messages deleted over POP3 (and by the EXPIRE sweep) are kept in the user's deleted-mail vault, from which 'postino vault restore' puts them back. 0: no vault, deleted messages are removed at once."`
	SweepInterval       Duration             `toml:"sweep_interval" comment:"How often the retention sweep applies pop3.expire and pop3.vault_days to every mailbox. A mailbox in use by a session is skipped and visited at the next sweep."`
	LineTimeout         Duration             `toml:"line_timeout" comment:"Time allowed for the rest of a command line once it has begun; a client dribbling bytes (slowloris) is cut off."`
	MaxSessionTime      Duration             `toml:"max_session_time" comment:"Longest a session may last in all; it then ends without applying deletions. 0s: no limit."`
	CommandsPerSecond   int                  `toml:"commands_per_second" comment:"Commands a session may send per second before it is slowed down (bursts of one second's worth pass). 0: no limit."`
	SCRAM               bool                 `toml:"scram" comment:"Offer AUTH SCRAM-SHA-256 (RFC 7677). Only users whose password was stored with 'postino user add --scheme SCRAM-SHA-256' (or Dovecot's {SCRAM-SHA-256}) can use it; a client that picks SCRAM for another user fails to log in, so enable it only where every user has SCRAM credentials or clients fall back."`
	DovecotUIDLFormat   string               `toml:"dovecot_uidl_format" reload:"restart" comment:"Dovecot's pop3_uidl_format for mailboxes moved from Dovecot: a message listed in the Maildir's dovecot-uidlist keeps the UIDL Dovecot gave it (its P extension when present, else this format: %u UID, %v UIDVALIDITY, %f file name, %g GUID, with Dovecot's 0, width and X/L/U modifiers), so clients that leave mail on the server download nothing again. Empty: ignore dovecot-uidlist."`
}

// UsersConfig is the [users] section.
type UsersConfig struct {
	File            string   `toml:"file" comment:"User database file; empty means DATA/users.passwd."`
	CacheTTL        Duration `toml:"cache_ttl" comment:"How long a successful password check is remembered, so that clients polling every few minutes do not pay for a slow password hash each time. Entries are keyed by a keyed hash of user, stored hash and password, so a password change takes effect at once. 0s disables the cache."`
	MaxFailures     int      `toml:"max_failures" comment:"Failed logins (POP3 and SMTP AUTH together) from one address (IPv6: one /64) within failure_window after which the address is refused for block_for (see postino block list|remove); addresses in smtp.trusted_networks are never refused."`
	FailureWindow   Duration `toml:"failure_window" comment:"Window in which failed logins are counted."`
	BlockFor        Duration `toml:"block_for" comment:"How long an address is refused after max_failures failed logins."`
	FailureDelay    Duration `toml:"failure_delay" comment:"Wait before answering a failed login; it doubles with each further failure of the address or account, up to max_failure_delay. Successful logins are never delayed. 0s disables delays."`
	MaxFailureDelay Duration `toml:"max_failure_delay" comment:"Longest wait before answering a failed login."`

	// Quotas (Dovecot's userdb_quota_rule extra field overrides them).
	DefaultQuota         Size `toml:"default_quota" comment:"Mailbox quota (total size of the messages) of users whose line in the user database has no userdb_quota_rule extra field, as Dovecot writes it (see postino user quota). 0: no limit."`
	DefaultQuotaMessages int  `toml:"default_quota_messages" comment:"Largest number of messages in a mailbox, for users without a quota rule of their own. 0: no limit."`
}

// DeliveryConfig is the [delivery] section.
type DeliveryConfig struct {
	MaxMessageSize Size `toml:"max_message_size" comment:"Largest message delivered to a mailbox. Sizes take the units B, KB/MB/GB (powers of 1000) and K/KiB, M/MiB, G/GiB (powers of 1024)."`
}

// SMTPConfig is the [smtp] section.
type SMTPConfig struct {
	Listen              string               `toml:"listen" reload:"restart" comment:"Address for incoming mail (MX, host:port); empty disables it. The standard port is 25."`
	Submission          string               `toml:"submission" reload:"restart" comment:"Address for message submission with STARTTLS (RFC 6409); empty disables it. The standard port is 587."`
	Submissions         string               `toml:"submissions" reload:"restart" comment:"Address for message submission over implicit TLS (RFC 8314); empty disables it. The standard port is 465."`
	LMTP                string               `toml:"lmtp" reload:"restart" comment:"Address for LMTP delivery (RFC 2033): host:port, or a unix socket path starting with \"/\" or \"unix:\"; empty disables it."`
	MaxRecipients       int                  `toml:"max_recipients" comment:"Maximum recipients per message (RFC 5321 requires accepting at least 100)."`
	MaxMessageSize      Size                 `toml:"max_message_size" reload:"restart" comment:"Largest message accepted, advertised with the SIZE extension."`
	CommandTimeout      Duration             `toml:"command_timeout" reload:"restart" comment:"Time to wait for the next command (RFC 5321 suggests 5m)."`
	DataTimeout         Duration             `toml:"data_timeout" comment:"Time allowed to receive the message after DATA (RFC 5321 suggests at least 10m)."`
	MaxErrors           int                  `toml:"max_errors" comment:"Number of failed commands after which the connection is closed."`
	MaxConnections      int                  `toml:"max_connections" comment:"Maximum number of simultaneous SMTP connections."`
	MaxConnectionsPerIP int                  `toml:"max_connections_per_ip" comment:"Maximum number of simultaneous SMTP connections from one IP address (Postfix allows 50). A connection over it waits up to a second for one of the address's connections to end before it is refused."`
	TrustedNetworks     []string             `toml:"trusted_networks" comment:"Networks (CIDR, e.g. \"192.0.2.0/24\", or single addresses) exempt from max_connections_per_ip, as Postfix's mynetworks is from its per-client limits: the MTAs that relay through this server. They are also never blocked after failed logins (POP3 and SMTP; their failures still count against the accounts tried, which are delayed). They get no other privilege: no relaying, AUTH still required on submission. Empty: none."`
	LocalDomains        []string             `toml:"local_domains" comment:"Domains delivered locally; empty means the domains of the existing users."`
	PlusSeparator       string               `toml:"plus_separator" comment:"Separator for address extensions: user+tag@domain is delivered to user@domain. Empty disables extensions."`
	AliasesFile         string               `toml:"aliases_file" comment:"Aliases file; empty means DATA/aliases."`
	PlaintextAuth       pop3.PlaintextPolicy `toml:"plaintext_auth" comment:"Whether submission offers AUTH on a connection without TLS: never, loopback (only from 127.0.0.0/8 and ::1) or always."`
	RestrictSender      bool                 `toml:"restrict_sender" comment:"On submission, let an authenticated user send only as their own address, its plus-addresses, an alias that reaches them, or <>, in MAIL FROM and in the header From and Sender."`
	Postmaster          string               `toml:"postmaster" comment:"Address that receives mail for \"postmaster\" (without a domain, RFC 5321) and postmaster@ each local domain when that domain has no user or alias of that name. Empty: only a postmaster alias or user of the primary domain (the first of local_domains) receives it."`
	SRS                 bool                 `toml:"srs" comment:"Rewrite the envelope sender of mail forwarded to remote addresses with the Sender Rewriting Scheme (SRS0=...@primary domain; secret in DATA/srs.key) and route bounces to such addresses back to the original sender."`
}

// defaultMaxMessageSize is the default of both delivery.max_message_size
// and smtp.max_message_size.
const defaultMaxMessageSize = 50 * MiB

// Default returns the embedded default configuration, used when no file is
// given and as the base that Load decodes over. Each call returns a new
// value.
func Default() *Config {
	return &Config{
		Hostname:  defaultHostname(),
		DataDir:   "postino-data",
		LogLevel:  "info",
		LogFormat: "text",
		TLS: TLSConfig{
			MinVersion:    "1.2",
			Names:         []string{},
			ACMEDirectory: "https://acme-v02.api.letsencrypt.org/directory",
		},
		MTASTS: MTASTSConfig{
			Mode:   "testing",
			MX:     []string{},
			MaxAge: D(7 * 24 * time.Hour),
		},
		POP3: POP3Config{
			Listen:              "127.0.0.1:1110",
			ListenTLS:           "127.0.0.1:1995",
			PlaintextAuth:       pop3.PlaintextLoopback,
			Autologout:          D(pop3.DefaultAutologout),
			MaxLine:             pop3.DefaultMaxLine,
			MaxBadCommands:      pop3.DefaultMaxBadCommands,
			WriteTimeout:        D(pop3.DefaultWriteTimeout),
			MaxConnections:      10000,
			MaxConnectionsPerIP: 100,
			LoginDelay:          D(0),
			Expire:              ExpireNever,
			VaultDays:           0,
			SweepInterval:       D(time.Hour),
			LineTimeout:         D(pop3.DefaultLineTimeout),
			MaxSessionTime:      D(4 * time.Hour),
			CommandsPerSecond:   500,
			DovecotUIDLFormat:   maildir.DefaultDovecotUIDLFormat,
		},
		Users: UsersConfig{
			CacheTTL:        D(auth.DefaultCacheTTL),
			MaxFailures:     authguard.DefaultMaxFailures,
			FailureWindow:   D(authguard.DefaultWindow),
			BlockFor:        D(authguard.DefaultBlockFor),
			FailureDelay:    D(authguard.DefaultBaseDelay),
			MaxFailureDelay: D(authguard.DefaultMaxDelay),
		},
		Delivery: DeliveryConfig{
			MaxMessageSize: defaultMaxMessageSize,
		},
		Queue:   defaultQueue(),
		Fetch:   FetchConfig{State: FetchStateFile},
		DNS:     DNSConfig{PublicAddresses: []string{}},
		Proxy:   defaultProxy(),
		Admin:   defaultAdmin(),
		Junk:    defaultJunk(),
		Storage: defaultStorage(),
		SMTP: SMTPConfig{
			Listen:              "127.0.0.1:2525",
			Submission:          "127.0.0.1:1587",
			Submissions:         "127.0.0.1:1465",
			MaxRecipients:       100, // RFC 5321 §4.5.3.1.8: at least 100
			MaxMessageSize:      defaultMaxMessageSize,
			CommandTimeout:      D(5 * time.Minute),
			DataTimeout:         D(10 * time.Minute),
			MaxErrors:           20,
			MaxConnections:      1000,
			MaxConnectionsPerIP: 50,
			TrustedNetworks:     []string{"127.0.0.0/8", "::1/128"},
			LocalDomains:        []string{},
			PlusSeparator:       "+",
			PlaintextAuth:       pop3.PlaintextLoopback,
			RestrictSender:      true,
			SRS:                 true,
		},
		MailAuth: defaultMailAuth(),
		Antispam: defaultAntispam(),
	}
}

// defaultHostname is os.Hostname, or "localhost" when that fails or returns
// something Validate would reject.
func defaultHostname() string {
	h, err := os.Hostname()
	if err != nil || checkHostname(h) != "" {
		return "localhost"
	}
	return h
}

// Load reads the TOML file at path over Default and validates the result.
// Decoding is strict: keys that are not part of Config are errors naming
// them. Every error names the file and, where it concerns one setting, its
// key. An empty path returns the validated defaults.
func Load(path string) (*Config, error) {
	c := Default()
	if path == "" {
		if err := c.Validate(); err != nil {
			return nil, err
		}
		return c, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			if pe.LastKey != "" {
				return nil, fmt.Errorf("config %s:%d: %s: %s", path, pe.Position.Line, pe.LastKey, pe.Message)
			}
			return nil, fmt.Errorf("config %s:%d: %s", path, pe.Position.Line, pe.Message)
		}
		msg := err.Error()
		if m := decodeErrRE.FindStringSubmatch(msg); m != nil {
			return nil, fmt.Errorf("config %s:%s: %s: %s", path, m[1], m[2], m[3])
		}
		return nil, fmt.Errorf("config %s: %s", path, strings.TrimPrefix(msg, "toml: "))
	}
	if unknown := unknownKeys(md); len(unknown) > 0 {
		noun := "key"
		if len(unknown) > 1 {
			noun = "keys"
		}
		return nil, fmt.Errorf("config %s: unknown %s %s", path, noun, strings.Join(unknown, ", "))
	}
	if errs := c.validate(); len(errs) > 0 {
		for i, e := range errs {
			errs[i] = fmt.Errorf("config %s: %w", path, e)
		}
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// decodeErrRE matches the toml package's type mismatch errors, which are not
// ParseErrors, to reformat them like the others.
var decodeErrRE = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.*)$`)

// knownKeys lists every valid dotted key path: sections and the keys in them.
func knownKeys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for f := range fields(t) {
			k := prefix + f.Tag.Get("toml")
			keys = append(keys, k)
			if isSection(f) {
				walk(f.Type, k+".")
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return keys
}

// fields yields the exported fields of the struct type t.
func fields(t reflect.Type) func(yield func(reflect.StructField) bool) {
	return func(yield func(reflect.StructField) bool) {
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Tag.Get("toml") == "" {
				continue
			}
			if !yield(f) {
				return
			}
		}
	}
}

// isSection reports whether f is a TOML table (a plain struct, as opposed to
// a struct such as Duration that encodes as a string).
func isSection(f reflect.StructField) bool {
	if f.Type.Kind() != reflect.Struct {
		return false
	}
	_, text := reflect.New(f.Type).Interface().(interface{ UnmarshalText([]byte) error })
	return !text
}

// unknownKeys returns the keys in md that are not part of Config, compared
// case-sensitively (the TOML decoder itself matches field names
// case-insensitively), each quoted and with a suggestion when one is close.
// Keys inside an unknown table are not repeated.
func unknownKeys(md toml.MetaData) []string {
	known := append(knownKeys(), arrayTableKeys()...)
	var bad []string
	seen := map[string]bool{}
	report := func(k string) {
		if seen[k] {
			return
		}
		for _, b := range bad {
			if strings.HasPrefix(k, b+".") {
				return
			}
		}
		seen[k] = true
		bad = append(bad, k)
	}
	for _, k := range md.Keys() {
		if s := k.String(); !slices.Contains(known, s) {
			report(s)
		}
	}
	for _, k := range md.Undecoded() {
		report(k.String())
	}
	out := make([]string, len(bad))
	for i, k := range bad {
		out[i] = fmt.Sprintf("%q", k)
		if s := suggest(k, known); s != "" {
			out[i] += fmt.Sprintf(" (did you mean %q?)", s)
		}
	}
	return out
}

// suggest returns the known key closest to k, if it is close enough to be a
// plausible typo: one edit away, or two for keys of 8 bytes or more.
func suggest(k string, known []string) string {
	best, bestDist := "", 2
	if len(k) >= 8 {
		bestDist = 3
	}
	lk := strings.ToLower(k)
	for _, c := range known {
		d := editDistance(lk, strings.ToLower(c))
		if strings.ToLower(c) == lk {
			d = 0
		}
		if d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ResolvePath returns p resolved against data_dir: absolute paths are
// returned cleaned, relative ones joined to data_dir. An empty p yields "".
func (c *Config) ResolvePath(p string) string {
	if p == "" {
		return ""
	}
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(c.DataDir, p)
}

// UsersFile returns the user database path: users.file resolved against
// data_dir, or DATA/users.passwd when it is empty.
func (c *Config) UsersFile() string {
	if c.Users.File == "" {
		return filepath.Join(c.DataDir, "users.passwd")
	}
	return c.ResolvePath(c.Users.File)
}

// MailDir returns the directory holding the mailboxes, DATA/mail.
func (c *Config) MailDir() string { return filepath.Join(c.DataDir, "mail") }

// TLSDir returns the directory holding the generated self-signed
// certificate, DATA/tls.
func (c *Config) TLSDir() string { return filepath.Join(c.DataDir, "tls") }

// AliasesFile returns the aliases file path: smtp.aliases_file resolved
// against data_dir, or DATA/aliases when it is empty.
func (c *Config) AliasesFile() string {
	if c.SMTP.AliasesFile == "" {
		return filepath.Join(c.DataDir, "aliases")
	}
	return c.ResolvePath(c.SMTP.AliasesFile)
}

// TLSFiles returns tls.cert and tls.key resolved against data_dir. Both are
// empty when a self-signed certificate (or, with tls.acme, ACME) should be
// used.
func (c *Config) TLSFiles() (certFile, keyFile string) {
	return c.ResolvePath(c.TLS.Cert), c.ResolvePath(c.TLS.Key)
}

// TrustedNetworkPrefixes returns smtp.trusted_networks parsed; a single
// address is a one-address network. Entries that do not parse (Validate
// reports them) are left out.
func (s *SMTPConfig) TrustedNetworkPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, n := range s.TrustedNetworks {
		if p, err := parseNetwork(n); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// parseNetwork parses a CIDR network or a single address. Host bits set
// in a CIDR ("10.1.2.3/8") and IPv4-mapped IPv6 networks are errors: the
// first is most likely a typo, the second would never match (connections
// are compared by their plain IPv4 address).
func parseNetwork(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return p, fmt.Errorf("invalid network %q: want a CIDR such as 192.0.2.0/24 or 2001:db8::/32, or an address", s)
		}
		if p.Masked() != p {
			return p, fmt.Errorf("network %q has host bits set (did you mean %q?)", s, p.Masked().String())
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return p, fmt.Errorf("invalid network %q: want a CIDR such as 192.0.2.0/24 or 2001:db8::/32, or an address", s)
		}
		if a.Zone() != "" {
			return p, fmt.Errorf("network %q must not have a zone", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return p, fmt.Errorf("network %q is IPv4-mapped: write it as IPv4", s)
	}
	return p, nil
}

// SlogLevel returns log_level as a slog.Level (info if it is invalid).
func (c *Config) SlogLevel() slog.Level {
	switch c.LogLevel {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
