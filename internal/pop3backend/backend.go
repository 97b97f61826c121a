// Package pop3backend serves the public pop3 package from postino's
// parts: POP3Backend checks logins against the user database (behind the
// brute-force guard), opens maildrops in a mail store and converts the
// store's snapshot into the POP3 package's types.
package pop3backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/metrics"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/pop3"
)

// POP3Backend implements pop3.Backend over an auth.DB and a store.Store.
type POP3Backend struct {
	Users  *auth.DB
	Store  store.Store
	Logger *slog.Logger
	// Guard delays and refuses password guessing; nil disables it.
	Guard *authguard.Guard
	// LoginDelay, when positive, refuses a login by a user who logged in
	// less than this long ago (RFC 2449 §6.8, LOGIN-DELAY).
	LoginDelay time.Duration
	// Metrics counts logins and failed commits; nil: none.
	Metrics *metrics.Metrics

	mu        sync.Mutex
	lastLogin map[string]time.Time
}

// Authenticate checks the credentials against the user database. The
// brute-force guard is applied around it by the POP3 server, through
// LoginGuard, for every mechanism alike.
func (b *POP3Backend) Authenticate(ctx context.Context, ci *pop3.ConnInfo, username, password string) (string, error) {
	user, err := b.Users.Authenticate(ctx, username, password)
	switch {
	case err == nil:
		return user, nil
	case errors.Is(err, auth.ErrInvalidCredentials):
		// The cause (unknown user, wrong password) reaches the log; the
		// client gets ErrAuthFailed's response whatever it is.
		return "", fmt.Errorf("%w (%s)", pop3.ErrAuthFailed, auth.FailureReason(err))
	case errors.Is(err, auth.ErrMalformedHash), errors.Is(err, auth.ErrUnknownScheme):
		// The user cannot log in until an administrator fixes the entry;
		// the client only learns that the login failed.
		if b.Logger != nil {
			b.Logger.Error("unusable password hash", "user", username, "err", err)
		}
		return "", fmt.Errorf("%w (unusable password hash)", pop3.ErrAuthFailed)
	}
	return "", fmt.Errorf("authenticating %s: %w", username, err)
}

// LoginAllowed refuses every login from an address the Guard has blocked,
// or that has as many logins in progress as it has failures left,
// whatever the mechanism; otherwise it begins an attempt (pop3.LoginGuard).
func (b *POP3Backend) LoginAllowed(ctx context.Context, ci *pop3.ConnInfo) error {
	if b.Guard == nil {
		return nil
	}
	if ok, _ := b.Guard.Begin(ci.RemoteAddr); !ok {
		// The POP3 session logs the refusal (one line, at Warn).
		b.Metrics.Login("pop3", metrics.ResultBlocked)
		return errBlocked
	}
	return nil
}

// LoginFailed ends the attempt as a failure and holds the answer back as
// long as the Guard says (pop3.LoginGuard). Unknown users and wrong
// passwords wait alike.
func (b *POP3Backend) LoginFailed(ctx context.Context, ci *pop3.ConnInfo, username string) {
	b.Metrics.Login("pop3", metrics.ResultFailed)
	if b.Guard != nil {
		authguard.Wait(ctx, b.Guard.EndFailure(ci.RemoteAddr, username))
	}
}

// LoginSucceeded ends the attempt and forgets the account's failures
// (pop3.LoginGuard).
func (b *POP3Backend) LoginSucceeded(ctx context.Context, ci *pop3.ConnInfo, user string) {
	b.Metrics.Login("pop3", metrics.ResultOK)
	if b.Guard != nil {
		b.Guard.EndSuccess(ci.RemoteAddr, user)
	}
}

// LoginAbandoned ends the attempt without counting it (pop3.LoginGuard).
func (b *POP3Backend) LoginAbandoned(ctx context.Context, ci *pop3.ConnInfo) {
	if b.Guard != nil {
		b.Guard.Abandon(ci.RemoteAddr)
	}
}

var _ pop3.LoginGuard = (*POP3Backend)(nil)

// errBlocked answers a login from an address that failed too often
// (RFC 2449 §8.1.1 LOGIN-DELAY: try again later).
var errBlocked = &pop3.Error{Code: pop3.CodeLoginDelay, Text: "Too many failed logins from your address, try again later."}

// OpenMaildrop locks and opens the user's mailbox.
func (b *POP3Backend) OpenMaildrop(ctx context.Context, ci *pop3.ConnInfo, user string) (pop3.Maildrop, error) {
	if b.LoginDelay > 0 {
		b.mu.Lock()
		last, ok := b.lastLogin[user]
		now := time.Now()
		if ok && now.Sub(last) < b.LoginDelay {
			b.mu.Unlock()
			return nil, pop3.ErrLoginDelay
		}
		if b.lastLogin == nil {
			b.lastLogin = make(map[string]time.Time)
		}
		for u, t := range b.lastLogin {
			if now.Sub(t) >= b.LoginDelay {
				delete(b.lastLogin, u)
			}
		}
		b.lastLogin[user] = now
		b.mu.Unlock()
	}
	md, err := b.Store.OpenMaildrop(ctx, user)
	if errors.Is(err, store.ErrLocked) {
		// RFC 2449 §8.1.2: another session holds the maildrop.
		return nil, pop3.ErrInUse
	}
	if err != nil {
		return nil, err
	}
	drop := NewMaildrop(md).(*maildrop)
	drop.metrics = b.Metrics
	return drop, nil
}

// maildrop is a store.Maildrop seen as a pop3.Maildrop: the snapshot's
// message list converted once, at open, to the POP3 package's type; the
// rest is the store's own.
type maildrop struct {
	store.Maildrop
	msgs    []pop3.MessageInfo
	metrics *metrics.Metrics
}

// Commit passes the deletions to the store, counting a failure.
func (m *maildrop) Commit(ctx context.Context, deleted []int) error {
	err := m.Maildrop.Commit(ctx, deleted)
	if err != nil {
		m.metrics.StorageError("commit")
	} else if v, ok := m.Maildrop.(interface{ Vaulted() int }); ok {
		m.metrics.Vaulted(v.Vaulted())
	}
	return err
}

// Updated records the messages the session downloaded when the store
// keeps such a record (pop3.UpdateNotifier; store.DownloadRecorder).
func (m *maildrop) Updated(ctx context.Context, retrieved []int) error {
	r, ok := m.Maildrop.(store.DownloadRecorder)
	if !ok {
		return nil
	}
	return r.RecordDownloads(ctx, retrieved)
}

var _ pop3.UpdateNotifier = (*maildrop)(nil)

// NewMaildrop returns md as a pop3.Maildrop: Messages converted once to
// the POP3 package's type, the rest passed through.
func NewMaildrop(md store.Maildrop) pop3.Maildrop {
	infos := md.Messages()
	msgs := make([]pop3.MessageInfo, len(infos))
	for i, m := range infos {
		msgs[i] = pop3.MessageInfo{UID: m.UID, Size: m.Size}
	}
	return &maildrop{Maildrop: md, msgs: msgs}
}

// Messages returns the snapshot in message-number order.
func (m *maildrop) Messages() []pop3.MessageInfo { return m.msgs }

// Done passes on the store's signal that the maildrop's lock was lost
// (pop3.Revocable); nil, never closed, for stores whose locks cannot be.
func (m *maildrop) Done() <-chan struct{} {
	if r, ok := m.Maildrop.(pop3.Revocable); ok {
		return r.Done()
	}
	return nil
}

var _ pop3.Revocable = (*maildrop)(nil)

// SCRAMCredentials returns the SCRAM-SHA-256 secrets of a user whose
// stored password is a {SCRAM-SHA-256} one (pop3.SCRAMBackend).
func (b *POP3Backend) SCRAMCredentials(ctx context.Context, ci *pop3.ConnInfo, username string) (string, pop3.SCRAMCredentials, error) {
	// The current entry, not one read within the last second: a
	// password changed on another node must not log in.
	u, err := b.Users.LookupLogin(ctx, username)
	if errors.Is(err, auth.ErrInvalidCredentials) {
		return "", pop3.SCRAMCredentials{}, pop3.ErrAuthFailed
	}
	if err != nil {
		return "", pop3.SCRAMCredentials{}, fmt.Errorf("looking up %s: %w", username, err)
	}
	iter, salt, storedKey, serverKey, ok := auth.SCRAMCredentials(u.Hash)
	if !ok {
		return "", pop3.SCRAMCredentials{}, pop3.ErrAuthFailed
	}
	return u.Address, pop3.SCRAMCredentials{Iterations: iter, Salt: salt, StoredKey: storedKey, ServerKey: serverKey}, nil
}

// UserExpire returns the user's own retention from the userdb_pop3_expire
// extra field, as CAPA shows it (pop3.ExpirePolicy), or "" when the user
// has none. A value that cannot be parsed shows NEVER: the retention
// sweep keeps that user's mail.
func (b *POP3Backend) UserExpire(ctx context.Context, user string) string {
	u, ok := b.Users.Lookup(user)
	if !ok {
		return ""
	}
	days, ok, err := u.Expire()
	switch {
	case err != nil:
		return "NEVER" // the sweep keeps this user's mail
	case !ok:
		return ""
	case days < 0:
		return "NEVER"
	}
	return strconv.Itoa(days)
}

var _ pop3.ExpirePolicy = (*POP3Backend)(nil)
