package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// junkField is the extra field holding a user's choice for spam
// ("userdb_junk=quarantine"): score, tag, quarantine, reject or off (see
// package junk).
const junkField = "userdb_junk="

// JunkChoice returns the value of the user's userdb_junk extra field; ok
// is false when there is none.
func (u User) JunkChoice() (choice string, ok bool) {
	for _, f := range extraFields(u.Extra) {
		if v, found := strings.CutPrefix(f, junkField); found {
			return v, true
		}
	}
	return "", false
}

// SetJunk sets the userdb_junk extra field of the user address (matched
// as by Authenticate) to choice, keeping every other field of its line;
// "" removes it (the configured default applies again). The choice must
// be one word. It returns ErrNoSuchUser when there is no such user.
func (db *DB) SetJunk(ctx context.Context, address, choice string) error {
	if strings.ContainsAny(choice, " \t\r\n:") {
		return fmt.Errorf("auth: invalid junk choice %q", choice)
	}
	return db.modify(ctx, func(lines []fileLine, s *snapshot) ([]fileLine, error) {
		u, ok := s.resolve(address)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchUser, address)
		}
		for i, l := range lines {
			if l.user != nil && l.user.Address == u.Address {
				raw, cr := strings.CutSuffix(l.raw, "\r")
				f := strings.Split(raw, ":")
				f = append(f[:2:2], withExtra(slices.Clone(f[2:]), junkField, choice)...)
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

// withExtra returns the fields after the password of a line with the
// extra field "prefix+value" set (removed when value is ""), every other
// field kept as it was.
func withExtra(extra []string, prefix, value string) []string {
	for len(extra) < 6 {
		extra = append(extra, "")
	}
	items := strings.Fields(strings.Join(extra[5:], ":"))
	items = slices.DeleteFunc(items, func(f string) bool { return strings.HasPrefix(f, prefix) })
	if value != "" {
		items = append(items, prefix+value)
	}
	out := append(extra[:5:5], strings.Join(items, " "))
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}
