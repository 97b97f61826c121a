package maildir

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/store"
)

// Export
//
// ExportMaildrop writes the messages of any store's maildrop into a plain
// Maildir that Dovecot, mutt and this package read: each message is
// delivered as Folder.Deliver does (Dovecot-style name with ,S= and ,W=,
// LF line ends, file fsync'd, new/ fsync'd once at the end), with the tag
// "E" + 24 hex digits of the SHA-256 of its UIDL in its name, and listed
// in the Maildir's dovecot-uidlist (version 3) with its UIDL in the "P"
// extension, so that this package (pop3.dovecot_uidl_format set, as by
// default) and Dovecot itself both answer UIDL with the UIDL the message
// had in the source. The list is written last (temporary file, fsync,
// rename, directory fsync). A message file gets the time the message
// arrived when the source knows it (PostgreSQL's internal date), as
// Dovecot reads it.
//
// An export can be run again: a message whose UIDL the list has, and
// whose file is still in new/ or cur/, is skipped; a message whose file
// was written by an interrupted run (found by its tag) is listed without
// being written again.

// internalDater is implemented by maildrops that know when each message
// arrived (pgstore's).
type internalDater interface {
	InternalDate(i int) time.Time
}

// ExportResult counts what ExportMaildrop did.
type ExportResult struct {
	// Written is the number of messages written.
	Written int
	// Skipped is the number of messages already in the Maildir.
	Skipped int
}

// exportTagLen is the number of hex digits of a message's tag.
const exportTagLen = 24

// exportTag returns the tag of the file holding the message with the
// given UIDL.
func exportTag(uidl string) string {
	sum := sha256.Sum256([]byte(uidl))
	return "E" + hex.EncodeToString(sum[:])[:exportTagLen]
}

// ExportDir returns the directory of mailbox under an export root:
// ROOT/DOMAIN/LOCAL/Maildir, the layout of a Store, or
// store.ErrNoMailbox for a name that cannot be a path.
func ExportDir(root, mailbox string) (string, error) {
	rel, err := mailboxDir(mailbox)
	if err != nil {
		return "", err
	}
	return filepath.Join(root, filepath.FromSlash(rel)), nil
}

// ExportMaildrop writes every message of src into the Maildir dir
// (created when missing), keeping its UIDL through dovecot-uidlist. See
// "Export" above.
func ExportMaildrop(ctx context.Context, dir string, src store.Maildrop) (ExportResult, error) {
	var res ExportResult
	if err := mkdirAllSynced(dir); err != nil {
		return res, err
	}
	f, err := OpenFolder(dir, nil)
	if err != nil {
		return res, err
	}
	defer f.Close()
	list, err := readExportList(dir)
	if err != nil {
		return res, err
	}
	present, err := folderFiles(dir)
	if err != nil {
		return res, err
	}
	// Files by base, and by export tag.
	byBase := map[string]string{}
	byTag := map[string]string{}
	for _, name := range present {
		base := parseName(name).base
		byBase[base] = name
		if i := strings.Index(base, "XE"); i >= 0 && len(base) >= i+2+exportTagLen {
			byTag[base[i+1:i+2+exportTagLen]] = name
		}
	}
	// Entries whose file is gone are dropped: their message is written
	// again below if the source still has it.
	byUIDL := map[string]uidEntry{}
	for base, e := range list.entries {
		if _, ok := byBase[base]; !ok {
			delete(list.entries, base)
			continue
		}
		if e.pop3 != "" {
			byUIDL[e.pop3] = e
		}
	}
	changed := false
	for i, m := range src.Messages() {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if _, ok := byUIDL[m.UID]; ok {
			res.Skipped++
			continue
		}
		tag := exportTag(m.UID)
		name, ok := byTag[tag]
		if !ok {
			rc, err := src.Open(ctx, i)
			if err != nil {
				return res, fmt.Errorf("maildir: export of message %d: %w", i+1, err)
			}
			name, err = f.Deliver(ctx, rc, FolderOptions{Tag: tag, DeferDirSync: true})
			rc.Close()
			if err != nil {
				return res, fmt.Errorf("maildir: export of message %d: %w", i+1, err)
			}
			if d, ok := src.(internalDater); ok {
				// The file's time is the message's arrival for Dovecot
				// (its IMAP INTERNALDATE) and mail readers.
				if t := d.InternalDate(i); !t.IsZero() {
					if err := os.Chtimes(filepath.Join(dir, "new", name), t, t); err != nil {
						return res, fmt.Errorf("maildir: export of message %d: %w", i+1, err)
					}
				}
			}
			res.Written++
		} else {
			res.Skipped++
		}
		list.next++
		e := uidEntry{uid: list.next - 1, name: name, pop3: m.UID}
		list.entries[parseName(name).base] = e
		byUIDL[m.UID] = e
		changed = true
	}
	if !changed {
		return res, nil
	}
	// The message files' names first, then the list that refers to them.
	if err := f.SyncNew(nil); err != nil {
		return res, err
	}
	return res, writeExportList(dir, list)
}

// readExportList reads dir's dovecot-uidlist, or returns an empty list
// with a new UIDVALIDITY when there is none.
func readExportList(dir string) (*uidList, error) {
	file, err := os.Open(filepath.Join(dir, uidlistName))
	if errors.Is(err, fs.ErrNotExist) {
		// RFC 9051 §2.3.1.1: UIDVALIDITY, the creation time in seconds
		// as Dovecot does; never 0.
		v := uint32(time.Now().Unix())
		if v == 0 {
			v = 1
		}
		return &uidList{version: 3, validity: v, next: 1, entries: map[string]uidEntry{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("maildir: export: %w", err)
	}
	defer file.Close()
	l, _, err := parseUIDList(file, nil)
	if err != nil {
		return nil, fmt.Errorf("maildir: export: %s: %w", filepath.Join(dir, uidlistName), err)
	}
	for _, e := range l.entries {
		if e.uid >= l.next {
			l.next = e.uid + 1
		}
	}
	if l.next == 0 {
		l.next = 1
	}
	return l, nil
}

// writeExportList replaces dir's dovecot-uidlist with l, in version 3:
//
//	3 V<uidvalidity> N<nextuid>
//	<uid> [G<guid>] [P<pop3 uidl>] :<file name>
func writeExportList(dir string, l *uidList) error {
	entries := make([]uidEntry, 0, len(l.entries))
	for _, e := range l.entries {
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b uidEntry) int { return int(int64(a.uid) - int64(b.uid)) })
	tmp := filepath.Join(dir, uidlistName+".postino-tmp")
	file, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, filePerm)
	if err != nil {
		return fmt.Errorf("maildir: export: %w", err)
	}
	w := bufio.NewWriter(file)
	fmt.Fprintf(w, "3 V%d N%d\n", l.validity, l.next)
	for _, e := range entries {
		w.WriteString(strconv.FormatUint(uint64(e.uid), 10))
		if e.guid != "" {
			w.WriteString(" G" + e.guid)
		}
		if e.pop3 != "" {
			w.WriteString(" P" + e.pop3)
		}
		w.WriteString(" :" + e.name + "\n")
	}
	if err := errors.Join(w.Flush(), file.Sync(), file.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("maildir: export: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, uidlistName)); err != nil {
		return fmt.Errorf("maildir: export: %w", err)
	}
	return syncPath(dir)
}

// folderFiles lists the message files of new/ and cur/ (names not
// starting with '.').
func folderFiles(dir string) ([]string, error) {
	var names []string
	for _, sub := range []string{"new", "cur"} {
		des, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("maildir: export: %w", err)
		}
		for _, de := range des {
			if n := de.Name(); !strings.HasPrefix(n, ".") {
				names = append(names, n)
			}
		}
	}
	return names, nil
}

// mkdirAllSynced creates dir and its missing parents, fsyncing the
// parent of each one it creates.
func mkdirAllSynced(dir string) error {
	dir = filepath.Clean(dir)
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("maildir: export: %s is not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSynced(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, dirPerm); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("maildir: export: %w", err)
	}
	return syncPath(parent)
}

// syncPath fsyncs the directory dir.
func syncPath(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("maildir: export: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("maildir: export: syncing %s: %w", dir, err)
	}
	return nil
}
