// Package store defines the storage contract that every postino mailbox
// backend honours: Maildir (internal/store/maildir) for one server, and
// PostgreSQL (internal/store/pgstore) for several sharing the mailboxes.
//
// The contract, which the POP3 server and local delivery rely on:
//
//   - OpenMaildrop takes an exclusive lock on the mailbox (RFC 1939 §4). A
//     second opener gets ErrLocked until the first calls Close, and a crashed
//     process can never leave the lock held.
//   - The Maildrop returned is a snapshot taken when it was opened: message
//     numbers, UIDs and sizes never change during its life, and mail
//     delivered meanwhile is only seen by the next OpenMaildrop.
//   - Sizes are exact wire sizes: the number of octets Open returns, which is
//     the message with CRLF line ends, before dot-stuffing, including a final
//     CRLF added when the stored message lacks one. They are known without
//     reading message bodies.
//   - UIDs are unique within a mailbox, stable forever, never reused, and
//     1 to 70 characters in the range 0x21 to 0x7E (RFC 1939 §7).
//   - Bodies are streamed, never loaded whole into memory.
//   - Commit removes the given messages all-or-nothing and durably: after a
//     crash at any instant either every one is gone or none is.
//   - Deliver returns only once the message is durable (for Maildir: the
//     file and its directory fsync'd; for PostgreSQL: the content stored
//     and the metadata transaction committed).
package store

import (
	"context"
	"errors"
	"io"
)

// ErrLocked is returned by OpenMaildrop when another session holds the
// mailbox lock.
var ErrLocked = errors.New("store: mailbox is locked by another session")

// ErrNoMailbox is returned when a mailbox name is not valid for the backend.
var ErrNoMailbox = errors.New("store: no such mailbox")

// ErrMalformed is returned by Deliver when the message cannot be stored as
// it is (for example it is empty or exceeds a backend limit). It is a
// permanent failure: trying again will not help.
var ErrMalformed = errors.New("store: malformed message")

// MessageInfo describes one message of a maildrop snapshot. Protocol
// servers convert it to their own types (internal/pop3backend for POP3).
type MessageInfo struct {
	// UID is unique within the mailbox, stable forever, never reused, and
	// 1 to 70 characters in the range 0x21 to 0x7E (RFC 1939 §7: it
	// serves as the POP3 unique-id as it is).
	UID string
	// Size is the exact wire size in octets: CRLF line ends, before
	// dot-stuffing, ending in CRLF (RFC 1939 §11: the size LIST reports).
	Size int64
}

// Store is a mail storage backend. Mailbox names are canonical user
// addresses ("alice@example.test", domain in lower case) as produced by the
// user database.
type Store interface {
	// Deliver stores one message into the mailbox and returns its UID once
	// the message is durable. msg may use LF or CRLF line ends.
	Deliver(ctx context.Context, mailbox string, msg io.Reader) (uid string, err error)
	// OpenMaildrop locks the mailbox and takes a snapshot of it. A mailbox
	// that has never received mail is opened as empty.
	OpenMaildrop(ctx context.Context, mailbox string) (Maildrop, error)
}

// Maildrop is a locked snapshot of one mailbox. It is used by one goroutine
// at a time.
type Maildrop interface {
	// Messages returns the snapshot, in message-number order (index 0 is
	// POP3 message 1). The caller must not modify the slice.
	Messages() []MessageInfo
	// Open streams message i (0-based) in wire form: CRLF line ends,
	// ending in CRLF, not dot-stuffed, exactly Messages()[i].Size octets.
	Open(ctx context.Context, i int) (io.ReadCloser, error)
	// Commit durably removes the messages with the given 0-based indexes,
	// all or nothing. It may be called at most once.
	Commit(ctx context.Context, deleted []int) error
	// Close releases the lock. It does not remove anything.
	Close() error
}

// UsageReporter is implemented by stores that know a mailbox's usage
// without reading message bodies, for quotas and for listing users.
type UsageReporter interface {
	// Usage returns the number of messages in the mailbox and their total
	// stored size in octets. A mailbox that has never received mail is
	// empty. It is cheap enough to call before every delivery.
	Usage(ctx context.Context, mailbox string) (count int, bytes int64, err error)
}

// PrefixDeliverer is implemented by stores that keep the header lines
// added for one recipient (Return-Path, Delivered-To, Received) apart
// from the content every recipient shares, so that a message for many
// mailboxes is stored once.
type PrefixDeliverer interface {
	// DeliverPrefixed stores prefix followed by body, exactly as Deliver
	// stores their concatenation, and returns its UID once durable.
	DeliverPrefixed(ctx context.Context, mailbox string, prefix []byte, body io.Reader) (uid string, err error)
}

// MailboxRemover is implemented by stores that can delete a mailbox.
type MailboxRemover interface {
	// RemoveMailbox deletes the mailbox and everything in it. It returns
	// ErrLocked while a session holds the mailbox lock.
	RemoveMailbox(ctx context.Context, mailbox string) error
	// RemoveMailboxWith runs before under the mailbox lock and then,
	// only if before succeeded, deletes the mailbox, the lock held
	// throughout: all or nothing. It returns ErrLocked, without running
	// before, while a session holds the lock.
	RemoveMailboxWith(ctx context.Context, mailbox string, before func(context.Context) error) error
}

// DownloadRecorder is implemented by maildrops that keep when each
// message was first downloaded, for the retention of downloaded mail
// (RFC 2449 §6.7, EXPIRE).
type DownloadRecorder interface {
	// RecordDownloads records that the messages at the given 0-based
	// indexes were sent whole to a client whose session ended with QUIT.
	// It is called at most once, after Commit (if any) and before Close;
	// messages Commit removed are ignored. A store may write the record
	// with Close; one lost in a crash only makes those messages' retention
	// start at their next download (kept longer, never removed sooner).
	RecordDownloads(ctx context.Context, indexes []int) error
}
