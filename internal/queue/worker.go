package queue

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/metrics"
)

// Run works the queue until ctx ends: it delivers due entries, with at
// most Options.MaxPerDomain deliveries per destination and
// Options.MaxConcurrent in all, and looks for new or changed entries when
// Enqueue or Kick is called, when another process changed the queue
// (checked every PollInterval) and at least once a minute. On return, no
// delivery is running; interrupted attempts are recorded as deferred.
func (q *Queue) Run(ctx context.Context) error {
	if err := q.store.Sweep(time.Hour); err != nil {
		q.options().Logger.Warn("queue: sweep", "err", err)
	}
	clock := q.options().Clock
	lastTok := "\x00"
	var next, lastScan time.Time
	lastSweep := clock.Now()
	kicked := true
	// A store shared by several machines announces their changes.
	var notified <-chan struct{}
	if n, ok := q.store.(interface{ Notify() <-chan struct{} }); ok {
		notified = n.Notify()
	}
	for {
		now := clock.Now()
		if tok := q.store.Changed(); kicked || tok != lastTok || (!next.IsZero() && !now.Before(next)) || now.Sub(lastScan) >= time.Minute {
			lastTok, kicked, lastScan = tok, false, now
			next = q.scan(ctx)
		}
		if now.Sub(lastSweep) >= time.Hour {
			lastSweep = now
			q.store.Sweep(time.Hour)
		}
		wait := q.options().PollInterval
		if !next.IsZero() {
			wait = max(min(wait, next.Sub(now)), time.Millisecond)
		}
		select {
		case <-ctx.Done():
			q.wg.Wait()
			return nil
		case <-q.kick:
			kicked = true
		case <-notified:
			kicked = true
		case <-clock.After(wait):
		}
	}
}

// RunOnce delivers the entries due now and returns when they are done
// (for tests and a `postino queue flush`).
func (q *Queue) RunOnce(ctx context.Context) {
	q.scan(ctx)
	q.wg.Wait()
}

// scan dispatches the due entries and returns when the next one is due
// (zero if none is waiting).
func (q *Queue) scan(ctx context.Context) time.Time {
	list, err := q.store.List(ctx, func(id string, err error) {
		q.options().Logger.Error("queue: unreadable entry", "id", messageOf(id), "entry", id, "err", err)
	})
	if err != nil {
		if ctx.Err() == nil {
			q.options().Logger.Error("queue: listing entries", "err", err)
		}
		return q.options().Clock.Now().Add(q.options().PollInterval)
	}
	if len(list) != q.lastSize {
		q.lastSize = len(list)
		msgs := make(map[string]bool)
		for _, e := range list {
			msgs[e.MessageID] = true
		}
		q.options().Logger.Info("queue: size", "entries", len(list), "messages", len(msgs))
	}
	sort.Slice(list, func(i, j int) bool { return list[i].NextAttempt.Before(list[j].NextAttempt) })
	now := q.options().Clock.Now()
	var next time.Time
	for _, e := range list {
		if ctx.Err() != nil {
			break
		}
		due := !e.NextAttempt.After(now) || e.Pending() == 0 || e.InFlight != nil
		if due {
			q.dispatch(ctx, e)
		} else if next.IsZero() || e.NextAttempt.Before(next) {
			next = e.NextAttempt
		}
	}
	return next
}

func (q *Queue) routeKey(e *Entry) string {
	switch {
	case e.Local:
		return "local"
	case q.options().Routes[e.Domain] != "":
		return "route:" + q.options().Routes[e.Domain]
	case q.options().Smarthost != nil:
		return "smarthost"
	}
	return e.Domain
}

func (q *Queue) dispatch(ctx context.Context, e *Entry) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.active[e.ID] {
		return
	}
	q.active[e.ID] = true
	key := q.routeKey(e)
	r := q.routes[key]
	if r == nil {
		r = &route{key: key}
		q.routes[key] = r
	}
	r.pending = append(r.pending, e.ID)
	q.spawnLocked(ctx)
}

// spawnLocked starts workers for waiting entries within the limits.
func (q *Queue) spawnLocked(ctx context.Context) {
	for _, r := range q.routes {
		for len(r.pending) > 0 && r.workers < q.options().MaxPerDomain && q.workers < q.options().MaxConcurrent {
			id := r.pending[0]
			r.pending = r.pending[1:]
			r.workers++
			q.workers++
			q.wg.Add(1)
			go q.worker(ctx, r, id)
		}
	}
}

// worker delivers entries of one route, reusing its SMTP connection
// from one entry to the next.
func (q *Queue) worker(ctx context.Context, r *route, id string) {
	defer q.wg.Done()
	var cl *client
	for {
		q.process(ctx, id, &cl)
		q.mu.Lock()
		delete(q.active, id)
		if len(r.pending) > 0 && ctx.Err() == nil {
			id = r.pending[0]
			r.pending = r.pending[1:]
			q.mu.Unlock()
			continue
		}
		if ctx.Err() != nil {
			for _, p := range r.pending {
				delete(q.active, p)
			}
			r.pending = nil
		}
		r.workers--
		q.workers--
		if r.workers == 0 && len(r.pending) == 0 && q.routes[r.key] == r {
			delete(q.routes, r.key)
		}
		if ctx.Err() == nil {
			q.spawnLocked(ctx)
		}
		q.mu.Unlock()
		break
	}
	if cl != nil {
		cl.close()
	}
}

// process makes one delivery attempt for an entry, under its claim.
//
// Crash safety (at-least-once): the entry is written with InFlight set
// before the remote transaction and with each recipient's outcome after
// it. A recipient is marked sent only once the remote 2xx reply to the
// final dot has been received and written down; after a kill -9 the
// recipients not marked sent are tried again. The message is therefore
// delivered twice only when the process died between receiving that
// reply and the fsync of the entry (a window of one file write), or when
// the remote server took the message but its reply never arrived (RFC
// 5321 §6.1 accepts such duplicates; RFC 1047).
func (q *Queue) process(ctx context.Context, id string, cl **client) {
	var release func()
	var err error
	outer := ctx
	cc, claimCtx := q.store.(contextClaimer)
	if claimCtx {
		// The delivery stops when the claim ends before its release.
		ctx, release, err = cc.ClaimContext(ctx, id)
	} else {
		release, err = q.store.Claim(ctx, id)
	}
	if err != nil {
		if !errors.Is(err, ErrBusy) && !errors.Is(err, ErrNotFound) {
			q.options().Logger.Error("queue: claiming entry", "id", messageOf(id), "entry", id, "err", err)
		}
		return
	}
	defer release()
	if claimCtx {
		// Before the release ends the claim's context: a connection
		// kept for the next entry no longer depends on it.
		defer func() {
			if c := *cl; c != nil {
				c.watch(outer)
			}
		}()
	}
	e, err := q.store.Get(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return
	}
	if err != nil {
		q.options().Logger.Error("queue: reading entry", "id", messageOf(id), "entry", id, "err", err)
		return
	}
	now := q.options().Clock.Now()
	interrupted := e.InFlight != nil
	if interrupted {
		// The process died during the last attempt: nothing that was not
		// written down as sent was.
		if n := len(e.Attempts); n > 0 {
			e.Attempts[n-1].Interrupted = true
			if e.Attempts[n-1].End.IsZero() {
				e.Attempts[n-1].End = *e.InFlight
			}
		}
		e.InFlight = nil
		q.options().Logger.Warn("queue: recovering interrupted attempt", "id", messageOf(id), "entry", id, "pending", e.Pending())
	}
	if e.Pending() > 0 && e.NextAttempt.After(now) && !interrupted {
		return // rescheduled meanwhile (Retry, another process)
	}
	if e.Pending() > 0 {
		start := now
		e.InFlight = &start
		e.addAttempt(Attempt{Start: now})
		if err := q.store.Update(ctx, e); err != nil {
			q.options().Logger.Error("queue: updating entry", "id", messageOf(id), "entry", id, "err", err)
			return
		}
		var host string
		if e.Local {
			host = q.deliverLocal(ctx, e)
		} else {
			host = q.deliverRemote(ctx, e, cl)
		}
		end := q.options().Clock.Now()
		a := &e.Attempts[len(e.Attempts)-1]
		a.End, a.Host = end, host
		q.afterAttempt(ctx, e, end)
		a.Result = summary(e)
		e.InFlight = nil
		if err := q.store.Update(ctx, e); err != nil {
			q.options().Logger.Error("queue: updating entry", "id", messageOf(id), "entry", id, "err", err)
			return
		}
	} else if interrupted {
		q.store.Update(ctx, e)
	}
	if e.Pending() == 0 {
		q.finish(ctx, e)
	}
}

// contextClaimer is a Store whose claims can end before their release
// (a lease that could not be renewed): ClaimContext is Claim, and returns
// a context cancelled when the claim ends.
type contextClaimer interface {
	ClaimContext(ctx context.Context, id string) (context.Context, func(), error)
}

func summary(e *Entry) string {
	var sent, failed, pending int
	for _, r := range e.Recipients {
		switch r.Status {
		case StatusSent:
			sent++
		case StatusFailed:
			failed++
		default:
			pending++
		}
	}
	return fmt.Sprintf("%d sent, %d failed, %d deferred", sent, failed, pending)
}

// setRcpt records an outcome for a pending recipient and logs it.
func (q *Queue) setRcpt(e *Entry, r *Recipient, st Status, code int, enhanced, text, host string) {
	now := q.options().Clock.Now()
	r.Status, r.Code, r.Enhanced, r.RemoteMTA, r.Updated = st, code, enhanced, host, now
	r.Reply = text
	if code != 0 {
		r.Reply = strings.TrimSpace(fmt.Sprintf("%d %s %s", code, enhanced, text))
	} else if enhanced != "" {
		r.Reply = enhanced + " " + text
	}
	event := map[Status]string{StatusSent: "queue: delivered", StatusFailed: "queue: bounced", StatusPending: "queue: deferred"}[st]
	args := []any{"id", e.MessageID, "entry", e.ID, "from", e.From, "rcpt", r.Addr, "relay", host, "reply", r.Reply, "delay", now.Sub(e.Arrival).Round(time.Millisecond)}
	q.options().Metrics.DeliveryAttempt(map[Status]string{StatusSent: metrics.ResultDelivered, StatusFailed: metrics.ResultBounced, StatusPending: metrics.ResultDeferred}[st])
	if st == StatusSent && !e.Local {
		q.options().Metrics.Delivered("remote") // local copies are counted by the Deliverer
	}
	if st == StatusPending {
		q.options().Logger.Warn(event, args...)
	} else {
		q.options().Logger.Info(event, args...)
	}
}

// failPending applies a failure to every pending recipient.
func (q *Queue) failPending(e *Entry, f *failure) {
	st := StatusPending
	if f.perm || f.code/100 == 5 {
		st = StatusFailed
	}
	enh := f.enhanced
	if enh == "" {
		enh = map[bool]string{true: "5.0.0", false: "4.0.0"}[st == StatusFailed]
	}
	for i := range e.Recipients {
		if e.Recipients[i].Status == StatusPending {
			q.setRcpt(e, &e.Recipients[i], st, f.code, enh, f.text, f.host)
		}
	}
}

// applyReply records a server reply for one recipient.
func (q *Queue) applyReply(e *Entry, r *Recipient, rep *reply, host string) {
	enh := rep.Enhanced
	st := StatusPending
	switch rep.Code / 100 {
	case 2:
		st = StatusSent
	case 5:
		st = StatusFailed
	}
	if enh == "" {
		enh = fmt.Sprintf("%d.0.0", rep.Code/100)
		if st == StatusPending && rep.Code/100 != 4 {
			enh = "4.5.0" // a reply that makes no sense here
		}
	}
	q.setRcpt(e, r, st, rep.Code, enh, strings.Join(rep.Lines, " "), host)
}

// deliverRemote makes one SMTP attempt for the pending recipients of e,
// reusing *cl when it serves the same route. It returns the host name.
func (q *Queue) deliverRemote(ctx context.Context, e *Entry, cl **client) string {
	var pend []int
	for i, r := range e.Recipients {
		if r.Status != StatusPending {
			continue
		}
		if local, dom, ok := strings.Cut(r.Addr, "@"); !ok || local == "" || dom == "" || strings.ContainsAny(r.Addr, "<>\r\n\x00 ") {
			q.setRcpt(e, &e.Recipients[i], StatusFailed, 0, "5.1.3", "bad recipient address syntax", "")
			continue
		}
		pend = append(pend, i)
	}
	if len(pend) == 0 {
		return ""
	}
	key := q.routeKey(e)
	c := *cl
	if c != nil && (c.route != key || c.broken) {
		c.close()
		c = nil
	}
	if c != nil {
		c.watch(ctx) // this attempt's context (its claim's) ends it
	}
	defer func() {
		if c != nil && c.broken {
			c.close()
			c = nil
		}
		*cl = c
	}()
	for try := 0; ; try++ {
		reused := c != nil
		if c == nil {
			var f *failure
			c, f = q.connect(ctx, e.Domain)
			if f != nil {
				q.failPending(e, f)
				return f.host
			}
			c.route = key
		}
		host := c.host
		// Refuse what the server cannot carry, with a bounce rather than
		// a broken message (RFC 6531 §3.4, RFC 6152 §3, RFC 1870 §6).
		if e.NeedSMTPUTF8 && !c.has("SMTPUTF8") {
			q.failPending(e, &failure{perm: true, code: 553, enhanced: "5.6.7", text: "SMTPUTF8 is required, but was not offered by host " + host, host: host})
			return host
		}
		if e.Need8BitMIME && !c.has("8BITMIME") {
			q.failPending(e, &failure{perm: true, code: 554, enhanced: "5.6.3", text: "8BITMIME is required, but was not offered by host " + host, host: host})
			return host
		}
		if v, ok := c.ext["SIZE"]; ok {
			if limit, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && limit > 0 && e.Size > limit {
				q.failPending(e, &failure{perm: true, code: 552, enhanced: "5.3.4", text: fmt.Sprintf("message size %d exceeds size limit %d of host %s", e.Size, limit, host), host: host})
				return host
			}
		}
		body, err := q.store.OpenMessage(ctx, e.MessageID)
		if err != nil {
			q.options().Logger.Error("queue: opening message", "id", e.MessageID, "entry", e.ID, "err", err)
			q.failPending(e, tempFail("4.3.0", "cannot read queued message: %v", err))
			return host
		}
		t := &txn{from: e.From, size: e.Size, body8bit: e.Need8BitMIME, utf8: e.NeedSMTPUTF8, ret: e.Return, envid: e.EnvelopeID, body: body}
		for _, i := range pend {
			t.rcpts = append(t.rcpts, e.Recipients[i])
		}
		results, err := c.send(ctx, t, q.options().DataDoneTimeout)
		body.Close()
		var rep *reply
		switch {
		case err != nil && reused && try == 0 && !errors.As(err, &rep) && ctx.Err() == nil:
			// A reused connection the server had closed: once more on a
			// new one.
			c.broken = true
			c.close()
			c = nil
			continue
		case errors.Is(err, errBadAddress):
			q.failPending(e, permFail("5.1.3", "%v", err))
		case errors.As(err, &rep):
			// MAIL FROM refused: applies to every recipient.
			for _, i := range pend {
				q.applyReply(e, &e.Recipients[i], rep, host)
			}
		case err != nil:
			q.failPending(e, &failure{enhanced: "4.4.2", text: fmt.Sprintf("lost connection with %s while sending MAIL/RCPT: %s", host, shortErr(err)), host: host})
		default:
			for k, i := range pend {
				r := &e.Recipients[i]
				switch res := results[k]; {
				case res.Err != nil:
					q.setRcpt(e, r, StatusPending, 0, "4.4.2", fmt.Sprintf("lost connection with %s while sending message data: %s", host, shortErr(res.Err)), host)
				case res.Reply != nil:
					q.applyReply(e, r, res.Reply, host)
					r.NoRemoteDSN = r.Status == StatusSent && !c.has("DSN")
				}
			}
		}
		return host
	}
}

// deliverLocal stores the message for each pending recipient of a local
// entry.
func (q *Queue) deliverLocal(ctx context.Context, e *Entry) string {
	for i := range e.Recipients {
		r := &e.Recipients[i]
		if r.Status != StatusPending {
			continue
		}
		if q.options().Local == nil {
			q.setRcpt(e, r, StatusPending, 451, "4.3.0", "local delivery is not configured", "local")
			continue
		}
		body, err := q.store.OpenMessage(ctx, e.MessageID)
		if err != nil {
			q.setRcpt(e, r, StatusPending, 451, "4.3.0", "cannot read queued message", "local")
			continue
		}
		_, err = q.options().Local.Deliver(delivery.WithMessageID(ctx, e.MessageID), e.From, []string{r.Addr}, body)
		body.Close()
		switch {
		case err == nil:
			q.setRcpt(e, r, StatusSent, 250, "2.0.0", "delivered to mailbox", "local")
		case errors.Is(err, delivery.ErrUnknownUser):
			q.setRcpt(e, r, StatusFailed, 550, "5.1.1", "user unknown", "local")
		case errors.Is(err, delivery.ErrOverQuota):
			// RFC 3463 X.2.2; permanent, as Dovecot's LDA/LMTP answers
			// by default (quota_full_tempfail = no): the sender is told now.
			q.setRcpt(e, r, StatusFailed, 552, "5.2.2", "mailbox full", "local")
		case errors.Is(err, delivery.ErrTooBig):
			q.setRcpt(e, r, StatusFailed, 552, "5.2.2", "mailbox full or message too big", "local")
		case errors.Is(err, delivery.ErrMalformed):
			q.setRcpt(e, r, StatusFailed, 554, "5.6.0", "message cannot be stored", "local")
		default:
			q.options().Logger.Error("queue: local delivery", "id", e.MessageID, "entry", e.ID, "rcpt", r.Addr, "err", err)
			q.setRcpt(e, r, StatusPending, 451, "4.3.0", "local delivery failed temporarily", "local")
		}
	}
	return "local"
}

// afterAttempt schedules the next attempt, bounces recipients whose time
// is up, and sends a delay warning when it is time.
func (q *Queue) afterAttempt(ctx context.Context, e *Entry, now time.Time) {
	if e.Pending() == 0 {
		return
	}
	e.Failures++
	if !now.Before(e.Expires) {
		// RFC 3464 §2.3.3: Action failed, keeping the last (temporary)
		// status as the reason.
		for i := range e.Recipients {
			r := &e.Recipients[i]
			if r.Status == StatusPending {
				if r.Enhanced == "" {
					r.Enhanced = "4.4.7" // RFC 3463: delivery time expired
				}
				r.Status, r.Updated = StatusFailed, now
				r.Reply = strings.TrimSpace(r.Reply + " (delivery time expired)")
				q.options().Logger.Info("queue: bounced", "id", e.MessageID, "entry", e.ID, "from", e.From, "rcpt", r.Addr, "reply", r.Reply, "delay", now.Sub(e.Arrival).Round(time.Second))
			}
		}
		return
	}
	e.NextAttempt = now.Add(q.backoff(e.Failures))
	if e.NextAttempt.After(e.Expires) {
		e.NextAttempt = e.Expires // one last try when the time is up
	}
	if q.options().DelayWarning > 0 && !e.DelayWarned && now.Sub(e.Arrival) >= q.options().DelayWarning {
		e.DelayWarned = true
		q.report(ctx, e, actionDelayed)
	}
}

// finish sends the final DSNs of an entry without pending recipients and
// removes it. Reported is written first, so that a crash after the DSN
// was queued does not queue it twice (the DSN's id is derived from the
// entry's, which covers the crash before that write).
func (q *Queue) finish(ctx context.Context, e *Entry) {
	if !e.Reported {
		if q.report(ctx, e, actionFailed) != nil || q.report(ctx, e, actionDelivered) != nil {
			return // tried again at the next scan
		}
		e.Reported = true
		if err := q.store.Update(ctx, e); err != nil {
			q.options().Logger.Error("queue: updating entry", "id", e.MessageID, "entry", e.ID, "err", err)
			return
		}
	}
	if err := q.store.Remove(ctx, e); err != nil {
		q.options().Logger.Error("queue: removing entry", "id", e.MessageID, "entry", e.ID, "err", err)
		return
	}
	q.options().Logger.Info("queue: done", "id", e.MessageID, "entry", e.ID, "result", summary(e))
}
