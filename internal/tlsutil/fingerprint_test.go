package tlsutil

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// fingerprintRE is the form mpop, fetchmail and openssl print.
var fingerprintRE = regexp.MustCompile(`^[0-9A-F]{2}(:[0-9A-F]{2}){31}$`)

// TestFormatFingerprint checks the colon-separated upper-case form, which
// mpop's tls_fingerprint accepts (it refuses plain hex).
func TestFormatFingerprint(t *testing.T) {
	sum := sha256.Sum256([]byte("postino"))
	got := FormatFingerprint(sum[:])
	if !fingerprintRE.MatchString(got) {
		t.Fatalf("FormatFingerprint = %q, want AB:CD:... (32 pairs)", got)
	}
	if want := strings.ToUpper(hex.EncodeToString(sum[:])); strings.ReplaceAll(got, ":", "") != want {
		t.Errorf("FormatFingerprint = %q, digits differ from %s", got, want)
	}
}

// TestParseFingerprint checks that every form a user may paste is
// accepted, and that anything else is refused with ErrBadFingerprint.
func TestParseFingerprint(t *testing.T) {
	sum := sha256.Sum256([]byte("postino"))
	plain := hex.EncodeToString(sum[:])
	colon := FormatFingerprint(sum[:])
	for _, in := range []string{
		plain,
		strings.ToUpper(plain),
		colon,
		strings.ToLower(colon),
	} {
		got, err := ParseFingerprint(in)
		if err != nil {
			t.Errorf("ParseFingerprint(%q): %v", in, err)
			continue
		}
		if !bytes.Equal(got, sum[:]) {
			t.Errorf("ParseFingerprint(%q) = %x, want %x", in, got, sum)
		}
	}
	for _, in := range []string{
		"",
		plain[:62],                        // too short
		plain + "00",                      // too long
		colon[:len(colon)-3],              // 31 pairs
		colon + ":00",                     // 33 pairs
		"A" + colon[1:len(colon)-1] + "G", // not hex
		"sha256:" + colon,
		"SHA256 " + plain,
	} {
		if _, err := ParseFingerprint(in); !errors.Is(err, ErrBadFingerprint) {
			t.Errorf("ParseFingerprint(%q) = %v, want ErrBadFingerprint", in, err)
		}
	}
}
