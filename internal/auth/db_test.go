package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// helloHash is a fast hash of "Hello world!".
var helloHash = "{SHA256-CRYPT}" + shaCryptSpecVectors[0].want

func writeDB(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func readDB(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseLine(t *testing.T) {
	tests := []struct {
		line string
		want User
		err  error // nil: any error is fine when want is zero
	}{
		{"alice@example.com:{PLAIN}pw", User{Address: "alice@example.com", Hash: "{PLAIN}pw"}, nil},
		{"Alice@EXAMPLE.com:{PLAIN}pw\r", User{Address: "Alice@example.com", Hash: "{PLAIN}pw"}, nil},
		{"bob@example.com:{PLAIN}pw:1000:1000::/home/bob::userdb_quota_rule=*:storage=1G",
			User{Address: "bob@example.com", Hash: "{PLAIN}pw", Extra: []string{"1000", "1000", "", "/home/bob", "", "userdb_quota_rule=*", "storage=1G"}}, nil},
		{"carol@example.com:{PLAIN}pw:", User{Address: "carol@example.com", Hash: "{PLAIN}pw", Extra: []string{""}}, nil},
		{"", User{}, ErrNotEntry},
		{"   ", User{}, ErrNotEntry},
		{"\r", User{}, ErrNotEntry},
		{"# a comment: with colons", User{}, ErrNotEntry},
		{"#alice@example.com:{PLAIN}pw", User{}, ErrNotEntry},
		{"alice@example.com", User{}, nil},
		{"alice@example.com:", User{}, nil},
		{":{PLAIN}pw", User{}, ErrInvalidAddress},
		{"../etc@passwd:{PLAIN}pw", User{}, ErrInvalidAddress},
		{" alice@example.com:{PLAIN}pw", User{}, ErrInvalidAddress},
		{"alice:{PLAIN}pw", User{}, ErrInvalidAddress},
		{"alice@example.com:{PLAIN}a\nb", User{}, nil},
	}
	for _, tc := range tests {
		got, err := ParseLine(tc.line)
		if tc.want.Address != "" {
			if err != nil || !equalUser(got, tc.want) {
				t.Errorf("ParseLine(%q) = %+v, %v; want %+v", tc.line, got, err, tc.want)
			}
			continue
		}
		if err == nil || (tc.err != nil && !errors.Is(err, tc.err)) {
			t.Errorf("ParseLine(%q) = %+v, %v; want error %v", tc.line, got, err, tc.err)
		}
		if tc.err != ErrNotEntry && errors.Is(err, ErrNotEntry) {
			t.Errorf("ParseLine(%q) = %v; want a parse error", tc.line, err)
		}
	}
}

func equalUser(a, b User) bool {
	return a.Address == b.Address && a.Hash == b.Hash && slices.Equal(a.Extra, b.Extra)
}

const sampleDB = `# postino users
# user:password:uid:gid:gecos:home:shell:extra

alice@example.com:{PLAIN}alicepw
Bob@Example.COM:{SHA256-CRYPT}$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5:1000:1000:Bob:/home/bob::quota=1G
carol@example.com:{PLAIN}carolpw` + "\r" + `
this line is broken
dave@example.com:{NOSUCH}xyz
eve@example.com:{ARGON2ID}$argon2id$v=19$m=1,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAA
alice@EXAMPLE.com:{PLAIN}shadowed
Frank@example.com:{PLAIN}bigfrank
frank@example.com:{PLAIN}smallfrank
`

func TestDBAuthenticate(t *testing.T) {
	path := writeDB(t, sampleDB)
	var logs bytes.Buffer
	db := OpenDB(path)
	db.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	testAuthenticateTable(t, db)

	problems := db.Problems()
	var lines []int
	for _, p := range problems {
		lines = append(lines, p.Line)
	}
	if !slices.Equal(lines, []int{7, 10}) {
		t.Errorf("Problems() = %v; want lines 7 and 10", problems)
	}
	if !strings.Contains(logs.String(), "line=7") || !strings.Contains(logs.String(), "line=10") {
		t.Errorf("problems not logged: %s", logs.String())
	}

	u, ok := db.Lookup("BOB@example.com")
	want := User{Address: "Bob@example.com", Hash: helloHash, Extra: []string{"1000", "1000", "Bob", "/home/bob", "", "quota=1G"}}
	if !ok || !equalUser(u, want) {
		t.Errorf("Lookup = %+v, %v; want %+v", u, ok, want)
	}
	if _, ok := db.Lookup("nobody@example.com"); ok {
		t.Error("Lookup(nobody) succeeded")
	}
	if got, ok := db.LookupAddress("BOB@example.com"); !ok || got != "Bob@example.com" {
		t.Errorf("LookupAddress(BOB) = %q, %v; want Bob@example.com, true", got, ok)
	}
	if got, ok := db.LookupAddress("nobody@example.com"); ok || got != "" {
		t.Errorf("LookupAddress(nobody) = %q, %v; want \"\", false", got, ok)
	}

	users, err := db.List()
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, u := range users {
		addrs = append(addrs, u.Address)
	}
	wantAddrs := []string{"Bob@example.com", "Frank@example.com", "alice@example.com", "carol@example.com", "dave@example.com", "eve@example.com", "frank@example.com"}
	if !slices.Equal(addrs, wantAddrs) {
		t.Errorf("List() = %v; want %v", addrs, wantAddrs)
	}
}

// testAuthenticateTable checks logins against a DB holding sampleDB.
func testAuthenticateTable(t *testing.T, db *DB) {
	t.Helper()
	ctx := context.Background()
	tests := []struct {
		user, password string
		want           string
		err            error
	}{
		{"alice@example.com", "alicepw", "alice@example.com", nil},
		{"alice@EXAMPLE.COM", "alicepw", "alice@example.com", nil},
		{"ALICE@example.com", "alicepw", "alice@example.com", nil}, // unique case-insensitive match
		{"alice@example.com", "shadowed", "", ErrWrongPassword},
		{"alice@example.com", "Alicepw", "", ErrWrongPassword},
		{"alice@example.com", "", "", ErrEmptyPassword},
		{"Bob@example.com", "Hello world!", "Bob@example.com", nil},
		{"bob@example.com", "Hello world!", "Bob@example.com", nil},
		{"bob@example.com", "hello world!", "", ErrWrongPassword},
		{"carol@example.com", "carolpw", "carol@example.com", nil},
		{"Frank@example.com", "bigfrank", "Frank@example.com", nil},
		{"frank@example.com", "smallfrank", "frank@example.com", nil},
		{"FRANK@example.com", "bigfrank", "", ErrUnknownUser}, // ambiguous
		{"nobody@example.com", "alicepw", "", ErrUnknownUser},
		{"alice", "alicepw", "", ErrUnknownUser},
		{"../alice@example.com", "alicepw", "", ErrUnknownUser},
		{"dave@example.com", "xyz", "", ErrUnknownScheme},
		{"eve@example.com", "x", "", ErrMalformedHash},
	}
	for _, tc := range tests {
		got, err := db.Authenticate(ctx, tc.user, tc.password)
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("Authenticate(%q, %q) = %q, %v; want %q, %v", tc.user, tc.password, got, err, tc.want, tc.err)
		}
		// Every cause of a failed login is also the one error callers
		// answer alike, so that the wire never tells them apart.
		if (tc.err == ErrUnknownUser || tc.err == ErrWrongPassword || tc.err == ErrEmptyPassword) && !errors.Is(err, ErrInvalidCredentials) {
			t.Errorf("Authenticate(%q, %q) = %v; want it to wrap ErrInvalidCredentials", tc.user, tc.password, err)
		}
		if tc.err == ErrUnknownScheme || tc.err == ErrMalformedHash {
			if errors.Is(err, ErrInvalidCredentials) {
				t.Errorf("Authenticate(%q): a malformed hash should be a distinct error, got %v", tc.user, err)
			}
		}
	}
}

func TestFailureReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{ErrUnknownUser, "unknown user"},
		{ErrWrongPassword, "wrong password"},
		{ErrEmptyPassword, "empty password"},
		{fmt.Errorf("pop3: %w", ErrWrongPassword), "wrong password"},
		{nil, ""},
	} {
		if got := FailureReason(tc.err); got != tc.want {
			t.Errorf("FailureReason(%v) = %q; want %q", tc.err, got, tc.want)
		}
	}
}

func TestDBMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	db := OpenDB(path)
	ctx := context.Background()
	if _, err := db.Authenticate(ctx, "a@b.c", "pw"); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("Authenticate on a missing file = %v", err)
	}
	if users, err := db.List(); err != nil || len(users) != 0 {
		t.Errorf("List on a missing file = %v, %v", users, err)
	}
	if err := db.Add(ctx, "A@B.C", "{PLAIN}pw"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v; want 0600", fi.Mode())
	}
	if got := readDB(t, path); got != "A@b.c:{PLAIN}pw\n" {
		t.Errorf("file = %q", got)
	}
	if got, err := db.Authenticate(ctx, "a@b.c", "pw"); err != nil || got != "A@b.c" {
		t.Errorf("Authenticate after Add = %q, %v", got, err)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left behind: %v", err)
	}
}

func TestDBModify(t *testing.T) {
	const initial = "# users\n\nalice@example.com:{PLAIN}a:1:2:Alice:/home/a::x=y\r\nbroken line\n# trailer\nbob@example.com:{PLAIN}b"
	path := writeDB(t, initial)
	db := OpenDB(path)
	ctx := context.Background()

	steps := []struct {
		name string
		do   func() error
		err  error
		want string
	}{
		{"add", func() error { return db.Add(ctx, "carol@Example.com", "{PLAIN}c") }, nil,
			"# users\n\nalice@example.com:{PLAIN}a:1:2:Alice:/home/a::x=y\r\nbroken line\n# trailer\nbob@example.com:{PLAIN}b\ncarol@example.com:{PLAIN}c\n"},
		{"add existing", func() error { return db.Add(ctx, "alice@EXAMPLE.com", "{PLAIN}x") }, ErrUserExists, ""},
		{"add bad address", func() error { return db.Add(ctx, "a/b@example.com", "{PLAIN}x") }, ErrInvalidAddress, ""},
		{"add bad hash", func() error { return db.Add(ctx, "zed@example.com", "{PLAIN}x:y") }, ErrMalformedHash, ""},
		{"add unknown scheme", func() error { return db.Add(ctx, "zed@example.com", "{MD5}x") }, ErrUnknownScheme, ""},
		{"passwd", func() error { return db.SetPassword(ctx, "alice@example.com", helloHash) }, nil,
			"# users\n\nalice@example.com:" + helloHash + ":1:2:Alice:/home/a::x=y\r\nbroken line\n# trailer\nbob@example.com:{PLAIN}b\ncarol@example.com:{PLAIN}c\n"},
		{"passwd case-insensitive", func() error { return db.SetPassword(ctx, "BOB@example.com", "{PLAIN}b2") }, nil,
			"# users\n\nalice@example.com:" + helloHash + ":1:2:Alice:/home/a::x=y\r\nbroken line\n# trailer\nbob@example.com:{PLAIN}b2\ncarol@example.com:{PLAIN}c\n"},
		{"passwd unknown", func() error { return db.SetPassword(ctx, "zed@example.com", "{PLAIN}z") }, ErrNoSuchUser, ""},
		{"passwd bad hash", func() error { return db.SetPassword(ctx, "bob@example.com", "{PLAIN}a\nb") }, ErrMalformedHash, ""},
		{"delete", func() error { return db.Delete(ctx, "bob@example.com") }, nil,
			"# users\n\nalice@example.com:" + helloHash + ":1:2:Alice:/home/a::x=y\r\nbroken line\n# trailer\ncarol@example.com:{PLAIN}c\n"},
		{"delete again", func() error { return db.Delete(ctx, "bob@example.com") }, ErrNoSuchUser, ""},
	}
	for _, s := range steps {
		before := readDB(t, path)
		err := s.do()
		if !errors.Is(err, s.err) || (s.err != nil) != (err != nil) {
			t.Fatalf("%s: err = %v; want %v", s.name, err, s.err)
		}
		got := readDB(t, path)
		if s.err != nil {
			if got != before {
				t.Errorf("%s: failed but changed the file to %q", s.name, got)
			}
			continue
		}
		if got != s.want {
			t.Errorf("%s: file =\n%q\nwant\n%q", s.name, got, s.want)
		}
	}

	if got, err := db.Authenticate(ctx, "alice@example.com", "Hello world!"); err != nil || got != "alice@example.com" {
		t.Errorf("Authenticate with the new password = %q, %v", got, err)
	}
	if _, err := db.Authenticate(ctx, "alice@example.com", "a"); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("Authenticate with the old password = %v", err)
	}
	users, _ := db.List()
	if len(users) != 2 || users[0].Address != "alice@example.com" || users[1].Address != "carol@example.com" {
		t.Errorf("List() = %+v", users)
	}
}

func TestDBDeleteDuplicates(t *testing.T) {
	path := writeDB(t, "a@x.org:{PLAIN}1\nb@x.org:{PLAIN}2\na@X.ORG:{PLAIN}3\n")
	db := OpenDB(path)
	if err := db.Delete(context.Background(), "a@x.org"); err != nil {
		t.Fatal(err)
	}
	if got := readDB(t, path); got != "b@x.org:{PLAIN}2\n" {
		t.Errorf("file = %q", got)
	}
}

func TestDBReload(t *testing.T) {
	path := writeDB(t, "alice@example.com:{PLAIN}one\n")
	db := OpenDB(path)
	ctx := context.Background()
	auth := func(user, pw string) error {
		_, err := db.Authenticate(ctx, user, pw)
		return err
	}
	if err := auth("alice@example.com", "one"); err != nil {
		t.Fatal(err)
	}

	// Replaced by rename, as editors and doveadm-driven scripts do.
	tmp := path + ".new"
	os.WriteFile(tmp, []byte("alice@example.com:{PLAIN}two\nbob@example.com:{PLAIN}bob\n"), 0o600)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	if err := auth("alice@example.com", "one"); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("old password after rewrite: %v", err)
	}
	if err := auth("alice@example.com", "two"); err != nil {
		t.Errorf("new password after rewrite: %v", err)
	}
	if err := auth("bob@example.com", "bob"); err != nil {
		t.Errorf("new user after rewrite: %v", err)
	}

	// Rewritten in place with the same size: the mtime tells.
	if err := os.WriteFile(path, []byte("alice@example.com:{PLAIN}abc\nbob@example.com:{PLAIN}bob\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour)
	os.Chtimes(path, future, future)
	if err := auth("alice@example.com", "abc"); err != nil {
		t.Errorf("password after in-place edit: %v", err)
	}
	if _, ok := db.Lookup("bob@example.com"); !ok {
		t.Error("Lookup(bob) after in-place edit failed")
	}

	// Removed: no users.
	os.Remove(path)
	if err := auth("alice@example.com", "abc"); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("after removal: %v", err)
	}
	if users, err := db.List(); err != nil || len(users) != 0 {
		t.Errorf("List after removal = %v, %v", users, err)
	}
}

func TestDBConcurrentAdd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	// Two DB values on one file stand for two processes.
	dbs := []*DB{OpenDB(path), OpenDB(path)}
	ctx := context.Background()
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			db := dbs[i%2]
			errs <- db.Add(ctx, fmt.Sprintf("user%02d@example.com", i), "{PLAIN}pw")
			// Everyone tries to add the same one too: exactly one wins.
			errs <- db.Add(ctx, "same@example.com", "{PLAIN}pw")
			db.Lookup("user00@example.com")
		})
	}
	wg.Wait()
	close(errs)
	exists := 0
	for err := range errs {
		switch {
		case errors.Is(err, ErrUserExists):
			exists++
		case err != nil:
			t.Error(err)
		}
	}
	if exists != n-1 {
		t.Errorf("%d Adds of the same user failed with ErrUserExists; want %d", exists, n-1)
	}
	for _, db := range dbs {
		users, err := db.List()
		if err != nil || len(users) != n+1 {
			t.Errorf("List() has %d users, %v; want %d", len(users), err, n+1)
		}
	}
}

// TestDBUnknownUserCostsAHash: an unknown user fails after verifying the
// password against an ARGON2ID hash made with the current parameters, the
// same work as a wrong password for a real user (no timing measured: the
// work done is counted).
func TestDBUnknownUserCostsAHash(t *testing.T) {
	h, err := HashPassword("right")
	if err != nil {
		t.Fatal(err)
	}
	db := OpenDB(writeDB(t, "alice@example.com:"+h+"\n"))
	db.CacheTTL = 0
	var hashes []string
	orig := verifyPassword
	verifyPassword = func(stored, password string) (bool, error) {
		hashes = append(hashes, stored)
		return orig(stored, password)
	}
	t.Cleanup(func() { verifyPassword = orig })
	ctx := context.Background()
	for _, user := range []string{"alice@example.com", "nobody@example.com"} {
		if _, err := db.Authenticate(ctx, user, "wrong"); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("Authenticate(%s) = %v", user, err)
		}
	}
	if len(hashes) != 2 {
		t.Fatalf("%d verifications, want one per attempt", len(hashes))
	}
	params := func(h string) string { return h[:strings.LastIndex(h[:strings.LastIndex(h, "$")], "$")] }
	if params(hashes[0]) != params(hashes[1]) {
		t.Errorf("unknown user verified against %q, a real user against %q", params(hashes[1]), params(hashes[0]))
	}
}

// countVerifications replaces verifyPassword for the test and returns the
// number of verifications done (cache misses).
func countVerifications(t *testing.T) *atomic.Int64 {
	var n atomic.Int64
	orig := verifyPassword
	verifyPassword = func(stored, password string) (bool, error) {
		n.Add(1)
		return orig(stored, password)
	}
	t.Cleanup(func() { verifyPassword = orig })
	return &n
}

func TestDBCache(t *testing.T) {
	n := countVerifications(t)
	path := writeDB(t, "alice@example.com:"+helloHash+"\nbob@example.com:{PLAIN}bob\n")
	db := OpenDB(path)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return now }
	ctx := context.Background()

	check := func(step, user, pw string, wantErr error, wantCount int64) {
		t.Helper()
		_, err := db.Authenticate(ctx, user, pw)
		if !errors.Is(err, wantErr) {
			t.Errorf("%s: Authenticate = %v; want %v", step, err, wantErr)
		}
		if got := n.Load(); got != wantCount {
			t.Errorf("%s: %d verifications; want %d", step, got, wantCount)
		}
	}
	check("first", "alice@example.com", "Hello world!", nil, 1)
	check("hit", "alice@example.com", "Hello world!", nil, 1)
	check("hit, other spelling", "ALICE@EXAMPLE.COM", "Hello world!", nil, 1)
	check("wrong password", "alice@example.com", "Hello world", ErrInvalidCredentials, 2)
	check("failures not cached", "alice@example.com", "Hello world", ErrInvalidCredentials, 3)
	now = now.Add(59 * time.Second)
	check("before expiry", "alice@example.com", "Hello world!", nil, 3)
	now = now.Add(time.Second)
	check("expired", "alice@example.com", "Hello world!", nil, 4)
	check("cached again", "alice@example.com", "Hello world!", nil, 4)

	if err := db.SetPassword(ctx, "alice@example.com", "{PLAIN}new"); err != nil {
		t.Fatal(err)
	}
	check("old password after change", "alice@example.com", "Hello world!", ErrInvalidCredentials, 5)
	check("new password", "alice@example.com", "new", nil, 6)
	check("new password cached", "alice@example.com", "new", nil, 6)

	// An external edit changes the hash too.
	os.WriteFile(path, []byte("alice@example.com:"+helloHash+"\n"), 0o600)
	check("external change", "alice@example.com", "new", ErrInvalidCredentials, 7)

	db.CacheTTL = 0
	check("disabled", "alice@example.com", "Hello world!", nil, 8)
	check("disabled again", "alice@example.com", "Hello world!", nil, 9)
}

func TestDBCacheBounded(t *testing.T) {
	var content strings.Builder
	for i := range 10 {
		fmt.Fprintf(&content, "u%d@example.com:{PLAIN}pw\n", i)
	}
	db := OpenDB(writeDB(t, content.String()))
	db.CacheSize = 3
	ctx := context.Background()
	for i := range 10 {
		if _, err := db.Authenticate(ctx, fmt.Sprintf("u%d@example.com", i), "pw"); err != nil {
			t.Fatal(err)
		}
		if got := db.cache.len(); got > 3 {
			t.Fatalf("cache holds %d entries; want at most 3", got)
		}
	}
}

func TestVerifiedCache(t *testing.T) {
	var c verifiedCache
	t0 := time.Unix(1000, 0)
	k := func(i int) cacheKey { return makeCacheKey(fmt.Sprint(i), "h", "p") }
	for i := range 5 {
		c.add(k(i), t0.Add(time.Duration(i)*time.Second), 10*time.Second, 3)
	}
	// The two oldest were evicted.
	for i, want := range []bool{false, false, true, true, true} {
		if got := c.hit(k(i), t0.Add(5*time.Second)); got != want {
			t.Errorf("hit(%d) = %v; want %v", i, got, want)
		}
	}
	if c.hit(k(2), t0.Add(12*time.Second)) {
		t.Error("hit after expiry")
	}
	if !c.hit(k(4), t0.Add(12*time.Second)) {
		t.Error("no hit before expiry")
	}
	// Keys differ by every field and are unambiguous.
	if makeCacheKey("a", "bc", "d") == makeCacheKey("ab", "c", "d") || makeCacheKey("a", "b", "c") == makeCacheKey("a", "b", "C") {
		t.Error("cache keys collide")
	}
	if len(c.order) > 5 {
		t.Errorf("queue grew to %d", len(c.order))
	}
}

func BenchmarkAuthenticateCached(b *testing.B) {
	h, err := HashPassword("benchmark password")
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "users")
	os.WriteFile(path, []byte("alice@example.com:"+h+"\n"), 0o600)
	db := OpenDB(path)
	ctx := context.Background()
	if _, err := db.Authenticate(ctx, "alice@example.com", "benchmark password"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := db.Authenticate(ctx, "alice@example.com", "benchmark password"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDBArgon2Option proves that a database hashes with its own Argon2
// parameters, that the zero value means the defaults, and that neither
// changes what HashPassword makes.
func TestDBArgon2Option(t *testing.T) {
	db := OpenDB(filepath.Join(t.TempDir(), "users"))
	if db.Argon2 != DefaultArgon2() {
		t.Fatalf("OpenDB: Argon2 = %+v; want %+v", db.Argon2, DefaultArgon2())
	}
	db.Argon2 = Argon2Parameters{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	h, err := db.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h, "$m=64,t=1,p=1$") {
		t.Errorf("DB.HashPassword = %q; want m=64,t=1,p=1", h)
	}
	if ok, err := VerifyPassword(h, "pw"); !ok || err != nil {
		t.Errorf("VerifyPassword(DB hash) = %v, %v", ok, err)
	}
	if err := db.Add(context.Background(), "alice@example.com", h); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Authenticate(context.Background(), "alice@example.com", "pw"); err != nil || got != "alice@example.com" {
		t.Errorf("Authenticate = %q, %v", got, err)
	}
	// An unknown user is checked against a hash with the same parameters.
	if _, err := db.Authenticate(context.Background(), "nobody@example.com", "pw"); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("Authenticate(unknown) = %v; want ErrInvalidCredentials", err)
	}
	if !strings.Contains(db.dummyHash, "$m=64,t=1,p=1$") {
		t.Errorf("dummy hash %q does not use the database's parameters", db.dummyHash)
	}
	own, err := HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(own, "$m=19456,t=2,p=1$") {
		t.Errorf("HashPassword = %q after setting a DB's parameters; want the defaults", own)
	}
	db.Argon2 = Argon2Parameters{}
	if h, err := db.HashPassword("pw"); err != nil || !strings.Contains(h, "$m=19456,t=2,p=1$") {
		t.Errorf("zero Argon2: DB.HashPassword = %q, %v; want the defaults", h, err)
	}
	if _, err := (Argon2Parameters{Memory: 64, Time: 0, Threads: 1, SaltLen: 16, KeyLen: 32}).Hash("pw"); err == nil {
		t.Error("Hash accepted t=0")
	}
}
