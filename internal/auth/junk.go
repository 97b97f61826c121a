package auth

import "strings"

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
