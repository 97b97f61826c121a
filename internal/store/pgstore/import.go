package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/postino-mail/postino/internal/store"
)

// Import stores msg into the mailbox with the UIDL it had elsewhere (a
// Maildir's, or Dovecot's), so that POP3 clients that leave mail on the
// server download nothing again. The UIDL must be 1 to 70 characters in
// 0x21 to 0x7E and never used in the mailbox before (ErrUIDLUsed). A zero
// date means now.
func (s *Store) Import(ctx context.Context, mailbox, uidl string, date time.Time, msg io.Reader) error {
	if err := checkMailbox(mailbox); err != nil {
		return err
	}
	// RFC 1939 §7: the unique-id's alphabet and length.
	if len(uidl) < 1 || len(uidl) > 70 {
		return fmt.Errorf("pgstore: import: UIDL of %d characters (1 to 70)", len(uidl))
	}
	for i := 0; i < len(uidl); i++ {
		if uidl[i] < 0x21 || uidl[i] > 0x7e {
			return fmt.Errorf("pgstore: import: UIDL %q has a character outside 0x21-0x7E", uidl)
		}
	}
	sp, err := spool(s.spool, msg)
	if err != nil {
		return err
	}
	defer sp.close()
	for attempt := 1; ; attempt++ {
		_, err := s.deliverSpooled(ctx, mailbox, nil, sp, meta{uidl: uidl, date: date})
		if !errors.Is(err, errBlobCollected) || attempt == maxDeliverAttempts {
			return err
		}
	}
}

// ImportMaildrop copies every message of an open maildrop of another
// store (a Maildir moved from Dovecot, say) into the mailbox, each with
// its UIDL, in order, and returns how many it copied. Messages whose UIDL
// the mailbox already has are skipped, so an interrupted import can be
// run again. The source is left as it is.
func (s *Store) ImportMaildrop(ctx context.Context, mailbox string, src store.Maildrop) (int, error) {
	n := 0
	for i, m := range src.Messages() {
		rc, err := src.Open(ctx, i)
		if err != nil {
			return n, fmt.Errorf("pgstore: import of %s, message %d: %w", mailbox, i+1, err)
		}
		err = s.Import(ctx, mailbox, m.UID, time.Time{}, rc)
		rc.Close()
		if errors.Is(err, ErrUIDLUsed) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("pgstore: import of %s, message %d: %w", mailbox, i+1, err)
		}
		n++
	}
	return n, nil
}
