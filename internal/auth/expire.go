package auth

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// expireField is the extra field that holds a user's own POP3 retention
// in days, overriding pop3.expire: "userdb_pop3_expire=30", or
// "userdb_pop3_expire=never".
const expireField = "userdb_pop3_expire="

// ErrExpireSyntax is returned for a userdb_pop3_expire value that cannot
// be parsed.
var ErrExpireSyntax = errors.New("auth: invalid userdb_pop3_expire")

// maxExpireDays bounds userdb_pop3_expire, as pop3.expire is bounded.
const maxExpireDays = 999999999

// ParseExpire parses a retention in days as userdb_pop3_expire and
// pop3.expire write it: a whole number of days (0: removed at the next
// sweep after download) or "never" (any case), which gives -1.
func ParseExpire(v string) (int, error) {
	if strings.EqualFold(v, "never") {
		return -1, nil
	}
	if v == "" || len(v) > 9 || strings.TrimLeft(v, "0123456789") != "" {
		return 0, fmt.Errorf("%w %q: want a number of days or never", ErrExpireSyntax, v)
	}
	n, err := strconv.Atoi(v)
	if err != nil || n > maxExpireDays {
		return 0, fmt.Errorf("%w %q: want a number of days or never", ErrExpireSyntax, v)
	}
	return n, nil
}

// Expire returns the user's own POP3 retention in days from the
// userdb_pop3_expire extra field (-1: never); ok is false when the line
// has none, and err is set when it cannot be parsed.
func (u User) Expire() (days int, ok bool, err error) {
	for _, f := range extraFields(u.Extra) {
		if v, found := strings.CutPrefix(f, expireField); found {
			d, err := ParseExpire(v)
			return d, err == nil, err
		}
	}
	return 0, false, nil
}
