package auth

import (
	"errors"
	"testing"
)

// TestUserExpire: userdb_pop3_expire in the extra fields (the eighth
// passwd-file field) is read as days or never; a malformed value is an
// error, and a line without it has none.
func TestUserExpire(t *testing.T) {
	for _, tc := range []struct {
		extra   []string
		days    int
		ok, bad bool
	}{
		{nil, 0, false, false},
		{[]string{"", "", "", "", "", "userdb_quota_rule=*:storage=1G"}, 0, false, false},
		{[]string{"", "", "", "", "", "userdb_quota_rule=*:storage=1G userdb_pop3_expire=30"}, 30, true, false},
		{[]string{"", "", "", "", "", "userdb_pop3_expire=0"}, 0, true, false},
		{[]string{"", "", "", "", "", "userdb_pop3_expire=NEVER"}, -1, true, false},
		{[]string{"", "", "", "", "", "userdb_pop3_expire=-1"}, 0, false, true},
		{[]string{"", "", "", "", "", "userdb_pop3_expire=30d"}, 0, false, true},
		{[]string{"", "", "", "", "", "userdb_pop3_expire=9999999999"}, 0, false, true},
		{[]string{"", "", "", "", "", "userdb_pop3_expire="}, 0, false, true},
	} {
		u := User{Address: "a@example.test", Extra: tc.extra}
		days, ok, err := u.Expire()
		if days != tc.days || ok != tc.ok || (err != nil) != tc.bad {
			t.Errorf("%q: Expire() = %d, %v, %v", tc.extra, days, ok, err)
		}
		if tc.bad && !errors.Is(err, ErrExpireSyntax) {
			t.Errorf("%q: error %v does not wrap ErrExpireSyntax", tc.extra, err)
		}
	}
}
