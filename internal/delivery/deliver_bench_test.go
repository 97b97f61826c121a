package delivery

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/postino-mail/postino/internal/store/maildir"
)

// benchUsers is a one-user delivery.Users.
type benchUsers map[string]bool

func (u benchUsers) LookupAddress(a string) (string, bool) { return a, u[a] }

// BenchmarkDeliver measures local delivery of a 10 KB message to one
// recipient through the real Maildir store: spool to a temporary file,
// trace headers, write, fsync file and directory, rename.
func BenchmarkDeliver(b *testing.B) {
	b.Run("no-quota", func(b *testing.B) { benchDeliver(b, nil) })
	// With a quota the check reads the store's cached usage: the cost
	// over no-quota is that of the check.
	b.Run("quota", func(b *testing.B) { benchDeliver(b, fixedQuotas{"alice@example.test": {1 << 40, 0}}) })
}

func benchDeliver(b *testing.B, q Quotas) {
	dir := b.TempDir()
	st, err := maildir.New(dir+"/mail", nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	d := &Deliverer{Store: st, Users: benchUsers{"alice@example.test": true}, SpoolDir: b.TempDir(), Quotas: q}
	var m bytes.Buffer
	m.WriteString("From: bench@example.test\r\nTo: alice@example.test\r\nSubject: benchmark\r\n\r\n")
	for i := 0; m.Len() < 10<<10; i++ {
		fmt.Fprintf(&m, "line %d of the benchmark message body, with some text to fill it up\r\n", i)
	}
	msg := m.Bytes()[:10<<10]
	rcpts := []string{"alice@example.test"}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Deliver(context.Background(), "bob@example.test", rcpts, bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}
