package pgstore

import (
	"context"
	"time"
)

// defaultOutcomeWait bounds how long a delivery whose COMMIT got no
// answer keeps asking the database whether it committed: long enough for
// a restart or a failover to a standby, well within the SMTP client's
// wait for the reply to the end of DATA (RFC 5321 §4.5.3.2.6: 10 minutes).
const defaultOutcomeWait = 30 * time.Second

// committed reports whether the message a delivery inserted before its
// COMMIT failed is in the database: the mailbox's row with that UIDL
// (never given to another message, RFC 1939 §7), blob key and trace
// prefix (which holds the delivery's unique id). It asks again, on a new
// connection if need be, until the database answers or outcomeWait has
// passed.
func (s *Store) committed(ctx context.Context, mbID int64, uidl, key string, prefix []byte) (bool, error) {
	wait := s.outcomeWait
	if wait == 0 {
		wait = defaultOutcomeWait
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		var ok bool
		qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.pool.QueryRow(qctx, `SELECT EXISTS (SELECT 1 FROM messages
			WHERE mailbox_id = $1 AND pop3_uidl = $2 AND blob_key = $3 AND prefix = $4)`, mbID, uidl, key, prefix).Scan(&ok)
		qcancel()
		if err == nil {
			return ok, nil
		}
		select {
		case <-ctx.Done():
			return false, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}
