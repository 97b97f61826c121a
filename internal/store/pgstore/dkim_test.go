package pgstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// TestDKIMKeysShared: keys made into the database by one node sign the
// mail of another; a key added later is used at the next message; a
// selector cannot be taken twice; keys imported from DATA/dkim sign
// alike.
func TestDKIMKeysShared(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a := node(t, dsn, Options{})
	b := OpenDKIMKeys(dsn, 2)
	t.Cleanup(b.Close)
	ctx := context.Background()
	ks := NewDKIMKeys(a.Pool())
	recs, err := dkim.GenerateStore(ctx, ks, "Example.TEST", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Algo != dkim.AlgoEd25519 || recs[1].Algo != dkim.AlgoRSA || recs[0].Domain != "example.test" {
		t.Fatalf("records %+v", recs)
	}
	signer := dkim.NewStoreSigner(b) // another node
	msg := "From: alice@example.test\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
	sig, err := signer.Sign(ctx, "example.test", strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if !strings.Contains(sig, "s="+r.Selector+";") {
			t.Errorf("no signature with selector %s: %q", r.Selector, sig)
		}
	}
	if sig, err := signer.Sign(ctx, "other.test", strings.NewReader(msg)); err != nil || sig != "" {
		t.Errorf("a domain without keys: %q, %v", sig, err)
	}
	if _, err := dkim.GenerateStore(ctx, ks, "example.test", dkim.AlgoEd25519, recs[0].Selector); !errors.Is(err, dkim.ErrKeyExists) {
		t.Errorf("a taken selector: %v; want ErrKeyExists", err)
	}
	nrecs, err := dkim.GenerateStore(ctx, ks, "example.test", dkim.AlgoEd25519, "new")
	if err != nil {
		t.Fatal(err)
	}
	sig, err = signer.Sign(ctx, "example.test", strings.NewReader(msg))
	if err != nil || !strings.Contains(sig, "s=new;") {
		t.Errorf("the key added on another node is not used: %q, %v", sig, err)
	}
	verifyDKIM(t, sig+msg, append(recs, nrecs...))

	// Keys of a data folder, imported.
	dir := t.TempDir()
	frecs, err := dkim.Generate(dir, "files.test", dkim.AlgoEd25519, "f1")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "files.test", "notes.txt"), []byte("x"), 0o600)
	keys, err := dkim.FileKeys(dir)
	if err != nil || len(keys) != 1 || keys[0].Selector != "f1" || keys[0].Domain != "files.test" {
		t.Fatalf("FileKeys = %+v, %v", keys, err)
	}
	if err := ks.Add(ctx, keys[0]); err != nil {
		t.Fatal(err)
	}
	if err := ks.Add(ctx, keys[0]); !errors.Is(err, dkim.ErrKeyExists) {
		t.Errorf("second import: %v; want ErrKeyExists", err)
	}
	sig, err = signer.Sign(ctx, "files.test", strings.NewReader(msg))
	if err != nil || !strings.Contains(sig, "s=f1;") {
		t.Fatalf("imported key: %q, %v", sig, err)
	}
	verifyDKIM(t, sig+msg, frecs)
}

// TestDKIMHostileKey: a key row that is not a private key is an error
// for signing (the message is not sent unsigned silently).
func TestDKIMHostileKey(t *testing.T) {
	dsn := pgtest.NewDB(t)
	a := node(t, dsn, Options{})
	ctx := context.Background()
	ks := NewDKIMKeys(a.Pool())
	if err := ks.Add(ctx, dkim.StoredKey{Domain: "example.test", Selector: "bad", PEM: []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := dkim.NewStoreSigner(ks).Sign(ctx, "example.test", strings.NewReader("From: a@example.test\r\n\r\nx\r\n")); err == nil {
		t.Error("signing with a broken key succeeded")
	}
}

// verifyDKIM checks every signature of msg with dkimpy (Debian's
// python3-dkim, python3-nacl for ed25519), a verifier other than the
// signing library, fed the records through its dnsfunc hook.
func verifyDKIM(t *testing.T, msg string, recs []dkim.Record) {
	t.Helper()
	py := testutil.NeedPython(t, "dkim", "nacl")
	file := filepath.Join(t.TempDir(), "msg.eml")
	os.WriteFile(file, []byte(msg), 0o600)
	zone := map[string]string{}
	for _, r := range recs {
		zone[r.Name+"."] = r.Value
	}
	zj, _ := json.Marshal(zone)
	script := `
import sys, json, dkim
zone = json.loads(sys.argv[2])
def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    v = zone.get(n)
    return v.encode() if v else None
msg = open(sys.argv[1], 'rb').read()
n = msg.count(b"DKIM-Signature:")
print(json.dumps([dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc) for i in range(n)]))
`
	out, err := exec.Command(py, "-c", script, file, string(zj)).CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, out)
	}
	var ok []bool
	if err := json.Unmarshal(bytes.TrimSpace(out), &ok); err != nil {
		t.Fatalf("dkimpy output %q: %v", out, err)
	}
	if len(ok) != strings.Count(msg, "DKIM-Signature:") || len(ok) == 0 || slices.Contains(ok, false) {
		t.Errorf("dkimpy verified %v", ok)
	}
}
