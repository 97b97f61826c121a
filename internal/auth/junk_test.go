package auth

import (
	"context"
	"path/filepath"
	"testing"
)

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

func TestSetJunk(t *testing.T) {
	db := OpenDB(filepath.Join(t.TempDir(), "users.passwd"))
	ctx := context.Background()
	if err := db.Add(ctx, "a@example.test", "{PLAIN}pw"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetQuota(ctx, "a@example.test", &Quota{Bytes: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"tag", "quarantine"} {
		if err := db.SetJunk(ctx, "A@example.test", c); err != nil {
			t.Fatal(err)
		}
		u, _ := db.Lookup("a@example.test")
		if got, ok := u.JunkChoice(); got != c || !ok {
			t.Errorf("after SetJunk(%q): %q %v", c, got, ok)
		}
		if q, ok, _ := u.Quota(); !ok || q.Bytes != 1<<30 {
			t.Errorf("quota lost: %v %v", q, ok)
		}
	}
	if err := db.SetJunk(ctx, "a@example.test", ""); err != nil {
		t.Fatal(err)
	}
	u, _ := db.Lookup("a@example.test")
	if _, ok := u.JunkChoice(); ok {
		t.Error("choice not removed")
	}
	if err := db.SetJunk(ctx, "nobody@example.test", "tag"); err == nil {
		t.Error("no error for an unknown user")
	}
	if err := db.SetJunk(ctx, "a@example.test", "tag userdb_quota_rule=*:storage=0"); err == nil {
		t.Error("a choice with a blank was written")
	}
}
