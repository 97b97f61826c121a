package mailauth

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/inbound"
)

// mapResolver answers TXT queries from a map; anything else does not
// exist. It keeps DNS out of the benchmark.
type mapResolver map[string][]string

func (m mapResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := m[strings.TrimSuffix(name, ".")]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (m mapResolver) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (m mapResolver) LookupIPAddr(_ context.Context, name string) ([]net.IPAddr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (m mapResolver) LookupAddr(_ context.Context, name string) ([]string, error) {
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// BenchmarkTransaction: one MX transaction through the check — SPF,
// DKIM verification of two signatures (ed25519 and RSA-2048) over a
// 100 KB message, DMARC, and the removal of a forged
// Authentication-Results field — with DNS answered from memory.
func BenchmarkTransaction(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "dkim")
	res := mapResolver{
		"pass.test":        {"v=spf1 ip4:127.0.0.1 -all"},
		"_dmarc.pass.test": {"v=DMARC1; p=reject"},
	}
	for _, algo := range []string{dkim.AlgoEd25519, dkim.AlgoRSA} {
		r, err := dkim.Keygen(dir, "pass.test", algo, algo)
		if err != nil {
			b.Fatal(err)
		}
		res[r.Name] = []string{r.Value}
	}
	body := strings.Repeat(strings.Repeat("x", 78)+"\r\n", 100_000/80)
	raw := "From: alice@pass.test\r\nTo: bob@example.test\r\nSubject: bench\r\n" +
		"Authentication-Results: mx.postino.test; dmarc=pass header.from=bank.test\r\n\r\n" + body
	sig, err := dkim.NewSigner(dir).Sign(context.Background(), "pass.test", strings.NewReader(raw))
	if err != nil {
		b.Fatal(err)
	}
	msg := bmsg(sig + raw)
	c := New(Options{Resolver: res, AuthservID: "mx.postino.test", DMARC: true, Timeout: 10 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	conn := &inbound.Conn{ID: "s", Remote: netip.MustParseAddr("127.0.0.1"), Helo: "mail.pass.test"}
	ctx := context.Background()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		s := c.Begin(ctx, conn, &inbound.Verdict{})
		s.(inbound.MailStage).Mail(ctx, "alice@pass.test", &inbound.Verdict{})
		v := &inbound.Verdict{}
		repl, err := s.(inbound.DataStage).Data(ctx, &inbound.Envelope{ID: "t", From: "alice@pass.test"}, msg, v)
		if err != nil || repl == nil || !strings.Contains(v.Headers(), "dkim=pass header.d=pass.test header.s=rsa") {
			b.Fatalf("%v %v %q", repl, err, v.Headers())
		}
		io.Copy(io.Discard, repl.Reader())
		s.(inbound.Ender).End()
	}
}
