package pop3

import (
	"errors"
	"strings"
)

// Response codes from RFC 2449 §8 and RFC 3206.
const (
	// CodeInUse: the maildrop is locked by another session (RFC 2449 §8.1.2).
	CodeInUse = "IN-USE"
	// CodeLoginDelay: the user logged in too recently (RFC 2449 §8.1.1).
	CodeLoginDelay = "LOGIN-DELAY"
	// CodeSysTemp: a temporary system problem (RFC 3206 §4).
	CodeSysTemp = "SYS/TEMP"
	// CodeSysPerm: a permanent system problem (RFC 3206 §4).
	CodeSysPerm = "SYS/PERM"
	// CodeAuth: the credentials were refused (RFC 3206 §5).
	CodeAuth = "AUTH"
)

// Error is a POP3 negative response, "-ERR [CODE] Text". The server sends
// it when a Backend returns one; the client returns it for every -ERR it
// receives.
type Error struct {
	// Code is the response code without brackets, or "".
	Code string
	// Text is the human-readable part of the response.
	Text string
}

// Error returns "pop3: " followed by the response code in brackets, if
// any, and the text, for example
// "pop3: [IN-USE] Mailbox is locked by another POP3 session.". On the wire
// the response has "-ERR " in place of "pop3: " (RFC 2449 §8: a response
// code in brackets follows "-ERR ").
func (e *Error) Error() string {
	if e.Code == "" {
		return "pop3: " + e.Text
	}
	return "pop3: [" + e.Code + "] " + e.Text
}

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, ErrInUse) matches any IN-USE response.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code != "" && t.Code == e.Code
}

// line returns the response line, without CRLF.
func (e *Error) line() string {
	if e.Code == "" {
		return "-ERR " + e.Text
	}
	return "-ERR [" + e.Code + "] " + e.Text
}

// Sentinel errors a Backend returns; they match any response with the same
// code under errors.Is.
var (
	// ErrAuthFailed means the user name or password is wrong.
	ErrAuthFailed = &Error{Code: CodeAuth, Text: "Authentication failed."}
	// ErrInUse means another session holds the maildrop lock.
	ErrInUse = &Error{Code: CodeInUse, Text: "Mailbox is locked by another POP3 session."}
	// ErrLoginDelay means the user must wait before logging in again.
	ErrLoginDelay = &Error{Code: CodeLoginDelay, Text: "Logged in too recently, try again later."}
	// ErrTemporary is the answer to an unexpected backend failure.
	ErrTemporary = &Error{Code: CodeSysTemp, Text: "Temporary server failure, try again later."}
)

// parseError turns the text after "-ERR" into an *Error.
func parseError(text string) *Error {
	text = strings.TrimPrefix(text, " ")
	if strings.HasPrefix(text, "[") {
		if i := strings.IndexByte(text, ']'); i > 0 {
			return &Error{Code: text[1:i], Text: strings.TrimPrefix(text[i+1:], " ")}
		}
	}
	return &Error{Text: text}
}

// errorFor maps a backend error onto the response to send.
func errorFor(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return ErrTemporary
}
