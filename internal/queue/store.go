package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/postino-mail/postino/internal/fsutil"
)

// Errors of the queue operations.
var (
	// ErrBusy: the entry is claimed by a delivery in progress (in this or
	// another process).
	ErrBusy = errors.New("queue: entry is being delivered")
	// ErrNotFound: no entry or message has that id.
	ErrNotFound = errors.New("queue: no such entry")
)

// Store holds the queue: message bodies and entries. FileStore keeps it
// in a folder, PGStore in PostgreSQL (shared by the nodes of a cluster).
//
// The contract: AddMessage is durable when it returns, and makes the
// entries visible only after the body is durable. Update replaces an entry
// atomically and durably. Claim is exclusive across every process working
// the queue, and a claim of a process that dies is released (never
// left held; PGStore's after its lease expires).
type Store interface {
	// AddMessage stores a message body and its entries.
	AddMessage(ctx context.Context, msgID string, body io.Reader, entries []*Entry) error
	// OpenMessage streams a stored body.
	OpenMessage(ctx context.Context, msgID string) (io.ReadCloser, error)
	// List returns all entries; entries that cannot be read are reported
	// through bad and skipped.
	List(ctx context.Context, bad func(id string, err error)) ([]*Entry, error)
	// Get returns one entry, or ErrNotFound.
	Get(ctx context.Context, id string) (*Entry, error)
	// Claim takes the exclusive right to deliver or change an entry, or
	// returns ErrBusy. release ends the claim.
	Claim(ctx context.Context, id string) (release func(), err error)
	// Update replaces a claimed entry.
	Update(ctx context.Context, e *Entry) error
	// Remove deletes a claimed entry, and its message body when no other
	// entry uses it.
	Remove(ctx context.Context, e *Entry) error
	// Changed returns a token that changes whenever entries were added,
	// changed or removed or Kick was called (by any process).
	Changed() string
	// Kick makes Changed change.
	Kick() error
	// Sweep removes what a crash can leave behind: temporary files and
	// bodies without entries older than age.
	Sweep(age time.Duration) error
}

// FileStore is a Store in a folder (DATA/queue):
//
//	msg/ID          message bodies, written once
//	entries/ID.N    one JSON file per (message, destination domain)
//	lock/ID.N       flock(2) lock files of claims
//	tmp/            files being written
//	kick            touched by Kick
//
// Every write goes to tmp, is fsynced, renamed into place, and the folder
// is fsynced (so that a crash leaves either the old or the new version).
// All paths are opened through an os.Root confined to the folder. Claims
// are flock locks: released by the kernel when a process dies, but only
// reliable on a local file system (not NFS); several processes on one
// machine (the server and the `postino queue` commands) can share the
// folder, several machines cannot.
type FileStore struct {
	root *os.Root
	dir  string
}

// OpenFileStore opens (creating it if needed) the queue folder dir.
func OpenFileStore(dir string) (*FileStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"msg", "entries", "lock", "tmp"} {
		if err := root.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			root.Close()
			return nil, err
		}
	}
	return &FileStore{root: root, dir: dir}, nil
}

// Close releases the folder.
func (s *FileStore) Close() error { return s.root.Close() }

func randSuffix() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// syncDir fsyncs a sub-folder so that renames into it are durable.
func (s *FileStore) syncDir(name string) error {
	d, err := s.root.Open(name)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeFile writes data (or r) to tmp, fsyncs it and renames it to name.
// The caller fsyncs name's folder.
func (s *FileStore) writeFile(ctx context.Context, name string, r io.Reader) error {
	tmp := "tmp/" + strings.ReplaceAll(name, "/", "_") + "." + randSuffix()
	f, err := s.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, fsutil.ContextReader(ctx, r))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.root.Rename(tmp, name)
	}
	if err != nil {
		s.root.Remove(tmp)
	}
	return err
}

// AddMessage implements Store.
func (s *FileStore) AddMessage(ctx context.Context, msgID string, body io.Reader, entries []*Entry) error {
	if !validID(msgID) {
		return fmt.Errorf("queue: bad message id %q", msgID)
	}
	if err := s.writeFile(ctx, "msg/"+msgID, body); err != nil {
		return fmt.Errorf("queue: storing message: %w", err)
	}
	if err := s.syncDir("msg"); err != nil {
		return err
	}
	// The body is durable; only now do entries point at it.
	for _, e := range entries {
		data, err := e.marshal()
		if err != nil {
			return err
		}
		if err := s.writeFile(ctx, "entries/"+e.ID, strings.NewReader(string(data))); err != nil {
			return fmt.Errorf("queue: storing entry: %w", err)
		}
	}
	return s.syncDir("entries")
}

// OpenMessage implements Store.
func (s *FileStore) OpenMessage(ctx context.Context, msgID string) (io.ReadCloser, error) {
	if !validID(msgID) {
		return nil, ErrNotFound
	}
	f, err := s.root.Open("msg/" + msgID)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: message %s", ErrNotFound, msgID)
	}
	return f, err
}

func (s *FileStore) entryNames() ([]string, error) {
	d, err := s.root.Open("entries")
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// List implements Store.
func (s *FileStore) List(ctx context.Context, bad func(string, error)) ([]*Entry, error) {
	names, err := s.entryNames()
	if err != nil {
		return nil, err
	}
	var out []*Entry
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e, err := s.Get(ctx, n)
		if errors.Is(err, ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			if bad != nil {
				bad(n, err)
			}
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// Get implements Store.
func (s *FileStore) Get(ctx context.Context, id string) (*Entry, error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	data, err := s.root.ReadFile("entries/" + id)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return nil, err
	}
	e, err := parseEntry(data)
	if err != nil {
		return nil, err
	}
	if e.ID != id {
		return nil, fmt.Errorf("queue entry %s: holds id %s", id, e.ID)
	}
	return e, nil
}

// Claim implements Store with a non-blocking flock(2) on lock/ID. The
// kernel drops the lock when the process dies, so no claim outlives a
// crash. Lock files are only removed with their entry, by the holder; a
// claimer that finds the entry gone (Get says ErrNotFound) must release.
func (s *FileStore) Claim(ctx context.Context, id string) (func(), error) {
	if !validID(id) {
		return nil, ErrNotFound
	}
	f, err := s.root.OpenFile("lock/"+id, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrBusy
		}
		return nil, err
	}
	return func() { f.Close() }, nil // closing the last descriptor unlocks
}

// Update implements Store.
func (s *FileStore) Update(ctx context.Context, e *Entry) error {
	data, err := e.marshal()
	if err != nil {
		return err
	}
	if err := s.writeFile(context.WithoutCancel(ctx), "entries/"+e.ID, strings.NewReader(string(data))); err != nil {
		return fmt.Errorf("queue: updating entry: %w", err)
	}
	return s.syncDir("entries")
}

// Remove implements Store.
func (s *FileStore) Remove(ctx context.Context, e *Entry) error {
	if err := s.root.Remove("entries/" + e.ID); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := s.syncDir("entries"); err != nil {
		return err
	}
	s.root.Remove("lock/" + e.ID)
	names, err := s.entryNames()
	if err != nil {
		return err
	}
	for _, n := range names {
		if messageOf(n) == e.MessageID {
			return nil // still used
		}
	}
	// Two entries of one message finishing at once may both see the
	// other and leave the body: Sweep removes it later.
	if err := s.root.Remove("msg/" + e.MessageID); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return s.syncDir("msg")
}

// Changed implements Store: the modification times of the entries folder
// (any rename or removal in it) and of the kick file.
func (s *FileStore) Changed() string {
	var tok strings.Builder
	for _, n := range []string{"entries", "kick"} {
		if fi, err := s.root.Stat(n); err == nil {
			fmt.Fprintf(&tok, "%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return tok.String()
}

// Kick implements Store.
func (s *FileStore) Kick() error {
	return s.root.WriteFile("kick", []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n"), 0o600)
}

// Sweep implements Store.
func (s *FileStore) Sweep(age time.Duration) error {
	old := func(dir, n string) bool {
		fi, err := s.root.Stat(dir + "/" + n)
		return err == nil && time.Since(fi.ModTime()) > age
	}
	names, err := s.entryNames()
	if err != nil {
		return err
	}
	used := make(map[string]bool)
	for _, n := range names {
		used[messageOf(n)] = true
	}
	for _, dir := range []string{"tmp", "msg", "lock"} {
		d, err := s.root.Open(dir)
		if err != nil {
			return err
		}
		list, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return err
		}
		for _, n := range list {
			switch dir {
			case "tmp", "msg":
				if (dir == "tmp" || !used[n]) && old(dir, n) {
					s.root.Remove(dir + "/" + n)
				}
			case "lock":
				if !used[messageOf(n)] && old(dir, n) {
					// Only remove a lock nobody holds.
					if rel, err := s.Claim(context.Background(), n); err == nil {
						if _, err := s.Get(context.Background(), n); errors.Is(err, ErrNotFound) {
							s.root.Remove("lock/" + n)
						}
						rel()
					}
				}
			}
		}
	}
	return nil
}
