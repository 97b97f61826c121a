package queue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postino-mail/postino/internal/crlf"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/fsutil"
)

// Queue is the outbound mail queue. It is safe for concurrent use, and
// several Queues (processes) may work one folder: claims keep them from
// delivering an entry twice.
type Queue struct {
	// opts holds the options in force; SetOptions swaps them whole.
	opts     atomic.Pointer[Options]
	store    Store
	closer   io.Closer
	spoolDir string
	kick     chan struct{}

	mu       sync.Mutex
	active   map[string]bool   // entry ids dispatched in this process
	routes   map[string]*route // destinations with work
	workers  int
	wg       sync.WaitGroup
	lastSize int
}

// route is a destination (a domain, the smarthost, or local delivery)
// with its entries waiting and its workers.
type route struct {
	key     string
	pending []string
	workers int
}

var _ envelope.Relay = (*Queue)(nil)

// Open opens the queue kept in the folder dir (DATA/queue), creating it if
// needed. The `postino queue` commands open the same folder as the running
// server: List, Show, Retry and Delete work on the files directly and the
// server's Run notices their changes.
func Open(dir string, opts Options) (*Queue, error) {
	fs, err := OpenFileStore(dir)
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	q, err := New(fs, filepath.Join(dir, "tmp"), opts)
	if err != nil {
		fs.Close()
		return nil, err
	}
	q.closer = fs
	return q, nil
}

// New returns a Queue over any Store; spoolDir holds the temporary copies
// of messages being queued ("" is the system temporary folder).
func New(store Store, spoolDir string, opts Options) (*Queue, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	q := &Queue{
		store:    store,
		spoolDir: spoolDir,
		kick:     make(chan struct{}, 1),
		active:   make(map[string]bool),
		routes:   make(map[string]*route),
		lastSize: -1,
	}
	q.opts.Store(&opts)
	return q, nil
}

// options returns the options in force.
func (q *Queue) options() *Options { return q.opts.Load() }

// SetOptions replaces the queue's options (a configuration reload): the
// deliveries and enqueues that begin afterwards use them (routes, smarthost,
// timeouts, limits, DKIM signer...); those under way finish with the old
// ones. Its Clock should stay the same. On an invalid set the old one stays
// and the error says which option is wrong.
func (q *Queue) SetOptions(opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	q.opts.Store(&opts)
	q.Kick() // a new route may apply to mail waiting for its retry
	return nil
}

// Close releases the queue folder. Call it after Run has returned.
func (q *Queue) Close() error {
	if q.closer != nil {
		return q.closer.Close()
	}
	return nil
}

// Store returns the queue's store.
func (q *Queue) Store() Store { return q.store }

// domainOf returns the lower-cased domain of an address ("" if none).
func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(addr[i+1:])
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Enqueue implements envelope.Relay: it stores the message durably, one
// entry per destination domain, and returns the message id. The message
// is signed (Options.Signer) only when postino originates it: when a user
// of a local domain submitted it (params.AuthUser), and then as the
// domain of its From address when the user owns that address, else as
// the user's domain. Relayed and forwarded mail is never signed, whatever its
// envelope sender or From field claim. Recipients in local domains are
// delivered locally by the worker, without leaving the machine.
func (q *Queue) Enqueue(ctx context.Context, from string, rcpts []string, params envelope.DSNParams, msg io.Reader) (string, error) {
	if len(rcpts) == 0 {
		return "", errors.New("queue: no recipients")
	}
	if len(params.Recipients) != 0 && len(params.Recipients) != len(rcpts) {
		return "", errors.New("queue: DSN parameters do not match the recipients")
	}
	// RFC 5321 §2.3.8: a bare CR or LF must not be sent in SMTP data;
	// every message queued (SMTP intake, deliver, forwarding, DSNs) has
	// them rewritten as CRLF before it is signed and stored, as the
	// intake does, so no next hop reads a line end we did not.
	msg = crlf.NewNormalizer(msg, false)
	if anyRemote(rcpts, q.options().IsLocalDomain) {
		// Lines over 998 octets are folded (see folder) before the
		// message is signed, so the DKIM signature covers what is sent.
		msg = newFolder(msg)
	}
	sp, err := q.spool(ctx, msg)
	if err != nil {
		return "", err
	}
	defer sp.f.Close()
	// RFC 6376 §1.1: the signer takes responsibility for the message, so
	// only the submitter's authenticated identity names the domain: the
	// user's, or the author's when the user may send as the author
	// (signingDomain).
	var sig string
	if params.AuthUser != "" {
		sig = q.sign(ctx, q.signingDomain(params.AuthUser, io.NewSectionReader(sp.f, 0, sp.size)), io.NewSectionReader(sp.f, 0, sp.size))
	}
	now := q.options().Clock.Now()
	// One id for the message everywhere: the intake's, which its reply
	// and log lines already show, when it is one of ours.
	id := params.ID
	if !envelope.ValidMessageID(id) {
		id = newMessageID(now)
	}
	utf8 := sp.headerUTF8 || !isASCII(from)
	for _, r := range rcpts {
		utf8 = utf8 || !isASCII(r)
	}
	var entries []*Entry
	byDomain := make(map[string]*Entry)
	for i, addr := range rcpts {
		d := domainOf(addr)
		e := byDomain[d]
		if e == nil {
			e = &Entry{
				Version:      entryVersion,
				ID:           entryID(id, len(entries)+1),
				MessageID:    id,
				Domain:       d,
				Local:        d != "" && q.options().IsLocalDomain(d),
				From:         from,
				AuthUser:     params.AuthUser,
				Size:         sp.size + int64(len(sig)),
				Need8BitMIME: sp.eightBit || !isASCII(sig),
				NeedSMTPUTF8: utf8,
				Return:       strings.ToUpper(params.Return),
				EnvelopeID:   params.EnvelopeID,
				Arrival:      now,
				Expires:      now.Add(q.options().MaxLifetime),
				NextAttempt:  now,
			}
			byDomain[d] = e
			entries = append(entries, e)
		}
		rc := Recipient{Addr: addr, Status: StatusPending}
		if i < len(params.Recipients) {
			p := params.Recipients[i]
			rc.Notify = upperAll(p.Notify)
			rc.ORcptType, rc.ORcpt = p.OriginalRecipientType, p.OriginalRecipient
		}
		e.Recipients = append(e.Recipients, rc)
	}
	body := io.MultiReader(strings.NewReader(sig), io.NewSectionReader(sp.f, 0, sp.size))
	if err := q.store.AddMessage(ctx, id, body, entries); err != nil {
		return "", err
	}
	for _, e := range entries {
		q.options().Logger.Info("queue: queued", "id", e.MessageID, "entry", e.ID, "from", from, "domain", e.Domain, "rcpts", len(e.Recipients), "size", e.Size, "local", e.Local, "signed", sig != "")
	}
	q.Kick()
	return id, nil
}

// sign returns the DKIM-Signature fields for a message signed as domain,
// or "" when domain is empty, not local, or has no keys. A message is
// signed once, when it is queued; it is never signed again on its way.
func (q *Queue) sign(ctx context.Context, domain string, msg io.Reader) string {
	if q.options().Signer == nil || domain == "" || !q.options().IsLocalDomain(domain) {
		return ""
	}
	sig, err := q.options().Signer.Sign(ctx, domain, msg)
	if err != nil {
		// Sent unsigned rather than not at all; the log says why.
		q.options().Logger.Error("queue: DKIM signing failed; sending unsigned", "domain", domain, "err", err)
		return ""
	}
	return sig
}

func upperAll(list []string) []string {
	if list == nil {
		return nil
	}
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strings.ToUpper(s)
	}
	return out
}

// spooled is a message copied to an unlinked temporary file, with what
// was learnt on the way.
type spooled struct {
	f          *os.File
	size       int64
	eightBit   bool // any octet over 127 (needs 8BITMIME, RFC 6152)
	headerUTF8 bool // such octets in the header (needs SMTPUTF8, RFC 6532)
}

func (q *Queue) spool(ctx context.Context, msg io.Reader) (*spooled, error) {
	f, err := os.CreateTemp(q.spoolDir, "spool-*")
	if err != nil {
		return nil, fmt.Errorf("queue: spool file: %w", err)
	}
	os.Remove(f.Name())
	sp := &spooled{f: f}
	br := bufio.NewReaderSize(fsutil.ContextReader(ctx, msg), 32*1024)
	bw := bufio.NewWriterSize(f, 32*1024)
	inHeader, lineStart := true, true
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			for _, c := range line {
				if c >= 0x80 {
					sp.eightBit = true
					if inHeader {
						sp.headerUTF8 = true
					}
					break
				}
			}
			if inHeader && lineStart {
				empty := strings.TrimRight(string(line), "\r\n") == "" && line[len(line)-1] == '\n'
				if empty {
					inHeader = false
				}
			}
			lineStart = line[len(line)-1] == '\n'
			if _, werr := bw.Write(line); werr != nil {
				f.Close()
				return nil, fmt.Errorf("queue: spooling: %w", werr)
			}
			sp.size += int64(len(line))
			if q.options().MaxMessageSize > 0 && sp.size > q.options().MaxMessageSize {
				f.Close()
				return nil, fmt.Errorf("queue: message over %d octets", q.options().MaxMessageSize)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("queue: reading message: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return nil, err
	}
	if sp.size == 0 {
		f.Close()
		return nil, errors.New("queue: empty message")
	}
	return sp, nil
}

// Kick wakes the worker now, in this process and, through the store, in
// a server running on the same queue.
func (q *Queue) Kick() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
	if err := q.store.Kick(); err != nil {
		q.options().Logger.Warn("queue: kick", "err", err)
	}
}

// List returns every entry, oldest first.
func (q *Queue) List(ctx context.Context) ([]*Entry, error) {
	list, err := q.store.List(ctx, func(id string, err error) {
		q.options().Logger.Error("queue: unreadable entry", "id", messageOf(id), "entry", id, "err", err)
	})
	if err != nil {
		return nil, err
	}
	sort.SliceStable(list, func(i, j int) bool {
		if !list[i].Arrival.Equal(list[j].Arrival) {
			return list[i].Arrival.Before(list[j].Arrival)
		}
		return list[i].ID < list[j].ID
	})
	return list, nil
}

// Show returns the entry with that id, or all entries of the message
// with that id, or ErrNotFound.
func (q *Queue) Show(ctx context.Context, id string) ([]*Entry, error) {
	if e, err := q.store.Get(ctx, id); err == nil {
		return []*Entry{e}, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return q.matching(ctx, id)
}

// Message streams the stored message of an entry or message id (for
// `postino queue show` to print headers).
func (q *Queue) Message(ctx context.Context, id string) (io.ReadCloser, error) {
	return q.store.OpenMessage(ctx, messageOf(id))
}

func (q *Queue) matching(ctx context.Context, id string) ([]*Entry, error) {
	list, err := q.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []*Entry
	for _, e := range list {
		if e.ID == id || e.MessageID == id {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return out, nil
}

// Retry makes entries due now: the one with that entry or message id, or
// all when id is "". Entries being delivered right now are skipped (they
// are being tried already). It returns how many were rescheduled, and
// wakes the worker.
func (q *Queue) Retry(ctx context.Context, id string) (int, error) {
	var list []*Entry
	var err error
	if id == "" {
		list, err = q.List(ctx)
	} else {
		list, err = q.Show(ctx, id)
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range list {
		release, err := q.store.Claim(ctx, e.ID)
		if errors.Is(err, ErrBusy) {
			continue
		}
		if err != nil {
			return n, err
		}
		cur, err := q.store.Get(ctx, e.ID)
		if err == nil {
			cur.NextAttempt = q.options().Clock.Now()
			err = q.store.Update(ctx, cur)
			if err == nil {
				n++
			}
		}
		release()
		if err != nil && !errors.Is(err, ErrNotFound) {
			return n, err
		}
	}
	q.Kick()
	return n, nil
}

// Delete removes the entry with that entry or message id (all the
// message's entries) without a bounce, like Postfix's `postsuper -d`: the
// administrator who deletes mail decides that nobody is told. An entry
// being delivered at this moment gives ErrBusy (try again). It returns the
// number of entries removed.
func (q *Queue) Delete(ctx context.Context, id string) (int, error) {
	list, err := q.Show(ctx, id)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range list {
		release, err := q.store.Claim(ctx, e.ID)
		if err != nil {
			return n, fmt.Errorf("%s: %w", e.ID, err)
		}
		cur, err := q.store.Get(ctx, e.ID)
		if err == nil {
			err = q.store.Remove(ctx, cur)
		}
		release()
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return n, err
		}
		n++
		q.options().Logger.Info("queue: deleted by administrator", "id", e.MessageID, "entry", e.ID, "from", e.From, "pending", e.Pending())
	}
	q.Kick()
	return n, nil
}

// backoff returns the delay after the n-th failed attempt (n ≥ 1):
// MinBackoff doubled each time, at most MaxBackoff.
func (q *Queue) backoff(n int) time.Duration {
	d := q.options().MinBackoff
	for i := 1; i < n && d < q.options().MaxBackoff; i++ {
		d *= 2
	}
	return min(d, q.options().MaxBackoff)
}
