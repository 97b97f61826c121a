package fetch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/postino-mail/postino/internal/fsutil"
)

// StateVersion is the version of the state file format written.
const StateVersion = 1

// goneRetention is how long a record is kept after its message left the
// server. It is what lets a message that reappears under a new UIDL (the
// server renumbered its UIDLs) be recognised by its content.
const goneRetention = 90 * 24 * time.Hour

// Record is what the state remembers of one message, keyed by its
// identity (the UIDL, or a derived key on servers without UIDL).
type Record struct {
	// FirstSeen is when the message was first listed on the server; it
	// drives DeleteAfter.
	FirstSeen time.Time `json:"first_seen"`
	// DeliveredAt is when the message became durable at the destination;
	// zero while it has not been delivered.
	DeliveredAt time.Time `json:"delivered_at,omitzero"`
	// Dest identifies the stored copy (a file name, an mbox offset, a
	// mailbox UID, "mda").
	Dest string `json:"dest,omitempty"`
	// SHA256 is the hex SHA-256 of the message as downloaded (wire form,
	// CRLF line ends, not byte-stuffed).
	SHA256 string `json:"sha256,omitempty"`
	// Size is the downloaded size in octets.
	Size int64 `json:"size,omitempty"`
	// Pending is set by an intent record that has no done record yet: the
	// message may or may not be at the destination.
	Pending bool `json:"pending,omitempty"`
	// BodySHA256 and BodySize describe the body of a pending message
	// (Message.BodySHA256, Message.BodySize), for Destination.Find to
	// tell a complete copy from a partial one; they are dropped once the
	// intent is settled.
	BodySHA256 string `json:"body_sha256,omitempty"`
	BodySize   int64  `json:"body_size,omitempty"`
	// GoneSince is when the message was first missing from the server's
	// listing; records gone longer than 90 days are forgotten.
	GoneSince time.Time `json:"gone_since,omitzero"`
	// DeleSent is when postino fetch decided to DELE the message (recorded
	// durably before the DELE is sent). A message it deleted is never
	// taken for one that came back under a new UIDL.
	DeleSent time.Time `json:"dele_at,omitzero"`
	// Expunged is when the session that sent the DELE ended with a
	// successful QUIT: the message is no longer on the server, and a
	// message with the same content is a new one.
	Expunged time.Time `json:"expunged_at,omitzero"`
}

// Delivered reports whether the message is known to be at the destination.
func (r *Record) Delivered() bool { return !r.DeliveredAt.IsZero() }

// State is the content of an account's state file.
type State struct {
	Version  int                `json:"version"`
	Account  string             `json:"account"`
	Server   string             `json:"server,omitempty"`
	Updated  time.Time          `json:"updated"`
	Messages map[string]*Record `json:"messages"`
}

// journalEntry is one line of the journal.
type journalEntry struct {
	Op     string    `json:"op"` // "intent", "done", "abandon", "dele", "expunged"
	Key    string    `json:"key"`
	At     time.Time `json:"at"`
	SHA256 string    `json:"sha256,omitempty"`
	Size   int64     `json:"size,omitempty"`
	Dest   string    `json:"dest,omitempty"`
	// BodySHA256 and BodySize (intent only): see Record.
	BodySHA256 string `json:"body_sha256,omitempty"`
	BodySize   int64  `json:"body_size,omitempty"`
}

// StateFile is an account's durable state: a JSON snapshot (NAME.state)
// replaced atomically, and a journal (NAME.journal) of intent and done
// records appended between snapshots (each intent fsync'd, with the done
// records before it, before its delivery starts). An exclusive
// lock on NAME.lock keeps two fetches of one account apart.
type StateFile struct {
	// State is the current state, snapshot plus journal.
	State *State

	dir, name string
	lock      *os.File
	journal   *os.File
	dirty     bool // entries written but not yet fsync'd

	// pg, when set, keeps the state in PostgreSQL instead of files
	// (OpenPGState).
	pg *pgState
}

// Lost returns a channel closed when the state's lease is lost (the
// state in PostgreSQL could not be renewed in time, or another node took
// it over), or nil for a state file, whose lock cannot be lost.
func (s *StateFile) Lost() <-chan struct{} {
	if s.pg == nil {
		return nil
	}
	return s.pg.lost
}

// ErrStateLocked is returned by OpenState when another process is fetching
// the same account.
var ErrStateLocked = errors.New("another postino fetch is running for this account")

// OpenState locks and loads the state of account in dir, creating dir if
// needed. The journal left by an interrupted run is replayed and folded
// into a new snapshot.
func OpenState(dir, account string) (*StateFile, error) {
	if err := mkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	s := &StateFile{dir: dir, name: account}
	lf, err := os.OpenFile(s.path(".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lf.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrStateLocked
		}
		return nil, fmt.Errorf("state lock: %w", err)
	}
	s.lock = lf
	s.State = &State{Version: StateVersion, Account: account, Messages: map[string]*Record{}}
	data, err := os.ReadFile(s.path(".state"))
	switch {
	case err == nil:
		if err := json.Unmarshal(data, s.State); err != nil {
			s.Close()
			return nil, fmt.Errorf("state file %s is corrupt: %w", s.path(".state"), err)
		}
		if s.State.Version > StateVersion {
			s.Close()
			return nil, fmt.Errorf("state file %s has version %d, newer than this postino (%d)", s.path(".state"), s.State.Version, StateVersion)
		}
		if s.State.Messages == nil {
			s.State.Messages = map[string]*Record{}
		}
	case errors.Is(err, os.ErrNotExist):
	default:
		s.Close()
		return nil, fmt.Errorf("state file: %w", err)
	}
	n, err := s.replay()
	if err != nil {
		s.Close()
		return nil, err
	}
	if n > 0 {
		if err := s.Save(); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

func (s *StateFile) path(ext string) string { return filepath.Join(s.dir, s.name+ext) }

// replay applies the journal's complete, intact lines to the state. A torn
// last line (the process died while appending it) is ignored: the step it
// announced had not started, since every step waits for its record's
// fsync.
func (s *StateFile) replay() (int, error) {
	data, err := os.ReadFile(s.path(".journal"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("journal: %w", err)
	}
	n := 0
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break // torn last line
		}
		line := data[:i]
		data = data[i+1:]
		sum, body, ok := bytes.Cut(line, []byte(" "))
		if !ok {
			continue
		}
		want, err := strconv.ParseUint(string(sum), 16, 32)
		if err != nil || uint32(want) != crc32.ChecksumIEEE(body) {
			continue
		}
		var e journalEntry
		if json.Unmarshal(body, &e) != nil {
			continue
		}
		s.apply(e)
		n++
	}
	return n, nil
}

// apply applies one journal entry to the in-memory state.
func (s *StateFile) apply(e journalEntry) {
	r := s.State.Messages[e.Key]
	if r == nil {
		r = &Record{FirstSeen: e.At}
		s.State.Messages[e.Key] = r
	}
	switch e.Op {
	case "intent":
		// A new delivery under this key (a content key whose earlier
		// message was deleted): the earlier deletion no longer applies.
		r.Pending = true
		r.SHA256, r.Size = e.SHA256, e.Size
		r.BodySHA256, r.BodySize = e.BodySHA256, e.BodySize
		r.DeleSent, r.Expunged, r.DeliveredAt = time.Time{}, time.Time{}, time.Time{}
	case "done":
		r.Pending = false
		r.BodySHA256, r.BodySize = "", 0
		r.DeliveredAt, r.Dest = e.At, e.Dest
		if e.SHA256 != "" {
			r.SHA256 = e.SHA256
		}
		if e.Size != 0 {
			r.Size = e.Size
		}
	case "abandon":
		r.Pending = false
		r.BodySHA256, r.BodySize = "", 0
	case "dele":
		r.DeleSent = e.At
	case "expunged":
		r.Expunged = e.At
	}
}

// append writes one journal entry, waits for it (and every entry before
// it) to be durable if sync is set, and applies it.
func (s *StateFile) append(e journalEntry, sync bool) error {
	if s.pg != nil {
		s.pg.pending = append(s.pg.pending, e)
		s.dirty = true
		if sync {
			if err := s.Sync(); err != nil {
				return err
			}
		}
		s.apply(e)
		return nil
	}
	if s.journal == nil {
		f, err := os.OpenFile(s.path(".journal"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		if err := syncDir(s.dir); err != nil {
			f.Close()
			return err
		}
		s.journal = f
	}
	body, err := json.Marshal(e)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("%08x %s\n", crc32.ChecksumIEEE(body), body)
	if _, err := s.journal.WriteString(line); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	s.dirty = true
	if sync {
		if err := s.Sync(); err != nil {
			return err
		}
	}
	s.apply(e)
	return nil
}

// Sync makes every journal entry written so far durable.
func (s *StateFile) Sync() error {
	if s.pg != nil {
		if !s.dirty {
			return nil
		}
		if err := s.pg.flush(); err != nil {
			return err
		}
		s.dirty = false
		return nil
	}
	if !s.dirty || s.journal == nil {
		return nil
	}
	if err := s.journal.Sync(); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	s.dirty = false
	return nil
}

// Intent durably records that the message m is about to be delivered
// under key, with its SHA-256, its size and what Destination.Find needs
// to recognise a complete copy (the body's SHA-256 and length). Earlier
// entries become durable with it.
func (s *StateFile) Intent(key string, m *Message) error {
	return s.append(journalEntry{Op: "intent", Key: key, At: time.Now().UTC(), SHA256: m.SHA256, Size: m.Size,
		BodySHA256: m.BodySHA256, BodySize: m.BodySize}, true)
}

// Intents durably records, with one fsync, that the messages ms are about
// to be delivered (each under its ID's key), as Intent does for one.
func (s *StateFile) Intents(ms []*Message) error {
	now := time.Now().UTC()
	for _, m := range ms {
		if err := s.append(journalEntry{Op: "intent", Key: m.Key, At: now, SHA256: m.SHA256, Size: m.Size,
			BodySHA256: m.BodySHA256, BodySize: m.BodySize}, false); err != nil {
			return err
		}
	}
	return s.Sync()
}

// Done records that the message key is at the destination as dest. The
// entry is written but becomes durable only with the next Intent, Sync or
// Save: a done record lost in a crash leaves the intent, which recovery
// settles by finding the message at the destination. Sync must be called
// before anything that relies on it, such as DELE.
func (s *StateFile) Done(key, dest, sha string, size int64) error {
	return s.append(journalEntry{Op: "done", Key: key, At: time.Now().UTC(), Dest: dest, SHA256: sha, Size: size}, false)
}

// Abandon durably records that a pending message was found not to be at
// the destination; it will be downloaded again.
func (s *StateFile) Abandon(key string) error {
	return s.append(journalEntry{Op: "abandon", Key: key, At: time.Now().UTC()}, true)
}

// Dele records that the message key is about to be deleted from the
// server. The entry becomes durable with the next Sync, which must come
// before the DELE is sent.
func (s *StateFile) Dele(key string) error {
	return s.append(journalEntry{Op: "dele", Key: key, At: time.Now().UTC()}, false)
}

// Expunged durably records that the deletion of the messages keys took
// effect: the session that sent their DELE ended with a successful QUIT.
func (s *StateFile) Expunged(keys []string) error {
	now := time.Now().UTC()
	for _, k := range keys {
		if err := s.append(journalEntry{Op: "expunged", Key: k, At: now}, false); err != nil {
			return err
		}
	}
	return s.Sync()
}

// Save writes the state as a new snapshot (temporary file, fsync, rename,
// directory fsync) and then empties the journal.
func (s *StateFile) Save() error {
	s.State.Version = StateVersion
	s.State.Updated = time.Now().UTC()
	data, err := json.MarshalIndent(s.State, "", "  ")
	if err != nil {
		return err
	}
	if s.pg != nil {
		if err := s.pg.save(data); err != nil {
			return err
		}
		s.dirty = false
		return nil
	}
	data = append(data, '\n')
	tmp := s.path(".state.tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	w := bufio.NewWriter(f)
	w.Write(data)
	if err := errors.Join(w.Flush(), f.Sync(), f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("state: %w", err)
	}
	debugPoint("snapshot-tmp")
	if err := os.Rename(tmp, s.path(".state")); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	debugPoint("snapshot")
	// The snapshot now contains everything the journal says; replaying
	// the journal over it again would change nothing, so emptying it
	// need not be atomic with the rename.
	if s.journal != nil {
		s.journal.Close()
		s.journal = nil
	}
	s.dirty = false
	if err := os.Remove(s.path(".journal")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("journal: %w", err)
	}
	return syncDir(s.dir)
}

// Close releases the lock. It does not save.
func (s *StateFile) Close() error {
	if s.pg != nil {
		p := s.pg
		s.pg = nil
		return p.close()
	}
	if s.journal != nil {
		s.journal.Close()
		s.journal = nil
	}
	if s.lock != nil {
		err := s.lock.Close()
		s.lock = nil
		return err
	}
	return nil
}

// mkdirAll creates dir and its missing parents like os.MkdirAll, and
// fsyncs the parent of each directory it creates, so that the new
// directory survives a power failure along with what is made durable in it
// later (a message, a journal whose done records allow a DELE).
func mkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return &os.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAll(parent, perm); err != nil {
			return err
		}
	}
	// Created meanwhile by another process: its entry may not be durable
	// yet either, so the parent is fsync'd all the same.
	if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return syncDir(parent)
}

// syncDirFunc does the work of syncDir; tests replace it to see which
// directories are fsync'd.
var syncDirFunc = fsutil.SyncDir

// syncDir fsyncs a directory, making renames and creations in it durable.
func syncDir(dir string) error { return syncDirFunc(dir) }
