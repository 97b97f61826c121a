package auth

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/store/pgstore"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// pgUsers returns a Store over a fresh, migrated PostgreSQL database,
// and a function opening another node's Store on the same database.
func pgUsers(t *testing.T) (Store, func() Store) {
	t.Helper()
	dsn := pgtest.NewDB(t)
	open := func() Store {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pool, err := pgstore.NewPool(ctx, dsn, 4)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		if _, err := pgstore.Migrate(ctx, pool); err != nil {
			t.Fatal(err)
		}
		return pgstore.NewUsers(pool)
	}
	return open(), open
}

// backendDB is a user database on one backend, holding the users of a
// passwd-file's content.
type backendDB struct {
	name string
	db   *DB
	// other opens a second DB on the same entries (another process or
	// node).
	other func() *DB
}

// dbBackends returns a DB on each backend (passwd-file, PostgreSQL)
// holding the users of content; the PostgreSQL one gets them as "postino
// db import" copies them, entry by entry.
func dbBackends(t *testing.T, content string) []backendDB {
	t.Helper()
	path := writeDB(t, content)
	file := OpenDB(path)
	users, err := file.List()
	if err != nil {
		t.Fatal(err)
	}
	st, open := pgUsers(t)
	pg := OpenStoreDB(st)
	ctx := context.Background()
	for _, u := range users {
		if err := pg.AddUser(ctx, u); err != nil && !errors.Is(err, ErrMalformedHash) && !errors.Is(err, ErrUnknownScheme) {
			t.Fatal(err)
		} else if err != nil {
			// AddUser refuses unusable hashes: store them as the
			// file has them, to check that login reports them.
			if err := pg.modify(ctx, func(lines []fileLine, _ *snapshot) ([]fileLine, error) {
				return append(lines, fileLine{raw: u.line(), user: &u}), nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return []backendDB{
		{"file", file, func() *DB { return OpenDB(path) }},
		{"postgres", pg, func() *DB { return OpenStoreDB(open()) }},
	}
}

// TestStoreDBAuthenticate runs the login table of TestDBAuthenticate
// against both backends.
func TestStoreDBAuthenticate(t *testing.T) {
	for _, b := range dbBackends(t, sampleDB) {
		t.Run(b.name, func(t *testing.T) {
			testAuthenticateTable(t, b.db)
			u, ok := b.db.Lookup("BOB@example.com")
			want := User{Address: "Bob@example.com", Hash: helloHash, Extra: []string{"1000", "1000", "Bob", "/home/bob", "", "quota=1G"}}
			if !ok || !equalUser(u, want) {
				t.Errorf("Lookup = %+v, %v; want %+v", u, ok, want)
			}
			users, err := b.db.List()
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
		})
	}
}

// TestStoreDBModify: add, passwd, quota, junk and delete behave alike on
// both backends, and a second DB on the same entries (another node) sees
// every change at its next login, and at its next lookup once storeFresh
// has passed.
func TestStoreDBModify(t *testing.T) {
	for _, b := range dbBackends(t, "alice@example.com:{PLAIN}a:1:2:Alice:/home/a::x=y\n") {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			db, other := b.db, b.other()
			clock := time.Now()
			other.Now = func() time.Time { return clock }
			mustAuth := func(d *DB, user, pw, want string) {
				t.Helper()
				got, err := d.Authenticate(ctx, user, pw)
				if want == "" {
					if !errors.Is(err, ErrInvalidCredentials) {
						t.Errorf("Authenticate(%s, %s) = %q, %v; want a failure", user, pw, got, err)
					}
					return
				}
				if err != nil || got != want {
					t.Errorf("Authenticate(%s, %s) = %q, %v; want %s", user, pw, got, err, want)
				}
			}
			mustAuth(other, "alice@example.com", "a", "alice@example.com")
			if err := db.Add(ctx, "carol@Example.com", "{PLAIN}c"); err != nil {
				t.Fatal(err)
			}
			mustAuth(other, "CAROL@example.com", "c", "carol@example.com")
			if err := other.Add(ctx, "carol@example.COM", "{PLAIN}x"); !errors.Is(err, ErrUserExists) {
				t.Errorf("second Add = %v; want ErrUserExists", err)
			}
			for _, bad := range []struct {
				addr, hash string
				err        error
			}{
				{"a/b@example.com", "{PLAIN}x", ErrInvalidAddress},
				{"zed@example.com", "{PLAIN}x:y", ErrMalformedHash},
				{"zed@example.com", "{MD5}x", ErrUnknownScheme},
			} {
				if err := db.Add(ctx, bad.addr, bad.hash); !errors.Is(err, bad.err) {
					t.Errorf("Add(%q, %q) = %v; want %v", bad.addr, bad.hash, err, bad.err)
				}
			}
			if err := db.SetPassword(ctx, "ALICE@example.com", helloHash); err != nil {
				t.Fatal(err)
			}
			mustAuth(other, "alice@example.com", "a", "")
			mustAuth(other, "alice@example.com", "Hello world!", "alice@example.com")
			if err := db.SetQuota(ctx, "alice@example.com", &Quota{Bytes: 512 << 20, Messages: 10}); err != nil {
				t.Fatal(err)
			}
			if err := db.SetJunk(ctx, "alice@example.com", "quarantine"); err != nil {
				t.Fatal(err)
			}
			if b.name != "file" {
				// Within storeFresh of its last check, the other node
				// still answers lookups from the users it read then.
				if u, _ := other.Lookup("alice@example.com"); u.Hash != helloHash || len(u.Extra) == 8 {
					t.Errorf("lookup within storeFresh = %+v; want the users last read (new password, no quota yet)", u)
				}
			}
			clock = clock.Add(storeFresh)
			u, ok := other.Lookup("alice@example.com")
			want := User{Address: "alice@example.com", Hash: helloHash,
				Extra: []string{"1", "2", "Alice", "/home/a", "", "x=y userdb_quota_rule=*", "storage=512M", "messages=10 userdb_junk=quarantine"}}
			if !ok || !equalUser(u, want) {
				t.Errorf("other node's Lookup = %+v; want %+v", u, want)
			}
			if q, ok, err := u.Quota(); !ok || err != nil || q.Bytes != 512<<20 || q.Messages != 10 {
				t.Errorf("Quota = %+v, %v, %v", q, ok, err)
			}
			if c, ok := u.JunkChoice(); !ok || c != "quarantine" {
				t.Errorf("JunkChoice = %q, %v", c, ok)
			}
			if err := other.Delete(ctx, "Carol@example.com"); err != nil {
				t.Fatal(err)
			}
			mustAuth(db, "carol@example.com", "c", "")
			if _, ok := db.Lookup("carol@example.com"); ok {
				t.Error("deleted user still found")
			}
			if err := db.Delete(ctx, "carol@example.com"); !errors.Is(err, ErrNoSuchUser) {
				t.Errorf("second Delete = %v; want ErrNoSuchUser", err)
			}
			if err := db.SetPassword(ctx, "zed@example.com", "{PLAIN}z"); !errors.Is(err, ErrNoSuchUser) {
				t.Errorf("SetPassword(unknown) = %v", err)
			}
			users, err := other.List()
			if err != nil || len(users) != 1 || users[0].Address != "alice@example.com" {
				t.Errorf("List = %+v, %v", users, err)
			}
			// Importing the same user again copies nothing.
			if err := db.AddUser(ctx, User{Address: "alice@example.com", Hash: "{PLAIN}other"}); !errors.Is(err, ErrUserExists) {
				t.Errorf("AddUser of an existing user = %v", err)
			}
			if err := db.AddUser(ctx, User{Address: "dan@example.com", Hash: "{PLAIN}d", Extra: []string{"a\nb"}}); err == nil {
				t.Error("AddUser took an extra field with a line break")
			}
		})
	}
}

// TestStoreDBConcurrentAdd: two nodes adding users at once lose none,
// and exactly one of them adds a user both try to add.
func TestStoreDBConcurrentAdd(t *testing.T) {
	for _, b := range dbBackends(t, "") {
		t.Run(b.name, func(t *testing.T) {
			dbs := []*DB{b.db, b.other()}
			ctx := context.Background()
			const n = 20
			var wg sync.WaitGroup
			errs := make(chan error, 2*n)
			for i := range n {
				wg.Go(func() {
					db := dbs[i%2]
					errs <- db.Add(ctx, fmt.Sprintf("user%02d@example.com", i), "{PLAIN}pw")
					errs <- db.Add(ctx, "same@example.com", "{PLAIN}pw")
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
				if users, err := db.List(); err != nil || len(users) != n+1 {
					t.Errorf("List() has %d users, %v; want %d", len(users), err, n+1)
				}
			}
		})
	}
}

// TestStoreDBCache: the password-check cache works over PostgreSQL as
// over a file, and a password changed by another node misses it.
func TestStoreDBCache(t *testing.T) {
	n := countVerifications(t)
	st, open := pgUsers(t)
	db := OpenStoreDB(st)
	ctx := context.Background()
	if err := db.Add(ctx, "alice@example.com", helloHash); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := db.Authenticate(ctx, "alice@example.com", "Hello world!"); err != nil {
			t.Fatal(err)
		}
	}
	if got := n.Load(); got != 1 {
		t.Errorf("%d verifications for 3 logins; want 1 (cached)", got)
	}
	if err := OpenStoreDB(open()).SetPassword(ctx, "alice@example.com", "{PLAIN}new"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Authenticate(ctx, "alice@example.com", "Hello world!"); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("old password after another node changed it: %v", err)
	}
}

// TestStoreDBUnreachable: a database that cannot be reached is an error
// for Authenticate (not a failed login) and no user for Lookup.
func TestStoreDBUnreachable(t *testing.T) {
	dsn := pgtest.NewDB(t)
	px := pgtest.NewProxy(t, pgtest.Addr(t))
	t.Cleanup(px.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	direct, err := pgstore.NewPool(ctx, dsn, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if _, err := pgstore.Migrate(ctx, direct); err != nil {
		t.Fatal(err)
	}
	pool, err := pgstore.NewPool(ctx, strings.Replace(dsn, pgtest.Addr(t), px.Addr(), 1), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	db := OpenStoreDB(pgstore.NewUsers(pool))
	if err := db.Add(ctx, "alice@example.com", "{PLAIN}pw"); err != nil {
		t.Fatal(err)
	}
	if _, ok := db.Lookup("alice@example.com"); !ok {
		t.Fatal("Lookup before the cut failed")
	}
	never := OpenStoreDB(pgstore.NewUsers(pool)) // has read nothing yet
	px.Cut()
	px.Close()
	// Lookups answer from the users last read.
	if u, ok := db.Lookup("alice@example.com"); !ok || u.Address != "alice@example.com" {
		t.Errorf("Lookup with the database gone = %+v, %v; want the user last read", u, ok)
	}
	if _, ok := never.Lookup("alice@example.com"); ok {
		t.Error("Lookup of a DB that never read the users succeeded")
	}
	if err := db.Add(ctx, "bob@example.com", "{PLAIN}pw"); err == nil {
		t.Error("Add with the database gone succeeded")
	}
	actx, acancel := context.WithTimeout(ctx, 5*time.Second)
	defer acancel()
	if _, err := db.Authenticate(actx, "alice@example.com", "pw"); err == nil || errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("Authenticate with the database gone = %v; want a database error", err)
	}
}

// failingStore is a Store that has answered once and then fails,
// counting the calls.
type failingStore struct {
	calls atomic.Int32
	up    atomic.Bool
}

func (f *failingStore) Version(context.Context) (int64, error) {
	f.calls.Add(1)
	if f.up.Load() {
		return 1, nil
	}
	return 0, errors.New("connection refused")
}

func (f *failingStore) Load(context.Context) ([]string, int64, error) {
	return []string{"alice@example.com:{PLAIN}pw"}, 1, nil
}

func (f *failingStore) Modify(context.Context, func([]string) ([]string, error)) error {
	return errors.New("connection refused")
}

func (f *failingStore) Name() string { return "test store" }

// TestStoreDBOutageBackoff: once the store failed, lookups answer from
// the users last read without asking it again for storeRetry, then ask
// again.
func TestStoreDBOutageBackoff(t *testing.T) {
	st := &failingStore{}
	st.up.Store(true)
	db := OpenStoreDB(st)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return now }
	if _, ok := db.Lookup("alice@example.com"); !ok {
		t.Fatal("first lookup failed")
	}
	now = now.Add(storeFresh) // the next lookup asks the store
	st.up.Store(false)
	before := st.calls.Load()
	for range 5 {
		if _, ok := db.Lookup("alice@example.com"); !ok {
			t.Fatal("lookup in the outage failed")
		}
	}
	if got := st.calls.Load() - before; got != 1 {
		t.Errorf("%d calls to the store for 5 lookups in an outage; want 1", got)
	}
	now = now.Add(storeRetry)
	db.Lookup("alice@example.com")
	if got := st.calls.Load() - before; got != 2 {
		t.Errorf("%d calls after storeRetry; want 2 (asked again)", got)
	}
	// Authenticate does not use the users last read.
	if _, err := db.Authenticate(context.Background(), "alice@example.com", "pw"); err == nil || errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("Authenticate in an outage = %v; want the store's error", err)
	}
}

// TestStoreDBLookupsWithinStoreFresh: lookups within storeFresh of the
// last version check do not ask the store again (an SMTP transaction
// looks a recipient up several times); the first one after it does, and
// a login always does.
func TestStoreDBLookupsWithinStoreFresh(t *testing.T) {
	st := &failingStore{}
	st.up.Store(true)
	db := OpenStoreDB(st)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	db.Now = func() time.Time { return now }
	for range 5 {
		if _, ok := db.Lookup("alice@example.com"); !ok {
			t.Fatal("lookup failed")
		}
		now = now.Add(storeFresh / 10)
	}
	if got := st.calls.Load(); got != 1 {
		t.Errorf("%d version checks for 5 lookups within storeFresh; want 1", got)
	}
	now = now.Add(storeFresh)
	db.Lookup("alice@example.com")
	if got := st.calls.Load(); got != 2 {
		t.Errorf("%d version checks after storeFresh; want 2", got)
	}
	for range 3 {
		if _, err := db.Authenticate(context.Background(), "alice@example.com", "pw"); err != nil {
			t.Fatal(err)
		}
	}
	if got := st.calls.Load(); got != 5 {
		t.Errorf("%d version checks after 3 logins; want 5 (a login always asks)", got)
	}
	// A SCRAM login reads the stored secrets with LookupLogin: always
	// from the store, as Authenticate.
	db.Lookup("alice@example.com") // within storeFresh of the logins: no call
	if got := st.calls.Load(); got != 5 {
		t.Errorf("%d version checks after a lookup within storeFresh; want 5", got)
	}
	if _, err := db.LookupLogin(context.Background(), "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	if got := st.calls.Load(); got != 6 {
		t.Errorf("%d version checks after LookupLogin; want 6 (it always asks)", got)
	}
	if _, err := db.LookupLogin(context.Background(), "nobody@example.com"); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("LookupLogin of an unknown user = %v", err)
	}
	st.calls.Store(5)
	// An address not in the users read is looked up in the store: a
	// user added meanwhile must not be refused.
	if _, ok := db.Lookup("nobody@example.com"); ok {
		t.Error("unknown user found")
	}
	if got := st.calls.Load(); got != 6 {
		t.Errorf("%d version checks after a lookup of an unknown user; want 6", got)
	}
}
