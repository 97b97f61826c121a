package pop3

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
)

// MessageInfo describes one message of a maildrop snapshot as the server
// reports it in LIST, STAT and UIDL.
type MessageInfo struct {
	// UID is the unique-id listed by UIDL: 1 to 70 characters in the range
	// 0x21 to 0x7E, unique within the maildrop and never reused (RFC 1939 §7).
	UID string
	// Size is the exact size of the message in octets as RETR sends it:
	// CRLF line ends, before dot-stuffing, ending in CRLF.
	Size int64
}

// ConnInfo describes the client connection a backend call is made for.
type ConnInfo struct {
	// RemoteAddr and LocalAddr are the connection's addresses.
	RemoteAddr, LocalAddr net.Addr
	// TLS is the connection's TLS state, or nil on a cleartext connection.
	TLS *tls.ConnectionState
}

// Backend is what the POP3 server needs from the rest of the mail system:
// a way to check credentials and a way to open a user's maildrop.
//
// Errors returned by Backend methods decide the reply: ErrAuthFailed (or
// any error wrapping it) is answered with "-ERR [AUTH]", ErrInUse with
// "-ERR [IN-USE]", an *Error with its own code and text, and anything else
// with "-ERR [SYS/TEMP]" (the error itself is logged, never sent).
type Backend interface {
	// Authenticate checks a user name and password and returns the name of
	// the user's maildrop.
	Authenticate(ctx context.Context, conn *ConnInfo, username, password string) (user string, err error)
	// OpenMaildrop takes the exclusive lock on the user's maildrop and a
	// snapshot of its messages (RFC 1939 §4). If another session holds the
	// lock it returns ErrInUse.
	OpenMaildrop(ctx context.Context, conn *ConnInfo, user string) (Maildrop, error)
}

// Maildrop is a locked snapshot of a user's mailbox, used by one session.
type Maildrop interface {
	// Messages returns the snapshot; index 0 is message number 1.
	Messages() []MessageInfo
	// Open streams message i (0-based) in wire form: CRLF line ends,
	// ending in CRLF, not dot-stuffed, exactly Messages()[i].Size octets.
	Open(ctx context.Context, i int) (io.ReadCloser, error)
	// Commit durably removes the messages at the given 0-based indexes,
	// all or nothing. It is called at most once, in the UPDATE state.
	Commit(ctx context.Context, deleted []int) error
	// Close releases the lock without removing anything.
	Close() error
}

// FileMessage is an optional interface of the io.ReadCloser that
// Maildrop.Open returns, for a message whose octets are mostly a file
// already in wire form: on a cleartext connection the server then sends
// RETR's response with sendfile(2), the file's octets never passing
// through the process.
type FileMessage interface {
	// MessageFile returns the message as head followed by the whole of f
	// (from its current offset, which is its start), and ok true when f
	// holds exactly Size - len(head) octets, none of its lines starts
	// with "." (RFC 1939 §3: such a line would need dot-stuffing), and
	// head is empty or ends in CRLF. It is called before any Read; with
	// ok false, the message is read with Read as usual.
	MessageFile() (head []byte, f *os.File, ok bool)
}

// UpdateNotifier is an optional interface of a Maildrop. When a session
// ends with QUIT in the TRANSACTION state, the server calls Updated once
// its deletions are committed (or when there are none), before Close,
// with the 0-based indexes of the messages it sent whole (RETR, or TOP
// with at least as many lines as the body has) and did not delete: the
// backend can record them as downloaded, for EXPIRE (RFC 2449 §6.7). An
// error is logged; the client still gets +OK, since the deletions were
// made.
type UpdateNotifier interface {
	Updated(ctx context.Context, retrieved []int) error
}

// ExpirePolicy is an optional interface of a Backend whose EXPIRE value
// (RFC 2449 §6.7) varies by user: CAPA then shows "EXPIRE <Server.Expire>
// USER" before login and the user's own value after it.
type ExpirePolicy interface {
	// UserExpire returns the EXPIRE argument of the logged-in user
	// ("NEVER" or a number of days), or "" for Server.Expire.
	UserExpire(ctx context.Context, user string) string
}
