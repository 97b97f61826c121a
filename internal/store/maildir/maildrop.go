package maildir

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/store"
)

// message is one message of a snapshot.
type message struct {
	base  string
	sub   string // "new" or "cur": where the file was last seen
	name  string // file name as last seen
	size  int64  // wire size
	secs  int64  // delivery order keys
	usecs int64
}

// Maildrop is a locked snapshot of one Maildir. It implements
// store.Maildrop and is used by one goroutine at a time.
type Maildrop struct {
	s         *Store
	dir       string       // Maildir directory relative to the root
	unlock    func() error // releases the maildrop lock; nil once closed
	msgs      []message
	shared    bool // msgs belongs to the scan cache: copy before changing
	infos     []store.MessageInfo
	committed bool
	gone      map[string]struct{} // bases Commit removed (or moved to the vault)
	vaulted   int                 // how many of them went to the vault
	pending   bool                // a durable journal could not be completed yet
	box       *os.Root            // the Maildir itself, opened at login or the first Open
	subs      [2]*os.Root         // its new/ and cur/, opened at their first Open
}

var _ store.Maildrop = (*Maildrop)(nil)

// OpenMaildrop locks the mailbox, completes a commit journal left by a
// crash, and takes a snapshot of new/ and cur/. It returns store.ErrLocked
// when another session holds the lock. A mailbox that does not exist yet
// is created and opened empty. The result is a *Maildrop.
func (s *Store) OpenMaildrop(ctx context.Context, mailbox string) (store.Maildrop, error) {
	dir, err := mailboxDir(mailbox)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// The usual case, an existing Maildir, costs one handle and three
	// fstatat(2); it is kept for Open. Otherwise the folders are made.
	box := s.openMaildir(dir)
	if box == nil {
		if err := s.ensureMaildir(dir); err != nil {
			return nil, err
		}
	}
	unlock, err := s.lockMailbox(dir)
	if err != nil {
		if box != nil {
			box.Close()
		}
		if errors.Is(err, errWouldBlock) {
			return nil, store.ErrLocked
		}
		return nil, fmt.Errorf("maildir: locking %s: %w", dir, err)
	}
	md := &Maildrop{s: s, dir: dir, unlock: unlock, box: box}
	s.cleanTmp(dir)
	if err := s.recoverJournal(dir); err != nil {
		md.Close()
		return nil, err
	}
	if err := md.scan(ctx); err != nil {
		md.Close()
		return nil, err
	}
	return md, nil
}

// openMaildir returns a handle on the Maildir dir when it and its tmp/,
// new/ and cur/ folders exist, and nil otherwise.
func (s *Store) openMaildir(dir string) *os.Root {
	box, err := s.root.OpenRoot(dir)
	if err != nil {
		return nil
	}
	for _, sub := range [...]string{"tmp", "new", "cur"} {
		if fi, err := box.Lstat(sub); err != nil || !fi.IsDir() {
			box.Close()
			return nil
		}
	}
	return box
}

// scan takes the snapshot.
func (md *Maildrop) scan(ctx context.Context) error {
	key, keyOK := md.s.dirTimes(md.dir)
	if keyOK && md.cachedScan(key) {
		return nil
	}
	listedAt := time.Now()
	if err := md.list(ctx); err != nil {
		return err
	}
	if keyOK {
		md.rememberScan(key, listedAt)
	}
	return nil
}

// list takes the snapshot by listing new/ and cur/.
func (md *Maildrop) list(ctx context.Context) error {
	s := md.s
	seen := make(map[string]struct{})
	var cache *sizeCache
	for _, sub := range [...]string{"new", "cur"} { // new first: see moveNote
		// Names only: with d_type missing on some file systems, ReadDir
		// would stat every file, which login must not pay for.
		names, err := s.readNames(md.dir + "/" + sub)
		if err != nil {
			return err
		}
		for i, name := range names {
			if i%1024 == 1023 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if name == "" || name[0] == '.' {
				continue
			}
			p := parseName(name)
			if _, dup := seen[p.base]; dup {
				continue
			}
			m := message{base: p.base, sub: sub, name: name, size: p.wire}
			m.secs, m.usecs = orderKey(p.base)
			if m.size < 0 {
				if cache == nil {
					cache = s.loadSizes(md.dir)
				}
				ok, err := md.foreignSize(&m, cache)
				if err != nil {
					return err
				}
				if !ok {
					continue // deleted meanwhile
				}
			}
			seen[p.base] = struct{}{}
			md.msgs = append(md.msgs, m)
		}
	}
	// moveNote: new/ is listed before cur/ so that a file moved from new/ to
	// cur/ by a MUA during the scan is seen at least once; duplicates are
	// dropped by base above.
	slices.SortFunc(md.msgs, func(a, b message) int {
		// Not cmp.Or: it would compare the strings every time.
		if c := cmp.Compare(a.secs, b.secs); c != 0 {
			return c
		}
		if c := cmp.Compare(a.usecs, b.usecs); c != 0 {
			return c
		}
		return strings.Compare(a.base, b.base)
	})
	md.infos = make([]store.MessageInfo, len(md.msgs))
	list, err := md.loadUIDList(seen)
	if err != nil {
		return err
	}
	var used map[string]struct{}
	if list != nil {
		used = make(map[string]struct{}, len(md.msgs))
	}
	for i, m := range md.msgs {
		uid := uidFor(m.base)
		if list != nil && !ownBase(m.base) {
			if u, ok := list.uidl(s.uidlFormat, m.base); ok {
				uid = u
			} else if u != "" {
				s.logger.Warn("maildir: Dovecot UIDL unusable in POP3, using postino's", "dir", md.dir, "file", m.name, "uidl", u)
			}
		}
		if used != nil {
			// RFC 1939 §7: a UIDL identifies one message; an imported
			// UIDL equal to another message's (a damaged or hand-edited
			// uidlist) falls back to the message's own.
			if _, dup := used[uid]; dup {
				s.logger.Warn("maildir: duplicate UIDL, using postino's", "dir", md.dir, "file", m.name, "uidl", uid)
				uid = uidFor(m.base)
			}
			used[uid] = struct{}{}
		}
		md.infos[i] = store.MessageInfo{UID: uid, Size: m.size}
	}
	if cache != nil {
		s.saveSizes(md.dir, cache)
	}
	return nil
}

// loadUIDList reads the entries of the Maildir's dovecot-uidlist for the
// given bases (those of the snapshot). It returns nil when
// there is none, when it is ignored, or when its header is damaged
// (logged: nothing can be imported from it). A file that exists but cannot
// be read is an error, so that the session fails rather than show the
// messages under other UIDLs and make clients download them again.
func (md *Maildrop) loadUIDList(bases map[string]struct{}) (*uidList, error) {
	s := md.s
	if !s.importUIDLs {
		return nil, nil
	}
	p := md.dir + "/" + uidlistName
	f, err := s.root.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: opening %s: %w", p, err)
	}
	defer f.Close()
	l, bad, err := parseUIDList(f, bases)
	if err != nil && !errors.Is(err, errUIDList) {
		return nil, err
	}
	if err != nil {
		s.logger.Warn("maildir: ignoring dovecot-uidlist", "dir", md.dir, "err", err)
		return nil, nil
	}
	if bad > 0 {
		s.logger.Warn("maildir: skipped malformed dovecot-uidlist lines", "dir", md.dir, "lines", bad)
	}
	return l, nil
}

// foreignSize finds the wire size of a message whose name has no W= field,
// from the size cache or by reading it. It reports false when the file no
// longer exists or is not a regular file.
func (md *Maildrop) foreignSize(m *message, cache *sizeCache) (bool, error) {
	var fileSize int64 = -1
	if info, err := md.s.root.Lstat(md.dir + "/" + m.sub + "/" + m.name); err == nil {
		if !info.Mode().IsRegular() {
			return false, nil
		}
		fileSize = info.Size()
		if w, ok := cache.lookup(m.base, fileSize); ok {
			m.size = w
			return true, nil
		}
	}
	f, err := md.s.openMessage(md.dir, m)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("maildir: stat %s: %w", m.name, err)
	}
	if !info.Mode().IsRegular() {
		return false, nil
	}
	if info.Size() != fileSize {
		if w, ok := cache.lookup(m.base, info.Size()); ok {
			m.size = w
			return true, nil
		}
	}
	bp := deliverPool.Get().(*[]byte)
	defer deliverPool.Put(bp)
	buf := *bp
	var wc wireCounter
	for {
		n, err := f.Read(buf)
		wc.write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, fmt.Errorf("maildir: reading %s: %w", m.name, err)
		}
	}
	if wc.stored != info.Size() {
		return false, fmt.Errorf("maildir: %s changed while being read", m.name)
	}
	m.size = wc.wire()
	cache.store(m.base, wc.stored, m.size)
	return true, nil
}

// openMessage opens the file of m, looking for its base in new/ and cur/
// again when it has been moved or renamed (flags changed) by another
// program. It updates m.sub and m.name. A message deleted by another
// program gives an error wrapping fs.ErrNotExist.
func (s *Store) openMessage(dir string, m *message) (*os.File, error) {
	for range 3 {
		f, err := s.root.Open(dir + "/" + m.sub + "/" + m.name)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("maildir: opening %s/%s: %w", m.sub, m.name, err)
		}
		sub, name, ferr := s.findBase(dir, m.base)
		if ferr != nil {
			return nil, ferr
		}
		if name == "" {
			return nil, fmt.Errorf("maildir: message %s: %w", m.base, fs.ErrNotExist)
		}
		m.sub, m.name = sub, name
	}
	return nil, fmt.Errorf("maildir: message %s keeps moving: %w", m.base, fs.ErrNotExist)
}

// findBase looks for a file with the given base in new/ and cur/. It
// returns an empty name when there is none.
func (s *Store) findBase(dir, base string) (sub, name string, err error) {
	for _, sub := range [...]string{"new", "cur"} {
		names, err := s.readNames(dir + "/" + sub)
		if err != nil {
			return "", "", err
		}
		for _, n := range names {
			if strings.HasPrefix(n, base) && parseName(n).base == base {
				return sub, n, nil
			}
		}
	}
	return "", "", nil
}

// readNames lists the names in a directory (no stat).
func (s *Store) readNames(p string) ([]string, error) {
	f, err := s.root.Open(p)
	if err != nil {
		return nil, fmt.Errorf("maildir: opening %s: %w", p, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("maildir: listing %s: %w", p, err)
	}
	return names, nil
}

// Messages returns the snapshot in message-number order. The caller must
// not modify the slice.
func (md *Maildrop) Messages() []store.MessageInfo {
	return md.infos
}

// Open streams message i (0-based) in wire form: every LF not preceded by
// CR becomes CRLF and CRLF is appended when the stored message does not
// end with LF, so that exactly Messages()[i].Size octets are returned. When
// the file turns out not to match that size, Read fails with an error
// wrapping ErrSizeMismatch instead (see there). A message moved to cur/ or
// re-flagged by a MUA since the snapshot is found again; one deleted by
// another program gives an error wrapping fs.ErrNotExist.
func (md *Maildrop) Open(ctx context.Context, i int) (io.ReadCloser, error) {
	if md.unlock == nil {
		return nil, errors.New("maildir: maildrop is closed")
	}
	if i < 0 || i >= len(md.msgs) {
		return nil, fmt.Errorf("maildir: no message %d", i)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m := md.msgs[i]
	if md.box == nil {
		// One handle on the Maildir for the session: opening a message
		// then resolves two path components, not the whole path.
		md.box, _ = md.s.root.OpenRoot(md.dir)
	}
	if sub := md.subRoot(m.sub); sub != nil {
		// One path component per message: a single openat(2).
		if f, err := sub.Open(m.name); err == nil {
			return newWireReader(f, m.sub+"/"+m.name, m.size), nil
		}
	}
	f, err := md.s.openMessage(md.dir, &m)
	if err != nil {
		return nil, err
	}
	if m != md.msgs[i] { // moved or re-flagged by a MUA since the snapshot
		if md.shared {
			md.msgs, md.shared = slices.Clone(md.msgs), false
		}
		md.msgs[i] = m
	}
	return newWireReader(f, m.sub+"/"+m.name, m.size), nil
}

// subRoot returns the session's handle on the Maildir's new/ or cur/
// folder (sub), opening it at the first use, or nil when it cannot be
// opened (the caller then resolves the whole path).
func (md *Maildrop) subRoot(sub string) *os.Root {
	i := 0
	switch sub {
	case "new":
	case "cur":
		i = 1
	default:
		return nil
	}
	if md.subs[i] == nil && md.box != nil {
		md.subs[i], _ = md.box.OpenRoot(sub)
	}
	return md.subs[i]
}

// Commit durably deletes the messages with the given 0-based indexes, all
// or nothing, through the commit journal described in the package
// documentation. Duplicate indexes are ignored; an empty list does nothing.
// It may be called at most once. Once the journal is durable, ctx is no
// longer consulted and Commit succeeds: the deletion is completed now, or,
// if an unlink fails, by Close, the next OpenMaildrop or RecoverJournals.
func (md *Maildrop) Commit(ctx context.Context, deleted []int) error {
	if md.unlock == nil {
		return errors.New("maildir: maildrop is closed")
	}
	if md.committed {
		return errors.New("maildir: commit called twice")
	}
	set := make(map[string]struct{}, len(deleted))
	bases := make([]string, 0, len(deleted))
	for _, i := range deleted {
		if i < 0 || i >= len(md.msgs) {
			return fmt.Errorf("maildir: no message %d", i)
		}
		b := md.msgs[i].base
		if _, dup := set[b]; !dup {
			set[b] = struct{}{}
			bases = append(bases, b)
		}
	}
	md.committed = true
	if len(bases) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// With the vault on, the journal says so and when: the messages are
	// then moved into the vault rather than unlinked, by this commit or
	// by whoever completes the journal after a crash.
	var vaultAt int64
	if md.s.vault.Load() {
		vaultAt = md.s.now().Unix()
		if err := md.s.ensureVault(md.dir); err != nil {
			return err
		}
	}
	if err := md.s.writeJournal(md.dir, bases, vaultAt); err != nil {
		return err
	}
	md.gone = set
	if vaultAt > 0 {
		md.vaulted = len(bases)
	}
	// RFC 1939 §6: once the journal is durable the deletions will
	// happen, so the UPDATE has succeeded: a failure from here on is
	// retried by Close, by the next OpenMaildrop and by RecoverJournals.
	err := md.s.applyJournal(md.dir, set, vaultAt)
	md.s.forgetUsage(md.dir)
	if err == nil {
		err = md.s.removeJournal(md.dir)
	}
	if err != nil {
		md.pending = true
		md.s.logger.Warn("maildir: commit journal left to complete later", "dir", md.dir, "err", err)
	}
	return nil
}

// Close releases the lock. It is idempotent and removes nothing, except
// that it tries again to complete a commit journal that Commit could not.
func (md *Maildrop) Close() error {
	if md.unlock == nil {
		return nil
	}
	if md.pending {
		if err := md.s.recoverJournal(md.dir); err != nil {
			md.s.logger.Warn("maildir: commit journal left to complete later", "dir", md.dir, "err", err)
		}
	}
	err := md.unlock()
	md.unlock = nil
	for i, r := range md.subs {
		if r != nil {
			r.Close()
			md.subs[i] = nil
		}
	}
	if md.box != nil {
		md.box.Close()
		md.box = nil
	}
	return err
}

// Journal formats: v2 names its Maildir and lives in the journal folder
// of the root; v3 is v2 with a "vault <unix seconds>" line after the
// Maildir, for a commit that moves the messages into the vault; v1
// (written by earlier versions) lives in the Maildir.
const (
	journalHeader      = "postino-commit-journal v2"
	journalHeaderVault = "postino-commit-journal v3"
	journalHeaderV1    = "postino-commit-journal v1"
)

// journalPath returns the path of the commit journal of the Maildir dir,
// relative to the root: one file per mailbox in journalDir, named by a
// hash of dir (a mailbox name can be longer than a file name).
func journalPath(dir string) string {
	h := sha256.Sum256([]byte(dir))
	return journalDir + "/" + hex.EncodeToString(h[:16])
}

// ensureJournalDir creates the journal folder once per Store.
func (s *Store) ensureJournalDir() error {
	if s.journalDirOK.Load() {
		return nil
	}
	err := s.root.Mkdir(journalDir, dirPerm)
	switch {
	case err == nil:
		if err := s.syncDir("."); err != nil {
			return err
		}
	case errors.Is(err, fs.ErrExist):
	default:
		return fmt.Errorf("maildir: creating %s: %w", journalDir, err)
	}
	s.journalDirOK.Store(true)
	return nil
}

// writeJournal durably records the bases to delete, or with vaultAt > 0
// to move into the vault as deleted at that time (unix seconds).
func (s *Store) writeJournal(dir string, bases []string, vaultAt int64) error {
	if err := s.ensureJournalDir(); err != nil {
		return err
	}
	var b bytes.Buffer
	if vaultAt > 0 {
		b.WriteString(journalHeaderVault + "\n")
	} else {
		b.WriteString(journalHeader + "\n")
	}
	b.WriteString("dir " + strconv.Quote(dir) + "\n")
	if vaultAt > 0 {
		b.WriteString("vault " + strconv.FormatInt(vaultAt, 10) + "\n")
	}
	for _, base := range bases {
		b.WriteString(strconv.Quote(base))
		b.WriteByte('\n')
	}
	b.WriteString("end\n")
	p := journalPath(dir)
	if err := s.writeFileSync(p+".tmp", b.Bytes()); err != nil {
		return err
	}
	if err := s.root.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("maildir: renaming journal: %w", err)
	}
	return s.syncDir(journalDir)
}

// writeFileSync writes and fsyncs a file.
func (s *Store) writeFileSync(p string, data []byte) error {
	f, err := s.root.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, filePerm)
	if err != nil {
		return fmt.Errorf("maildir: creating %s: %w", p, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("maildir: writing %s: %w", p, err)
	}
	return nil
}

// parseJournal decodes a journal. dir is the Maildir it names ("" for a
// v1 journal, which names none); vaultAt is when its messages were
// deleted when they go to the vault (v3), else 0; ok is false when it is
// not complete.
func parseJournal(data []byte) (dir string, bases map[string]struct{}, vaultAt int64, ok bool) {
	lines := strings.Split(string(data), "\n")
	if len(lines) < 3 || lines[len(lines)-1] != "" || lines[len(lines)-2] != "end" {
		return "", nil, 0, false
	}
	body := lines[1 : len(lines)-2]
	switch lines[0] {
	case journalHeaderV1:
	case journalHeader, journalHeaderVault:
		if len(body) == 0 || !strings.HasPrefix(body[0], "dir ") {
			return "", nil, 0, false
		}
		d, err := strconv.Unquote(body[0][len("dir "):])
		if err != nil || !validMaildirDir(d) {
			return "", nil, 0, false
		}
		dir, body = d, body[1:]
		if lines[0] == journalHeaderVault {
			if len(body) == 0 || !strings.HasPrefix(body[0], "vault ") {
				return "", nil, 0, false
			}
			t, err := strconv.ParseInt(body[0][len("vault "):], 10, 64)
			if err != nil || t <= 0 {
				return "", nil, 0, false
			}
			vaultAt, body = t, body[1:]
		}
	default:
		return "", nil, 0, false
	}
	bases = make(map[string]struct{}, len(body))
	for _, l := range body {
		b, err := strconv.Unquote(l)
		if err != nil || b == "" {
			return "", nil, 0, false
		}
		bases[b] = struct{}{}
	}
	return dir, bases, vaultAt, true
}

// validMaildirDir reports whether dir has the form mailboxDir gives.
func validMaildirDir(dir string) bool {
	domain, rest, ok1 := strings.Cut(dir, "/")
	local, md, ok2 := strings.Cut(rest, "/")
	return ok1 && ok2 && md == "Maildir" && safeComponent(domain) && safeComponent(local)
}

// recoverJournal completes a commit interrupted by a crash or by a failed
// unlink, if any: the journal in the journal folder, and a v1 journal in
// the Maildir. The caller holds the lock.
func (s *Store) recoverJournal(dir string) error {
	p := journalPath(dir)
	_ = s.root.Remove(p + ".tmp") // never renamed: void
	if err := s.completeJournal(dir, p, true); err != nil {
		return err
	}
	legacy := dir + "/" + journalNameV1
	_ = s.root.Remove(legacy + ".tmp")
	return s.completeJournal(dir, legacy, false)
}

// completeJournal applies and removes the journal at p, which belongs to
// the Maildir dir, if it exists. v2 tells the expected format.
func (s *Store) completeJournal(dir, p string, v2 bool) error {
	data, err := s.root.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("maildir: reading journal: %w", err)
	}
	jdir, bases, vaultAt, ok := parseJournal(data)
	if ok && v2 && jdir != dir {
		// A hash collision cannot happen in practice; this is damage.
		ok = false
	}
	if !ok {
		// The journal is renamed into place only once complete and
		// fsync'd, so this is damage from outside: deleting nothing is
		// the safe outcome.
		s.logger.Error("maildir: discarding corrupt commit journal", "dir", dir)
	} else {
		s.logger.Warn("maildir: completing interrupted commit", "dir", dir, "messages", len(bases))
		if err := s.applyJournal(dir, bases, vaultAt); err != nil {
			return err
		}
	}
	if err := s.root.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("maildir: removing journal: %w", err)
	}
	return s.syncDir(path.Dir(p))
}

// applyJournal unlinks every file of new/ and cur/ whose base is in bases,
// or with vaultAt > 0 renames it into the vault as deleted at vaultAt,
// then fsyncs both directories (and the vault). Files already gone are
// ignored; a file renamed by another program meanwhile is found again.
func (s *Store) applyJournal(dir string, bases map[string]struct{}, vaultAt int64) error {
	if vaultAt > 0 {
		if err := s.ensureVault(dir); err != nil {
			return err
		}
	}
	for pass := 0; ; pass++ {
		raced := false
		for _, sub := range [...]string{"new", "cur"} {
			names, err := s.readNames(dir + "/" + sub)
			if err != nil {
				return err
			}
			for _, n := range names {
				if _, ok := bases[parseName(n).base]; !ok {
					continue
				}
				p := dir + "/" + sub + "/" + n
				var err error
				if vaultAt > 0 {
					err = s.root.Rename(p, vaultDir(dir)+"/"+vaultName(vaultAt, n))
				} else {
					err = s.root.Remove(p)
				}
				if errors.Is(err, fs.ErrNotExist) {
					raced = true
					continue
				}
				if err != nil {
					return fmt.Errorf("maildir: deleting %s: %w", p, err)
				}
			}
		}
		if !raced || pass >= 3 {
			break
		}
	}
	if vaultAt > 0 {
		// The vault entries are durable before the journal goes.
		if err := s.syncDir(vaultDir(dir)); err != nil {
			return err
		}
	}
	if err := s.syncDir(dir + "/new"); err != nil {
		return err
	}
	return s.syncDir(dir + "/cur")
}

// removeJournal removes the journal durably.
func (s *Store) removeJournal(dir string) error {
	if err := s.root.Remove(journalPath(dir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("maildir: removing journal: %w", err)
	}
	return s.syncDir(journalDir)
}

// tmpMaxAge is how old a file in tmp/ must be before it is removed: the
// Maildir convention's 36 hours, far longer than any delivery takes.
const tmpMaxAge = 36 * time.Hour

// cleanTmp removes files that deliveries interrupted by a crash left in
// tmp/. They never became messages; this only reclaims their space.
func (s *Store) cleanTmp(dir string) {
	f, err := s.root.Open(dir + "/tmp")
	if err != nil {
		return
	}
	entries, _ := f.ReadDir(-1)
	f.Close()
	cutoff := time.Now().Add(-tmpMaxAge)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() && info.ModTime().Before(cutoff) {
			if err := s.root.Remove(dir + "/tmp/" + e.Name()); err == nil {
				s.logger.Info("maildir: removed a stale file from tmp/", "dir", dir, "file", e.Name())
			}
		}
	}
}
