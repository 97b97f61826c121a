package dkim

import (
	"os"
	"path/filepath"
	"testing"
)

// TestGenerate: what `postino dkim keygen` asks for — both key types with
// the default selectors, or one type with a chosen selector — written
// under the lower-cased domain; an unknown type writes nothing.
func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	recs, err := Generate(dir, "Example.TEST", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Algo == recs[1].Algo {
		t.Fatalf("Generate without algo = %+v, want one ed25519 and one rsa record", recs)
	}
	for _, r := range recs {
		if r.Domain != "example.test" {
			t.Errorf("record domain %q, want example.test", r.Domain)
		}
		if _, err := os.Stat(filepath.Join(dir, "example.test", r.Selector+".key")); err != nil {
			t.Error(err)
		}
	}
	recs, err = Generate(dir, "example.test", AlgoEd25519, "s2026")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Selector != "s2026" || recs[0].Algo != AlgoEd25519 {
		t.Fatalf("Generate ed25519 s2026 = %+v", recs)
	}
	if _, err := Generate(dir, "other.test", "dsa", "x"); err == nil {
		t.Fatal("Generate accepted the key type dsa")
	}
	if _, err := os.Stat(filepath.Join(dir, "other.test", "x.key")); err == nil {
		t.Fatal("a key was written for an unknown key type")
	}
}
