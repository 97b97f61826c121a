package tlsutil

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/fsutil"
)

// TicketKeysFileName is the name of the session ticket key file in the TLS
// folder of the data directory.
const TicketKeysFileName = "ticket-keys"

// TicketKeyPeriod is how long a session ticket key encrypts new tickets
// before a new one replaces it. The previous keys still decrypt tickets
// until they fall out of the ring (MaxTicketKeys).
const TicketKeyPeriod = 24 * time.Hour

// MaxTicketKeys is the number of keys kept: the current one and the
// previous ones, so a ticket stays usable for at least
// (MaxTicketKeys-1) x TicketKeyPeriod after it was issued (crypto/tls
// itself refuses tickets older than 7 days).
const MaxTicketKeys = 3

// ErrTicketKeys is wrapped by the errors of TicketKeys about the key file.
var ErrTicketKeys = errors.New("tls: session ticket keys")

// ticketKey is one session ticket key and when it was made.
type ticketKey struct {
	created time.Time
	key     [32]byte
}

// TicketKeys keeps the keys that protect TLS session tickets (RFC 5077,
// RFC 8446 §4.6.1) in a file, so a client's ticket still resumes its
// session after postino restarts. The file holds one key a line, newest
// first, as "unix-seconds hex-key", and is written with mode 0600 (the keys
// decrypt the resumption secrets of every session they protect). Keys are
// rotated every TicketKeyPeriod; at most MaxTicketKeys are kept.
type TicketKeys struct {
	path   string
	logger *slog.Logger
	now    func() time.Time

	mu   sync.Mutex
	keys []ticketKey // newest first
	cfgs []*tls.Config
}

// NewTicketKeys reads the key file at path, rotates it when it is missing,
// unreadable as keys, or its newest key is older than TicketKeyPeriod, and
// returns the ring. A malformed file is replaced (its tickets are lost,
// nothing else). Writing the file is an error: without a durable key,
// resumption would silently stop working across restarts.
func NewTicketKeys(path string, logger *slog.Logger) (*TicketKeys, error) {
	return newTicketKeys(path, logger, time.Now)
}

// newTicketKeys is NewTicketKeys with a clock.
func newTicketKeys(path string, logger *slog.Logger, now func() time.Time) (*TicketKeys, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &TicketKeys{path: path, logger: logger, now: now}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrTicketKeys, err)
	default:
		keys, perr := parseTicketKeys(data)
		if perr != nil {
			logger.Warn("tls: session ticket key file is malformed; replacing it", "file", path, "err", perr)
		}
		t.keys = keys
	}
	if _, err := t.rotate(); err != nil {
		return nil, err
	}
	return t, nil
}

// parseTicketKeys reads the key file format; on error it returns nil.
func parseTicketKeys(data []byte) ([]ticketKey, error) {
	var keys []ticketKey
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		ts, hx, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("line %q: want \"unix-seconds hex-key\"", line)
		}
		sec, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad time %q", ts)
		}
		raw, err := hex.DecodeString(hx)
		if err != nil || len(raw) != 32 {
			return nil, errors.New("a key is not 32 octets of hex")
		}
		k := ticketKey{created: time.Unix(sec, 0)}
		copy(k.key[:], raw)
		keys = append(keys, k)
	}
	if len(keys) > MaxTicketKeys {
		keys = keys[:MaxTicketKeys]
	}
	return keys, nil
}

// rotate adds a new key when none is current and writes the file; it
// reports whether it did. The caller must not hold t.mu.
func (t *TicketKeys) rotate() (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if len(t.keys) > 0 && now.Sub(t.keys[0].created) < TicketKeyPeriod && !t.keys[0].created.After(now) {
		return false, nil
	}
	k := ticketKey{created: now}
	if _, err := rand.Read(k.key[:]); err != nil {
		return false, fmt.Errorf("%w: %w", ErrTicketKeys, err)
	}
	keys := append([]ticketKey{k}, t.keys...)
	if len(keys) > MaxTicketKeys {
		keys = keys[:MaxTicketKeys]
	}
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%d %s\n", k.created.Unix(), hex.EncodeToString(k.key[:]))
	}
	// Written before use, so a restart does not forget a key that
	// issued tickets. If the file cannot be written the new key is used
	// all the same: an old key must not go on protecting new sessions
	// (forward secrecy); only resumption across a restart is lost.
	werr := fsutil.WriteFile(t.path, []byte(b.String()), 0o600)
	t.keys = keys
	for _, c := range t.cfgs {
		c.SetSessionTicketKeys(t.raw())
	}
	if werr != nil {
		return true, fmt.Errorf("%w: writing %s: %w", ErrTicketKeys, t.path, werr)
	}
	return true, nil
}

// raw returns the keys in crypto/tls's form, newest (the one that
// encrypts) first. The caller holds t.mu.
func (t *TicketKeys) raw() [][32]byte {
	out := make([][32]byte, len(t.keys))
	for i, k := range t.keys {
		out[i] = k.key
	}
	return out
}

// Apply makes cfg issue and accept tickets under the ring's keys, now and
// after every rotation.
func (t *TicketKeys) Apply(cfg *tls.Config) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cfg.SetSessionTicketKeys(t.raw())
	t.cfgs = append(t.cfgs, cfg)
}

// Watch rotates the keys when the current one is older than
// TicketKeyPeriod, checking every interval (an hour if not positive). A
// failure to save the keys is logged; the new key is used all the same. It returns
// when ctx is done.
func (t *TicketKeys) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Hour
	}
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if rotated, err := t.rotate(); err != nil {
			t.logger.Error("tls: saving the session ticket keys failed; the new key is used in memory", "rotated", rotated, "err", err)
		} else if rotated {
			t.logger.Info("tls: session ticket key rotated", "file", t.path)
		}
	}
}
