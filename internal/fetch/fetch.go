package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/postino-mail/postino/pop3"
)

// Exit codes of `postino fetch`, for cron jobs and scripts. With several
// accounts the most serious outcome wins (the highest code among 2–7);
// without any error the result is 0 if any account had new mail and 1
// otherwise.
const (
	// ExitNewMail: at least one new message was delivered.
	ExitNewMail = 0
	// ExitNoMail: no error, and no new message.
	ExitNoMail = 1
	// ExitNetwork: the server could not be reached or the connection
	// failed (after retries), or a temporary server error.
	ExitNetwork = 2
	// ExitAuth: the server refused the credentials, or no password.
	ExitAuth = 3
	// ExitProtocol: the server answered something unexpected.
	ExitProtocol = 4
	// ExitTLS: TLS could not be established or the certificate was not
	// trusted.
	ExitTLS = 5
	// ExitDelivery: a message could not be stored at the destination (it
	// stays on the server).
	ExitDelivery = 6
	// ExitLocked: another fetch of the account is running, or the server
	// reported the mailbox in use ([IN-USE], [LOGIN-DELAY]).
	ExitLocked = 7
	// ExitUsage: bad command line (sysexits EX_USAGE).
	ExitUsage = 64
	// ExitConfig: bad configuration (sysexits EX_CONFIG).
	ExitConfig = 78
)

// ExitCode maps the error of Fetcher.Run onto an exit code; newMail is the
// number of messages delivered.
func ExitCode(newMail int, err error) int {
	if err == nil {
		if newMail > 0 {
			return ExitNewMail
		}
		return ExitNoMail
	}
	var te *tlsError
	var ae *authError
	var pe *pop3.Error
	var le *pop3.LimitError
	switch {
	case errors.As(err, &le):
		// The server broke a limit (a line, a listing, a message larger
		// than it announced): retrying would fetch the same.
		return ExitProtocol
	case errors.Is(err, ErrStateLocked), errors.Is(err, ErrLeaseLost):
		return ExitLocked
	case errors.As(err, &te) || isTLSFailure(err):
		return ExitTLS
	case errors.As(err, &ae) || errors.Is(err, errNoPassword):
		return ExitAuth
	case errors.Is(err, ErrDestination):
		return ExitDelivery
	case errors.As(err, &pe) && (pe.Code == pop3.CodeInUse || pe.Code == pop3.CodeLoginDelay):
		return ExitLocked
	case errors.As(err, &pe) && pe.Code == pop3.CodeSysTemp:
		return ExitNetwork
	case errors.As(err, &pe):
		return ExitProtocol
	case isNetworkError(err):
		return ExitNetwork
	}
	return ExitProtocol
}

// Worst combines two exit codes of different accounts.
func Worst(a, b int) int {
	switch {
	case a > ExitNoMail || b > ExitNoMail:
		return max(a, b)
	case a == ExitNewMail || b == ExitNewMail:
		return ExitNewMail
	}
	return ExitNoMail
}

var errNoPassword = errors.New("no password")

// isNetworkError reports errors worth a retry on a new connection.
func isNetworkError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	var le *pop3.LimitError
	if errors.As(err, &le) {
		return false
	}
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.Is(err, net.ErrClosed) || isDropped(err)
}

func isDropped(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e.Error() == "pop3: connection closed inside a multi-line response" {
			return true
		}
	}
	return false
}

// Fetcher downloads accounts.
type Fetcher struct {
	// StateDir holds the state files, and the spool of downloads.
	StateDir string
	// States, when set, keeps the accounts' state there instead of in
	// StateDir's files (PGStates: shared by the nodes of a cluster).
	States StateOpener
	// Logger receives warnings and, at Info, one line per run and
	// message; nil discards.
	Logger *slog.Logger
	// Progress, if set, is told about the transfer (a terminal progress
	// bar).
	Progress Progress
	// Retries is how many times a run reconnects after a network error or
	// an [IN-USE] answer (each time resuming where it stopped); RetryDelay is the wait
	// before the first retry, doubled each time (0: 2s).
	Retries    int
	RetryDelay time.Duration
}

// Result is the outcome of one account's run.
type Result struct {
	Account string
	// Listed is the number of messages on the server; New the number
	// delivered in this run and Bytes their size; Duplicates those
	// recognised as already delivered (by content, after an interruption
	// or a UIDL change); Deleted those deleted; Skipped those left on
	// the server because of MaxSize or MaxMessages.
	Listed, New, Duplicates, Deleted, Skipped int
	Bytes                                     int64
}

func (f *Fetcher) log() *slog.Logger {
	if f.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return f.Logger
}

// run is the state of one account's run.
type run struct {
	f   *Fetcher
	a   *Account
	st  *StateFile
	sp  *spooler
	res *Result
	log *slog.Logger
	now time.Time
}

// Run fetches one account: it recovers an interrupted previous run, then
// connects, downloads what the policy asks for, delivers each message
// exactly once and deletes what the policy says. See the package
// documentation for the protocol.
func (f *Fetcher) Run(ctx context.Context, a *Account) (Result, error) {
	res := Result{Account: a.Name}
	if err := a.Check(); err != nil {
		return res, err
	}
	var st *StateFile
	var err error
	if f.States != nil {
		st, err = f.States.OpenState(ctx, a.Name)
	} else {
		st, err = OpenState(f.StateDir, a.Name)
	}
	if err != nil {
		return res, err
	}
	defer st.Close()
	if lost := st.Lost(); lost != nil {
		// A lease that may pass to another node ends the run: nothing is
		// delivered that its intent, now fenced, could not cover.
		var cancel context.CancelCauseFunc
		ctx, cancel = context.WithCancelCause(ctx)
		defer cancel(nil)
		go func() {
			select {
			case <-lost:
				cancel(ErrLeaseLost)
			case <-ctx.Done():
			}
		}()
	}
	st.State.Server = a.User + "@" + a.Addr()
	r := &run{f: f, a: a, st: st, res: &res, log: f.log().With("account", a.Name), now: time.Now().UTC()}
	if err := r.recover(ctx); err != nil {
		return res, err
	}
	sp, err := newSpooler(f.StateDir)
	if err != nil {
		return res, err
	}
	defer sp.close()
	r.sp = sp

	password := ""
	if a.Password != nil {
		if password, err = a.Password(); err != nil {
			return res, &authError{fmt.Errorf("%w: %v", errNoPassword, err)}
		}
	}
	delay := f.RetryDelay
	if delay <= 0 {
		delay = 2 * time.Second
	}
	for attempt := 0; ; attempt++ {
		err = r.session(ctx, password)
		// A network error, or [IN-USE] (the server may still be ending a
		// session of ours that was cut), is worth another connection.
		retry := isNetworkError(err) || errors.Is(err, pop3.ErrInUse)
		if err == nil || !retry || attempt >= f.Retries || ctx.Err() != nil {
			break
		}
		r.log.Warn("connection failed, retrying", "err", err, "in", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		delay *= 2
	}
	if serr := st.Save(); serr != nil && err == nil {
		err = serr
	}
	return res, err
}

// recover settles the intents of an interrupted run: each message
// recorded as about to be delivered is looked for at the destination.
func (r *run) recover(ctx context.Context) error {
	var keys []string
	for k, rec := range r.st.State.Messages {
		if rec.Pending {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		rec := r.st.State.Messages[k]
		id := ID{Account: r.a.Name, Key: k, SHA256: rec.SHA256}
		found, where, err := r.a.Dest.Find(ctx, Want{ID: id, BodySHA256: rec.BodySHA256, BodySize: rec.BodySize})
		if err != nil {
			return fmt.Errorf("checking %s for an interrupted delivery: %w", r.a.Dest, err)
		}
		switch found {
		case Found:
			r.log.Info("interrupted delivery found at the destination", "uidl", k, "dest", where)
			if err := r.st.Done(k, where, rec.SHA256, rec.Size); err != nil {
				return err
			}
		case NotFound:
			if where != "" {
				r.log.Warn("an interrupted delivery left a partial copy at the destination that could not be removed; the message is delivered again", "uidl", k, "dest", r.a.Dest.String(), "partial", where)
			}
			r.log.Info("interrupted delivery not at the destination; it will be downloaded again", "uidl", k)
			if err := r.st.Abandon(k); err != nil {
				return err
			}
		case Unknown:
			r.log.Warn("an interrupted delivery may have reached the destination; it is delivered again and may appear twice (set mda_check to avoid this)", "uidl", k, "id", id.String())
			if err := r.st.Abandon(k); err != nil {
				return err
			}
		}
	}
	return nil
}

// entry is one message of the server's listing.
type entry struct {
	num  int
	key  string // "" until known (servers with neither UIDL nor TOP)
	size int64
}

// session runs one connection: list, download, deliver, delete, QUIT.
func (r *run) session(ctx context.Context, password string) error {
	a := r.a
	c, err := a.connect(ctx, password)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()

	list, err := c.List()
	if err != nil {
		return err
	}
	entries := make([]*entry, len(list))
	byNum := map[int]*entry{}
	for i, l := range list {
		entries[i] = &entry{num: l.Number, size: l.Size}
		byNum[l.Number] = entries[i]
	}
	r.res.Listed = len(entries)
	if err := r.identify(c, entries, byNum); err != nil {
		return err
	}

	// Bookkeeping: first sight, and messages gone from the server.
	onServer := map[string]bool{}
	byContent := false // some entries are identified by content, once downloaded
	for _, e := range entries {
		if e.key == "" {
			byContent = true
			continue
		}
		onServer[e.key] = true
		rec := r.st.State.Messages[e.key]
		if rec == nil {
			r.st.State.Messages[e.key] = &Record{FirstSeen: r.now}
		} else {
			rec.GoneSince = time.Time{}
		}
	}
	// Delivered messages that left the server, by content: a message
	// that comes back under a new UIDL is recognised and not delivered
	// again. Only a message that is still on the server can come back:
	// one that was deleted (by us, with DELE) is never matched, so a new
	// message with the same content is delivered.
	gone := map[string]string{}
	for k, rec := range r.st.State.Messages {
		if onServer[k] {
			continue
		}
		if !rec.Expunged.IsZero() && r.now.Sub(rec.Expunged) > goneRetention {
			delete(r.st.State.Messages, k)
			continue
		}
		if byContent && strings.HasPrefix(k, "sha256:") {
			continue // known to be listed or not only once downloaded
		}
		if rec.GoneSince.IsZero() {
			rec.GoneSince = r.now
		}
		if r.now.Sub(rec.GoneSince) > goneRetention {
			delete(r.st.State.Messages, k)
			continue
		}
		if rec.Delivered() && rec.SHA256 != "" && rec.DeleSent.IsZero() {
			gone[rec.SHA256] = k
		}
	}

	// Plan.
	type deletion struct {
		num int
		key string
	}
	var fetch []int
	var dele []deletion
	var bytes int64
	for _, e := range entries {
		rec := r.st.State.Messages[e.key]
		if e.key != "" && rec.Delivered() {
			if a.Delete || a.DeleteAfter > 0 && r.now.Sub(rec.FirstSeen) >= a.DeleteAfter {
				dele = append(dele, deletion{e.num, e.key})
			}
			continue
		}
		if a.MaxSize > 0 && e.size > a.MaxSize {
			r.res.Skipped++
			r.log.Warn("message over the size limit left on the server", "num", e.num, "uidl", e.key, "size", e.size, "max_size", a.MaxSize)
			continue
		}
		if a.MaxMessages > 0 && len(fetch) >= a.MaxMessages {
			r.res.Skipped++
			continue
		}
		fetch = append(fetch, e.num)
		bytes += e.size
	}
	if r.f.Progress != nil && len(fetch) > 0 {
		r.f.Progress.Start(a.Name, len(fetch), bytes)
		defer r.f.Progress.Finish()
	}

	// Download, pipelined when the server allows, and deliver in batches
	// (see deliverBatch).
	seen := map[string]int{} // content-identified messages by SHA-256
	var batch []*Message
	var batchSize int64
	maxMessages, maxBytes := batchLimits()
	flush := func() error {
		b := batch
		batch, batchSize = nil, 0
		delivered, err := r.deliverBatch(ctx, b)
		if a.Delete {
			for _, m := range delivered {
				dele = append(dele, deletion{m.num, m.Key})
			}
		}
		c.Conn().SetDeadline(time.Now().Add(a.timeout()))
		return err
	}
	err = c.RetrAll(fetch, func(n int, msg io.Reader, rerr error) error {
		if rerr != nil {
			return rerr
		}
		e := byNum[n]
		var progress func(int)
		if r.f.Progress != nil {
			progress = r.f.Progress.Add
		}
		if len(batch) == 0 {
			if err := r.sp.reset(); err != nil {
				return fmt.Errorf("spool file: %w", err)
			}
		}
		m, err := r.sp.spool(msg, progress)
		if err != nil {
			return err
		}
		m.num = n
		// A slow destination must not eat the next response's deadline.
		c.Conn().SetDeadline(time.Now().Add(a.timeout()))
		if e.key == "" {
			// Identified by content; identical messages listed together
			// are told apart by their order.
			seen[m.SHA256]++
			e.key = "sha256:" + m.SHA256
			if n := seen[m.SHA256]; n > 1 {
				e.key += "-" + strconv.Itoa(n)
			}
			rec := r.st.State.Messages[e.key]
			switch {
			case rec == nil || !rec.Expunged.IsZero():
				// New, or new with the content of a message whose
				// deletion took effect.
				r.st.State.Messages[e.key] = &Record{FirstSeen: r.now}
			case rec.Delivered():
				rec.GoneSince = time.Time{}
				if a.Delete || a.DeleteAfter > 0 && r.now.Sub(rec.FirstSeen) >= a.DeleteAfter {
					dele = append(dele, deletion{e.num, e.key})
				}
				return nil
			default:
				rec.GoneSince = time.Time{}
			}
		}
		m.ID.Account, m.ID.Key = a.Name, e.key
		debugPoint("spooled")
		if old, ok := gone[m.SHA256]; ok {
			// Same content as a delivered message whose UIDL vanished:
			// the server renamed it.
			delete(gone, m.SHA256)
			oldRec := r.st.State.Messages[old]
			r.log.Warn("message already delivered under another UIDL (the server changed its UIDLs); not delivered again", "uidl", e.key, "old_uidl", old)
			if err := r.st.Done(e.key, oldRec.Dest, m.SHA256, m.Size); err != nil {
				return err
			}
			r.st.State.Messages[e.key].FirstSeen = oldRec.FirstSeen
			r.res.Duplicates++
			if a.Delete {
				dele = append(dele, deletion{n, e.key})
			}
			return nil
		}
		batch = append(batch, m)
		batchSize += m.Size
		if len(batch) >= maxMessages || batchSize >= maxBytes {
			return flush()
		}
		return nil
	})
	if len(batch) > 0 {
		// The RETR exchange ended (or failed after whole messages were
		// spooled): deliver what is complete.
		if ferr := flush(); err == nil {
			err = ferr
		}
	}
	if err != nil {
		return err
	}
	// The done records, and the record of each deletion, must be durable
	// before any DELE.
	for _, d := range dele {
		if err := r.st.Dele(d.key); err != nil {
			return err
		}
	}
	if err := r.st.Sync(); err != nil {
		return err
	}
	nums := make([]int, len(dele))
	for i, d := range dele {
		nums[i] = d.num
	}
	if err := c.DeleAll(nums, func(int) error { debugPoint("dele"); return nil }); err != nil {
		return err
	}
	debugPoint("quit")
	if err := c.Quit(); err != nil {
		if len(dele) > 0 {
			// The deletions may not have happened; the next run sees
			// the messages again, knows them as delivered and deletes
			// them then.
			r.log.Warn("QUIT failed; deletions will be retried on the next run", "err", err)
		}
		return err
	}
	// RFC 1939 §6: +OK to QUIT in the TRANSACTION state means the
	// messages marked as deleted have been removed.
	if len(dele) > 0 {
		keys := make([]string, len(dele))
		for i, d := range dele {
			keys[i] = d.key
		}
		if err := r.st.Expunged(keys); err != nil {
			return err
		}
	}
	r.res.Deleted += len(dele)
	return nil
}

// Batches: the messages downloaded are delivered in groups of at most
// batchMessages messages and batchBytes octets (a larger message is a
// batch of its own), so that the fsyncs of the journal and of a Maildir's
// new/ are paid once per batch rather than once per message, while a
// crash costs at most one batch's downloads.
const (
	batchMessages = 64
	batchBytes    = 8 << 20
)

// batchLimits returns the batch limits: batchMessages and batchBytes, or
// the message count of the crash tests' DebugBatchEnv.
func batchLimits() (int, int64) {
	if n, err := strconv.Atoi(os.Getenv(DebugBatchEnv)); err == nil && n > 0 {
		return n, batchBytes
	}
	return batchMessages, batchBytes
}

// deliverBatch delivers the spooled messages ms exactly once:
//
//  1. the intent records of the whole batch, one fsync;
//  2. each message delivered in turn (a Maildir fsyncs each file, but not
//     yet new/);
//  3. the destination's directory fsync'd once (Maildir new/);
//  4. the done records of the batch, one fsync.
//
// Only then may the messages be deleted from the server. It returns the
// messages delivered (or found delivered); after an error, those delivered
// before it have their done records and the others are abandoned (they
// are downloaded again).
func (r *run) deliverBatch(ctx context.Context, ms []*Message) ([]*Message, error) {
	if len(ms) == 0 {
		return nil, nil
	}
	dest := r.a.Dest
	bd, deferred := dest.(batchDestination)
	if err := r.st.Intents(ms); err != nil {
		return nil, err
	}
	debugPoint("intent")
	wheres := make([]string, 0, len(ms))
	var derr error
	unsettled := false // Find could not tell whether the failed one is there
	for _, m := range ms {
		var where string
		var err error
		if deferred {
			where, err = bd.DeliverDeferred(ctx, m)
		} else {
			where, err = dest.Deliver(ctx, m)
		}
		if err != nil {
			// The destination reported a failure: settle the intent
			// now rather than in the next run's recovery. (An MDA's
			// exit status is trusted: Unknown means not delivered.)
			found, w2, ferr := dest.Find(ctx, m.Want())
			if ferr == nil && found == Found {
				where, err = w2, nil
			}
			unsettled = ferr != nil
		}
		if err != nil {
			derr = err
			break
		}
		wheres = append(wheres, where)
		debugPoint("delivered")
	}
	delivered := ms[:len(wheres)]
	if deferred {
		if err := bd.SyncBatch(ctx); err != nil {
			// Not known to be durable: the intents stay pending, and the
			// next run's recovery looks for the messages.
			return nil, errors.Join(derr, err)
		}
		debugPoint("synced")
	}
	for i, m := range delivered {
		if err := r.st.Done(m.Key, wheres[i], m.SHA256, m.Size); err != nil {
			return nil, errors.Join(derr, err)
		}
	}
	for i, m := range ms[len(delivered):] {
		if i == 0 && unsettled {
			// The failing message, whose presence Find could not
			// tell: left pending for the next run's recovery.
			continue
		}
		if err := r.st.Abandon(m.Key); err != nil {
			return nil, errors.Join(derr, err)
		}
	}
	if err := r.st.Sync(); err != nil {
		return nil, errors.Join(derr, err)
	}
	debugPoint("done")
	for i, m := range delivered {
		r.res.New++
		r.res.Bytes += m.Size
		if r.f.Progress != nil {
			r.f.Progress.MessageDone()
		}
		r.log.Info("delivered", "uidl", m.Key, "size", m.Size, "dest", wheres[i])
	}
	return delivered, derr
}

// identify gives every entry its key: the UIDL, or on servers without
// UIDL the SHA-256 of its header section (TOP n 0) with an occurrence
// number, or, without TOP either, the SHA-256 of the whole message (known
// only once downloaded).
func (r *run) identify(c *pop3.Client, entries []*entry, byNum map[int]*entry) error {
	uidls, err := c.UIDL()
	if err == nil {
		count := map[string]int{}
		for _, u := range uidls {
			count[u.UID]++
		}
		for _, u := range uidls {
			e := byNum[u.Number]
			switch {
			case e == nil:
			case !ValidUIDL(u.UID):
				// It would corrupt the marker header and the state;
				// the content identifies the message instead.
				r.log.Warn("the server sent a UIDL that is not a valid unique-id (RFC 1939 §7: 1 to 70 characters 0x21-0x7E); the message is identified by the SHA-256 of its content, and downloaded again on each run while it stays on the server", "num", u.Number, "uidl", escaped(u.UID))
			case count[u.UID] > 1:
				// RFC 1939 §7: a unique-id is unique within the maildrop.
				// Two messages under one UIDL cannot be told apart by it.
				r.log.Warn("the server listed the same UIDL for several messages (a duplicate UIDL); each is identified by the SHA-256 of its content, and downloaded again on each run while it stays on the server", "num", u.Number, "uidl", u.UID)
			default:
				e.key = u.UID
			}
		}
		return nil
	}
	var pe *pop3.Error
	if !errors.As(err, &pe) {
		return err
	}
	r.log.Warn("the server does not support UIDL; messages are identified by a hash of their header (TOP), which is reliable only if headers are unique; consider delete = true")
	seen := map[string]int{}
	for _, e := range entries {
		body, err := c.Top(e.num, 0)
		if err != nil {
			if errors.As(err, &pe) {
				r.log.Warn("the server supports neither UIDL nor TOP: every message is downloaded on each run to be identified by its content")
				for _, e := range entries {
					e.key = ""
				}
				return nil
			}
			return err
		}
		h, err := HeaderHash(body)
		if err != nil {
			return err
		}
		seen[h]++
		e.key = "hdr:" + h[:32] + "-" + strconv.Itoa(seen[h])
	}
	return nil
}

// escaped returns s with its control characters and non-ASCII octets
// escaped as in a Go string literal, and cut after 100 octets, for a log
// line.
func escaped(s string) string {
	more := ""
	if len(s) > 100 {
		s, more = s[:100], "..."
	}
	q := strconv.QuoteToASCII(s)
	return q[1:len(q)-1] + more
}

// ValidUIDL reports whether uid is a unique-id as RFC 1939 §7 defines it:
// 1 to 70 characters in the range 0x21 to 0x7E.
func ValidUIDL(uid string) bool {
	// RFC 1939 §7: "The unique-id of a message is an arbitrary server-
	// determined string, consisting of one to 70 characters in the range
	// 0x21 to 0x7E".
	if len(uid) < 1 || len(uid) > 70 {
		return false
	}
	for i := range len(uid) {
		if uid[i] < 0x21 || uid[i] > 0x7e {
			return false
		}
	}
	return true
}

// DefaultStateDir returns the state directory used without a data
// directory: $XDG_STATE_HOME/postino, or ~/.local/state/postino.
func DefaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "postino")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "postino")
	}
	return filepath.Join(".", "postino-fetch-state")
}
