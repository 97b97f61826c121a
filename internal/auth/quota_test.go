package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseQuotaRule(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Quota
	}{
		{"*:storage=1G", Quota{Bytes: 1 << 30}},
		{"*:storage=512M", Quota{Bytes: 512 << 20}},
		{"*:storage=100", Quota{Bytes: 100 << 10}}, // Dovecot: kilobytes
		{"*:storage=100b", Quota{Bytes: 100}},
		{"*:bytes=1048576", Quota{Bytes: 1 << 20}},
		{"*:messages=1000", Quota{Messages: 1000}},
		{"*:storage=2GB:messages=5", Quota{Bytes: 2 << 30, Messages: 5}},
		{"*:storage=0", Quota{}},
	} {
		got, err := ParseQuotaRule(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseQuotaRule(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if !got.IsZero() {
			back, err := ParseQuotaRule(got.String())
			if err != nil || back != got {
				t.Errorf("round trip of %+v via %q = %+v, %v", got, got.String(), back, err)
			}
		}
	}
	for _, bad := range []string{"", "storage=1G", "Trash:storage=+100M", "*:storage=10%", "*:storage=-1", "*:foo=1", "*:messages=x", "*:storage=99999999999999999T", "*:storage"} {
		if _, err := ParseQuotaRule(bad); !errors.Is(err, ErrQuotaSyntax) {
			t.Errorf("ParseQuotaRule(%q) err = %v, want ErrQuotaSyntax", bad, err)
		}
	}
}

func TestUserQuotaFromExtraFields(t *testing.T) {
	u, err := ParseLine("a@example.test:{PLAIN}x::::::userdb_mail=maildir:~/Maildir userdb_quota_rule=*:storage=1G")
	if err != nil {
		t.Fatal(err)
	}
	q, ok, err := u.Quota()
	if err != nil || !ok || q.Bytes != 1<<30 {
		t.Fatalf("Quota() = %+v, %v, %v", q, ok, err)
	}
	u, _ = ParseLine("b@example.test:{PLAIN}x")
	if _, ok, err := u.Quota(); ok || err != nil {
		t.Fatalf("no extra fields: ok=%v err=%v", ok, err)
	}
	u, _ = ParseLine("c@example.test:{PLAIN}x::::::userdb_quota_rule=*:storage=lots")
	if _, ok, err := u.Quota(); ok || !errors.Is(err, ErrQuotaSyntax) {
		t.Fatalf("bad rule: ok=%v err=%v", ok, err)
	}
}

// TestSetQuotaKeepsFields checks that setting a quota and then a password
// keeps every other field of the line, in the form Dovecot reads.
func TestSetQuotaKeepsFields(t *testing.T) {
	ctx := context.Background()
	p := filepath.Join(t.TempDir(), "users")
	orig := "a@example.test:{PLAIN}old:1000:1000:Alice:/home/a::userdb_mail=maildir:~/Maildir userdb_quota_rule=*:storage=1M\n" +
		"b@example.test:{PLAIN}pw\n"
	if err := os.WriteFile(p, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	db := OpenDB(p)
	if err := db.SetQuota(ctx, "a@example.test", &Quota{Bytes: 512 << 20, Messages: 10}); err != nil {
		t.Fatal(err)
	}
	if err := db.SetPassword(ctx, "a@example.test", "{PLAIN}new"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetQuota(ctx, "b@example.test", &Quota{Bytes: 1000}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	want := "a@example.test:{PLAIN}new:1000:1000:Alice:/home/a::userdb_mail=maildir:~/Maildir userdb_quota_rule=*:storage=512M:messages=10\n" +
		"b@example.test:{PLAIN}pw::::::userdb_quota_rule=*:bytes=1000\n"
	if string(data) != want {
		t.Fatalf("file:\n%s\nwant:\n%s", data, want)
	}
	qs := &Quotas{DB: db, Default: Quota{Bytes: 7}}
	if b, m := qs.MailboxQuota("a@example.test"); b != 512<<20 || m != 10 {
		t.Errorf("MailboxQuota(a) = %d, %d", b, m)
	}
	// An explicit "no limit" overrides the default.
	if err := db.SetQuota(ctx, "b@example.test", &Quota{}); err != nil {
		t.Fatal(err)
	}
	if b, m := qs.MailboxQuota("b@example.test"); b != 0 || m != 0 {
		t.Errorf("MailboxQuota(b) with storage=0 = %d, %d, want no limit", b, m)
	}
	if err := db.SetQuota(ctx, "b@example.test", nil); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(p)
	if !strings.HasSuffix(string(data), "\nb@example.test:{PLAIN}pw\n") {
		t.Errorf("removing the quota left %q", data)
	}
	if b, m := qs.MailboxQuota("b@example.test"); b != 7 || m != 0 {
		t.Errorf("MailboxQuota(b) = %d, %d, want the default", b, m)
	}
	// A hand-written rule that cannot be read: the default applies.
	if err := os.WriteFile(p, []byte("c@example.test:{PLAIN}pw::::::userdb_quota_rule=*:storage=10%\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, m := qs.MailboxQuota("c@example.test"); b != 7 || m != 0 {
		t.Errorf("MailboxQuota with a bad rule = %d, %d, want the default", b, m)
	}
	if err := db.SetQuota(ctx, "nobody@example.test", &Quota{Bytes: 1}); !errors.Is(err, ErrNoSuchUser) {
		t.Errorf("SetQuota(unknown) = %v", err)
	}
}
