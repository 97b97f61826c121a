//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package maildir

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// fdDirs are the tmp/ and new/ directories of a Folder held open as
// directory handles for the folder's lifetime: a message costs one openat
// (its file, relative to tmp/) and one renameat (tmp/ to new/ by handle),
// where resolving tmp/ and new/ through the os.Root would open each of
// them again for every call. Names are generated unique names (one path
// element, no slash), so nothing is resolved beyond the two directories.
type fdDirs struct {
	rootDirs
	tmp, new     *os.File
	tmpFd, newFd int
}

// openFolderDirs opens tmp/ and new/ of root as directory handles.
func openFolderDirs(root *os.Root) (folderDirs, error) {
	tmp, err := root.Open("tmp")
	if err != nil {
		return nil, fmt.Errorf("maildir: opening tmp: %w", err)
	}
	newDir, err := root.Open("new")
	if err != nil {
		tmp.Close()
		return nil, fmt.Errorf("maildir: opening new: %w", err)
	}
	return &fdDirs{
		rootDirs: rootDirs{root: root, dir: "."},
		tmp:      tmp, new: newDir,
		tmpFd: int(tmp.Fd()), newFd: int(newDir.Fd()),
	}, nil
}

func (d *fdDirs) createTmp(base string) (*os.File, error) {
	// O_NOFOLLOW|O_EXCL: a fresh regular file, never through a link.
	fd, err := unix.Openat(d.tmpFd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, filePerm)
	if err != nil {
		return nil, &os.PathError{Op: "openat", Path: d.rel("tmp", base), Err: err}
	}
	return os.NewFile(uintptr(fd), d.rel("tmp", base)), nil
}

func (d *fdDirs) removeTmp(base string) error {
	if err := unix.Unlinkat(d.tmpFd, base, 0); err != nil {
		return &os.PathError{Op: "unlinkat", Path: d.rel("tmp", base), Err: err}
	}
	return nil
}

func (d *fdDirs) rename(base, name string) error {
	if err := unix.Renameat(d.tmpFd, base, d.newFd, name); err != nil {
		return &os.LinkError{Op: "renameat", Old: d.rel("tmp", base), New: d.rel("new", name), Err: err}
	}
	return nil
}

func (d *fdDirs) removeNew(name string) error {
	if err := unix.Unlinkat(d.newFd, name, 0); err != nil {
		return &os.PathError{Op: "unlinkat", Path: d.rel("new", name), Err: err}
	}
	return nil
}

// syncNewNow fsyncs new/ through its handle.
func (d *fdDirs) syncNewNow() error {
	if err := d.new.Sync(); err != nil {
		return fmt.Errorf("maildir: syncing new: %w", err)
	}
	return nil
}

func (d *fdDirs) close() error {
	err := d.tmp.Close()
	if cerr := d.new.Close(); err == nil {
		err = cerr
	}
	return err
}
