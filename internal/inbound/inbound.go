// Package inbound is the contract between the MX (internal/smtpin) and the
// checks that judge incoming mail: sender authentication (SPF, DKIM,
// DMARC), DNS blocklists, reverse DNS and HELO checks, greylisting and
// external filters (milters).
//
// A Check is installed on the MX. For each SMTP session it makes a
// Session, which implements any of the stage interfaces (MailStage,
// RcptStage, DataStage, Ender). The MX calls the stages in the order of
// the SMTP dialogue, from the session's goroutine, one at a time:
//
//	Begin (once the client has said EHLO/HELO; again after STARTTLS)
//	  Mail (each MAIL FROM)
//	    Rcpt (each RCPT TO)
//	    Data (once the whole message is received and spooled)
//	End (the session ends)
//
// Every stage adds what it found to a Verdict: results that raise (or
// lower) the spam score, results that demand an outcome (reject,
// tempfail, quarantine) whatever the score, and header fields to add to
// the delivered message (Authentication-Results, X-Spam...). After each
// stage the MX refuses the command when a result demands Reject or
// Tempfail; after Data it decides what to do with the message from the
// whole verdict. Checks never reply on the wire themselves.
//
// Work that needs no message content (DNS lookups for SPF, blocklists,
// reverse DNS) may start in Begin or Mail in a goroutine of the Session's
// and be awaited in a later stage, so that it runs while the client
// sends the message.
//
// A check that cannot run (its DNS server or filter is down) decides
// itself, by its configuration, whether that demands Tempfail (the
// sender retries; nothing is lost) or adds nothing.
package inbound

import (
	"context"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Action is what happens to a message, from the mildest to the
// strongest.
type Action int

// The actions. A result's Action is what the check demands whatever the
// score; Accept demands nothing.
const (
	// Accept delivers the message as it is.
	Accept Action = iota
	// Tag delivers the message marked as spam (X-Spam headers, optional
	// subject prefix), where the user's mail program can file it.
	Tag
	// Quarantine holds the message on the server, where the user is told
	// about it and can have it released.
	Quarantine
	// Tempfail refuses the command with a 4xx reply: the sender retries.
	Tempfail
	// Reject refuses the command with a 5xx reply: the sender's server
	// bounces the message (so no backscatter comes from us).
	Reject
)

var actionNames = [...]string{"accept", "tag", "quarantine", "tempfail", "reject"}

// String returns the action's name as written in the configuration.
func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return "unknown"
	}
	return actionNames[a]
}

// ParseAction parses an action's name.
func ParseAction(s string) (Action, bool) {
	i := slices.Index(actionNames[:], strings.ToLower(s))
	return Action(i), i >= 0
}

// Conn describes the client of an SMTP session.
type Conn struct {
	// ID names the session in logs.
	ID string
	// Remote is the client's address (invalid for a unix socket).
	Remote netip.Addr
	// Helo is the name the client gave with EHLO or HELO.
	Helo string
	// TLS is whether the session runs over TLS.
	TLS bool
	// Hostname is our own name (the authserv-id of
	// Authentication-Results, RFC 8601 §2.5).
	Hostname string
}

// Envelope is one transaction's envelope.
type Envelope struct {
	// ID names the transaction in logs and replies.
	ID string
	// From is the MAIL FROM address ("" for the null sender).
	From string
	// Rcpts are the accepted recipients, as given.
	Rcpts []string
	// Mailboxes are the local mailboxes (user names) the accepted
	// recipients resolve to, for per-user choices.
	Mailboxes []string
}

// Message is a received message, spooled: it can be read any number of
// times, from the start, without holding it in memory.
type Message interface {
	// Reader returns a new reader over the whole message (header and
	// body, CRLF line ends).
	Reader() io.Reader
	// Size is the message's size in octets.
	Size() int64
}

// Check is one inbound check installed on the MX.
type Check interface {
	// Name names the check in logs and results ("spf", "dnsbl"...).
	Name() string
	// Begin starts the check's work for one session. It returns nil
	// when the check has nothing to do for it.
	Begin(ctx context.Context, c *Conn, v *Verdict) Session
}

// Session is a check's state for one SMTP session. It implements any of
// MailStage, RcptStage, DataStage and Ender.
type Session any

// MailStage is called for each MAIL FROM; from is "" for the null
// sender.
type MailStage interface {
	Mail(ctx context.Context, from string, v *Verdict)
}

// RcptStage is called for each RCPT TO before it is accepted.
type RcptStage interface {
	Rcpt(ctx context.Context, env *Envelope, rcpt string, v *Verdict)
}

// DataStage is called once the message is received. It may return a
// replacement (a milter that changes headers or the body); nil keeps
// msg. A returned Message that is an io.Closer is closed by the MX once
// the message is delivered.
type DataStage interface {
	Data(ctx context.Context, env *Envelope, msg Message, v *Verdict) (Message, error)
}

// Ender is called when the session ends.
type Ender interface {
	End()
}

// Result is one finding of a check.
type Result struct {
	// Check names the check ("spf", "dkim", "dmarc", "dnsbl",
	// "milter:rspamd"...).
	Check string
	// Score is added to the message's spam score (negative for
	// allowlists).
	Score float64
	// Action is the outcome the check demands whatever the score;
	// Accept demands nothing.
	Action Action
	// Reply is the text of the SMTP reply when Action is Reject or
	// Tempfail: it names the reason for the sender without revealing
	// configuration.
	Reply string
	// Code is the SMTP reply code for Reject or Tempfail (0: 550 or 451)
	// and Enhanced its RFC 3463 status (zero: 5.7.1 or 4.7.1).
	Code     int
	Enhanced [3]int
	// Detail is for the log.
	Detail string
}

// Verdict collects the results of the checks for a session or a
// message. It is safe for concurrent use.
type Verdict struct {
	mu      sync.Mutex
	results []Result
	headers []string
}

// Add records a result.
func (v *Verdict) Add(r Result) {
	v.mu.Lock()
	v.results = append(v.results, r)
	v.mu.Unlock()
}

// AddHeader records a header field to add to the delivered message, as
// "Name: value" (folded with CRLF and white space where long; no final
// CRLF). Fields are added in the order given, above the message's own.
func (v *Verdict) AddHeader(field string) {
	v.mu.Lock()
	v.headers = append(v.headers, strings.TrimRight(field, "\r\n"))
	v.mu.Unlock()
}

// Results returns the results recorded so far.
func (v *Verdict) Results() []Result {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.results)
}

// Headers returns the header fields to add, each ending in CRLF, joined.
func (v *Verdict) Headers() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var b strings.Builder
	for _, h := range v.headers {
		b.WriteString(h)
		b.WriteString("\r\n")
	}
	return b.String()
}

// Score returns the sum of the results' scores.
func (v *Verdict) Score() float64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	var s float64
	for _, r := range v.results {
		s += r.Score
	}
	return s
}

// Strongest returns the result demanding the strongest action, and
// false when none demands any.
func (v *Verdict) Strongest() (Result, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var best Result
	found := false
	for _, r := range v.results {
		if r.Action != Accept && (!found || r.Action > best.Action) {
			best, found = r, true
		}
	}
	return best, found
}

// Clone returns a copy, for a transaction that starts from what the
// session's checks found.
func (v *Verdict) Clone() *Verdict {
	v.mu.Lock()
	defer v.mu.Unlock()
	return &Verdict{results: slices.Clone(v.results), headers: slices.Clone(v.headers)}
}
