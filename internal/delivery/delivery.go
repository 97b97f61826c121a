// Package delivery is postino's local delivery: it resolves recipients to
// mailboxes, adds the trace headers of final delivery (Return-Path,
// Delivered-To) and stores one copy of a message for each recipient, each
// durable before Deliver returns. SMTP, LMTP, `postino deliver` and
// `postino fetch` all deliver through it.
//
// The message is first spooled to a temporary file (streamed, never held in
// memory), so that any number of recipients can be served from one copy
// and the size limit is enforced before anything is stored.
package delivery

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/postino-mail/postino/internal/fsutil"
	"github.com/postino-mail/postino/internal/metrics"
	"github.com/postino-mail/postino/internal/store"
)

// Users resolves an address to the canonical name of an existing local
// user (its mailbox), or reports that there is none.
type Users interface {
	LookupAddress(address string) (canonical string, ok bool)
}

// Errors returned by Deliver, to be mapped onto protocol replies and exit
// codes.
var (
	// ErrUnknownUser: a recipient is not a local user (permanent).
	ErrUnknownUser = errors.New("unknown user")
	// ErrTooBig: the message exceeds MaxSize (permanent).
	ErrTooBig = errors.New("message too big")
	// ErrMalformed: the message cannot be stored (permanent).
	ErrMalformed = errors.New("malformed message")
	// ErrOverQuota: the mailbox is full, or the message would not fit
	// in its quota (permanent for this message: RFC 3463 X.2.2).
	ErrOverQuota = errors.New("mailbox full")
	// ErrStore: the message was received but the mail store failed
	// (DeliverStream; temporary as far as the sender can tell).
	ErrStore = errors.New("mail store failure")
)

// Deliverer delivers messages into local mailboxes.
type Deliverer struct {
	// Store holds the mailboxes.
	Store store.Store
	// Users resolves recipient addresses.
	Users Users
	// SpoolDir holds temporary copies of messages being delivered; "" is
	// the system temporary directory.
	SpoolDir string
	// MaxSize is the largest message accepted, in octets; 0 is no limit.
	MaxSize int64
	// Resolver resolves recipients; nil means only the exact addresses
	// of Users. Deliver and Resolve use its users and plus-addressing;
	// callers that also take aliases, catch-alls, postmaster and SRS
	// (SMTP, `postino deliver`) call Resolver.Resolve.
	Resolver *Resolver
	// Quotas gives each mailbox's limits; nil means no quotas. They are
	// enforced when Store implements store.UsageReporter.
	Quotas Quotas
	// Logger receives one line per stored copy.
	Logger *slog.Logger
	// Metrics counts stored copies and store failures; nil: none.
	Metrics *metrics.Metrics
}

// Quotas gives the quota of each mailbox (auth.Quotas implements it).
type Quotas interface {
	// MailboxQuota returns the largest total size in octets and the
	// largest number of messages of mailbox; 0 means no limit.
	MailboxQuota(mailbox string) (bytes, messages int64)
}

// quota returns the limits of mailbox and the store's usage reporter, or
// ok false when no quota applies.
func (d *Deliverer) quota(mailbox string) (bytes, messages int64, u store.UsageReporter, ok bool) {
	if d.Quotas == nil {
		return 0, 0, nil, false
	}
	u, ok = d.Store.(store.UsageReporter)
	if !ok {
		return 0, 0, nil, false
	}
	bytes, messages = d.Quotas.MailboxQuota(mailbox)
	return bytes, messages, u, bytes > 0 || messages > 0
}

// CheckQuota returns an error wrapping ErrOverQuota when a message of size
// octets would not fit in the quota of mailbox. With size 0 (not known
// yet) only a mailbox already at or over its limits is refused. The check
// reads the store's cached usage; deliveries racing each other may each
// find room, so a mailbox can exceed its quota by about one message per
// concurrent delivery (as with Dovecot's quota plugin). Another error means
// the usage could not be found (temporary).
func (d *Deliverer) CheckQuota(ctx context.Context, mailbox string, size int64) error {
	limBytes, limMsgs, u, ok := d.quota(mailbox)
	if !ok {
		return nil
	}
	count, used, err := u.Usage(ctx, mailbox)
	if err != nil {
		return fmt.Errorf("%w: quota of %s: %w", ErrStore, mailbox, err)
	}
	return overQuota(mailbox, count, used, size, limBytes, limMsgs)
}

// overQuota applies the limits to a mailbox holding count messages of used
// octets that is to receive one of size octets (0: unknown).
func overQuota(mailbox string, count int, used, size, limBytes, limMsgs int64) error {
	if limMsgs > 0 && int64(count)+1 > limMsgs {
		return fmt.Errorf("%w: %s holds %d of its %d messages", ErrOverQuota, mailbox, count, limMsgs)
	}
	if limBytes > 0 && (used+size > limBytes || size == 0 && used >= limBytes) {
		return fmt.Errorf("%w: %s uses %d of its %d octets, the message has %d", ErrOverQuota, mailbox, used, limBytes, size)
	}
	return nil
}

// resolver returns d.Resolver or, when nil, one over d.Users alone.
func (d *Deliverer) resolver() *Resolver {
	if d.Resolver != nil {
		return d.Resolver
	}
	return &Resolver{Users: d.Users}
}

// Resolve returns the mailbox for a recipient address: the user itself,
// or with plus-addressing the user without the tag.
func (d *Deliverer) Resolve(addr string) (string, error) {
	if mb, ok := d.resolver().Mailbox(addr); ok {
		return mb, nil
	}
	return "", fmt.Errorf("%w: %s", ErrUnknownUser, addr)
}

// Result is the outcome of delivery to one recipient.
type Result struct {
	Recipient string
	Mailbox   string
	UID       string
	Err       error
}

// Spool copies a message into a temporary file, enforcing MaxSize and
// dropping an mbox "From " envelope line at its start. The caller must
// Close the spool.
func (d *Deliverer) Spool(ctx context.Context, msg io.Reader) (*Spool, error) {
	f, err := openSpoolFile(d.SpoolDir)
	if err != nil {
		return nil, fmt.Errorf("creating spool file: %w", err)
	}
	sp := &Spool{f: f}
	br := bufio.NewReaderSize(msg, 32*1024)
	if peek, _ := br.Peek(5); string(peek) == "From " {
		// An mbox envelope line, as some MTAs pass to their delivery
		// agent: not part of the message.
		if _, err := br.ReadSlice('\n'); err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			if err != io.EOF {
				f.Close()
				return nil, err
			}
		}
	}
	var src io.Reader = br
	if d.MaxSize > 0 {
		src = io.LimitReader(br, d.MaxSize+1)
	}
	n, err := io.Copy(f, fsutil.ContextReader(ctx, src))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("spooling message: %w", err)
	}
	if d.MaxSize > 0 && n > d.MaxSize {
		f.Close()
		return nil, fmt.Errorf("%w: over %d octets", ErrTooBig, d.MaxSize)
	}
	if n == 0 {
		f.Close()
		return nil, fmt.Errorf("%w: empty message", ErrMalformed)
	}
	sp.size = n
	return sp, nil
}

// Spool is a message held in a temporary file.
type Spool struct {
	f    *os.File
	size int64
}

// Size returns the spooled message's size in octets.
func (s *Spool) Size() int64 { return s.size }

// Reader returns a new reader over the whole spooled message.
func (s *Spool) Reader() io.Reader { return io.NewSectionReader(s.f, 0, s.size) }

// Close removes the spool.
func (s *Spool) Close() error { return s.f.Close() }

// Deliver spools msg and stores a copy for each recipient, with
// Return-Path and Delivered-To added. Every recipient is resolved before
// anything is stored, so an unknown recipient delivers nothing. The
// returned error is the first failure; results say what happened to each
// recipient.
func (d *Deliverer) Deliver(ctx context.Context, from string, rcpts []string, msg io.Reader) ([]Result, error) {
	results := make([]Result, len(rcpts))
	for i, r := range rcpts {
		results[i].Recipient = r
		mb, err := d.Resolve(r)
		if err != nil {
			return nil, err
		}
		results[i].Mailbox = mb
	}
	sp, err := d.Spool(ctx, msg)
	if err != nil {
		return nil, err
	}
	defer sp.Close()
	var first error
	for i := range results {
		results[i].UID, results[i].Err = d.DeliverSpooled(ctx, from, results[i].Recipient, results[i].Mailbox, sp, "")
		if results[i].Err != nil && first == nil {
			first = results[i].Err
		}
	}
	return results, first
}

// DeliverSpooled stores one copy of a spooled message in mailbox, with
// Return-Path and Delivered-To (and any extra header lines, CRLF-ended)
// prepended. It returns once the copy is durable.
func (d *Deliverer) DeliverSpooled(ctx context.Context, from, rcpt, mailbox string, sp *Spool, extra string) (string, error) {
	hdr := finalHeader(from, rcpt, extra)
	if err := d.CheckQuota(ctx, mailbox, sp.size+hdr.Size()); err != nil {
		return "", err
	}
	uid, err := deliverCopy(ctx, d.Store, mailbox, hdr, sp)
	if err != nil {
		if errors.Is(err, store.ErrMalformed) {
			return "", fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		d.Metrics.StorageError("deliver")
		return "", fmt.Errorf("storing message for %s: %w", rcpt, err)
	}
	d.Metrics.Delivered("local")
	if d.Logger != nil {
		d.Logger.Info("delivered", "id", MessageID(ctx), "from", from, "rcpt", rcpt, "mailbox", mailbox, "uid", uid, "size", sp.size)
	}
	return uid, nil
}

// finalHeader returns the header lines of final delivery: Return-Path
// (RFC 5321 §4.4), Delivered-To, and extra (CRLF-ended lines).
func finalHeader(from, rcpt, extra string) *strings.Reader {
	return strings.NewReader("Return-Path: <" + headerSafe(from) + ">\r\nDelivered-To: " + headerSafe(rcpt) + "\r\n" + extra)
}

// headerSafe removes what could break a header line out of an address.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return -1
		}
		return r
	}, s)
}

// openSpoolFile opens an anonymous file in dir: on Linux with O_TMPFILE,
// so it never has a name a crash could leave behind; elsewhere it is
// unlinked at once (CleanSpool removes what a crash in between leaves).
func openSpoolFile(dir string) (*os.File, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	if f, err := os.OpenFile(dir, os.O_RDWR|oTmpfile, 0o600); err == nil && oTmpfile != 0 {
		return f, nil
	}
	f, err := os.CreateTemp(dir, "spool-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

// CleanSpool removes spool files left in dir by a crash between creating
// and unlinking them (systems without O_TMPFILE).
func CleanSpool(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "spool-") {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// DeliverStream stores msg for one recipient without spooling it first:
// the message goes straight into the store, which makes it visible only
// once it is complete and durable. A read error (the client went away, the
// message is over MaxSize or malformed) is returned as it is, and the
// store then keeps nothing. Use it when there is exactly one copy to make.
func (d *Deliverer) DeliverStream(ctx context.Context, from, rcpt, mailbox string, msg io.Reader, extra string) (string, error) {
	hdr := finalHeader(from, rcpt, extra)
	src := &guardedReader{limit: d.MaxSize, room: -1}
	if limBytes, limMsgs, u, ok := d.quota(mailbox); ok {
		// The size is known only at the end: refuse a full mailbox now,
		// and stop reading once the message outgrows the room left.
		count, used, err := u.Usage(ctx, mailbox)
		if err != nil {
			return "", fmt.Errorf("%w: quota of %s: %w", ErrStore, mailbox, err)
		}
		if err := overQuota(mailbox, count, used, 0, limBytes, limMsgs); err != nil {
			return "", err
		}
		if limBytes > 0 {
			src.room = max(limBytes-used-hdr.Size(), 0)
			src.mailbox = mailbox
		}
	}
	br := bufio.NewReaderSize(msg, 4096)
	if peek, _ := br.Peek(5); string(peek) == "From " {
		// An mbox envelope line, as in Spool.
		if _, err := br.ReadSlice('\n'); err != nil && !errors.Is(err, bufio.ErrBufferFull) && err != io.EOF {
			return "", err
		}
	}
	if _, err := br.Peek(1); err == io.EOF {
		return "", fmt.Errorf("%w: empty message", ErrMalformed)
	} else if err != nil {
		return "", err
	}
	src.r = br
	uid, err := d.Store.Deliver(ctx, mailbox, io.MultiReader(hdr, fsutil.ContextReader(ctx, src)))
	if src.err != nil {
		return "", src.err
	}
	if err != nil {
		d.Metrics.StorageError("deliver")
		return "", fmt.Errorf("%w: storing message for %s: %w", ErrStore, rcpt, err)
	}
	d.Metrics.Delivered("local")
	if d.Logger != nil {
		d.Logger.Info("delivered", "id", MessageID(ctx), "from", from, "rcpt", rcpt, "mailbox", mailbox, "uid", uid, "size", src.n)
	}
	return uid, nil
}

// guardedReader passes a message on, enforcing a size limit and
// remembering the first read error so that a caller can tell a failed
// read from a failed store.
type guardedReader struct {
	r       io.Reader
	limit   int64
	room    int64  // octets left in the mailbox's quota; -1: no quota
	mailbox string // for the quota error
	n       int64
	err     error
}

func (g *guardedReader) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	n, err := g.r.Read(p)
	g.n += int64(n)
	if g.limit > 0 && g.n > g.limit {
		g.err = fmt.Errorf("%w: over %d octets", ErrTooBig, g.limit)
		return 0, g.err
	}
	if g.room >= 0 && g.n > g.room {
		g.err = fmt.Errorf("%w: the message does not fit in the quota of %s", ErrOverQuota, g.mailbox)
		return 0, g.err
	}
	if err != nil && err != io.EOF {
		g.err = err
	}
	return n, err
}

// messageIDKey is the context key of WithMessageID.
type messageIDKey struct{}

// WithMessageID returns ctx carrying the id of the message being
// delivered (the intake's transaction id or the queue's message id), which
// the Deliverer's log lines show under the key "id".
func WithMessageID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, messageIDKey{}, id)
}

// MessageID returns the id WithMessageID put in ctx, or "".
func MessageID(ctx context.Context) string {
	id, _ := ctx.Value(messageIDKey{}).(string)
	return id
}
