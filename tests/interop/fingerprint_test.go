package interop

import (
	"regexp"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// bannerFingerprintRE finds the fingerprint "postino serve" prints at start.
var bannerFingerprintRE = regexp.MustCompile(`SHA-256 fingerprint (\S+)`)

// TestMpopPinsBannerFingerprint pastes the fingerprint from postino's
// start banner into mpop's tls_fingerprint, with no trust file, over STLS
// and implicit TLS: mpop must accept the certificate and download the
// mail. A wrong fingerprint (a forged server, as mpop sees it) must be
// refused. (mpop refuses the plain-hex form postino used to print, which
// is why the banner now uses mpop's form; the test logs what it says.)
func TestMpopPinsBannerFingerprint(t *testing.T) {
	mpop := testutil.NeedProgram(t, "mpop")
	t.Parallel()
	s := startServer(t)
	m := bannerFingerprintRE.FindStringSubmatch(s.Stdout.String())
	if m == nil {
		t.Fatalf("no fingerprint in the banner:\n%s", s.Stdout)
	}
	fp := m[1]
	wrong := []byte(fp)
	if wrong[0] == 'A' {
		wrong[0] = 'B'
	} else {
		wrong[0] = 'A'
	}
	plainHex := strings.ToLower(strings.ReplaceAll(fp, ":", ""))

	for _, transport := range []string{"stls", "tls"} {
		t.Run(transport, func(t *testing.T) {
			user := "pin-" + transport + "@example.test"
			const pw = "pin secret"
			s.addUser(t, user, pw)
			want := s.fill(t, user, smallCorpus())
			mode := mpopMode{transport: transport, keep: true, delivery: "exchange"}
			starttls := map[string]string{"stls": "on", "tls": "off"}[transport]
			try := func(pin string) (testutil.Result, [][]byte) {
				dir := t.TempDir()
				cfg, out := mode.config(t, s, dir, user, pw)
				r := run(t, []string{"HOME=" + dir}, nil, mpop, "-C", cfg, "--tls=on", "--tls-starttls="+starttls,
					"--tls-fingerprint="+pin, "test")
				return r, readDirFiles(t, out)
			}
			if r, got := try(string(wrong)); r.Code == 0 || len(got) != 0 {
				t.Errorf("mpop accepted a certificate that does not match the pinned fingerprint (%d messages):\n%s", len(got), r)
			}
			if r, _ := try(plainHex); r.Code == 0 {
				t.Logf("this mpop accepts plain hex too")
			} else {
				t.Logf("mpop refuses the plain-hex form, as expected: %s", firstLine(r.Output))
			}
			r, got := try(fp)
			if r.Code != 0 {
				t.Fatalf("mpop with the banner's fingerprint %s failed:\n%s", fp, r)
			}
			compareDownloads(t, got, want, mode.normalizer())
		})
	}
}

// firstLine returns the first line of s.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
