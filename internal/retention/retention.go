// Package retention applies pop3.expire and pop3.vault_days to every
// mailbox: a Sweeper visits each user of the user database and asks the
// mail store to remove the messages downloaded long enough ago (RFC 2449
// §6.7, EXPIRE) and the deleted-mail vault entries older than the vault
// keeps them. The store does the work under the maildrop lock, through
// the same all-or-nothing commit a POP3 QUIT uses; a mailbox in use by a
// session is skipped and visited again at the next sweep.
package retention

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/metrics"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
)

// Day is the unit of pop3.expire, userdb_pop3_expire and pop3.vault_days.
const Day = 24 * time.Hour

// Store is what a sweep needs from the mail store (*maildir.Store).
type Store interface {
	// Sweep applies the policy to one mailbox; store.ErrLocked while a
	// session holds it.
	Sweep(ctx context.Context, mailbox string, p maildir.SweepPolicy) (maildir.SweepResult, error)
}

// Users lists the mailboxes to visit (*auth.DB).
type Users interface {
	List() ([]auth.User, error)
}

// Sweeper sweeps every mailbox once per call to Sweep.
type Sweeper struct {
	Store Store
	Users Users
	// ExpireDays is pop3.expire in days; negative: never. A user's
	// userdb_pop3_expire extra field overrides it.
	ExpireDays int
	// VaultDays is pop3.vault_days; 0: the vault is not purged.
	VaultDays int
	// Logger receives a line per mailbox changed or failed (nil: none).
	Logger *slog.Logger
	// Metrics counts what the sweep did (nil: nothing).
	Metrics *metrics.Metrics
}

// Totals is what one sweep did.
type Totals struct {
	// Mailboxes visited, Locked (skipped) and Failed.
	Mailboxes, Locked, Failed int
	// Expired messages and Purged vault entries.
	Expired, Purged int
}

// Policy returns the policy of the user: their own retention or the
// default, and the vault's. A malformed userdb_pop3_expire keeps the
// user's mail (never removed early) and is logged.
func (s *Sweeper) Policy(u auth.User) maildir.SweepPolicy {
	days := s.ExpireDays
	if d, ok, err := u.Expire(); err != nil {
		s.logger().Warn("retention: ignoring the user's mail until userdb_pop3_expire is fixed", "user", u.Address, "err", err)
		days = -1
	} else if ok {
		days = d
	}
	p := maildir.SweepPolicy{Expire: -1}
	if days >= 0 {
		p.Expire = time.Duration(days) * Day
	}
	if s.VaultDays > 0 {
		p.VaultKeep = time.Duration(s.VaultDays) * Day
	}
	return p
}

func (s *Sweeper) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Sweep visits every user's mailbox once. It stops early only when ctx
// ends; the error joins nothing else (failures are counted and logged).
func (s *Sweeper) Sweep(ctx context.Context) (Totals, error) {
	var t Totals
	users, err := s.Users.List()
	if err != nil {
		return t, err
	}
	for _, u := range users {
		if err := ctx.Err(); err != nil {
			return t, err
		}
		p := s.Policy(u)
		if p.Expire < 0 && p.VaultKeep <= 0 {
			continue // nothing to do: the mailbox is not even locked
		}
		t.Mailboxes++
		res, err := s.Store.Sweep(ctx, u.Address, p)
		t.Expired += res.Expired
		t.Purged += res.Purged
		s.Metrics.Expired(res.Expired)
		s.Metrics.VaultPurged(res.Purged)
		s.Metrics.Vaulted(res.Vaulted)
		switch {
		case errors.Is(err, store.ErrLocked):
			t.Locked++
			s.Metrics.Sweep("locked")
			s.logger().Debug("retention: mailbox in use, visited at the next sweep", "user", u.Address)
			continue
		case err != nil:
			t.Failed++
			s.Metrics.Sweep(metrics.ResultError)
			s.Metrics.StorageError("retention")
			s.logger().Error("retention: sweep failed", "user", u.Address, "err", err)
			continue
		}
		s.Metrics.Sweep(metrics.ResultOK)
		if res.Expired > 0 || res.Purged > 0 {
			s.logger().Info("retention: swept", "user", u.Address, "expired", res.Expired, "vault_purged", res.Purged)
		}
	}
	return t, nil
}

// Run sweeps at once and then every interval until ctx ends, building
// each sweep with next (so that a reload applies to the next sweep).
func Run(ctx context.Context, interval func() time.Duration, next func() *Sweeper) {
	for {
		sw := next()
		if _, err := sw.Sweep(ctx); err != nil && ctx.Err() == nil {
			sw.logger().Error("retention: sweep failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval()):
		}
	}
}
