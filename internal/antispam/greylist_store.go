package antispam

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Entry is what the greylist remembers of a triplet.
type Entry struct {
	// First is the triplet's first attempt (of this round).
	First time.Time
	// Last is its last accepted message, or First.
	Last time.Time
	// Passed is set once a retry came after the delay.
	Passed bool
	// Expires is when the entry may be forgotten.
	Expires time.Time
}

// Store keeps greylisting triplets. A cluster shares one (in its
// database); a single server keeps a FileStore.
type Store interface {
	// Get returns the entry of key, and false when there is none (or it
	// expired).
	Get(ctx context.Context, key string) (Entry, bool, error)
	// Put records the entry of key durably.
	Put(ctx context.Context, key string, e Entry) error
}

// DefaultMaxEntries bounds a FileStore's triplets when the caller gives
// no bound.
const DefaultMaxEntries = 100000

// maxKeyLen bounds a key (TripletKey makes 32 hex digits).
const maxKeyLen = 64

// ErrStoreLine is wrapped by the error of a store file's line that does
// not parse.
var ErrStoreLine = errors.New("greylist: bad store line")

// FileStore is a Store in one file: an append-only log of entries, one
// line each ("key first last passed expires", times in Unix seconds),
// fsynced at each Put, read whole at open and rewritten (atomically, to
// a new file renamed over it) when it holds many stale lines. It keeps at
// most MaxEntries triplets: beyond, the expired ones and then the oldest
// are forgotten.
type FileStore struct {
	path       string
	maxEntries int
	now        func() time.Time
	logger     *slog.Logger

	mu      sync.Mutex
	entries map[string]Entry
	lines   int // lines in the file
}

// OpenFileStore opens (or creates) the store file at path. now is the
// clock (nil: time.Now). A last line cut by a crash is dropped; other
// bad lines are an error.
func OpenFileStore(path string, maxEntries int, now func() time.Time, logger *slog.Logger) (*FileStore, error) {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	if now == nil {
		now = time.Now
	}
	s := &FileStore{path: path, maxEntries: maxEntries, now: now, logger: logger, entries: map[string]Entry{}}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, lines, err := ParseStore(f, now())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s.entries, s.lines = entries, lines
	for len(s.entries) > s.maxEntries {
		s.evict()
	}
	return s, nil
}

// maxStoreLine bounds a line of the store file.
const maxStoreLine = 256

// ParseStore reads a store log; later lines replace earlier ones and
// entries expired at now are left out. It returns the entries and the
// number of lines read. A final line without its newline (a write cut
// by a crash) is ignored.
func ParseStore(r io.Reader, now time.Time) (map[string]Entry, int, error) {
	entries := map[string]Entry{}
	br := bufio.NewReaderSize(r, 4096)
	lines := 0
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxStoreLine {
			return nil, lines, fmt.Errorf("%w %d: longer than %d octets", ErrStoreLine, lines+1, maxStoreLine)
		}
		if errors.Is(err, io.EOF) {
			return entries, lines, nil // a cut last line, or none
		}
		if err != nil {
			return nil, lines, err
		}
		lines++
		key, e, perr := parseStoreLine(bytes.TrimSuffix(line, []byte("\n")))
		if perr != nil {
			return nil, lines, fmt.Errorf("%w %d: %s", ErrStoreLine, lines, perr)
		}
		if e.Expires.After(now) {
			entries[key] = e
		} else {
			delete(entries, key)
		}
	}
}

func parseStoreLine(line []byte) (string, Entry, error) {
	f := strings.Fields(string(line))
	if len(f) != 5 {
		return "", Entry{}, errors.New("want 5 fields")
	}
	key := f[0]
	if len(key) > maxKeyLen {
		return "", Entry{}, errors.New("key too long")
	}
	var t [3]time.Time
	for i, s := range []string{f[1], f[2], f[4]} {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 || n > 1<<40 {
			return "", Entry{}, fmt.Errorf("bad time %q", s)
		}
		t[i] = time.Unix(n, 0)
	}
	if f[3] != "0" && f[3] != "1" {
		return "", Entry{}, fmt.Errorf("bad passed flag %q", f[3])
	}
	return key, Entry{First: t[0], Last: t[1], Passed: f[3] == "1", Expires: t[2]}, nil
}

func formatStoreLine(key string, e Entry) string {
	p := "0"
	if e.Passed {
		p = "1"
	}
	return fmt.Sprintf("%s %d %d %s %d\n", key, e.First.Unix(), e.Last.Unix(), p, e.Expires.Unix())
}

// Get implements Store.
func (s *FileStore) Get(ctx context.Context, key string) (Entry, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if ok && !e.Expires.After(s.now()) {
		return Entry{}, false, nil
	}
	return e, ok, nil
}

// Put implements Store: the line is appended and fsynced before Put
// returns.
func (s *FileStore) Put(ctx context.Context, key string, e Entry) error {
	if key == "" || len(key) > maxKeyLen || strings.ContainsAny(key, " \t\r\n") {
		return fmt.Errorf("greylist: invalid key %q", key)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.entries[key]; !ok {
		for len(s.entries) >= s.maxEntries {
			s.evict()
		}
	}
	s.entries[key] = e
	if s.lines > 2*len(s.entries)+1000 {
		return s.rewrite()
	}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(formatStoreLine(key, e))
	if werr == nil {
		werr = f.Sync()
	}
	if err := f.Close(); werr == nil {
		werr = err
	}
	if werr != nil {
		return werr
	}
	s.lines++
	return nil
}

// evict makes room: it forgets the expired entries, or else a batch
// (1% of the bound) of those used longest ago, triplets that never passed
// first, so that a flood of new triplets (spamware that never retries)
// does not push out the senders that did. The caller holds mu.
func (s *FileStore) evict() {
	now := s.now()
	n := len(s.entries)
	for k, e := range s.entries {
		if !e.Expires.After(now) {
			delete(s.entries, k)
		}
	}
	if len(s.entries) < n {
		return
	}
	type cand struct {
		key    string
		passed bool
		last   time.Time
	}
	cands := make([]cand, 0, len(s.entries))
	for k, e := range s.entries {
		cands = append(cands, cand{k, e.Passed, e.Last})
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if a.passed != b.passed {
			if a.passed {
				return 1
			}
			return -1
		}
		return a.last.Compare(b.last)
	})
	batch := max(1, s.maxEntries/100)
	for _, c := range cands[:min(batch, len(cands))] {
		delete(s.entries, c.key)
	}
}

// rewrite writes the live entries to a new file and renames it over the
// log. The caller holds mu.
func (s *FileStore) rewrite() error {
	tmp, err := os.CreateTemp(filepath.Dir(s.path), ".greylist-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	now := s.now()
	n := 0
	for k, e := range s.entries {
		if e.Expires.After(now) {
			w.WriteString(formatStoreLine(k, e))
			n++
		}
	}
	err = w.Flush()
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		d.Sync()
		d.Close()
	}
	s.lines = n
	s.logger.Debug("greylist: store rewritten", "entries", n)
	return nil
}

// Len returns the number of triplets held.
func (s *FileStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// Path returns the store's file.
func (s *FileStore) Path() string { return s.path }

// SetMaxEntries changes the bound on the triplets (a reload); the store
// shrinks at the next Put.
func (s *FileStore) SetMaxEntries(n int) {
	if n <= 0 {
		n = DefaultMaxEntries
	}
	s.mu.Lock()
	s.maxEntries = n
	s.mu.Unlock()
}
