package smtp

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/dkim"
	"github.com/postino-mail/postino/internal/testutil"
)

// dkimpySign signs the message on standard input with dkimpy once per
// argument "algo:selector:domain:keyfile" and writes it, signatures
// first.
const dkimpySign = `
import sys, dkim
msg = sys.stdin.buffer.read()
sigs = b""
for spec in sys.argv[1:]:
    algo, sel, dom, keyfile = spec.split(":")
    key = open(keyfile, "rb").read()
    sigs = dkim.sign(msg, sel.encode(), dom.encode(), key, signature_algorithm=algo.encode(),
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"]) + sigs
sys.stdout.buffer.write(sigs + msg)
`

// pySend sends the message on standard input with smtplib to the MX
// (argv: host port mailfrom rcpt plain|starttls) and prints "250" or the
// refusal's code and text.
const pySend = `
import sys, smtplib, ssl
host, port, mailfrom, rcpt, mode = sys.argv[1:6]
msg = sys.stdin.buffer.read()
s = smtplib.SMTP(host, int(port), local_hostname="client.pass.test", timeout=30)
if mode == "starttls":
    s.starttls(context=ssl._create_unverified_context())
try:
    s.sendmail(mailfrom, [rcpt], msg)
    print("250")
except smtplib.SMTPRecipientsRefused as e:
    code, text = list(e.recipients.values())[0]
    print(code, text.decode())
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
s.quit()
`

// txtStrings writes a TXT value as zone-file strings of at most 255
// octets.
func txtStrings(v string) string {
	var parts []string
	for v != "" {
		n := min(len(v), 255)
		parts = append(parts, `"`+v[:n]+`"`)
		v = v[n:]
	}
	return strings.Join(parts, " ")
}

// dkimpyKeys makes an ed25519 and an RSA key for pass.test in dkimpy's
// formats (base64 seed, PKCS#1 PEM) under dir, and returns the zone
// records publishing them (selectors "ed" and "rsa").
func dkimpyKeys(t *testing.T, dir string) string {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ed.key"), []byte(base64.StdEncoding.EncodeToString(priv.Seed())), 0o600); err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})
	if err := os.WriteFile(filepath.Join(dir, "rsa.key"), pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return "ed._domainkey TXT " + txtStrings("v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub)) + "\n" +
		"rsa._domainkey TXT " + txtStrings("v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der)) + "\n"
}

// authResults returns the Authentication-Results fields of a stored
// message, unfolded.
func authResults(msg []byte) []string {
	hdr, _, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	var out []string
	for _, f := range regexp.MustCompile(`(?m)^Authentication-Results:[^\r\n]*(\r\n[ \t][^\r\n]*)*`).FindAll(hdr, -1) {
		out = append(out, strings.Join(strings.Fields(string(f)), " "))
	}
	return out
}

// TestMailAuthOnMX drives the MX with mail authentication on and a real
// DNS server (NSD) holding the sender domains' SPF, DKIM and DMARC
// records: swaks and Python's smtplib send as each kind of sender, over
// plain SMTP and STARTTLS; what is accepted is downloaded over POP3 and
// its one Authentication-Results field checked, what is refused is
// checked by its reply. Messages signed by dkimpy (ed25519 and RSA)
// pass; a changed body fails; forged Authentication-Results fields
// claiming our name are removed.
func TestMailAuthOnMX(t *testing.T) {
	swaks := needSwaks(t)
	py := needDkimpy(t)
	keys := t.TempDir()
	dns := testutil.StartDNS(t, map[string]string{
		"pass.test": `@ TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc TXT "v=DMARC1; p=reject"
` + dkimpyKeys(t, keys),
		"fail.test": `@ TXT "v=spf1 ip4:192.0.2.1 -all"
_dmarc TXT "v=DMARC1; p=reject"
`,
		"soft.test": `@ TXT "v=spf1 ip4:192.0.2.1 ~all"
_dmarc TXT "v=DMARC1; p=quarantine"
`,
		"none.test": "@ A 192.0.2.1\n",
		"perm.test": `@ TXT "v=spf1 bogus:thing -all"
`,
	})
	s := startServer(t, serverOpts{dnsServer: dns.Addr, extraConfig: "[mailauth]\nenabled = true\n"})
	host, port, _ := strings.Cut(s.smtp, ":")
	tlsArgs := []string{"--tls", "--tls-verify", "--tls-ca-path", s.certFile}

	delivered := 0
	// receive checks the message just delivered to alice: exactly one
	// Authentication-Results field, ours, holding every want.
	receive := func(what string, want ...string) []byte {
		t.Helper()
		delivered++
		msgs := s.mustCount(t, alice, delivered)
		got := msgs[delivered-1]
		ar := authResults(got)
		if len(ar) != 1 || !strings.HasPrefix(ar[0], "Authentication-Results: "+hostTag+"; spf=") {
			t.Errorf("%s: Authentication-Results fields %q, want one of ours", what, ar)
			return got
		}
		for _, w := range want {
			if !strings.Contains(ar[0], w) {
				t.Errorf("%s: %q lacks %q", what, ar[0], w)
			}
		}
		return got
	}

	// SPF and DMARC for each kind of sender, plain and STARTTLS (swaks).
	for _, c := range []struct {
		name, from string
		refused    string // the reply after DATA, "" when accepted
		want       []string
		// quarantined: DMARC p=quarantine holds the message in the
		// quarantine (junk handling); it is released to be checked.
		quarantined bool
	}{
		{"pass", "alice@pass.test", "", []string{"spf=pass smtp.mailfrom=alice@pass.test", "dkim=none", "dmarc=pass (p=reject dis=NONE) header.from=pass.test"}, false},
		{"fail", "eve@fail.test", "550 5.7.1", nil, false},
		{"softfail", "eve@soft.test", "", []string{"spf=softfail smtp.mailfrom=eve@soft.test", "dmarc=fail (p=quarantine dis=QUARANTINE) header.from=soft.test"}, true},
		{"none", "joe@none.test", "", []string{"spf=none smtp.mailfrom=joe@none.test", "dmarc=none header.from=none.test"}, false},
		{"permerror", "joe@perm.test", "", []string{"spf=permerror", "smtp.mailfrom=joe@perm.test", "dmarc=none"}, false},
		// gone.test is not served (REFUSED): a temporary error, noted.
		{"temperror", "joe@gone.test", "", []string{"spf=temperror (DNS error) smtp.mailfrom=joe@gone.test", "dmarc=temperror"}, false},
	} {
		for _, tls := range []bool{false, true} {
			name := c.name
			args := []string{"--server", s.smtp, "--ehlo", "client.test", "--from", c.from, "--to", alice}
			if tls {
				name += " STARTTLS"
				args = append(args, tlsArgs...)
			}
			msg := testMessage("mailauth "+name, c.from, alice)
			if c.refused != "" {
				r := run(t, nil, nil, swaks, append([]string{"--timeout", "30", "--data", swaksData(t, msg)}, args...)...)
				if !regexp.MustCompile(`(?m)^<[~*]\* +`+regexp.QuoteMeta(c.refused)+` `).MatchString(r.Output) || !strings.Contains(r.Output, "DMARC policy of fail.test") {
					t.Errorf("%s: not refused with %s after DATA:\n%s", name, c.refused, r)
				}
				continue
			}
			swaksOK(t, swaks, append([]string{"--data", swaksData(t, msg)}, args...)...)
			if c.quarantined {
				s.mustCount(t, alice, delivered)
				conf := filepath.Join(s.data, "postino.toml")
				lr := run(t, nil, nil, binPath, "quarantine", "list", alice, "--config", conf, "--data", s.data)
				ids := regexp.MustCompile(`\d{8}T\d{6}-[0-9a-f]{16}`).FindAllString(lr.Output, -1)
				if lr.Code != 0 || len(ids) != 1 || !strings.Contains(lr.Output, "mailauth "+name) {
					t.Fatalf("%s: quarantine list:\n%s", name, lr)
				}
				if rr := run(t, nil, nil, binPath, "quarantine", "release", ids[0], "--config", conf, "--data", s.data); rr.Code != 0 {
					t.Fatalf("%s: quarantine release:\n%s", name, rr)
				}
			}
			receive(name, c.want...)
		}
	}
	// DMARC quarantine reaches junk handling as a Quarantine result;
	// the log line has what an aggregate report needs.
	if !regexp.MustCompile(`mailauth: message.*source_ip=127\.0\.0\.1.*envelope_from=eve@soft\.test header_from=soft\.test spf_domain=soft\.test spf_scope=mfrom spf=softfail dkim="" dmarc=fail policy=quarantine disposition=quarantine`).MatchString(s.Stderr.String()) {
		t.Errorf("no DMARC report line for soft.test in the log:\n%s", s.Stderr)
	}

	// DKIM: dkimpy signs with both keys; the envelope is fail.test, so
	// DMARC passes on DKIM alone (Python's smtplib, plain and STARTTLS).
	sign := func(msg string) []byte {
		r := run(t, nil, []byte(strings.ReplaceAll(msg, "\n", "\r\n")), py, "-c", dkimpySign,
			"ed25519-sha256:ed:pass.test:"+filepath.Join(keys, "ed.key"), "rsa-sha256:rsa:pass.test:"+filepath.Join(keys, "rsa.key"))
		if r.Code != 0 || !strings.HasPrefix(r.Output, "DKIM-Signature:") {
			t.Fatalf("dkimpy sign: %s", r)
		}
		return []byte(r.Output)
	}
	send := func(mode, from string, msg []byte) string {
		r := run(t, nil, msg, py, "-c", pySend, host, port, from, alice, mode)
		if r.Code != 0 {
			t.Fatalf("smtplib: %s", r)
		}
		return strings.TrimSpace(r.Output)
	}
	forged := "Authentication-Results: " + hostTag + "; dkim=pass header.d=bank.test; dmarc=pass header.from=bank.test\n" +
		"Authentication-Results: (ours) \"MX.POSTINO.TEST\";\n  spf=pass smtp.mailfrom=ceo@bank.test\n" +
		"Authentication-Results: upstream.example; spf=pass smtp.mailfrom=x@upstream.example\n"
	for _, mode := range []string{"plain", "starttls"} {
		msg := sign(testMessage("dkimpy "+mode, "alice@pass.test", alice))
		if got := send(mode, "eve@fail.test", msg); got != "250" {
			t.Fatalf("%s: signed mail refused: %s", mode, got)
		}
		stored := receive("dkimpy "+mode, "spf=fail smtp.mailfrom=eve@fail.test",
			"dkim=pass header.d=pass.test header.s=ed header.b=", "dkim=pass header.d=pass.test header.s=rsa header.b=",
			"dmarc=pass (p=reject dis=NONE) header.from=pass.test")
		// The delivered copy still verifies for dkimpy.
		if r := run(t, nil, stored, py, "-c", dkimpyScript, "ed._domainkey.pass.test=", "rsa._domainkey.pass.test="); r.Code != 0 {
			t.Errorf("dkimpy verify: %s", r)
		}

		// The body changed after signing: both fail, DMARC refuses.
		tampered := bytes.Replace(msg, []byte("Hello,"), []byte("Hullo,"), 1)
		if got := send(mode, "eve@fail.test", tampered); !strings.HasPrefix(got, "550 5.7.1 ") {
			t.Errorf("%s: tampered message: %q, want 550 5.7.1", mode, got)
		}

		// Forged results claiming our name (any case, quoted, with a
		// comment) are removed; another server's stays.
		fmsg := strings.Replace(testMessage("forged "+mode, "joe@none.test", alice), "Subject:", forged+"Subject:", 1)
		if got := send(mode, "joe@none.test", []byte(strings.ReplaceAll(fmsg, "\n", "\r\n"))); got != "250" {
			t.Fatalf("%s: forged message refused: %s", mode, got)
		}
		delivered++
		got := s.mustCount(t, alice, delivered)[delivered-1]
		ar := authResults(got)
		if len(ar) != 2 || !strings.HasPrefix(ar[0], "Authentication-Results: "+hostTag+"; spf=none") ||
			ar[1] != "Authentication-Results: upstream.example; spf=pass smtp.mailfrom=x@upstream.example" {
			t.Errorf("%s: Authentication-Results after removal: %q", mode, ar)
		}
		if bytes.Contains(got, []byte("bank.test")) {
			t.Errorf("%s: forged result kept:\n%s", mode, got)
		}
	}
}

// TestMailAuthOff: with [mailauth] off (the default), the MX adds no
// Authentication-Results field and sends no DNS query for it.
func TestMailAuthOff(t *testing.T) {
	swaks := needSwaks(t)
	s := startServer(t, serverOpts{})
	swaksOK(t, swaks, "--server", s.smtp, "--from", "eve@fail.test", "--to", alice, "--data", swaksData(t, testMessage("off", "eve@fail.test", alice)))
	if ar := authResults(s.mustCount(t, alice, 1)[0]); len(ar) != 0 {
		t.Errorf("fields %q with mailauth off", ar)
	}
}

// TestDKIMSignedAsAuthorDomain: postino's signer, checked by postino's
// verifier and by dkimpy. alice@example.test submits mail whose From is
// an address of hers in a second local domain (an alias): it leaves
// signed as that domain, and the receiving MX (a second postino with
// mail authentication on, NSD holding the keys) reports dkim=pass and
// an aligned dmarc=pass. With a From in that domain she does not own
// (restrict_sender off), it is signed as her own domain only, and DMARC
// at the receiver fails.
func TestDKIMSignedAsAuthorDomain(t *testing.T) {
	swaks := needSwaks(t)
	py := needDkimpy(t)
	keyDir := t.TempDir()
	zones := map[string]string{
		"example.test": `@ TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc TXT "v=DMARC1; p=none"
`,
		"catch.test": `_dmarc TXT "v=DMARC1; p=none"
`,
	}
	var records []string
	for _, d := range []string{"example.test", "catch.test"} {
		r, err := dkim.Keygen(keyDir, d, dkim.AlgoEd25519, "ed")
		if err != nil {
			t.Fatal(err)
		}
		zones[d] += "ed._domainkey TXT " + txtStrings(r.Value) + "\n"
		records = append(records, r.Name+"="+r.Value)
	}
	dns := testutil.StartDNS(t, zones)
	remote := startServer(t, serverOpts{
		localDomains: []string{"elsewhere.test"},
		aliases:      "@elsewhere.test: bob@example.test\n",
		dnsServer:    dns.Addr,
		extraConfig:  "[mailauth]\nenabled = true\n",
	})
	local := startServer(t, serverOpts{
		aliases:     defaultAliases + "alice.c@catch.test: alice@example.test\n",
		smtpConfig:  "restrict_sender = false\n",
		extraConfig: "[queue]\ndkim_dir = \"" + keyDir + "\"\nroutes = [\"elsewhere.test=" + remote.smtp + "\"]\n",
	})
	auth := []string{"--server", local.subs, "--tls-on-connect", "--tls-verify", "--tls-ca-path", local.certFile,
		"--auth", "PLAIN", "--auth-user", alice, "--auth-password", passwd}
	for i, c := range []struct {
		name, from string
		want       []string
	}{
		{"owned", "alice.c@catch.test", []string{"dkim=pass header.d=catch.test header.s=ed", "dmarc=pass (p=none dis=NONE) header.from=catch.test"}},
		{"not owned", "carol@catch.test", []string{"dkim=pass header.d=example.test header.s=ed", "dmarc=fail (p=none dis=NONE) header.from=catch.test"}},
	} {
		msg := testMessage("author "+c.name, c.from, "friend@elsewhere.test")
		swaksOK(t, swaks, append([]string{"--from", alice, "--to", "friend@elsewhere.test", "--data", swaksData(t, msg)}, auth...)...)
		got := remote.waitMailbox(t, bob, i+1, 30*time.Second)[i]
		ar := authResults(got)
		if len(ar) != 1 {
			t.Fatalf("%s: fields %q", c.name, ar)
		}
		for _, w := range append(c.want, "spf=pass smtp.mailfrom=alice@example.test") {
			if !strings.Contains(ar[0], w) {
				t.Errorf("%s: %q lacks %q", c.name, ar[0], w)
			}
		}
		if r := run(t, nil, got, py, append([]string{"-c", dkimpyScript}, records...)...); strings.TrimSpace(r.Output) != "signatures 1 verified 1" {
			t.Errorf("%s: dkimpy says %q", c.name, r.Output)
		}
	}
}

// TestSPFFailRefused: with spf_fail = "mail" an SPF fail refuses MAIL
// FROM, with "rcpt" each RCPT TO, with 550 5.7.23 (RFC 7372); for the
// null sender the HELO name is checked. A pass goes through.
func TestSPFFailRefused(t *testing.T) {
	swaks := needSwaks(t)
	dns := testutil.StartDNS(t, map[string]string{
		"fail.test": `@ TXT "v=spf1 ip4:192.0.2.1 -all"
mx TXT "v=spf1 -all"
`,
		"pass.test": `@ TXT "v=spf1 ip4:127.0.0.1 -all"
mx TXT "v=spf1 ip4:127.0.0.1 -all"
`,
	})
	for _, stage := range []string{"mail", "rcpt"} {
		s := startServer(t, serverOpts{dnsServer: dns.Addr, extraConfig: "[mailauth]\nenabled = true\nspf_fail = \"" + stage + "\"\n"})
		for _, c := range []struct{ name, ehlo, from string }{
			{"envelope", "client.test", "eve@fail.test"},
			{"null sender", "mx.fail.test", "<>"},
		} {
			r := run(t, nil, nil, swaks, "--timeout", "30", "--server", s.smtp, "--ehlo", c.ehlo, "--from", c.from, "--to", alice, "--quit-after", "RCPT")
			cmd := map[string]string{"mail": "MAIL FROM", "rcpt": "RCPT TO"}[stage]
			if !regexp.MustCompile(`(?s)-> ` + cmd + `:[^\n]*\n<\*\* +550 5\.7\.23 SPF check failed: `).MatchString(r.Output) {
				t.Errorf("spf_fail=%s, %s: not refused at %s with 550 5.7.23:\n%s", stage, c.name, cmd, r)
			}
		}
		swaksOK(t, swaks, "--server", s.smtp, "--ehlo", "mx.pass.test", "--from", "<>", "--to", alice, "--data", swaksData(t, testMessage("bounce", "mailer-daemon@pass.test", alice)))
		if ar := authResults(s.mustCount(t, alice, 1)[0]); len(ar) != 1 || !strings.Contains(ar[0], "spf=pass smtp.helo=mx.pass.test") {
			t.Errorf("spf_fail=%s: null sender from a passing HELO: %q", stage, ar)
		}
	}
}
