package auth

import "testing"

func TestJunkChoice(t *testing.T) {
	for line, want := range map[string]string{
		"a@x:{PLAIN}p::::::userdb_junk=quarantine":                         "quarantine",
		"a@x:{PLAIN}p::::::userdb_quota_rule=*:storage=1G userdb_junk=off": "off",
		"a@x:{PLAIN}p:1000:1000:Gecos:/home/a:/bin/sh:userdb_junk=tag":     "tag",
		"a@x:{PLAIN}p::::::userdb_quota_rule=*:storage=1G":                 "",
		"a@x:{PLAIN}p": "",
	} {
		u, err := ParseLine(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		got, ok := u.JunkChoice()
		if got != want || ok != (want != "") {
			t.Errorf("%q: JunkChoice() = %q %v, want %q", line, got, ok, want)
		}
	}
}
