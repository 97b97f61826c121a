package config

import (
	"net/mail"
	"path/filepath"
	"strings"
	"time"
)

// JunkConfig is the [junk] section: what happens to mail the inbound
// checks (milters, and the sender authentication and blocklist checks)
// find to be spam, as POP3 users see it.
type JunkConfig struct {
	TagScore        float64 `toml:"tag_score" comment:"Spam score from which a message is spam: it is tagged (X-Spam: yes, X-Spam-Score, subject_prefix) or quarantined, as the recipient chose. The score is the sum of what the checks add; rspamd's and SpamAssassin's scores come through their milter on the same scale (rspamd's add header is 6, SpamAssassin's required is 5)."`
	QuarantineScore float64 `toml:"quarantine_score" comment:"Spam score from which a message is quarantined rather than tagged, for recipients whose choice is \"score\" (the default)."`
	RejectScore     float64 `toml:"reject_score" comment:"Spam score from which a message is refused during the SMTP session (550 5.7.1), unless a recipient's choice is \"off\" (then only the others' copies are withheld: quarantined)."`
	DefaultAction   string  `toml:"default_action" comment:"What happens to spam for users without a userdb_junk extra field in the user database: score (tag from tag_score, quarantine from quarantine_score, reject from reject_score), tag (always tag below reject_score), quarantine (always hold below reject_score), reject (refuse from tag_score), or off (deliver untouched, even above reject_score; what a check demands itself, such as a virus quarantine, still applies)."`
	SubjectPrefix   string  `toml:"subject_prefix" example:"[SPAM] " comment:"Text put in front of the Subject of tagged messages; empty: the Subject is left alone."`
	QuarantineDir   string  `toml:"quarantine_dir" comment:"Directory of quarantined messages (one folder per user); empty means DATA/quarantine."`
	QuarantineDays  int     `toml:"quarantine_days" comment:"Days a quarantined message is kept before it is deleted; 0 keeps them until an administrator deletes or releases them."`
	Digest          bool    `toml:"digest" comment:"Once a day, put in each user's mailbox a message listing what was quarantined for them since the last one (sender, subject, date, ID) and how to have it released."`
	DigestTime      string  `toml:"digest_time" comment:"Time of day (HH:MM, local time) of the daily digest."`
	DigestFrom      string  `toml:"digest_from" comment:"Sender of the digest; empty means postmaster@ the primary domain."`
}

// Values of JunkConfig.DefaultAction and of the userdb_junk extra field.
var JunkActions = []string{"score", "tag", "quarantine", "reject", "off"}

// defaultJunk is the default [junk] section.
func defaultJunk() JunkConfig {
	return JunkConfig{
		TagScore:        5,
		QuarantineScore: 10,
		RejectScore:     15,
		DefaultAction:   "score",
		QuarantineDays:  30,
		DigestTime:      "08:00",
	}
}

func (c *Config) validateJunk(v *validator) {
	j := c.Junk
	if !(j.TagScore <= j.QuarantineScore && j.QuarantineScore <= j.RejectScore) {
		v.add("junk", "need tag_score <= quarantine_score <= reject_score (got %v, %v, %v)", j.TagScore, j.QuarantineScore, j.RejectScore)
	}
	v.oneOf("junk.default_action", j.DefaultAction, JunkActions...)
	if j.QuarantineDays < 0 {
		v.add("junk.quarantine_days", "must not be negative (got %d)", j.QuarantineDays)
	}
	if _, err := time.Parse("15:04", j.DigestTime); err != nil {
		v.add("junk.digest_time", "must be HH:MM (got %q)", j.DigestTime)
	}
	if j.DigestFrom != "" {
		if _, err := mail.ParseAddress(j.DigestFrom); err != nil || strings.ContainsAny(j.DigestFrom, "<> \t\r\n") || !strings.Contains(j.DigestFrom, "@") {
			v.add("junk.digest_from", "must be an address such as postmaster@example.org (got %q)", j.DigestFrom)
		}
	}
	for _, r := range j.SubjectPrefix {
		if r < 0x20 || r == 0x7f {
			v.add("junk.subject_prefix", "must not hold control characters")
			break
		}
	}
}

// QuarantineDir returns junk.quarantine_dir resolved against data_dir, or
// DATA/quarantine.
func (c *Config) QuarantineDir() string {
	if c.Junk.QuarantineDir == "" {
		return filepath.Join(c.DataDir, "quarantine")
	}
	return c.ResolvePath(c.Junk.QuarantineDir)
}

// DigestFrom returns junk.digest_from, or postmaster@ the primary domain
// (the first of smtp.local_domains, else the host name).
func (c *Config) DigestFrom() string {
	if c.Junk.DigestFrom != "" {
		return c.Junk.DigestFrom
	}
	if len(c.SMTP.LocalDomains) > 0 {
		return "postmaster@" + c.SMTP.LocalDomains[0]
	}
	return "postmaster@" + c.Hostname
}

// QuarantineRetention returns how long quarantined messages are kept; 0
// is forever.
func (c *Config) QuarantineRetention() time.Duration {
	return time.Duration(c.Junk.QuarantineDays) * 24 * time.Hour
}
