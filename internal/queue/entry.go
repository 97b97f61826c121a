package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/envelope"
)

// Status is the delivery state of one recipient.
type Status string

// The recipient states.
const (
	// StatusPending: not delivered yet; will be tried (again).
	StatusPending Status = "pending"
	// StatusSent: accepted by the remote server (its 2xx reply to the
	// final dot was recorded) or stored locally.
	StatusSent Status = "sent"
	// StatusFailed: failed permanently (5xx, a bounce-worthy local error,
	// or expiry).
	StatusFailed Status = "failed"
)

// entryVersion is the format of entry files.
const entryVersion = 1

// maxAttempts is how many attempts an entry's history keeps (the oldest
// are dropped; Entry.Failures keeps counting).
const maxAttempts = 32

// Entry is one message for one destination domain: the unit of queueing,
// locking and delivery. It is stored as JSON.
type Entry struct {
	// Version is the format version (1).
	Version int `json:"v"`
	// ID is the entry id: the message id, a dot and a number.
	ID string `json:"id"`
	// MessageID is the id of the stored message body, shared by the
	// entries of the message (returned by Enqueue).
	MessageID string `json:"msg"`
	// Domain is the destination domain (lower case).
	Domain string `json:"domain"`
	// Local says that the domain is delivered locally.
	Local bool `json:"local,omitempty"`
	// From is the envelope sender; "" is the null sender.
	From string `json:"from"`
	// AuthUser is the authenticated user who submitted the message, ""
	// for received, forwarded and generated mail.
	AuthUser string `json:"auth_user,omitempty"`
	// Size is the size of the stored message in octets.
	Size int64 `json:"size"`
	// Need8BitMIME: the message has octets over 127 (RFC 6152).
	Need8BitMIME bool `json:"need_8bitmime,omitempty"`
	// NeedSMTPUTF8: an address or a header field is not ASCII (RFC 6531).
	NeedSMTPUTF8 bool `json:"need_smtputf8,omitempty"`
	// Return and EnvelopeID are the DSN RET= and ENVID= values (RFC 3461).
	Return     string `json:"ret,omitempty"`
	EnvelopeID string `json:"envid,omitempty"`
	// DSN marks a delivery status notification we generated.
	DSN bool `json:"dsn,omitempty"`
	// Arrival is when the message was queued; Expires when its remaining
	// recipients are bounced.
	Arrival time.Time `json:"arrival"`
	Expires time.Time `json:"expires"`
	// NextAttempt is when the entry is due.
	NextAttempt time.Time `json:"next_attempt"`
	// Failures counts attempts that left recipients pending (the backoff
	// exponent).
	Failures int `json:"failures,omitempty"`
	// InFlight is set while an attempt is under way: found set when the
	// entry is loaded, the attempt was interrupted (a crash).
	InFlight *time.Time `json:"in_flight,omitempty"`
	// DelayWarned: the delay DSN was sent.
	DelayWarned bool `json:"delay_warned,omitempty"`
	// Reported: the final DSNs were queued; the entry only waits for its
	// removal.
	Reported bool `json:"reported,omitempty"`
	// Recipients are the recipients of the domain, in submission order.
	Recipients []Recipient `json:"rcpts"`
	// Attempts is the recent attempt history, oldest first.
	Attempts []Attempt `json:"attempts,omitempty"`
}

// Recipient is one recipient of an entry and its state.
type Recipient struct {
	// Addr is the recipient address.
	Addr string `json:"addr"`
	// Notify, ORcptType and ORcpt are the RFC 3461 NOTIFY and ORCPT
	// parameters given at submission.
	Notify    []string `json:"notify,omitempty"`
	ORcptType string   `json:"orcpt_type,omitempty"`
	ORcpt     string   `json:"orcpt,omitempty"`
	// Status is the delivery state.
	Status Status `json:"status"`
	// Reply is the last reply or error for the recipient, e.g. "550 5.1.1
	// User unknown"; Code and Enhanced are its parts (Code 0 when the
	// failure was not an SMTP reply).
	Reply    string `json:"reply,omitempty"`
	Code     int    `json:"code,omitempty"`
	Enhanced string `json:"enhanced,omitempty"`
	// RemoteMTA is the host that gave Reply.
	RemoteMTA string `json:"remote_mta,omitempty"`
	// NoRemoteDSN: accepted by a server without the DSN extension, so a
	// NOTIFY=SUCCESS is answered by us with a "relayed" DSN (RFC 3461
	// §6.2.6.2).
	NoRemoteDSN bool `json:"no_remote_dsn,omitempty"`
	// Updated is when Status or Reply last changed.
	Updated time.Time `json:"updated,omitzero"`
}

// Attempt records one delivery attempt.
type Attempt struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end,omitzero"`
	// Host is the host talked to ("" when none answered, "local" for local
	// delivery).
	Host string `json:"host,omitempty"`
	// Result summarizes the outcome, e.g. "2 sent, 1 deferred".
	Result string `json:"result,omitempty"`
	// Interrupted: the process ended during the attempt.
	Interrupted bool `json:"interrupted,omitempty"`
}

// Pending returns the number of pending recipients.
func (e *Entry) Pending() int {
	n := 0
	for _, r := range e.Recipients {
		if r.Status == StatusPending {
			n++
		}
	}
	return n
}

func (e *Entry) addAttempt(a Attempt) {
	e.Attempts = append(e.Attempts, a)
	if len(e.Attempts) > maxAttempts {
		e.Attempts = append([]Attempt(nil), e.Attempts[len(e.Attempts)-maxAttempts:]...)
	}
}

// validID reports whether s can be a message or entry id: it names files,
// so only [0-9A-Za-z.-] and no leading dot.
func validID(s string) bool {
	if s == "" || len(s) > 100 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c == '.' || c == '-') {
			return false
		}
	}
	return !strings.Contains(s, "..")
}

// newMessageID returns a new message id: the time in microseconds and 24
// random bits, in upper-case hex, so that ids sort by age.
func newMessageID(now time.Time) string { return envelope.NewMessageID(now) }

// entryID returns the id of the n-th entry (1-based) of a message.
func entryID(msgID string, n int) string { return fmt.Sprintf("%s.%d", msgID, n) }

// messageOf returns the message id of an entry id.
func messageOf(id string) string {
	if i := strings.LastIndexByte(id, '.'); i > 0 {
		return id[:i]
	}
	return id
}

// parseEntry decodes and checks an entry file. It never panics on
// garbage (FuzzParseEntry).
func parseEntry(data []byte) (*Entry, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var e Entry
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("queue entry: %w", err)
	}
	if dec.More() {
		return nil, errors.New("queue entry: trailing data")
	}
	if e.Version != entryVersion {
		return nil, fmt.Errorf("queue entry: unknown version %d", e.Version)
	}
	if !validID(e.ID) || !validID(e.MessageID) || messageOf(e.ID) != e.MessageID {
		return nil, fmt.Errorf("queue entry: bad id %q/%q", e.ID, e.MessageID)
	}
	if len(e.Recipients) == 0 {
		return nil, errors.New("queue entry: no recipients")
	}
	for _, r := range e.Recipients {
		switch r.Status {
		case StatusPending, StatusSent, StatusFailed:
		default:
			return nil, fmt.Errorf("queue entry: bad status %q", r.Status)
		}
	}
	if e.Size < 0 {
		return nil, errors.New("queue entry: negative size")
	}
	return &e, nil
}

// marshal encodes an entry for storage.
func (e *Entry) marshal() ([]byte, error) {
	return json.MarshalIndent(e, "", "\t")
}
