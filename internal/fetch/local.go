package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/store"
)

// Local delivers into a local postino mailbox through local delivery
// (which adds Return-Path and Delivered-To and fsyncs the message and its
// directory before returning). Find opens the mailbox the way a POP3
// session does (it fails with the lock held by a POP3 client, and the
// fetch is then retried later) and looks for the marker header, newest
// message first; a stored message is always complete, since the store
// renames it into place atomically.
type Local struct {
	Deliverer *delivery.Deliverer
	Store     store.Store
	// Address is the recipient, as given; Mailbox the resolved mailbox.
	Address, Mailbox string
}

// NewLocal resolves address to a mailbox of d, with d's Resolver (as
// SMTP resolves a recipient: users, aliases, plus-addresses, catch-alls,
// postmaster). The address must lead to exactly one local mailbox, since
// Find looks for what was delivered in that mailbox.
func NewLocal(d *delivery.Deliverer, st store.Store, address string) (*Local, error) {
	if d.Resolver == nil {
		mb, err := d.Resolve(address)
		if err != nil {
			return nil, err
		}
		return &Local{Deliverer: d, Store: st, Address: address, Mailbox: mb}, nil
	}
	res, ok := d.Resolver.Resolve(address, d.Logger)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: %s", delivery.ErrUnknownUser, address)
	case len(res.Remote) > 0 || len(res.Local) != 1:
		return nil, fmt.Errorf("%w: local:%s must lead to exactly one local mailbox (it leads to %d, and to %d remote addresses)", ErrDestination, address, len(res.Local), len(res.Remote))
	}
	return &Local{Deliverer: d, Store: st, Address: address, Mailbox: res.Local[0].Mailbox}, nil
}

func (l *Local) String() string { return "local:" + l.Address }

// Deliver implements Destination.
func (l *Local) Deliver(ctx context.Context, m *Message) (string, error) {
	sp, err := l.Deliverer.Spool(ctx, m.Open())
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrDestination, err)
	}
	defer sp.Close()
	debugPoint("deliver-partial")
	uid, err := l.Deliverer.DeliverSpooled(ctx, m.ReturnPath(), l.Address, l.Mailbox, sp, m.Marker()+"\r\n")
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrDestination, err)
	}
	return "uid " + uid, nil
}

// Find implements Destination.
func (l *Local) Find(ctx context.Context, w Want) (FindResult, string, error) {
	md, err := l.Store.OpenMaildrop(ctx, l.Mailbox)
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return NotFound, "", fmt.Errorf("%w: mailbox %s is in use by a POP3 session; try again later", ErrDestination, l.Mailbox)
		}
		return NotFound, "", fmt.Errorf("%w: %v", ErrDestination, err)
	}
	defer md.Close()
	msgs := md.Messages()
	marker := w.Marker()
	for i := len(msgs) - 1; i >= 0; i-- {
		rc, err := md.Open(ctx, i)
		if err != nil {
			continue // removed meanwhile
		}
		found := headerHasMarker(io.LimitReader(rc, 1<<20), marker)
		rc.Close()
		if found {
			return Found, "uid " + msgs[i].UID, nil
		}
	}
	return NotFound, "", nil
}
