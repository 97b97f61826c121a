package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/fsutil"
)

// ErrInvalidCredentials is returned by DB.Authenticate for an unknown user
// and for a wrong password alike: the errors it returns wrap it, and
// ErrUnknownUser, ErrWrongPassword or ErrEmptyPassword as well, which
// tell the cause for the log. Callers must give the client the same
// answer for all of them.
var ErrInvalidCredentials = errors.New("auth: invalid credentials")

// Causes of an ErrInvalidCredentials, for the log only.
var (
	// ErrUnknownUser means no user has the name.
	ErrUnknownUser = fmt.Errorf("%w: unknown user", ErrInvalidCredentials)
	// ErrWrongPassword means the user exists and the password is wrong.
	ErrWrongPassword = fmt.Errorf("%w: wrong password", ErrInvalidCredentials)
	// ErrEmptyPassword means the password was empty, which never matches.
	ErrEmptyPassword = fmt.Errorf("%w: empty password", ErrInvalidCredentials)
)

// FailureReason returns the cause of a failed login for the log: "unknown
// user", "wrong password", "empty password", or err's text for any other
// error. It must never be sent to the client.
func FailureReason(err error) string {
	switch {
	case errors.Is(err, ErrUnknownUser):
		return "unknown user"
	case errors.Is(err, ErrWrongPassword):
		return "wrong password"
	case errors.Is(err, ErrEmptyPassword):
		return "empty password"
	case err == nil:
		return ""
	}
	return err.Error()
}

// ErrUserExists is returned by DB.Add when the address is already a user.
var ErrUserExists = errors.New("auth: user already exists")

// ErrNoSuchUser is returned by DB.SetPassword and DB.Delete when the
// address is not a user.
var ErrNoSuchUser = errors.New("auth: no such user")

// ErrNotEntry is returned by ParseLine for a blank or comment line, which
// holds no user.
var ErrNotEntry = errors.New("auth: not a user entry")

// User is one entry of the user database.
type User struct {
	// Address is the canonical address (see CanonicalAddress).
	Address string
	// Hash is the stored {SCHEME}hash password.
	Hash string
	// Extra holds the fields after the password (uid, gid, gecos, home,
	// shell, extra_fields), as they are in the file; nil when the line
	// has only two fields.
	Extra []string
}

// Problem is a line of the user database that was skipped because it could
// not be parsed.
type Problem struct {
	Line int   // 1-based line number
	Err  error // why it was skipped
}

// String returns "line N: reason".
func (p Problem) String() string { return fmt.Sprintf("line %d: %v", p.Line, p.Err) }

// ParseLine parses one line of a passwd-file,
// "user:password[:uid:gid:gecos:home:shell:extra_fields]", with an optional
// trailing '\r'. It returns ErrNotEntry for blank and comment lines and
// another error for a line that has no valid address or no password. The
// password field is not checked here (see ValidateHash), so that a user
// whose hash is malformed is reported as such when logging in.
func ParseLine(line string) (User, error) {
	line = strings.TrimSuffix(line, "\r")
	if strings.ContainsAny(line, "\n\r") {
		return User{}, errors.New("auth: line break inside a line")
	}
	if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
		return User{}, ErrNotEntry
	}
	f := strings.Split(line, ":")
	if len(f) < 2 {
		return User{}, errors.New("auth: no ':' after the user")
	}
	addr, err := CanonicalAddress(f[0])
	if err != nil {
		return User{}, err
	}
	if f[1] == "" {
		return User{}, fmt.Errorf("auth: user %s has an empty password field", addr)
	}
	u := User{Address: addr, Hash: f[1]}
	if len(f) > 2 {
		u.Extra = f[2:]
	}
	return u, nil
}

// DB is a user database kept in a passwd-file (see the package
// documentation). Its methods are safe for concurrent use, and several
// processes may modify the same file. The exported fields must be set
// before the first use.
type DB struct {
	// CacheTTL is how long a successful password verification is
	// remembered (DefaultCacheTTL by OpenDB); 0 disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the number of remembered verifications
	// (DefaultCacheSize by OpenDB).
	CacheSize int
	// Logger, when not nil, receives the lines skipped when loading the
	// file.
	Logger *slog.Logger
	// Now is the clock used by the cache; nil means time.Now.
	Now func() time.Time
	// Argon2 are the parameters of the hashes HashPassword makes and of
	// the hash an unknown user's login is checked against, so that it
	// costs what a real user's does (DefaultArgon2 by OpenDB). Set it
	// before the first use.
	Argon2 Argon2Parameters

	path           string
	store          Store     // nil: the file at path
	storeDownUntil time.Time // see currentOrLast
	storeCheckedAt time.Time // when the store's version was last read

	mu   sync.RWMutex
	snap *snapshot // nil: not loaded

	writeMu sync.Mutex // serialises this process's modifications
	cache   verifiedCache

	dummyOnce sync.Once
	dummyHash string // see dummyVerify
}

// snapshot is the parsed content of the file as of one stat.
type snapshot struct {
	fi       fs.FileInfo // nil when the file does not exist
	users    map[string]User
	folded   map[string][]string // lower-cased address -> addresses
	problems []Problem
	version  int64 // the Store's version the entries are
}

// OpenDB returns the user database kept in the file at path. The file is
// read on first use; it need not exist, which means no users.
func OpenDB(path string) *DB {
	return &DB{path: path, CacheTTL: DefaultCacheTTL, CacheSize: DefaultCacheSize, Argon2: DefaultArgon2()}
}

// HashPassword hashes password for storage in this database, with the
// parameters in db.Argon2 (DefaultArgon2 when it is the zero value).
func (db *DB) HashPassword(password string) (string, error) {
	if db.Argon2 == (Argon2Parameters{}) {
		return HashPassword(password)
	}
	return db.Argon2.Hash(password)
}

// Path returns the path of the database file (for a DB over a Store,
// the Store's Name).
func (db *DB) Path() string { return db.path }

func (db *DB) now() time.Time {
	if db.Now != nil {
		return db.Now()
	}
	return time.Now()
}

// sameFile reports whether a and b (either may be nil for a missing file)
// are the same version of the file.
func sameFile(a, b fs.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// current returns the snapshot of the file as it is now, re-reading it
// when its inode, size or modification time changed.
func (db *DB) current() (*snapshot, error) {
	if db.store != nil {
		return db.currentOrLast()
	}
	fi, err := os.Stat(db.path)
	if errors.Is(err, fs.ErrNotExist) {
		fi, err = nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("auth: user database: %w", err)
	}
	db.mu.RLock()
	s := db.snap
	db.mu.RUnlock()
	if s != nil && sameFile(s.fi, fi) {
		return s, nil
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.snap != nil && sameFile(db.snap.fi, fi) {
		return db.snap, nil
	}
	_, s, err = readFile(db.path)
	if err != nil {
		return nil, err
	}
	db.snap = s
	if db.Logger != nil {
		for _, p := range s.problems {
			db.Logger.Warn("auth: skipping a line of the user database", "path", db.path, "line", p.Line, "err", p.Err)
		}
	}
	return s, nil
}

// fileLine is one line of the file, as read.
type fileLine struct {
	raw  string
	user *User // nil for comments, blank and unparsable lines
}

// readFile reads and parses the file at path; a missing file is empty.
func readFile(path string) ([]fileLine, *snapshot, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, newSnapshot(nil, nil), nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("auth: user database: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("auth: user database: %w", err)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: user database: %w", err)
	}
	lines := parseLines(string(data))
	return lines, newSnapshot(fi, lines), nil
}

// parseLines splits data into lines and parses each.
func parseLines(data string) []fileLine {
	data = strings.TrimSuffix(data, "\n")
	if data == "" {
		return nil
	}
	raws := strings.Split(data, "\n")
	lines := make([]fileLine, len(raws))
	for i, raw := range raws {
		lines[i].raw = raw
		if u, err := ParseLine(raw); err == nil {
			lines[i].user = &u
		}
	}
	return lines
}

// newSnapshot indexes the parsed lines of the file fi.
func newSnapshot(fi fs.FileInfo, lines []fileLine) *snapshot {
	s := &snapshot{fi: fi, users: make(map[string]User), folded: make(map[string][]string)}
	for i, l := range lines {
		if l.user == nil {
			if _, err := ParseLine(l.raw); !errors.Is(err, ErrNotEntry) {
				s.problems = append(s.problems, Problem{Line: i + 1, Err: err})
			}
			continue
		}
		u := *l.user
		if _, dup := s.users[u.Address]; dup {
			s.problems = append(s.problems, Problem{Line: i + 1,
				Err: fmt.Errorf("auth: user %s already defined on an earlier line", u.Address)})
			continue
		}
		s.users[u.Address] = u
		k := strings.ToLower(u.Address)
		s.folded[k] = append(s.folded[k], u.Address)
	}
	return s
}

// resolve finds the user that username names: the same canonical address,
// or else the one user whose address differs only in letter case.
func (s *snapshot) resolve(username string) (User, bool) {
	c, err := CanonicalAddress(username)
	if err != nil {
		return User{}, false
	}
	if u, ok := s.users[c]; ok {
		return u, true
	}
	if m := s.folded[strings.ToLower(c)]; len(m) == 1 {
		return s.users[m[0]], true
	}
	return User{}, false
}

// hashSlots bounds the password hashes computed at once: an ARGON2ID
// verification holds its memory cost (tens of MiB) while it runs, so a
// flood of logins must queue rather than exhaust memory.
var hashSlots = make(chan struct{}, max(2, runtime.GOMAXPROCS(0)))

// withHashSlot runs fn once a hashing slot is free, or gives up when ctx
// ends.
func withHashSlot(ctx context.Context, fn func()) error {
	select {
	case hashSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-hashSlots }()
	fn()
	return nil
}

// verifyPassword is VerifyPassword, a variable so that tests can count
// the verifications that miss the cache.
var verifyPassword = VerifyPassword

// dummyVerify spends the time of verifying an ARGON2ID hash with the
// database's parameters, so that unknown users take as long to fail as
// wrong passwords.
func (db *DB) dummyVerify(password string) {
	db.dummyOnce.Do(func() {
		b := make([]byte, 16)
		rand.Read(b)
		db.dummyHash, _ = db.HashPassword(hex.EncodeToString(b))
	})
	if db.dummyHash != "" {
		verifyPassword(db.dummyHash, password)
	}
}

// Authenticate checks username and password and returns the user's
// canonical address. The username matches the user with the same canonical
// address (so the domain is case-insensitive) or, if there is none, the one
// user whose local part differs only in case. An unknown user and a wrong
// password both give ErrInvalidCredentials, after about the same time. A
// stored hash that cannot be used gives an error wrapping ErrMalformedHash
// or ErrUnknownScheme, which the caller should log; other errors mean the
// database could not be read. Successful verifications are cached (see
// CacheTTL).
func (db *DB) Authenticate(ctx context.Context, username, password string) (canonical string, err error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if password == "" {
		return "", ErrEmptyPassword
	}
	s, err := db.loginSnapshot(ctx)
	if err != nil {
		return "", err
	}
	u, ok := s.resolve(username)
	if !ok {
		if err := withHashSlot(ctx, func() { db.dummyVerify(password) }); err != nil {
			return "", err
		}
		return "", ErrUnknownUser
	}
	now := db.now()
	var key cacheKey
	useCache := db.CacheTTL > 0 && db.CacheSize > 0
	if useCache {
		key = makeCacheKey(u.Address, u.Hash, password)
		if db.cache.hit(key, now) {
			return u.Address, nil
		}
	}
	var verr error
	if err := withHashSlot(ctx, func() { ok, verr = verifyPassword(u.Hash, password) }); err != nil {
		return "", err
	}
	if verr != nil {
		return "", fmt.Errorf("auth: stored password of %s: %w", u.Address, verr)
	}
	if !ok {
		return "", ErrWrongPassword
	}
	if useCache {
		db.cache.add(key, now, db.CacheTTL, db.CacheSize)
	}
	return u.Address, nil
}

// Lookup returns the user that username names, matched as by
// Authenticate. It returns false when there is none or the file cannot be
// read.
func (db *DB) Lookup(username string) (User, bool) {
	s, err := db.current()
	if err != nil {
		if db.Logger != nil {
			db.Logger.Error("auth: reading the user database", "err", err)
		}
		return User{}, false
	}
	u, ok := s.resolve(username)
	if !ok && db.store != nil {
		// The users may have been read within storeFresh: a refusal
		// (550 for a recipient) must be current, so ask the store.
		if s2, err := db.storeSnapshot(false); err == nil && s2 != s {
			return s2.resolve(username)
		}
	}
	return u, ok
}

// LookupLogin is Lookup for a login that checks the password itself
// (SCRAM): with the users in a shared store it always reads the store's
// current state, as Authenticate does, never the users read within
// storeFresh, so that a password changed or a user deleted on another
// node is never taken from them. A store that cannot be reached fails
// the lookup.
func (db *DB) LookupLogin(ctx context.Context, username string) (User, error) {
	s, err := db.loginSnapshot(ctx)
	if err != nil {
		return User{}, err
	}
	u, ok := s.resolve(username)
	if !ok {
		return User{}, ErrInvalidCredentials
	}
	return u, nil
}

// loginSnapshot returns the users a login checks against: the file as it
// is now, or the store's current state (never the users read within
// storeFresh, nor the last ones read while the store is unreachable).
func (db *DB) loginSnapshot(ctx context.Context) (*snapshot, error) {
	if db.store != nil {
		return db.currentStore(ctx)
	}
	return db.current()
}

// LookupAddress returns the canonical address of an existing user (the
// lookup local delivery needs, delivery.Users).
func (db *DB) LookupAddress(address string) (string, bool) {
	u, ok := db.Lookup(address)
	if !ok {
		return "", false
	}
	return u.Address, true
}

// List returns all users, sorted by address.
func (db *DB) List() ([]User, error) {
	s, err := db.current()
	if err != nil {
		return nil, err
	}
	users := make([]User, 0, len(s.users))
	for _, u := range s.users {
		users = append(users, u)
	}
	slices.SortFunc(users, func(a, b User) int { return strings.Compare(a.Address, b.Address) })
	return users, nil
}

// Problems returns the lines skipped when the file was last loaded or, as
// one Problem with Line 0, why the file cannot be read.
func (db *DB) Problems() []Problem {
	s, err := db.current()
	if err != nil {
		return []Problem{{Err: err}}
	}
	return slices.Clone(s.problems)
}

// Add adds the user address with the stored password hash (a {SCHEME}hash
// string, for example from HashPassword). It returns ErrUserExists when
// the address is already a user.
func (db *DB) Add(ctx context.Context, address, hash string) error {
	addr, err := CanonicalAddress(address)
	if err != nil {
		return err
	}
	if err := ValidateHash(hash); err != nil {
		return err
	}
	return db.modify(ctx, func(lines []fileLine, s *snapshot) ([]fileLine, error) {
		if _, ok := s.users[addr]; ok {
			return nil, fmt.Errorf("%w: %s", ErrUserExists, addr)
		}
		return append(lines, fileLine{raw: addr + ":" + hash}), nil
	})
}

// SetPassword replaces the stored password hash of the user address
// (matched as by Authenticate), keeping the other fields of its line. It
// returns ErrNoSuchUser when there is no such user.
func (db *DB) SetPassword(ctx context.Context, address, hash string) error {
	if err := ValidateHash(hash); err != nil {
		return err
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
				f[1] = hash
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

// Delete removes the user address (matched as by Authenticate); every line
// of that address goes. It returns ErrNoSuchUser when there is no such
// user.
func (db *DB) Delete(ctx context.Context, address string) error {
	return db.modify(ctx, func(lines []fileLine, s *snapshot) ([]fileLine, error) {
		u, ok := s.resolve(address)
		if !ok {
			return nil, fmt.Errorf("%w: %s", ErrNoSuchUser, address)
		}
		return slices.DeleteFunc(lines, func(l fileLine) bool {
			return l.user != nil && l.user.Address == u.Address
		}), nil
	})
}

// modify applies change to the file under its lock and writes the result
// atomically and durably.
func (db *DB) modify(ctx context.Context, change func([]fileLine, *snapshot) ([]fileLine, error)) error {
	db.writeMu.Lock()
	defer db.writeMu.Unlock()
	if db.store != nil {
		return db.modifyStore(ctx, change)
	}
	lock, err := lockFile(ctx, db.path+".lock")
	if err != nil {
		return fmt.Errorf("auth: locking the user database: %w", err)
	}
	defer lock.Close()

	lines, s, err := readFile(db.path)
	if err != nil {
		return err
	}
	lines, err = change(lines, s)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.raw)
		b.WriteByte('\n')
	}
	err = fsutil.WriteFile(db.path, []byte(b.String()), 0o600)
	if err != nil {
		err = fmt.Errorf("auth: writing the user database: %w", err)
	}
	db.mu.Lock()
	db.snap = nil // re-read on next use
	db.mu.Unlock()
	return err
}
