package queue

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/srs"
)

// TestDKIMSignedDelivery: mail from a local domain leaves signed with both
// keys, and the copy the remote server received verifies.
func TestDKIMSignedDelivery(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "dkim")
	recs, err := dkim.KeygenAll(keys, localDomain)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *Options) { o.Signer = dkim.NewSigner(keys) })
	srv := newServer(t, srvConfig{})
	e.route("remote.test", srv)
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{AuthUser: "alice@example.test"}, simpleMsg("dkim"))
	e.runOnce()
	m := srv.messages()
	if len(m) != 1 {
		t.Fatal("not delivered")
	}
	vs, err := msgdkim.VerifyWithOptions(strings.NewReader(m[0].data), &msgdkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		for _, r := range recs {
			if strings.TrimSuffix(name, ".") == r.Name {
				return []string{r.Value}, nil
			}
		}
		return nil, errors.New("no such record")
	}})
	if err != nil || len(vs) != 2 {
		t.Fatalf("%d verifications, %v", len(vs), err)
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != localDomain {
			t.Errorf("verification %+v", v)
		}
	}
}

// verifyDKIM verifies a received message against the published records
// and returns the verifications.
func verifyDKIM(t *testing.T, msg string, recs []dkim.Record) []*msgdkim.Verification {
	t.Helper()
	vs, err := msgdkim.VerifyWithOptions(strings.NewReader(msg), &msgdkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		for _, r := range recs {
			if strings.TrimSuffix(name, ".") == r.Name {
				return []string{r.Value}, nil
			}
		}
		return nil, errors.New("no such record")
	}})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestDSNSignedToSRSSender: a forwarded message (unsigned: nobody of ours
// submitted it) whose envelope sender was rewritten with SRS bounces; the
// DSN, postino's own message, goes to the original sender and is signed
// as the local domain of the host name, and the signature verifies.
func TestDSNSignedToSRSSender(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "dkim")
	recs, err := dkim.KeygenAll(keys, localDomain)
	if err != nil {
		t.Fatal(err)
	}
	rw, err := srs.New([]byte("a test secret of enough octets"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *Options) {
		o.Signer = dkim.NewSigner(keys)
		o.Hostname = "mail.example.test"
		o.SRS = rw
	})
	refuse := newServer(t, srvConfig{rcpt: func(string) string { return "550 5.1.1 no such user" }})
	sender := newServer(t, srvConfig{})
	e.route("refuse.test", refuse)
	e.route("sender.test", sender)
	from, err := rw.Forward("orig@sender.test", localDomain)
	if err != nil {
		t.Fatal(err)
	}
	e.enqueue(from, []string{"gone@refuse.test"}, envelope.DSNParams{}, simpleMsg("forwarded"))
	e.runOnce()
	e.runOnce()
	m := sender.messages()
	if len(m) != 1 {
		t.Fatalf("%d messages reached the original sender's server", len(m))
	}
	if strings.Join(m[0].rcpts, ",") != "orig@sender.test" || m[0].mailLine != "MAIL FROM:<>" && !strings.HasPrefix(m[0].mailLine, "MAIL FROM:<> ") {
		t.Errorf("DSN sent as %q to %v", m[0].mailLine, m[0].rcpts)
	}
	vs := verifyDKIM(t, m[0].data, recs)
	if len(vs) != len(recs) {
		t.Fatalf("%d signatures on the DSN, want %d:\n%s", len(vs), len(recs), m[0].data)
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != localDomain {
			t.Errorf("DSN verification %+v", v)
		}
	}
}

// TestSignedOncePerKey: a message is signed once, when queued: one
// signature per key of the domain (ed25519 and RSA after `dkim keygen`,
// RFC 8463 §4), never a second set, whatever happens on the way (a retry
// after a temporary failure).
func TestSignedOncePerKey(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "dkim")
	if _, err := dkim.Keygen(keys, localDomain, dkim.AlgoEd25519, ""); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(o *Options) { o.Signer = dkim.NewSigner(keys) })
	tries := 0
	srv := newServer(t, srvConfig{rcpt: func(string) string {
		tries++
		if tries == 1 {
			return "451 4.3.0 try again"
		}
		return ""
	}})
	e.route("remote.test", srv)
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, envelope.DSNParams{AuthUser: "alice@example.test"}, simpleMsg("once"))
	e.runOnce()
	e.clock.Advance(time.Hour)
	e.runOnce()
	m := srv.messages()
	if len(m) != 1 {
		t.Fatalf("%d messages", len(m))
	}
	if n := strings.Count(m[0].data, "DKIM-Signature:"); n != 1 {
		t.Errorf("%d signatures with one key:\n%s", n, m[0].data)
	}
}
