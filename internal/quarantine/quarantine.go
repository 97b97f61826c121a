// Package quarantine holds messages on the server instead of delivering
// them (junk handling's quarantine): one folder per user under the
// quarantine directory, one file per message. A message is held durably
// (written to a temporary file, fsync'd, renamed, the folder fsync'd)
// before the SMTP reply acknowledges it, as any delivery. Each file is the
// message with its trace header, below a few X-Quarantine-* fields that
// describe it (date, envelope, score, reasons); the administrator lists,
// shows, releases (delivers to the user's mailbox) or deletes messages by
// ID with `postino quarantine`, they expire after a number of days, and a
// daily digest tells each user what was held.
package quarantine

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/fsutil"
)

// Errors of the store.
var (
	// ErrNotFound: no quarantined message has this ID.
	ErrNotFound = errors.New("quarantine: no such message")
	// ErrBadID: the text is not a quarantine ID.
	ErrBadID = errors.New("quarantine: invalid ID")
)

// Meta describes a held message.
type Meta struct {
	// User is the mailbox the message was for.
	User string
	// Sender is the envelope sender ("" for the null sender).
	Sender string
	// Recipient is the address it was sent to (Delivered-To on release).
	Recipient string
	// Score is the spam score.
	Score float64
	// Reasons are the checks' findings, for the administrator.
	Reasons string
}

// Entry is a held message as listed.
type Entry struct {
	Meta
	// ID names the message in `postino quarantine`.
	ID string
	// Date is when it was held.
	Date time.Time
	// From and Subject are the message's own header fields (raw).
	From, Subject string
	// Size is the file's size in octets.
	Size int64
}

// Store is a quarantine directory.
type Store struct {
	// Dir holds one folder per user.
	Dir string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Logger receives what Sweep removes.
	Logger *slog.Logger
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// The metadata fields at the top of a held file.
const (
	fID        = "X-Quarantine-ID"
	fDate      = "X-Quarantine-Date"
	fUser      = "X-Quarantine-User"
	fSender    = "X-Quarantine-Sender"
	fRecipient = "X-Quarantine-Recipient"
	fScore     = "X-Quarantine-Score"
	fReasons   = "X-Quarantine-Reasons"
)

// userDir returns the folder name of a user: the address with every octet
// outside [A-Za-z0-9@._+-] written %XX, so that no name can leave the
// quarantine directory ("." and ".." are escaped too).
func userDir(user string) string {
	var b strings.Builder
	for i := 0; i < len(user); i++ {
		c := user[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("@_+-", c) >= 0 || c == '.' && i > 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// checkID refuses what is not an ID as newID makes them.
func checkID(id string) error {
	if len(id) != 32 {
		return fmt.Errorf("%w %q", ErrBadID, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		var ok bool
		switch {
		case i == 8:
			ok = c == 'T'
		case i == 15:
			ok = c == '-'
		case i < 15:
			ok = c >= '0' && c <= '9'
		default:
			ok = c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
		}
		if !ok {
			return fmt.Errorf("%w %q", ErrBadID, id)
		}
	}
	return nil
}

// newID returns a new ID: the time held and 16 random hex digits,
// "20261130T021200-0123456789abcdef".
func newID(now time.Time) string {
	var r [8]byte
	rand.Read(r[:])
	return now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(r[:])
}

// clean removes CR, LF and NUL from a metadata value.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}

// Hold stores msg (CRLF line ends, with its trace header) for m.User and
// returns its ID once it is durable.
func (s *Store) Hold(ctx context.Context, m Meta, msg io.Reader) (string, error) {
	if m.User == "" {
		return "", errors.New("quarantine: no user")
	}
	now := s.now()
	id := newID(now)
	dir := filepath.Join(s.Dir, userDir(m.User))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	head := fmt.Sprintf("%s: %s\r\n%s: %s\r\n%s: %s\r\n%s: <%s>\r\n%s: %s\r\n%s: %s\r\n%s: %s\r\n",
		fID, id, fDate, now.UTC().Format(time.RFC3339Nano), fUser, clean(m.User), fSender, clean(m.Sender),
		fRecipient, clean(m.Recipient), fScore, strconv.FormatFloat(m.Score, 'f', 2, 64), fReasons, clean(m.Reasons))
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	bw := bufio.NewWriterSize(tmp, 64*1024)
	_, err = bw.WriteString(head)
	if err == nil {
		_, err = io.Copy(bw, fsutil.ContextReader(ctx, msg))
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, id))
	}
	if err == nil {
		err = fsutil.SyncDir(dir)
	}
	if err != nil {
		return "", fmt.Errorf("quarantine: holding a message for %s: %w", m.User, err)
	}
	return id, nil
}

// path finds the file of id.
func (s *Store) path(id string) (string, error) {
	if err := checkID(id); err != nil {
		return "", err
	}
	users, err := os.ReadDir(s.Dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	for _, u := range users {
		p := filepath.Join(s.Dir, u.Name(), id)
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrNotFound, id)
}

// maxEntryHeader is how much of a file List reads for its fields.
const maxEntryHeader = 64 * 1024

// readEntry reads the description of a held file.
func readEntry(p string) (Entry, error) {
	f, err := os.Open(p)
	if err != nil {
		return Entry{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Entry{}, err
	}
	e := Entry{Size: fi.Size()}
	br := bufio.NewReader(io.LimitReader(f, maxEntryHeader))
	var last *string
	for {
		line, err := br.ReadString('\n')
		t := strings.TrimRight(line, "\r\n")
		if t == "" {
			break
		}
		if t[0] == ' ' || t[0] == '\t' {
			if last != nil {
				*last += " " + strings.TrimSpace(t)
			}
		} else {
			last = nil
			name, val, _ := strings.Cut(t, ":")
			val = strings.TrimSpace(val)
			switch {
			case strings.EqualFold(name, fID):
				e.ID = val
			case strings.EqualFold(name, fDate):
				e.Date, _ = time.Parse(time.RFC3339Nano, val)
			case strings.EqualFold(name, fUser):
				e.User = val
			case strings.EqualFold(name, fSender):
				e.Sender = strings.TrimSuffix(strings.TrimPrefix(val, "<"), ">")
			case strings.EqualFold(name, fRecipient):
				e.Recipient = val
			case strings.EqualFold(name, fScore):
				e.Score, _ = strconv.ParseFloat(val, 64)
			case strings.EqualFold(name, fReasons):
				e.Reasons = val
			case strings.EqualFold(name, "From") && e.From == "":
				e.From = val
				last = &e.From
			case strings.EqualFold(name, "Subject") && e.Subject == "":
				e.Subject = val
				last = &e.Subject
			}
		}
		if err != nil {
			break
		}
	}
	if checkID(e.ID) != nil || e.ID != filepath.Base(p) {
		return Entry{}, fmt.Errorf("quarantine: %s is not a held message", p)
	}
	return e, nil
}

// List returns the held messages of user ("" for every user's), oldest
// first.
func (s *Store) List(user string) ([]Entry, error) {
	var dirs []string
	if user != "" {
		dirs = []string{userDir(user)}
	} else {
		des, err := os.ReadDir(s.Dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("quarantine: %w", err)
		}
		for _, d := range des {
			if d.IsDir() {
				dirs = append(dirs, d.Name())
			}
		}
	}
	var out []Entry
	for _, d := range dirs {
		files, err := os.ReadDir(filepath.Join(s.Dir, d))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("quarantine: %w", err)
		}
		for _, f := range files {
			if checkID(f.Name()) != nil || !f.Type().IsRegular() {
				continue
			}
			e, err := readEntry(filepath.Join(s.Dir, d, f.Name()))
			if err != nil {
				continue // removed meanwhile, or not ours
			}
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := a.Date.Compare(b.Date); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// Open returns a held message's description and the message as it was
// to be delivered (without the X-Quarantine-* fields). The caller closes
// it.
func (s *Store) Open(id string) (Entry, io.ReadCloser, error) {
	p, err := s.path(id)
	if err != nil {
		return Entry{}, nil, err
	}
	e, err := readEntry(p)
	if err != nil {
		return Entry{}, nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("quarantine: %w", err)
	}
	br := bufio.NewReader(f)
	for {
		peek, err := br.Peek(len("X-Quarantine-"))
		if err != nil || !strings.EqualFold(string(peek), "X-Quarantine-") {
			break
		}
		if _, err := br.ReadString('\n'); err != nil {
			break
		}
	}
	return e, struct {
		io.Reader
		io.Closer
	}{br, f}, nil
}

// Delete removes a held message.
func (s *Store) Delete(id string) error {
	p, err := s.path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	return fsutil.SyncDir(filepath.Dir(p))
}

// Release delivers a held message with deliver (into the user's mailbox,
// durably) and then removes it: a crash in between leaves it held (and a
// second release delivers it twice), never lost.
func (s *Store) Release(ctx context.Context, id string, deliver func(ctx context.Context, e Entry, msg io.Reader) error) (Entry, error) {
	e, rc, err := s.Open(id)
	if err != nil {
		return Entry{}, err
	}
	err = deliver(ctx, e, rc)
	rc.Close()
	if err != nil {
		return e, fmt.Errorf("quarantine: releasing %s: %w", id, err)
	}
	return e, s.Delete(id)
}

// Sweep removes the messages held longer than maxAge and returns how many
// it removed.
func (s *Store) Sweep(maxAge time.Duration) (int, error) {
	// The time a message was held is in its ID: no file is read.
	cut := s.now().Add(-maxAge)
	users, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("quarantine: %w", err)
	}
	n := 0
	for _, u := range users {
		if !u.IsDir() {
			continue
		}
		dir := filepath.Join(s.Dir, u.Name())
		files, err := os.ReadDir(dir)
		if err != nil {
			return n, fmt.Errorf("quarantine: %w", err)
		}
		removed := false
		for _, f := range files {
			if checkID(f.Name()) != nil || !f.Type().IsRegular() {
				continue
			}
			held, err := time.Parse("20060102T150405", f.Name()[:15])
			if err != nil || held.After(cut) {
				continue
			}
			if err := os.Remove(filepath.Join(dir, f.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return n, fmt.Errorf("quarantine: %w", err)
			}
			removed = true
			n++
			if s.Logger != nil {
				s.Logger.Info("quarantine: expired", "id", f.Name(), "held", held)
			}
		}
		if removed {
			if err := fsutil.SyncDir(dir); err != nil {
				return n, fmt.Errorf("quarantine: %w", err)
			}
		}
	}
	return n, nil
}
