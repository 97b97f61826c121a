package queue

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/smtpin"
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
	e.enqueue("alice@example.test", []string{"bob@remote.test"}, smtpin.DSNParams{}, simpleMsg("dkim"))
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
