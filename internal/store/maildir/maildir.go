// Package maildir is the single-node mail storage backend of postino: it
// keeps every mailbox in a Maildir that Dovecot and mutt can read and write
// too, and implements the store.Store contract on top of it.
//
// # Layout
//
// The mailbox "alice@example.test" lives in ROOT/example.test/alice/Maildir
// with the usual tmp/, new/ and cur/ subdirectories (mode 0700, created on
// first delivery or open). Every file system access goes through an
// os.Root opened on ROOT, and mailbox names containing "/", "\\", NUL,
// control characters or "..", or whose local part or domain is empty or
// starts with ".", are rejected with store.ErrNoMailbox, so no name can
// reach outside its user's directory.
//
// Messages are stored with LF line ends (the Maildir convention): Deliver
// turns every CRLF into LF and keeps a bare CR as it is (so a bare CR right
// before a CRLF ends up as that line's CR on the wire: "x\r\r\n" is sent as
// "x\r\n"; bare CRs are not allowed in mail anyway). A message is
// written to tmp/<unique>, fsync'd, renamed to
// new/<unique>,S=<file size>,W=<wire size> and new/ is fsync'd before
// Deliver returns (concurrent deliveries into one Maildir share that fsync,
// each waiting for one begun after its own rename). The unique part follows Dovecot:
//
//	<unix secs>.M<usecs>P<pid>Q<counter>R<16 hex random>.<hostname>
//
// with '/', ':' and ',' in the host name written as \057, \072 and \054
// (other octets outside 0x21-0x7E become '_'), and the host name truncated so
// that the unique part never exceeds 70 octets. DeliverFolder writes the
// same names into any Maildir folder (`postino fetch`'s maildir:
// destination), with "X<tag>" in place of the random part. The wire size W= is the
// exact length of the form Maildrop.Open returns (CRLF line ends, final
// CRLF added when the message does not end with a newline), so listing a
// mailbox never reads message bodies. This package leaves messages in new/
// (POP3 does not mark messages as seen); a MUA may move them to cur/ and
// change their flags at any time, even during a POP3 session: messages are
// identified by their unique part, and a file found missing is looked up
// again under its unique part in new/ and cur/.
//
// Files delivered by other agents without a W= field (mutt, procmail, ...)
// are read once to compute their wire size, which is remembered in the
// cache file Maildir/postino-sizes, keyed by unique part and file size.
// Their names are never changed. A W= field written by another program is
// trusted (Dovecot's W= matches ours for messages ending in a newline, which
// is all mail received over SMTP or LMTP); when it turns out wrong, reading
// the message fails with ErrSizeMismatch rather than send a wrong length.
// Listing reads directory names only (no stat per file), so files in new/
// and cur/ are assumed to be messages; names starting with '.' are
// skipped.
//
// # UIDs
//
// A message listed in the Maildir's dovecot-uidlist keeps the UIDL Dovecot
// gave it (see SetDovecotUIDLFormat). Otherwise, the UID (POP3 UIDL) of a
// message is the unique part of its file name (up
// to the first ',' or ':') when that is 1 to 70 octets in 0x21-0x7E, as is
// always the case for messages delivered by this package and by Dovecot.
// Otherwise it is "H" followed by the first 32 hex digits of the SHA-256 of
// the unique part. Unique parts are never reused, so UIDs are stable
// forever and never reused either.
//
// # Lock
//
// OpenMaildrop takes an exclusive, non-blocking lock on the mailbox and
// returns store.ErrLocked when another session holds it, in this process or
// in another one. Within a process a table of locked mailboxes decides; across
// processes, on Linux, an open-file-description lock (F_OFD_SETLK) on one
// byte per mailbox of the shared file ROOT/.postino-locks, so that one
// descriptor serves every session; elsewhere a flock(2) on
// Maildir/postino-pop3.lock. The kernel releases the lock when the Maildrop is
// closed or its process dies. Delivery does not take
// the lock: it only adds files to new/, which a session never sees.
//
// # Commit journal
//
// Maildrop.Commit first writes the Maildir and the unique parts of the
// messages to delete to a journal, ROOT/.postino-journals/<first 32 hex
// digits of the SHA-256 of the Maildir path> (written to a temporary name,
// fsync'd, renamed, folder fsync'd), then unlinks every file of new/ and
// cur/ with one of those unique parts, fsyncs both directories, and finally
// removes the journal. Once the journal is durable, Commit succeeds: if an
// unlink fails, the journal stays and Close tries again.
// Store.RecoverJournals, called when the server starts, completes every
// journal of the folder under its mailbox's lock, so after a crash or a failed
// unlink no other program sees half a commit once the server is back;
// OpenMaildrop also completes its mailbox's journal (and one left in the
// Maildir, as postino-commit.journal, by earlier versions) before taking
// its snapshot. After a crash at any instant either all the messages are
// deleted or none is.
package maildir

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postino-mail/postino/internal/fsutil"
	"github.com/postino-mail/postino/internal/store"
)

// Names of the files this package keeps in a Maildir directory, beside
// Dovecot's own files.
const (
	lockName      = "postino-pop3.lock"
	journalNameV1 = "postino-commit.journal" // written by earlier versions
	sizesName     = "postino-sizes"
	dirPerm       = 0o700
	filePerm      = 0o600
)

// journalDir is the folder of the root that holds the commit journals of
// every mailbox, so that those left by a crash are found without visiting
// every Maildir. A domain cannot start with '.', so it cannot collide.
const journalDir = ".postino-journals"

// Store is a Maildir mail store rooted at one directory. It is safe for
// concurrent use by multiple goroutines.
type Store struct {
	root    *os.Root
	logger  *slog.Logger
	host    string // sanitized host name for unique names
	pid     int
	counter atomic.Uint64
	locks   processLocks
	scans   scanCache
	usage   usageCache

	// uidlFormat is Dovecot's pop3_uidl_format for the messages listed in
	// a dovecot-uidlist; importUIDLs is false when that file is ignored.
	uidlFormat  UIDLFormat
	importUIDLs bool

	journalDirOK atomic.Bool // journalDir exists

	// vault is on when commits move messages into the vault; clock
	// tells the time of downloads and deletions (nil: time.Now).
	vault atomic.Bool
	clock func() time.Time
}

var _ store.Store = (*Store)(nil)

// New returns a Store keeping mailboxes under root, which is created (mode
// 0700) when missing. A nil logger discards log output. The Store holds a
// file descriptor on root until Close.
func New(root string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(root, dirPerm); err != nil {
		return nil, fmt.Errorf("maildir: creating root: %w", err)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("maildir: opening root: %w", err)
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	def, _ := ParseUIDLFormat(DefaultDovecotUIDLFormat)
	return &Store{
		root:        r,
		logger:      logger,
		host:        sanitizeHost(host),
		pid:         os.Getpid(),
		uidlFormat:  def,
		importUIDLs: true,
	}, nil
}

// SetDovecotUIDLFormat sets the pop3_uidl_format with which Dovecot served
// the mailboxes (DefaultDovecotUIDLFormat until called), used for the
// messages a dovecot-uidlist lists (see "UIDLs imported from Dovecot" in
// uidlist.go). An empty format makes the Store ignore dovecot-uidlist. It
// must be called before the first OpenMaildrop; an invalid format wraps
// ErrUIDLFormat and changes nothing.
func (s *Store) SetDovecotUIDLFormat(format string) error {
	if format == "" {
		s.importUIDLs = false
		return nil
	}
	f, err := ParseUIDLFormat(format)
	if err != nil {
		return err
	}
	s.uidlFormat, s.importUIDLs = f, true
	return nil
}

// Close releases the root directory. Maildrops use it, so close them
// first.
func (s *Store) Close() error {
	s.locks.mu.Lock()
	lerr := s.locks.close()
	s.locks.mu.Unlock()
	return errors.Join(lerr, s.root.Close())
}

// sanitizeHost makes a host name safe for a Maildir unique name, using
// Dovecot's escapes for '/', ':' and ','.
func sanitizeHost(h string) string {
	var b strings.Builder
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case c == '/':
			b.WriteString(`\057`)
		case c == ':':
			b.WriteString(`\072`)
		case c == ',':
			b.WriteString(`\054`)
		case c < 0x21 || c > 0x7e:
			b.WriteByte('_')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// mailboxDir returns the Maildir directory of mailbox, relative to the
// root, or store.ErrNoMailbox.
func mailboxDir(mailbox string) (string, error) {
	at := strings.LastIndexByte(mailbox, '@')
	if at < 0 {
		return "", fmt.Errorf("%w: %q has no domain", store.ErrNoMailbox, mailbox)
	}
	local, domain := mailbox[:at], mailbox[at+1:]
	if !safeComponent(local) || !safeComponent(domain) {
		return "", fmt.Errorf("%w: %q is not a valid mailbox name", store.ErrNoMailbox, mailbox)
	}
	return domain + "/" + local + "/Maildir", nil
}

// safeComponent reports whether s can be used as one path component.
func safeComponent(s string) bool {
	if s == "" || s[0] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '/' || c == '\\' || c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// ensureMaildir creates the directories of a Maildir that do not exist yet
// and makes the new entries durable.
func (s *Store) ensureMaildir(dir string) error {
	mbox := path.Dir(dir)
	dom := path.Dir(mbox)
	var dirty []string
	for _, p := range []string{dom, mbox, dir, dir + "/tmp", dir + "/new", dir + "/cur"} {
		err := s.root.Mkdir(p, dirPerm)
		switch {
		case err == nil:
			dirty = append(dirty, path.Dir(p))
		case errors.Is(err, fs.ErrExist):
		default:
			return fmt.Errorf("maildir: creating %s: %w", p, err)
		}
	}
	for i, p := range dirty {
		if i > 0 && dirty[i-1] == p {
			continue
		}
		if err := s.syncDir(p); err != nil {
			return err
		}
	}
	return nil
}

// syncDir fsyncs a directory.
func (s *Store) syncDir(dir string) error {
	return syncRootDir(s.root, dir)
}

// syncRootDir fsyncs the directory dir of root.
func syncRootDir(root *os.Root, dir string) error {
	f, err := root.Open(dir)
	if err != nil {
		return fmt.Errorf("maildir: opening %s for sync: %w", dir, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("maildir: syncing %s: %w", dir, err)
	}
	return nil
}

// uniqueName returns a new Dovecot-style unique name of at most 70 octets.
func (s *Store) uniqueName() string {
	return uniqueName(s.host, s.pid, s.counter.Add(1), "")
}

// uniqueName returns a Dovecot-style unique name: seconds, microseconds,
// pid and counter, then "R" and 16 random hex digits, or "X" and tag when
// tag is set, then '.' and the host name (already sanitized), truncated so
// that the name stays within 70 octets. A tagged name always keeps the '.'
// after its tag, so that "X"+tag+"." finds it.
func uniqueName(host string, pid int, n uint64, tag string) string {
	now := time.Now()
	b := make([]byte, 0, maxUIDLen+8)
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, ".M"...)
	b = strconv.AppendInt(b, int64(now.Nanosecond()/1000), 10)
	b = append(b, 'P')
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, 'Q')
	b = strconv.AppendUint(b, n, 10)
	if tag != "" {
		b = append(b, 'X')
		b = append(b, tag...)
		b = append(b, '.')
		room := max(maxUIDLen-len(b), 0)
		return string(append(b, host[:min(room, len(host))]...))
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:]) // never fails (crypto/rand, Go 1.24+)
	b = append(b, 'R')
	b = hex.AppendEncode(b, rnd[:])
	if room := maxUIDLen - len(b) - 1; room > 0 {
		b = append(b, '.')
		b = append(b, host[:min(room, len(host))]...)
	}
	return string(b)
}

var deliverPool = sync.Pool{New: func() any { b := make([]byte, bufSize+1); return &b }}

// Deliver stores msg (LF or CRLF line ends) into mailbox and returns its
// UID once the message file and the new/ directory are fsync'd. The message
// is streamed, never held whole in memory. An empty message is
// store.ErrMalformed. ctx is checked between chunks; on any error nothing
// is left behind.
func (s *Store) Deliver(ctx context.Context, mailbox string, msg io.Reader) (uid string, err error) {
	dir, err := mailboxDir(mailbox)
	if err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := s.ensureMaildir(dir); err != nil {
		return "", err
	}
	base := s.uniqueName()
	name, err := writeMessage(ctx, rootDirs{root: s.root, dir: dir}, base, msg, writeHooks{aroundRename: s.usage.countRename(s, dir)}, s.logger)
	if err != nil {
		return "", err
	}
	uid = uidFor(base)
	s.logger.Debug("maildir: delivered", "mailbox", mailbox, "uid", uid, "file", name)
	return uid, nil
}

// msgDirs are the tmp/ and new/ directories of one Maildir, as
// writeMessage uses them. The names given are generated (unique names),
// never taken from input, and are single path elements.
type msgDirs interface {
	// createTmp creates tmp/base exclusively, for writing.
	createTmp(base string) (*os.File, error)
	// removeTmp removes tmp/base.
	removeTmp(base string) error
	// rename renames tmp/base to new/name.
	rename(base, name string) error
	// removeNew removes new/name.
	removeNew(name string) error
	// syncNew fsyncs new/ (group commit with concurrent deliveries).
	syncNew() error
	// rel returns the path of sub/name relative to the root the hooks
	// and the error messages speak of (name may be empty).
	rel(sub, name string) string
}

// rootDirs are the tmp/ and new/ of the Maildir dir of root, resolved
// through root on every call (Store.Deliver: any mailbox of the store).
type rootDirs struct {
	root *os.Root
	dir  string
}

func (d rootDirs) createTmp(base string) (*os.File, error) {
	return d.root.OpenFile(d.rel("tmp", base), os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
}
func (d rootDirs) removeTmp(base string) error { return d.root.Remove(d.rel("tmp", base)) }
func (d rootDirs) rename(base, name string) error {
	return d.root.Rename(d.rel("tmp", base), d.rel("new", name))
}
func (d rootDirs) removeNew(name string) error { return d.root.Remove(d.rel("new", name)) }
func (d rootDirs) syncNew() error              { return syncNewDir(d.root, d.rel("new", "")) }
func (d rootDirs) rel(sub, name string) string {
	if name == "" {
		return d.dir + "/" + sub
	}
	return d.dir + "/" + sub + "/" + name
}

// writeMessage writes msg into the Maildir d under the unique name base:
// to tmp/base, fsync'd, renamed to new/base,S=...,W=... and new/ fsync'd.
// It returns the name in new/. On any error nothing is left behind.
func writeMessage(ctx context.Context, d msgDirs, base string, msg io.Reader, h writeHooks, logger *slog.Logger) (name string, err error) {
	tmpPath := d.rel("tmp", base)
	f, err := d.createTmp(base)
	if err != nil {
		return "", fmt.Errorf("maildir: creating %s: %w", tmpPath, err)
	}
	defer func() {
		if f != nil {
			f.Close()
		}
		if err != nil {
			if rerr := d.removeTmp(base); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
				logger.Warn("maildir: removing temporary file", "path", tmpPath, "err", rerr)
			}
		}
	}()

	var dst io.Writer = f
	if h.afterFirst != nil {
		dst = &hookWriter{w: f, hook: h.afterFirst}
	}
	wc, err := copyToLF(ctx, dst, msg)
	if err != nil {
		return "", fmt.Errorf("maildir: writing %s: %w", tmpPath, err)
	}
	if wc.stored == 0 {
		return "", fmt.Errorf("%w: empty message", store.ErrMalformed)
	}
	if err := f.Sync(); err != nil {
		return "", fmt.Errorf("maildir: syncing %s: %w", tmpPath, err)
	}
	err = f.Close()
	f = nil
	if err != nil {
		return "", fmt.Errorf("maildir: closing %s: %w", tmpPath, err)
	}
	name = formatName(base, wc.stored, wc.wire())
	newPath := d.rel("new", name)
	rename := func() error { return d.rename(base, name) }
	if h.aroundRename != nil {
		err = h.aroundRename(name, rename)
	} else {
		err = rename()
	}
	if err != nil {
		return "", fmt.Errorf("maildir: renaming into %s: %w", newPath, err)
	}
	if h.noDirSync {
		return name, nil
	}
	// The rename is durable once new/ is fsync'd; concurrent deliveries
	// into this Maildir share that fsync (group commit), each waiting for
	// one begun after its own rename.
	if err := d.syncNew(); err != nil {
		// The message is in place but not known to be durable: take it
		// back so that the sender retries.
		if rerr := d.removeNew(name); rerr != nil {
			logger.Error("maildir: removing undurable message", "path", newPath, "err", rerr)
		}
		return "", err
	}
	if h.synced != nil {
		h.synced(d.rel("new", ""))
	}
	return name, nil
}

// newDirSyncs shares the fsyncs of new/ between concurrent deliveries
// into one Maildir, keyed by the directory's path.
var newDirSyncs fsutil.SyncGroup

// syncDirFunc fsyncs the directory rel of root (replaced by tests that
// count the syncs).
var syncDirFunc = syncRootDir

// syncNewDir returns once an fsync of the directory rel of root that began
// after the call has completed. Concurrent callers for one directory share
// one fsync (fsutil.SyncGroup): a delivery's rename into new/ is made
// durable by any fsync of new/ begun after it, so with N sessions
// delivering into one Maildir new/ is fsync'd about once per fsync
// duration rather than N times, and no delivery returns before its own
// rename is durable.
func syncNewDir(root *os.Root, rel string) error {
	key := path.Join(root.Name(), rel)
	return newDirSyncs.Sync(key, func() error {
		debugSyncPoint(key)
		return syncDirFunc(root, rel)
	})
}

// writeHooks are the optional hooks of writeMessage.
type writeHooks struct {
	// afterFirst is called once the first chunk is written to the file
	// in tmp/ (a crash test then kills the process, leaving a partial
	// file as a crash would).
	afterFirst func()
	// synced is told each directory fsync'd, relative to the root.
	synced func(dir string)
	// aroundRename, when set, performs the rename into new/ (under the
	// name given) by calling rename, so that it can count the message.
	aroundRename func(name string, rename func() error) error
	// noDirSync leaves the fsync of new/ to the caller (DeferDirSync).
	noDirSync bool
}

// hookWriter calls hook once, after its first write.
type hookWriter struct {
	w    io.Writer
	hook func()
}

func (h *hookWriter) Write(p []byte) (int, error) {
	n, err := h.w.Write(p)
	if h.hook != nil && n > 0 {
		hook := h.hook
		h.hook = nil
		hook()
	}
	return n, err
}

// copyToLF copies src to dst turning every CRLF into LF (a bare CR is
// kept) and returns the counter of the octets written.
func copyToLF(ctx context.Context, dst io.Writer, src io.Reader) (wireCounter, error) {
	var wc wireCounter
	bp := deliverPool.Get().(*[]byte)
	defer deliverPool.Put(bp)
	buf := *bp
	pendingCR := false // a CR ended the previous chunk and was held back
	for {
		if err := ctx.Err(); err != nil {
			return wc, err
		}
		start := 1
		if pendingCR {
			buf[0] = '\r'
			start = 0
		}
		n, rerr := src.Read(buf[1:])
		if n > 0 || rerr == io.EOF {
			chunk := buf[start : 1+n]
			final := rerr == io.EOF
			out := crlfToLF(chunk, final)
			pendingCR = !final && len(chunk) > 0 && chunk[len(chunk)-1] == '\r'
			if out > 0 {
				if _, err := dst.Write(chunk[:out]); err != nil {
					return wc, err
				}
				wc.write(chunk[:out])
			}
		}
		if rerr == io.EOF {
			return wc, nil
		}
		if rerr != nil {
			return wc, rerr
		}
	}
}

// crlfToLF converts b in place, dropping the CR of every CRLF, and returns
// the length of the result. Unless final, a CR at the very end of b is held
// back (not part of the result), since the next chunk may start with LF.
func crlfToLF(b []byte, final bool) int {
	j := 0
	i := 0
	for i < len(b) {
		k := bytes.IndexByte(b[i:], '\r')
		if k < 0 {
			j += copy(b[j:], b[i:])
			break
		}
		j += copy(b[j:], b[i:i+k])
		i += k // b[i] == '\r'
		switch {
		case i+1 < len(b) && b[i+1] == '\n':
			b[j] = '\n'
			j++
			i += 2
		case i+1 == len(b) && !final:
			return j
		default:
			b[j] = '\r'
			j++
			i++
		}
	}
	return j
}
