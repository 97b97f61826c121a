package auth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// quotaField is the extra field (the eighth passwd-file field, blank
// separated "key=value" items) that holds a user's quota, as Dovecot's
// passwd-file userdb returns it: "userdb_quota_rule=*:storage=1G".
const quotaField = "userdb_quota_rule="

// ErrQuotaSyntax is returned for a quota rule that cannot be parsed.
var ErrQuotaSyntax = errors.New("auth: invalid quota rule")

// Quota is a user's mailbox quota: zero fields mean no limit.
type Quota struct {
	// Bytes is the largest total size of the mailbox, in octets.
	Bytes int64
	// Messages is the largest number of messages in the mailbox.
	Messages int64
}

// IsZero reports whether the quota sets no limit.
func (q Quota) IsZero() bool { return q.Bytes == 0 && q.Messages == 0 }

// String formats the quota as a Dovecot quota rule: "*:storage=1G" (the
// largest whole unit) or "*:bytes=N", with ":messages=N" when set;
// "*:storage=0" (no limit) when q sets none.
func (q Quota) String() string {
	if q.IsZero() {
		return "*:storage=0"
	}
	s := "*"
	if q.Bytes > 0 {
		s += ":" + formatQuotaSize(q.Bytes)
	}
	if q.Messages > 0 {
		s += ":messages=" + strconv.FormatInt(q.Messages, 10)
	}
	return s
}

// formatQuotaSize writes a byte limit as Dovecot reads it.
func formatQuotaSize(n int64) string {
	for _, u := range []struct {
		shift uint
		suf   string
	}{{40, "T"}, {30, "G"}, {20, "M"}, {10, "k"}} {
		if n%(1<<u.shift) == 0 {
			return "storage=" + strconv.FormatInt(n>>u.shift, 10) + u.suf
		}
	}
	return "bytes=" + strconv.FormatInt(n, 10)
}

// ParseQuotaRule parses a Dovecot quota rule for the whole mailbox,
// "*:storage=1G", "*:bytes=1048576", "*:messages=1000" or several limits
// joined by ':' ("*:storage=512M:messages=1000"). As in Dovecot's quota
// plugin, storage is in kilobytes unless it has a b, k, M, G or T suffix
// (powers of 1024), bytes is in octets unless it has one, and 0 means
// no limit. Rules for other mailbox names, percentages, relative limits
// ("+100M") and "ignore" are not supported (postino serves INBOX only).
func ParseQuotaRule(rule string) (Quota, error) {
	var q Quota
	name, limits, ok := strings.Cut(rule, ":")
	if !ok || name != "*" {
		return q, fmt.Errorf("%w %q: only rules for \"*\" are supported", ErrQuotaSyntax, rule)
	}
	for _, l := range strings.Split(limits, ":") {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return q, fmt.Errorf("%w %q: %q is not key=value", ErrQuotaSyntax, rule, l)
		}
		var err error
		switch strings.ToLower(k) {
		case "storage":
			q.Bytes, err = parseQuotaSize(v, 1024)
		case "bytes":
			q.Bytes, err = parseQuotaSize(v, 1)
		case "messages":
			q.Messages, err = strconv.ParseInt(v, 10, 64)
			if err == nil && q.Messages < 0 {
				err = errors.New("negative")
			}
		default:
			return q, fmt.Errorf("%w %q: unknown limit %q (storage, bytes or messages)", ErrQuotaSyntax, rule, k)
		}
		if err != nil {
			return q, fmt.Errorf("%w %q: %s=%q: %v", ErrQuotaSyntax, rule, k, v, err)
		}
	}
	return q, nil
}

// ParseQuotaSize parses a size as Dovecot's quota rules and postino's
// "user quota" command write it: a whole number with an optional b, k, M,
// G or T suffix (powers of 1024, case-insensitive, an optional trailing
// "B" as in "1GB" ignored); a bare number is in octets.
func ParseQuotaSize(s string) (int64, error) { return parseQuotaSize(s, 1) }

// parseQuotaSize parses a size, a bare number counting unit octets.
func parseQuotaSize(s string, unit int64) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q does not start with a number", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	suf := strings.ToLower(t[i:])
	if len(suf) == 2 && suf[1] == 'b' {
		suf = suf[:1]
	}
	mult := unit
	switch suf {
	case "":
	case "b":
		mult = 1
	case "k":
		mult = 1 << 10
	case "m":
		mult = 1 << 20
	case "g":
		mult = 1 << 30
	case "t":
		mult = 1 << 40
	default:
		return 0, fmt.Errorf("size %q: unknown unit (b, k, M, G or T)", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return n * mult, nil
}

// extraFields returns the blank-separated items of the extra_fields field
// (the eighth) of a line's Extra, or nil.
func extraFields(extra []string) []string {
	if len(extra) < 6 {
		return nil
	}
	return strings.Fields(strings.Join(extra[5:], ":"))
}

// Quota returns the quota set by the user's userdb_quota_rule extra field;
// ok is false when there is none. A rule that cannot be parsed is an
// error wrapping ErrQuotaSyntax.
func (u User) Quota() (q Quota, ok bool, err error) {
	for _, f := range extraFields(u.Extra) {
		if v, found := strings.CutPrefix(f, quotaField); found {
			q, err = ParseQuotaRule(v)
			return q, err == nil, err
		}
	}
	return Quota{}, false, nil
}

// withQuota returns the fields after the password of a line, with the
// userdb_quota_rule extra field set to q (removed when q is nil) and
// every other field kept as it was.
func withQuota(extra []string, q *Quota) []string {
	for len(extra) < 6 {
		extra = append(extra, "")
	}
	// The extra_fields column is the rest of the line: a value may itself
	// contain ':' (as the quota rule does).
	items := strings.Fields(strings.Join(extra[5:], ":"))
	items = slices.DeleteFunc(items, func(f string) bool { return strings.HasPrefix(f, quotaField) })
	if q != nil {
		items = append(items, quotaField+q.String())
	}
	out := append(extra[:5:5], strings.Join(items, " "))
	// Drop empty trailing fields, so that a two-field line stays one.
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// SetQuota sets the userdb_quota_rule extra field of the user address
// (matched as by Authenticate), keeping every other field of its line, in
// the syntax Dovecot's passwd-file reads. A nil q removes the field (the
// configured default applies again); a zero Quota is written as
// "*:storage=0", no limit. It returns ErrNoSuchUser when there is no such
// user.
func (db *DB) SetQuota(ctx context.Context, address string, q *Quota) error {
	return db.modify(ctx, func(lines []fileLine, s *snapshot) ([]fileLine, error) {
		u, ok := s.resolve(address)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchUser, address)
		}
		for i, l := range lines {
			if l.user != nil && l.user.Address == u.Address {
				raw, cr := strings.CutSuffix(l.raw, "\r")
				f := strings.Split(raw, ":")
				f = append(f[:2:2], withQuota(slices.Clone(f[2:]), q)...)
				lines[i].raw = strings.Join(f, ":")
				if cr {
					lines[i].raw += "\r"
				}
				break
			}
		}
		return lines, nil
	})
}

// Quotas gives each mailbox its quota: the user's userdb_quota_rule
// extra field, else Default. It implements delivery.Quotas.
type Quotas struct {
	// DB is the user database.
	DB *DB
	// Default applies to users without a quota rule of their own.
	Default Quota
}

// MailboxQuota returns the limits of the mailbox of user mailbox (a
// canonical address); zero means no limit. A rule that cannot be parsed is
// logged (when DB.Logger is set) and the default applies.
func (qs *Quotas) MailboxQuota(mailbox string) (bytes, messages int64) {
	u, ok := qs.DB.Lookup(mailbox)
	if !ok {
		return qs.Default.Bytes, qs.Default.Messages
	}
	q, ok, err := u.Quota()
	if err != nil && qs.DB.Logger != nil {
		qs.DB.Logger.Warn("auth: ignoring the quota rule of a user", "user", u.Address, "err", err)
	}
	if !ok {
		return qs.Default.Bytes, qs.Default.Messages
	}
	return q.Bytes, q.Messages
}
