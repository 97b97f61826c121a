package delivery

import (
	"context"
	"errors"
	"strings"
	"testing"
)

type fixedQuotas map[string][2]int64

func (f fixedQuotas) MailboxQuota(mb string) (int64, int64) { q := f[mb]; return q[0], q[1] }

// TestQuotaSpooled checks that a copy that would not fit is refused with
// ErrOverQuota (and the other recipient still served), through the spool.
func TestQuotaSpooled(t *testing.T) {
	d, st := newDeliverer(t)
	ctx := context.Background()
	d.Quotas = fixedQuotas{"alice@example.test": {200, 0}, "bob@example.test": {0, 2}}
	msg := "Subject: q\n\n" + strings.Repeat("x", 80) + "\n" // about 150 octets with the trace headers
	if _, err := d.Deliver(ctx, "s@remote.test", []string{"alice@example.test"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("first message: %v", err)
	}
	res, err := d.Deliver(ctx, "s@remote.test", []string{"alice@example.test", "bob@example.test"}, strings.NewReader(msg))
	if !errors.Is(err, ErrOverQuota) || !errors.Is(res[0].Err, ErrOverQuota) || res[1].Err != nil {
		t.Fatalf("second message: err %v, results %+v", err, res)
	}
	if n := len(mailbox(t, st, "alice@example.test")); n != 1 {
		t.Fatalf("alice has %d messages, want 1", n)
	}
	// A message-count limit.
	if _, err := d.Deliver(ctx, "", []string{"bob@example.test"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Deliver(ctx, "", []string{"bob@example.test"}, strings.NewReader(msg)); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("third message for bob: %v", err)
	}
	if err := d.CheckQuota(ctx, "bob@example.test", 1); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("CheckQuota(bob) = %v", err)
	}
	// Freeing space (a POP3 DELE and QUIT) makes room again.
	md, err := st.OpenMaildrop(ctx, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := md.Commit(ctx, []int{0}); err != nil {
		t.Fatal(err)
	}
	md.Close()
	if _, err := d.Deliver(ctx, "", []string{"alice@example.test"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("after freeing space: %v", err)
	}
}

// TestQuotaStream checks DeliverStream: a full mailbox is refused before
// reading, a message outgrowing the room left is refused while streaming
// and leaves nothing behind.
func TestQuotaStream(t *testing.T) {
	d, st := newDeliverer(t)
	ctx := context.Background()
	d.MaxSize = 0
	d.Quotas = fixedQuotas{"alice@example.test": {500, 0}}
	big := "Subject: big\r\n\r\n" + strings.Repeat("y", 600) + "\r\n"
	if _, err := d.DeliverStream(ctx, "", "alice@example.test", "alice@example.test", strings.NewReader(big), ""); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("too big for the quota: %v", err)
	}
	if n := len(mailbox(t, st, "alice@example.test")); n != 0 {
		t.Fatalf("alice has %d messages after a refused one", n)
	}
	small := "Subject: s\r\n\r\n" + strings.Repeat("z", 400) + "\r\n"
	if _, err := d.DeliverStream(ctx, "", "alice@example.test", "alice@example.test", strings.NewReader(small), ""); err != nil {
		t.Fatalf("fits: %v", err)
	}
	// Full now: refused before reading (a reader that fails would
	// otherwise give its own error).
	_, used, err := st.Usage(ctx, "alice@example.test")
	if err != nil {
		t.Fatal(err)
	}
	d.Quotas = fixedQuotas{"alice@example.test": {used, 0}}
	if _, err := d.DeliverStream(ctx, "", "alice@example.test", "alice@example.test", &brokenReader{}, ""); !errors.Is(err, ErrOverQuota) {
		t.Fatalf("full mailbox: %v", err)
	}
	d.Quotas = nil
	if _, err := d.DeliverStream(ctx, "", "alice@example.test", "alice@example.test", strings.NewReader(big), ""); err != nil {
		t.Fatalf("without quotas: %v", err)
	}
}
