package tlsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes a self-signed pair for hostname made at made into dir.
func writePair(t *testing.T, dir, name, hostname string, made time.Time) (certFile, keyFile string) {
	t.Helper()
	c, k, err := generateSelfSigned(hostname, made)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, c, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, k, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestCheckPair(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	goodCert, goodKey := writePair(t, dir, "good", "mail.example.test", now)
	_, otherKey := writePair(t, dir, "other", "mail.example.test", now)
	oldCert, oldKey := writePair(t, dir, "old", "mail.example.test", now.Add(-selfSignedValidity-time.Hour))
	soonCert, soonKey := writePair(t, dir, "soon", "mail.example.test", now.Add(-selfSignedValidity+5*24*time.Hour))
	notPEM := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(notPEM, []byte("this is not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	tests := []struct {
		name              string
		cert, key, host   string
		wantErrs, wantWrn []string // substrings, one per expected entry
	}{
		{"good", goodCert, goodKey, "mail.example.test", nil, nil},
		{"missing cert", missing, goodKey, "mail.example.test", []string{"tls cert: open " + missing}, nil},
		{"missing both", missing, missing, "mail.example.test", []string{"tls cert: open", "tls key: open"}, nil},
		{"cert not PEM", notPEM, goodKey, "mail.example.test", []string{"no PEM CERTIFICATE block"}, nil},
		{"key not PEM", goodCert, notPEM, "mail.example.test", []string{"no PEM private key block"}, nil},
		// A forged pair: someone else's key next to our certificate.
		{"mismatched key", goodCert, otherKey, "mail.example.test", []string{"does not match the certificate"}, nil},
		{"key as cert", goodKey, goodKey, "mail.example.test", []string{"no PEM CERTIFICATE block"}, nil},
		{"expired", oldCert, oldKey, "mail.example.test", nil, []string{"expired on"}},
		{"expiring", soonCert, soonKey, "mail.example.test", nil, []string{"in less than 14 days"}},
		{"wrong name", goodCert, goodKey, "pop.other.test", nil, []string{`does not cover hostname "pop.other.test"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc := CheckPair(tt.cert, tt.key, tt.host, now)
			if len(pc.Errors) != len(tt.wantErrs) {
				t.Fatalf("errors = %v, want %d matching %q", pc.Errors, len(tt.wantErrs), tt.wantErrs)
			}
			for i, w := range tt.wantErrs {
				if !strings.Contains(pc.Errors[i].Error(), w) {
					t.Errorf("error %d = %v, want it to contain %q", i, pc.Errors[i], w)
				}
			}
			if len(pc.Warnings) != len(tt.wantWrn) {
				t.Fatalf("warnings = %q, want %d matching %q", pc.Warnings, len(tt.wantWrn), tt.wantWrn)
			}
			for i, w := range tt.wantWrn {
				if !strings.Contains(pc.Warnings[i].Error(), w) || pc.Warnings[i].Which != PairCert {
					t.Errorf("warning %d = %q, want it to contain %q", i, pc.Warnings[i], w)
				}
			}
		})
	}
}

// TestCheckPairMissingIsNotExist: a missing file is told apart by type.
func TestCheckPairMissingIsNotExist(t *testing.T) {
	dir := t.TempDir()
	cert, _ := writePair(t, dir, "a", "x.test", time.Now())
	pc := CheckPair(cert, filepath.Join(dir, "none.key"), "x.test", time.Now())
	if len(pc.Errors) != 1 || pc.Errors[0].Which != PairKey || !errors.Is(pc.Errors[0], fs.ErrNotExist) {
		t.Fatalf("errors = %v, want one PairKey error wrapping fs.ErrNotExist", pc.Errors)
	}
}
