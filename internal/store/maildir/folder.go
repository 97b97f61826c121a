package maildir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
)

// folderCounter numbers the unique names of DeliverFolder in this process.
var folderCounter atomic.Uint64

// FolderOptions tune DeliverFolder.
type FolderOptions struct {
	// Tag, when set, is written into the unique name in place of the
	// random part ("X" + Tag + "."), so that a message can later be found
	// by name alone; letters and digits only.
	Tag string
	// AfterFirstChunk, when set, is called once the first chunk of the
	// message is in the temporary file (crash tests kill the process
	// there, to leave a partial file in tmp/ as a crash would).
	AfterFirstChunk func()
	// DirSynced, when set, is told the path of each directory fsync'd
	// (for audits and durability tests).
	DirSynced func(dir string)
	// Logger receives warnings about clean-up failures; nil discards them.
	Logger *slog.Logger
	// DeferDirSync leaves out the fsync of new/ after the rename: the
	// message file itself is fsync'd, but its name in new/ is durable only
	// once the caller has called SyncFolder. A caller storing a batch of
	// messages fsyncs new/ once for all of them, and must not rely on any
	// of them (acknowledge, delete the source) before SyncFolder returns.
	DeferDirSync bool
}

// SyncFolder fsyncs the new/ directory of the Maildir folder dir, making
// the names of the messages DeliverFolder renamed into it durable (for
// deliveries made with DeferDirSync). synced, when set, is told the
// directory fsync'd.
func SyncFolder(dir string, synced func(dir string)) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("maildir: opening %s: %w", dir, err)
	}
	defer root.Close()
	if err := syncRootDir(root, "new"); err != nil {
		return err
	}
	if synced != nil {
		synced(filepath.Join(dir, "new"))
	}
	return nil
}

// DeliverFolder stores msg in the Maildir folder dir (any folder, not a
// Store's mailbox; tmp/, new/ and cur/ are created when missing, and dir
// itself fsync'd then) exactly as Store.Deliver does: the same
// Dovecot-style unique name with ,S= and ,W= sizes and the same host name
// escaping, LF line ends, written to tmp/, fsync'd, renamed into new/ and
// new/ fsync'd before it returns (unless o.DeferDirSync). It returns the
// file name in new/.
func DeliverFolder(ctx context.Context, dir string, msg io.Reader, o FolderOptions) (string, error) {
	if err := checkTag(o.Tag); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	f, err := OpenFolder(dir, o.DirSynced)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return f.Deliver(ctx, msg, o)
}

// checkTag refuses a tag that is not letters and digits only.
func checkTag(tag string) error {
	for i := 0; i < len(tag); i++ {
		if c := tag[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return fmt.Errorf("maildir: tag %q: letters and digits only", tag)
		}
	}
	return nil
}

// Folder is a Maildir folder opened for a series of deliveries (a batch):
// the folder is opened, and its subdirectories made, once rather than on
// every DeliverFolder call.
type Folder struct {
	dir  string
	root *os.Root
	dirs folderDirs
	host string
	pid  int // the process ID of the unique names, read once
}

// folderDirs are the tmp/ and new/ of a Folder, opened once.
type folderDirs interface {
	msgDirs
	// syncNewNow fsyncs new/ on its own (no group commit: SyncNew).
	syncNewNow() error
	// close releases what the directories hold open.
	close() error
}

// OpenFolder opens the Maildir folder dir for deliveries, creating tmp/,
// new/ and cur/ when missing (and fsyncing dir then; dirSynced, when set,
// is told). Close releases it.
func OpenFolder(dir string, dirSynced func(dir string)) (*Folder, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("maildir: opening %s: %w", dir, err)
	}
	created := false
	for _, sub := range []string{"tmp", "new", "cur"} {
		err := root.Mkdir(sub, dirPerm)
		switch {
		case err == nil:
			created = true
		case errors.Is(err, fs.ErrExist):
		default:
			root.Close()
			return nil, fmt.Errorf("maildir: creating %s/%s: %w", dir, sub, err)
		}
	}
	if created {
		if err := syncRootDir(root, "."); err != nil {
			root.Close()
			return nil, err
		}
		if dirSynced != nil {
			dirSynced(dir)
		}
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	dirs, err := openFolderDirs(root)
	if err != nil {
		root.Close()
		return nil, fmt.Errorf("maildir: opening %s: %w", dir, err)
	}
	return &Folder{dir: dir, root: root, dirs: dirs, host: sanitizeHost(host), pid: os.Getpid()}, nil
}

// Close releases the folder.
func (f *Folder) Close() error {
	err := f.dirs.close()
	if cerr := f.root.Close(); err == nil {
		err = cerr
	}
	return err
}

// Deliver stores msg in the folder as DeliverFolder does, with the options
// o (o.DirSynced is told the directories fsync'd).
func (f *Folder) Deliver(ctx context.Context, msg io.Reader, o FolderOptions) (string, error) {
	if err := checkTag(o.Tag); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	base := uniqueName(f.host, f.pid, folderCounter.Add(1), o.Tag)
	h := writeHooks{afterFirst: o.AfterFirstChunk, noDirSync: o.DeferDirSync}
	if o.DirSynced != nil {
		h.synced = func(rel string) { o.DirSynced(filepath.Join(f.dir, rel)) }
	}
	return writeMessage(ctx, f.dirs, base, msg, h, logger)
}

// SyncNew fsyncs the folder's new/ directory, as SyncFolder does; synced,
// when set, is told.
func (f *Folder) SyncNew(synced func(dir string)) error {
	if err := f.dirs.syncNewNow(); err != nil {
		return err
	}
	if synced != nil {
		synced(filepath.Join(f.dir, "new"))
	}
	return nil
}
