package pgstore

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCleanSpool: the temporary files a crash leaves in the spool folder
// are removed; anything else stays.
func TestCleanSpool(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"pgstore-123.eml", "queue-456", "spool-789", "keep.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "pgstore-dir"), 0o700)
	cleanSpool(dir)
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != "keep.txt pgstore-dir spool-789" {
		t.Fatalf("left %v", left)
	}
}
