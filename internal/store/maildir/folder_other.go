//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package maildir

import "os"

// rootFolderDirs are the tmp/ and new/ of a Folder resolved through its
// os.Root on every call (systems without openat-style calls here).
type rootFolderDirs struct{ rootDirs }

// openFolderDirs returns the directories of root.
func openFolderDirs(root *os.Root) (folderDirs, error) {
	return rootFolderDirs{rootDirs{root: root, dir: "."}}, nil
}

// syncNewNow fsyncs new/.
func (d rootFolderDirs) syncNewNow() error { return syncRootDir(d.root, "new") }

func (d rootFolderDirs) close() error { return nil }
