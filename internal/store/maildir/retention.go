package maildir

// Retention: when each message was first downloaded (for pop3.expire),
// the sweep that removes messages downloaded long enough ago, and the
// deleted-mail vault.
//
// # Downloads
//
// A message counts as downloaded once a POP3 session has sent all of it
// (RETR, or TOP with more lines than the body has) and ended with QUIT.
// Maildrop.RecordDownloads then writes, under the session's lock, the
// first download time of each such message to Maildir/postino-downloaded
// (written to a temporary name, fsync'd, renamed, Maildir fsync'd), keyed
// by unique part. The file is ours alone: Dovecot and mutt ignore it, and
// the Maildir's flags are left as they are (a message a MUA marks as seen
// was not necessarily downloaded by the POP3 client, so the S flag is not
// used). It is written after the commit of the deletions, so a crash in
// between only forgets the downloads: messages are then kept longer,
// never removed early.
//
// # Vault
//
// With the vault on (SetVault), a commit moves the messages it deletes
// into DOMAIN/LOCAL/postino-vault/, beside the Maildir (so neither
// Dovecot nor the quota sees them), named "<unix seconds of the
// deletion>_<file name>", through the same commit journal (a v3 journal
// says "vault <seconds>"): all of them or none, even across a crash.
// Sweep removes the vault entries older than its VaultKeep; VaultRestore
// renames entries back into new/ under their original unique part, so a
// restored message has its old UIDL again (RFC 1939 §7: a UIDL always
// names the same message; a client that deleted it forgot the UIDL and
// downloads it again, as a restored message should be).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/mail"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/store"
)

// Names of the download record and of the vault folder.
const (
	downloadsName   = "postino-downloaded"
	downloadsHeader = "postino-downloaded v1"
	vaultFolder     = "postino-vault"
)

// Limits of the download record a parser accepts: it is our own file, but
// it lives in a folder other programs write to.
const (
	maxDownloadsSize = 64 << 20
	maxDownloadsLine = 4 + 20 + 2*maxUIDLen*4 // "secs quoted-base" with escapes
)

// ErrDownloads is wrapped by the errors of a damaged download record.
var ErrDownloads = errors.New("maildir: damaged download record")

// SetVault turns the deleted-mail vault on or off for the commits that
// begin afterwards.
func (s *Store) SetVault(on bool) { s.vault.Store(on) }

// SetClock sets the clock of downloads, deletions and sweeps (time.Now
// until called). Call it before the Store is used.
func (s *Store) SetClock(now func() time.Time) { s.clock = now }

func (s *Store) now() time.Time {
	if s.clock != nil {
		return s.clock()
	}
	return time.Now()
}

// vaultDir returns the vault folder of the Maildir dir.
func vaultDir(dir string) string { return path.Dir(dir) + "/" + vaultFolder }

// vaultName is the name in the vault of the file name deleted at t.
func vaultName(t int64, name string) string { return strconv.FormatInt(t, 10) + "_" + name }

// parseVaultName splits a vault entry name; ok is false for anything else.
func parseVaultName(n string) (t int64, name string, ok bool) {
	ts, name, found := strings.Cut(n, "_")
	if !found || name == "" || name[0] == '.' || strings.ContainsAny(name, "/\x00") {
		return 0, "", false
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || t <= 0 {
		return 0, "", false
	}
	return t, name, true
}

// ensureVault creates the vault folder of the Maildir dir durably.
func (s *Store) ensureVault(dir string) error {
	v := vaultDir(dir)
	err := s.root.Mkdir(v, dirPerm)
	switch {
	case err == nil:
		return s.syncDir(path.Dir(v))
	case errors.Is(err, fs.ErrExist):
		return nil
	}
	return fmt.Errorf("maildir: creating %s: %w", v, err)
}

// parseDownloads reads a download record: the header line, then one
// "<unix seconds> <Go-quoted unique part>" line per message, then "end".
// It enforces maxDownloadsSize and maxDownloadsLine; every other defect
// wraps ErrDownloads, naming the line.
func parseDownloads(r io.Reader) (map[string]int64, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, maxDownloadsSize+1), 4096)
	out := make(map[string]int64)
	var read int64
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		read += int64(len(line))
		if read > maxDownloadsSize {
			return nil, fmt.Errorf("%w: larger than %d octets", ErrDownloads, maxDownloadsSize)
		}
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxDownloadsLine {
			return nil, fmt.Errorf("%w: line %d too long", ErrDownloads, n)
		}
		if err == io.EOF {
			return nil, fmt.Errorf("%w: no end line", ErrDownloads)
		}
		if err != nil {
			return nil, err
		}
		l := string(line[:len(line)-1])
		switch {
		case n == 1:
			if l != downloadsHeader {
				return nil, fmt.Errorf("%w: unknown header %q", ErrDownloads, l)
			}
			continue
		case l == "end":
			if _, err := br.ReadByte(); err != io.EOF {
				return nil, fmt.Errorf("%w: data after the end line", ErrDownloads)
			}
			return out, nil
		}
		ts, q, ok := strings.Cut(l, " ")
		t, err := strconv.ParseInt(ts, 10, 64)
		if !ok || err != nil || t <= 0 {
			return nil, fmt.Errorf("%w: line %d: bad time", ErrDownloads, n)
		}
		base, err := strconv.Unquote(q)
		if err != nil || base == "" || len(base) > 4*maxUIDLen {
			return nil, fmt.Errorf("%w: line %d: bad unique part", ErrDownloads, n)
		}
		if prev, dup := out[base]; !dup || t < prev {
			out[base] = t
		}
	}
}

// formatDownloads writes a download record, sorted by unique part.
func formatDownloads(d map[string]int64) []byte {
	var b bytes.Buffer
	b.WriteString(downloadsHeader + "\n")
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString(strconv.FormatInt(d[k], 10))
		b.WriteByte(' ')
		b.WriteString(strconv.Quote(k))
		b.WriteByte('\n')
	}
	b.WriteString("end\n")
	return b.Bytes()
}

// loadDownloads reads the download record of the Maildir dir; a missing
// record is empty. A damaged one is logged and read as empty: messages
// are then kept longer, never removed early.
func (s *Store) loadDownloads(dir string) (map[string]int64, error) {
	f, err := s.root.Open(dir + "/" + downloadsName)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: opening %s: %w", downloadsName, err)
	}
	defer f.Close()
	d, err := parseDownloads(f)
	if errors.Is(err, ErrDownloads) {
		s.logger.Error("maildir: ignoring a damaged download record", "dir", dir, "err", err)
		return map[string]int64{}, nil
	}
	return d, err
}

// saveDownloads replaces the download record of the Maildir dir durably.
func (s *Store) saveDownloads(dir string, d map[string]int64) error {
	p := dir + "/" + downloadsName
	if err := s.writeFileSync(p+".tmp", formatDownloads(d)); err != nil {
		return err
	}
	if err := s.root.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("maildir: renaming %s: %w", p, err)
	}
	return s.syncDir(dir)
}

// RecordDownloads records that the messages at the given 0-based indexes
// were downloaded now, unless Commit removed them or an earlier session
// already recorded them (the first download counts). It is called once
// the session ends with QUIT, after Commit; the record is durable when it
// returns. Entries of messages no longer in the snapshot are dropped.
func (md *Maildrop) RecordDownloads(ctx context.Context, indexes []int) error {
	if md.unlock == nil {
		return errors.New("maildir: maildrop is closed")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(indexes) == 0 && len(md.gone) == 0 {
		return nil // nothing to add, nothing to forget: the usual QUIT
	}
	d, err := md.s.loadDownloads(md.dir)
	if err != nil {
		return err
	}
	now := md.s.now().Unix()
	changed := false
	for _, i := range indexes {
		if i < 0 || i >= len(md.msgs) {
			return fmt.Errorf("maildir: no message %d", i)
		}
		b := md.msgs[i].base
		if _, gone := md.gone[b]; gone {
			continue
		}
		if _, ok := d[b]; !ok {
			d[b] = now
			changed = true
		}
	}
	live := make(map[string]struct{}, len(md.msgs))
	for _, m := range md.msgs {
		if _, gone := md.gone[m.base]; !gone {
			live[m.base] = struct{}{}
		}
	}
	for b := range d {
		if _, ok := live[b]; !ok {
			delete(d, b)
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return md.s.saveDownloads(md.dir, d)
}

// Vaulted returns how many messages Commit moved into the vault.
func (md *Maildrop) Vaulted() int { return md.vaulted }

// SweepPolicy is what Sweep applies to one mailbox.
type SweepPolicy struct {
	// Expire is how long a downloaded message is kept; negative: for
	// ever (EXPIRE NEVER).
	Expire time.Duration
	// VaultKeep is how long an entry stays in the vault; zero or
	// negative: the vault is not purged.
	VaultKeep time.Duration
}

// SweepResult tells what Sweep did.
type SweepResult struct {
	// Expired is the number of messages removed (or moved into the
	// vault) because they were downloaded longer than Expire ago.
	Expired int
	// Purged is the number of vault entries removed for good.
	Purged int
	// Vaulted is how many of the Expired went into the vault.
	Vaulted int
}

// Sweep applies the policy to the mailbox: the messages downloaded at
// least p.Expire ago are removed through Commit, exactly as a POP3 QUIT
// removes them (all or nothing, journalled, into the vault when it is
// on), and the vault entries older than p.VaultKeep are removed. It takes
// the maildrop lock as a POP3 session does and returns store.ErrLocked,
// touching nothing, while a session holds it. A mailbox that has no
// Maildir is left alone.
func (s *Store) Sweep(ctx context.Context, mailbox string, p SweepPolicy) (SweepResult, error) {
	var res SweepResult
	dir, err := mailboxDir(mailbox)
	if err != nil {
		return res, err
	}
	if _, err := s.root.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return res, nil
	}
	smd, err := s.OpenMaildrop(ctx, mailbox)
	if err != nil {
		return res, err
	}
	md := smd.(*Maildrop)
	defer md.Close()
	if p.Expire >= 0 {
		d, err := s.loadDownloads(dir)
		if err != nil {
			return res, err
		}
		cutoff := s.now().Add(-p.Expire).Unix()
		var del []int
		for i, m := range md.msgs {
			if t, ok := d[m.base]; ok && t <= cutoff {
				del = append(del, i)
			}
		}
		if len(del) > 0 {
			if err := md.Commit(ctx, del); err != nil {
				return res, err
			}
			res.Expired, res.Vaulted = len(del), md.Vaulted()
			// Forget the removed messages; a crash before this only
			// leaves entries that name nothing.
			if err := md.RecordDownloads(ctx, nil); err != nil {
				return res, err
			}
		}
	}
	if p.VaultKeep > 0 {
		n, err := s.purgeVault(dir, s.now().Add(-p.VaultKeep).Unix())
		res.Purged = n
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// purgeVault removes the vault entries of the Maildir dir deleted at or
// before cutoff (unix seconds). The caller holds the lock.
func (s *Store) purgeVault(dir string, cutoff int64) (int, error) {
	v := vaultDir(dir)
	names, err := s.readNames(v)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	n := 0
	for _, name := range names {
		t, _, ok := parseVaultName(name)
		if !ok || t > cutoff {
			continue
		}
		if err := s.root.Remove(v + "/" + name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return n, fmt.Errorf("maildir: removing %s/%s: %w", v, name, err)
		}
		n++
	}
	if n > 0 {
		return n, s.syncDir(v)
	}
	return n, nil
}

// VaultEntry is one message in a mailbox's vault.
type VaultEntry struct {
	// UID is the message's UIDL when it was deleted (postino's own; a
	// UIDL imported from Dovecot comes back with the message when the
	// dovecot-uidlist still lists it), which it has again once restored.
	UID string
	// Deleted is when it was deleted.
	Deleted time.Time
	// Size is its size in octets as POP3 lists it.
	Size int64
	// From and Subject are its header fields (empty when absent).
	From, Subject string

	name string // in the vault
}

// maxVaultHeader is how much of a message VaultList reads for its header.
const maxVaultHeader = 64 << 10

// VaultList returns the vault of the mailbox, oldest deletion first.
func (s *Store) VaultList(ctx context.Context, mailbox string) ([]VaultEntry, error) {
	dir, err := mailboxDir(mailbox)
	if err != nil {
		return nil, err
	}
	v := vaultDir(dir)
	names, err := s.readNames(v)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []VaultEntry
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t, name, ok := parseVaultName(n)
		if !ok {
			continue
		}
		p := parseName(name)
		e := VaultEntry{UID: uidFor(p.base), Deleted: time.Unix(t, 0), Size: p.wire, name: n}
		if f, err := s.root.Open(v + "/" + n); err == nil {
			if e.Size < 0 {
				if fi, err := f.Stat(); err == nil {
					e.Size = fi.Size()
				}
			}
			if msg, err := mail.ReadMessage(io.LimitReader(f, maxVaultHeader)); err == nil {
				e.From, e.Subject = oneLine(msg.Header.Get("From")), oneLine(msg.Header.Get("Subject"))
			}
			f.Close()
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b VaultEntry) int {
		if c := a.Deleted.Compare(b.Deleted); c != 0 {
			return c
		}
		return strings.Compare(a.UID, b.UID)
	})
	return out, nil
}

// oneLine makes a header value safe to print on one line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// ErrNotInVault is returned by VaultRestore for a UID the vault does not
// hold.
var ErrNotInVault = errors.New("maildir: no such message in the vault")

// VaultRestore puts messages of the vault back into the mailbox's new/,
// under their original unique part (so with their old UIDL), without
// flags: those with the given UIDs, or all with all. It takes the maildrop
// lock (store.ErrLocked while a session holds it: the session would not
// see them anyway, and the sweep must not purge them meanwhile). A UID
// not in the vault is ErrNotInVault, and nothing is restored. It returns
// the entries restored, durable once it returns.
func (s *Store) VaultRestore(ctx context.Context, mailbox string, uids []string, all bool) ([]VaultEntry, error) {
	dir, err := mailboxDir(mailbox)
	if err != nil {
		return nil, err
	}
	if err := s.ensureMaildir(dir); err != nil {
		return nil, err
	}
	unlock, err := s.lockMailbox(dir)
	if errors.Is(err, errWouldBlock) {
		return nil, store.ErrLocked
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: locking %s: %w", dir, err)
	}
	defer unlock()
	if err := s.recoverJournal(dir); err != nil {
		return nil, err
	}
	entries, err := s.VaultList(ctx, mailbox)
	if err != nil {
		return nil, err
	}
	var pick []VaultEntry
	if all {
		pick = entries
	} else {
		for _, u := range uids {
			i := slices.IndexFunc(entries, func(e VaultEntry) bool { return e.UID == u })
			if i < 0 {
				return nil, fmt.Errorf("%w: %s", ErrNotInVault, u)
			}
			if !slices.ContainsFunc(pick, func(e VaultEntry) bool { return e.UID == u }) {
				pick = append(pick, entries[i])
			}
		}
	}
	v := vaultDir(dir)
	var done []VaultEntry
	for _, e := range pick {
		_, name, _ := parseVaultName(e.name)
		name, _, _ = strings.Cut(name, ":") // files in new/ carry no info part (flags)
		if err := s.root.Rename(v+"/"+e.name, dir+"/new/"+name); err != nil {
			err = fmt.Errorf("maildir: restoring %s: %w", e.UID, err)
			if len(done) > 0 {
				err = errors.Join(err, s.syncDir(dir+"/new"))
			}
			return done, err
		}
		done = append(done, e)
	}
	if len(done) > 0 {
		s.forgetUsage(dir)
		if err := s.syncDir(dir + "/new"); err != nil {
			return done, err
		}
		if err := s.syncDir(v); err != nil {
			return done, err
		}
	}
	return done, nil
}
