package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

const day = 24 * time.Hour

// age moves the downloaded_at or vaulted_at of the message uidl back by d.
func age(t *testing.T, s *Store, column, uidl string, d time.Duration) {
	t.Helper()
	tag, err := s.Pool().Exec(context.Background(), `UPDATE messages SET `+column+` = `+column+` - make_interval(secs => $2)
		WHERE pop3_uidl = $1 AND `+column+` IS NOT NULL`, uidl, d.Seconds())
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("ageing %s of %s: %v, %d rows", column, uidl, err, tag.RowsAffected())
	}
}

// uidls returns the UIDLs a POP3 session of the mailbox would see.
func uidls(t *testing.T, s *Store, box string) []string {
	t.Helper()
	md, err := s.OpenMaildrop(context.Background(), box)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	var out []string
	for _, m := range md.Messages() {
		out = append(out, m.UID)
	}
	return out
}

// session opens the mailbox, downloads (records) the messages at dl,
// deletes those at del and quits, as a POP3 session would.
func session(t *testing.T, s *Store, box string, dl, del []int) {
	t.Helper()
	ctx := context.Background()
	md, err := s.OpenMaildrop(ctx, box)
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	if err := md.Commit(ctx, del); err != nil {
		t.Fatal(err)
	}
	if err := md.(store.DownloadRecorder).RecordDownloads(ctx, dl); err != nil {
		t.Fatal(err)
	}
}

// TestRetentionAndVault: pop3.expire and the vault on PostgreSQL, with
// the Maildir store's semantics, across two nodes: downloaded mail
// expires from its first download, deleted mail goes into the vault
// (invisible to POP3 and the quota), is listed and restored with its
// UIDL by another node, and is purged when old enough.
func TestRetentionAndVault(t *testing.T) {
	ctx := context.Background()
	dsn := pgtest.NewDB(t)
	a := node(t, dsn, Options{NodeID: "a"})
	b := node(t, dsn, Options{NodeID: "b"})
	const box = "alice@example.test"
	var ids []string
	for i := range 4 {
		uid, err := a.Deliver(ctx, box, strings.NewReader(fmt.Sprintf("From: x%d@example.net\nSubject: s%d\n\nbody %d\n", i, i, i)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, uid)
	}
	// Messages 0 and 1 downloaded; 0 again later (the first download
	// counts).
	session(t, a, box, []int{0, 1}, nil)
	age(t, a, "downloaded_at", ids[0], 10*day)
	session(t, b, box, []int{0}, nil)
	policy := maildir.SweepPolicy{Expire: 5 * day}
	res, err := b.Sweep(ctx, box, policy)
	if err != nil || res.Expired != 1 || res.Vaulted != 0 {
		t.Fatalf("sweep: %+v, %v; want 1 expired, none vaulted", res, err)
	}
	if got := uidls(t, a, box); strings.Join(got, " ") != strings.Join(ids[1:], " ") {
		t.Fatalf("after the sweep %v, want %v", got, ids[1:])
	}
	// With the vault on, expired and deleted mail goes there.
	a.SetVault(true)
	b.SetVault(true)
	age(t, a, "downloaded_at", ids[1], 10*day)
	if res, err := a.Sweep(ctx, box, policy); err != nil || res.Expired != 1 || res.Vaulted != 1 {
		t.Fatalf("sweep into the vault: %+v, %v", res, err)
	}
	session(t, b, box, nil, []int{0}) // deletes ids[2]
	if got := uidls(t, a, box); strings.Join(got, " ") != ids[3] {
		t.Fatalf("after vaulting %v, want [%s]", got, ids[3])
	}
	if n, _, err := a.Usage(ctx, box); err != nil || n != 1 {
		t.Fatalf("usage counts %d messages (%v), want 1: the vault is not counted", n, err)
	}
	list, err := b.VaultList(ctx, box)
	if err != nil || len(list) != 2 || list[0].UID != ids[1] || list[1].UID != ids[2] || list[0].Subject != "s1" || list[1].From != "x2@example.net" {
		t.Fatalf("vault list: %+v, %v", list, err)
	}
	// A UIDL not in the vault restores nothing.
	if _, err := b.VaultRestore(ctx, box, []string{ids[1], "nope"}, false); !errors.Is(err, maildir.ErrNotInVault) {
		t.Fatalf("restore of an unknown UIDL: %v, want ErrNotInVault", err)
	}
	// Not while a session holds the mailbox.
	md, err := a.OpenMaildrop(ctx, box)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.VaultRestore(ctx, box, []string{ids[1]}, false); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("restore during a session: %v, want ErrLocked", err)
	}
	if _, err := b.Sweep(ctx, box, maildir.SweepPolicy{Expire: 0, VaultKeep: time.Nanosecond}); !errors.Is(err, store.ErrLocked) {
		t.Fatalf("sweep during a session: %v, want ErrLocked", err)
	}
	md.Close()
	done, err := b.VaultRestore(ctx, box, []string{ids[1]}, false)
	if err != nil || len(done) != 1 || done[0].UID != ids[1] {
		t.Fatalf("restore: %+v, %v", done, err)
	}
	if got := uidls(t, a, box); strings.Join(got, " ") != ids[1]+" "+ids[3] {
		t.Fatalf("after the restore %v, want [%s %s] (the old UIDL again)", got, ids[1], ids[3])
	}
	// The restored message is new again: not expired by its old download.
	if res, err := a.Sweep(ctx, box, policy); err != nil || res.Expired != 0 {
		t.Fatalf("sweep after the restore: %+v, %v", res, err)
	}
	// The vault keeps entries for VaultKeep.
	age(t, a, "vaulted_at", ids[2], 40*day)
	res, err = a.Sweep(ctx, box, maildir.SweepPolicy{Expire: -1, VaultKeep: 30 * day})
	if err != nil || res.Purged != 1 {
		t.Fatalf("purge: %+v, %v; want 1 purged", res, err)
	}
	if list, err := a.VaultList(ctx, box); err != nil || len(list) != 0 {
		t.Fatalf("vault after the purge: %+v, %v", list, err)
	}
	// A mailbox that never received mail is left alone.
	if res, err := a.Sweep(ctx, "nobody@example.test", policy); err != nil || res != (maildir.SweepResult{}) {
		t.Fatalf("sweep of an empty mailbox: %+v, %v", res, err)
	}
}

// TestReleaseWhenDownloadRecordFails: the record of a session's downloads
// goes with the lock's release, in one transaction; when it fails, the
// lock is still released (on its own), not left until it expires.
func TestReleaseWhenDownloadRecordFails(t *testing.T) {
	s := node(t, pgtest.NewDB(t), Options{})
	ctx := context.Background()
	deliver(t, s, alice, "one\n")
	if _, err := s.Pool().Exec(ctx, `CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql;
		CREATE TRIGGER refuse BEFORE UPDATE OF downloaded_at ON messages FOR EACH ROW EXECUTE FUNCTION refuse()`); err != nil {
		t.Fatal(err)
	}
	md, err := s.OpenMaildrop(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	readMsg(t, md, 0)
	if err := md.(*Maildrop).RecordDownloads(ctx, []int{0}); err != nil {
		t.Fatal(err)
	}
	if err := md.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	md, err = s.OpenMaildrop(ctx, alice)
	if err != nil {
		t.Fatalf("mailbox still locked after the release: %v", err)
	}
	md.Close()
}
