package quarantine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/fsutil"
)

// Digest puts in each user's mailbox, once a day, a message listing what
// was held for them since the last digest. Releasing stays with the
// administrator (`postino quarantine release ID`): a digest that could
// release by reply would let whoever forges the user's address release
// mail, so it names the IDs and tells the user to ask.
type Digest struct {
	// Store is the quarantine.
	Store *Store
	// From is the digest's sender (postmaster@...).
	From string
	// Hostname names the server in the text.
	Hostname string
	// At is the time of day, "HH:MM" local time.
	At string
	// Deliver stores a digest in a user's mailbox, durably.
	Deliver func(ctx context.Context, user string, msg io.Reader) error
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// stateFile records the time of the last digest, so that a restart
// neither repeats nor skips one.
const stateFile = ".digest-last"

func (d *Digest) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// Next returns the first digest time after t.
func (d *Digest) Next(t time.Time) time.Time {
	hm, err := time.Parse("15:04", d.At)
	if err != nil {
		hm = time.Date(0, 1, 1, 8, 0, 0, 0, time.UTC)
	}
	n := time.Date(t.Year(), t.Month(), t.Day(), hm.Hour(), hm.Minute(), 0, 0, t.Location())
	if !n.After(t) {
		n = time.Date(t.Year(), t.Month(), t.Day()+1, hm.Hour(), hm.Minute(), 0, 0, t.Location())
	}
	return n
}

// last returns the time of the last digest (zero when none).
func (d *Digest) last() time.Time {
	b, err := os.ReadFile(filepath.Join(d.Store.Dir, stateFile))
	if err != nil {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
	return t
}

// Run sends the digests due now: for each user, the messages held after
// the last digest and up to now. It returns the number of digests
// delivered. A user whose digest cannot be delivered gets it with the
// next run.
func (d *Digest) Run(ctx context.Context) (int, error) {
	now := d.now()
	since := d.last()
	entries, err := d.Store.List("")
	if err != nil {
		return 0, err
	}
	byUser := map[string][]Entry{}
	var users []string
	for _, e := range entries {
		if !e.Date.After(since) || e.Date.After(now) {
			continue
		}
		if byUser[e.User] == nil {
			users = append(users, e.User)
		}
		byUser[e.User] = append(byUser[e.User], e)
	}
	n := 0
	var errs []error
	for _, u := range users {
		msg := d.Message(u, byUser[u], now)
		if err := d.Deliver(ctx, u, strings.NewReader(msg)); err != nil {
			errs = append(errs, fmt.Errorf("quarantine: digest for %s: %w", u, err))
			continue
		}
		n++
	}
	if len(errs) > 0 {
		// The state stays: the failed users' digests come again (the
		// others' too: a repeat rather than a loss).
		return n, errors.Join(errs...)
	}
	if err := os.MkdirAll(d.Store.Dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return n, err
	}
	return n, fsutil.WriteFile(filepath.Join(d.Store.Dir, stateFile), []byte(now.UTC().Format(time.RFC3339Nano)+"\n"), 0o600)
}

// Message returns the digest for user listing entries.
func (d *Digest) Message(user string, entries []Entry, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %d message(s) held as spam\r\nDate: %s\r\nMessage-ID: <digest.%d.%s@%s>\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
		d.From, user, len(entries), now.Format(time.RFC1123Z), now.Unix(), strings.ReplaceAll(user, "@", "."), d.Hostname)
	fmt.Fprintf(&b, "These messages for %s were held on %s as likely spam\r\nand were not delivered to your mailbox:\r\n\r\n", user, d.Hostname)
	dec := new(mime.WordDecoder)
	text := func(s string) string {
		if t, err := dec.DecodeHeader(s); err == nil {
			s = t
		}
		s = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, s)
		if len(s) > 200 {
			s = strings.ToValidUTF8(s[:200], "") + "..."
		}
		return s
	}
	for _, e := range entries {
		fmt.Fprintf(&b, "  ID:      %s\r\n  Date:    %s\r\n  From:    %s\r\n  Subject: %s\r\n\r\n", e.ID, e.Date.Local().Format("2006-01-02 15:04"), text(e.From), text(e.Subject))
	}
	fmt.Fprintf(&b, "If one of them is mail you want, ask your administrator to release it,\r\ngiving its ID: they will run \"postino quarantine release ID\" and it will\r\narrive in your mailbox. Held messages are deleted after a while.\r\n")
	return b.String()
}
