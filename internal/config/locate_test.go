package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLocateOrder checks the lookup order --config, $POSTINO_CONFIG,
// ./postino.toml, the system file, then the embedded defaults.
func TestLocateOrder(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "etc", "postino.toml")
	old := SystemFile
	SystemFile = sys
	t.Cleanup(func() { SystemFile = old })
	work := filepath.Join(dir, "work")
	os.MkdirAll(work, 0o700)
	t.Chdir(work)
	t.Setenv(EnvVar, "")

	check := func(flag string, wantPath, wantHow string) {
		t.Helper()
		src, err := Locate(flag)
		if err != nil {
			t.Fatalf("Locate(%q): %v", flag, err)
		}
		if src.Path != wantPath || src.How != wantHow {
			t.Errorf("Locate(%q) = %q (%s), want %q (%s)", flag, src.Path, src.How, wantPath, wantHow)
		}
	}
	check("", "", FromDefaults)
	if s := (Source{How: FromDefaults}).String(); !strings.Contains(s, sys) || !strings.Contains(s, "$POSTINO_CONFIG") {
		t.Errorf("defaults described as %q: should name the places looked in", s)
	}

	os.MkdirAll(filepath.Dir(sys), 0o700)
	os.WriteFile(sys, nil, 0o600)
	check("", sys, FromSystem)

	os.WriteFile(filepath.Join(work, LocalFile), nil, 0o600)
	check("", LocalFile, FromWorkDir)

	t.Setenv(EnvVar, "/from/env.toml")
	check("", "/from/env.toml", FromEnv)

	check("/from/flag.toml", "/from/flag.toml", FromFlag)
}
