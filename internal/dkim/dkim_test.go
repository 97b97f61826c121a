package dkim

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/postino-mail/postino/internal/testutil"
)

const testMsg = "Received: from client by postino.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
	"From: Alice <alice@example.test>\r\n" +
	"To: bob@remote.test\r\n" +
	"Subject: hello\r\n" +
	"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
	"Message-ID: <1@example.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"Hello Bob,\r\n" +
	".leading dot and trailing space \r\n" +
	"\r\n"

// setup makes both keys for example.test and returns the folder and a
// LookupTXT answering with their records.
func setup(t *testing.T) (string, []Record, func(string) ([]string, error)) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "dkim")
	recs, err := KeygenAll(dir, "Example.Test")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Algo != AlgoEd25519 || recs[1].Algo != AlgoRSA {
		t.Fatalf("records: %+v", recs)
	}
	lookup := func(name string) ([]string, error) {
		for _, r := range recs {
			if strings.EqualFold(strings.TrimSuffix(name, "."), r.Name) {
				return []string{r.Value}, nil
			}
		}
		return nil, &os.PathError{Op: "lookup", Path: name, Err: os.ErrNotExist}
	}
	return dir, recs, lookup
}

func TestKeygenFiles(t *testing.T) {
	dir, recs, _ := setup(t)
	for _, r := range recs {
		fi, err := os.Stat(filepath.Join(dir, "example.test", r.Selector+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v", r.Selector, fi.Mode())
		}
		s := r.String()
		if !strings.HasPrefix(s, r.Selector+"._domainkey.example.test. IN TXT \"v=DKIM1; k="+r.Algo+"; p=") {
			t.Errorf("record %q", s)
		}
		for _, part := range strings.Split(s[strings.Index(s, `"`):], `" "`) {
			if len(strings.Trim(part, `"`)) > 255 {
				t.Errorf("TXT string over 255 octets")
			}
		}
	}
	// No overwrite.
	if _, err := Keygen(dir, "example.test", AlgoEd25519, recs[0].Selector); err == nil {
		t.Error("Keygen replaced an existing key")
	}
	if _, err := Keygen(dir, "../etc", AlgoEd25519, "x"); err == nil {
		t.Error("Keygen accepted a bad domain")
	}
	if _, err := Keygen(dir, "example.test", "dsa", "x"); err == nil {
		t.Error("Keygen accepted a bad algorithm")
	}
	got, err := Records(dir, "example.test")
	if err != nil || len(got) != 2 || got[0].Value != recs[0].Value || got[1].Value != recs[1].Value {
		t.Errorf("Records = %+v, %v", got, err)
	}
}

func sign(t *testing.T, dir, domain, msg string) string {
	t.Helper()
	sig, err := NewSigner(dir).Sign(context.Background(), domain, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func TestSignVerifyGoMsgauth(t *testing.T) {
	dir, _, lookup := setup(t)
	sig := sign(t, dir, "example.test", testMsg)
	if strings.Count(sig, "DKIM-Signature:") != 2 || !strings.Contains(sig, "a=ed25519-sha256") || !strings.Contains(sig, "a=rsa-sha256") {
		t.Fatalf("signature: %s", sig)
	}
	verify := func(msg string) []*msgdkim.Verification {
		vs, err := msgdkim.VerifyWithOptions(strings.NewReader(msg), &msgdkim.VerifyOptions{LookupTXT: lookup})
		if err != nil {
			t.Fatal(err)
		}
		return vs
	}
	vs := verify(sig + testMsg)
	if len(vs) != 2 {
		t.Fatalf("%d verifications", len(vs))
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != "example.test" {
			t.Errorf("verification %+v", v)
		}
	}
	// Relaxed canonicalization survives rewrapping; tampering does not.
	rewrapped := strings.Replace(sig+testMsg, "Subject: hello", "Subject:   hello", 1)
	for _, v := range verify(rewrapped) {
		if v.Err != nil {
			t.Errorf("relaxed: %v", v.Err)
		}
	}
	for _, tamper := range []string{
		strings.Replace(sig+testMsg, "Hello Bob", "Hello Eve", 1),
		strings.Replace(sig+testMsg, "From: Alice", "From: Mallory", 1),
		strings.Replace(sig+testMsg, "To: bob", "From: eve@evil.test\r\nTo: bob", 1), // a second From
	} {
		for _, v := range verify(tamper) {
			if v.Err == nil {
				t.Errorf("tampered message verified (%s)", v.Domain)
			}
		}
	}
}

func TestSignNoKeys(t *testing.T) {
	dir, _, _ := setup(t)
	for _, d := range []string{"other.test", "../example.test", "", "EXAMPLE.test/.."} {
		if sig := sign(t, dir, d, testMsg); sig != "" && d != "EXAMPLE.test" {
			t.Errorf("%q signed: %q", d, sig)
		}
	}
	if sig := sign(t, filepath.Join(dir, "missing"), "example.test", testMsg); sig != "" {
		t.Error("signed without a key folder")
	}
}

// TestVerifyDkimpy checks the signatures with a verifier that is not
// go-msgauth: dkimpy from Debian's python3-dkim (with python3-nacl for
// ed25519), fed the records through its dnsfunc hook. Without them
// (apt-get install python3-dkim python3-nacl) it is skipped, or fails
// under CI=true.
func TestVerifyDkimpy(t *testing.T) {
	py := testutil.NeedPython(t, "dkim", "nacl")
	dir, recs, _ := setup(t)
	msg := sign(t, dir, "example.test", testMsg) + testMsg
	tmp := t.TempDir()
	msgFile := filepath.Join(tmp, "msg.eml")
	os.WriteFile(msgFile, []byte(msg), 0o600)
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
d = dkim.DKIM(msg)
ok = [d.verify(idx=i, dnsfunc=dnsfunc) for i in range(2)]
tampered = msg.replace(b"Hello Bob", b"Hello Eve")
def check(m, i):
    try:
        return dkim.DKIM(m).verify(idx=i, dnsfunc=dnsfunc)
    except dkim.ValidationError:
        return False
bad = [check(tampered, i) for i in range(2)]
print(json.dumps({"ok": ok, "tampered": bad}))
`
	out, err := exec.Command(py, "-c", script, msgFile, string(zj)).CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, out)
	}
	var res struct{ OK, Tampered []bool }
	if err := json.Unmarshal(bytes.TrimSpace(out), &res); err != nil {
		t.Fatalf("dkimpy output %q: %v", out, err)
	}
	if len(res.OK) != 2 || !res.OK[0] || !res.OK[1] {
		t.Errorf("dkimpy did not verify both signatures: %s", out)
	}
	if res.Tampered[0] || res.Tampered[1] {
		t.Errorf("dkimpy verified a tampered message: %s", out)
	}
}

// TestRecordsRefusesUnusableKeys proves that a key file that is not PEM,
// or holds a key type DKIM has no algorithm for (ECDSA), is an error, not
// a key silently skipped or used.
func TestRecordsRefusesUnusableKeys(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{
		"not PEM": []byte("garbage\n"),
		"ECDSA":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
	} {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, "example.test"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "example.test", "sel.key"), content, 0o600); err != nil {
			t.Fatal(err)
		}
		if recs, err := Records(dir, "example.test"); err == nil || !strings.Contains(err.Error(), "example.test/sel.key") {
			t.Errorf("%s: Records = %+v, %v; want an error naming the file", name, recs, err)
		}
	}
}
