package mailauth

import (
	"context"
	"errors"
	"io"
	"strings"

	msgdkim "github.com/emersion/go-msgauth/dkim"
)

// MaxSignatures is the largest number of DKIM signatures verified per
// message (RFC 6376 §6.1: a verifier may limit it, against denial of
// service); further ones are ignored.
const MaxSignatures = 8

// dkimResult is the outcome of one DKIM signature.
type dkimResult struct {
	// result is pass, fail, neutral, temperror or permerror (RFC 8601
	// §2.7.1).
	result string
	// domain (d=), selector (s=) and b (the signature, for header.b, RFC
	// 6008 §4) as the signature field gives them.
	domain, selector, b string
	// reason explains a result other than pass.
	reason string
}

// verifyDKIM verifies every DKIM signature of msg (at most MaxSignatures)
// with go-msgauth, which streams the message once through all of them,
// ed25519-sha256 (RFC 8463) and rsa-sha256 alike. h is msg's header.
func verifyDKIM(ctx context.Context, res Resolver, h *header, msg io.Reader) []dkimResult {
	sigs := h.get("DKIM-Signature")
	if len(sigs) == 0 {
		return nil
	}
	if len(sigs) > MaxSignatures {
		sigs = sigs[:MaxSignatures]
	}
	out := make([]dkimResult, len(sigs))
	for i, f := range sigs {
		tags := tagList(f.value())
		out[i] = dkimResult{domain: strings.ToLower(tags["d"]), selector: tags["s"], b: strings.Join(strings.Fields(tags["b"]), "")}
	}
	verifs, err := msgdkim.VerifyWithOptions(msg, &msgdkim.VerifyOptions{
		// RFC 6376 §3.6.2.2: the key is the TXT record at
		// selector._domainkey.domain.
		LookupTXT:        func(name string) ([]string, error) { return res.LookupTXT(ctx, name) },
		MaxVerifications: MaxSignatures,
	})
	if err != nil && !errors.Is(err, msgdkim.ErrTooManySignatures) {
		// The message could not be read as a whole (a header without
		// its end, a broken body), or a signature failed in a way the
		// library does not classify — it then clears that signature's
		// error, so none of its verifications is trusted: no signature
		// passes.
		for i := range out {
			out[i].result, out[i].reason = "permerror", err.Error()
		}
		return out
	}
	for i := range out {
		if i >= len(verifs) {
			out[i].result, out[i].reason = "neutral", "not verified"
			continue
		}
		v := verifs[i]
		switch {
		case v.Err == nil:
			out[i].result = "pass"
			out[i].domain = strings.ToLower(v.Domain)
		case msgdkim.IsTempFail(v.Err):
			// RFC 8601 §2.7.1: the key could not be fetched.
			// The reason does not name the DNS server.
			out[i].result, out[i].reason = "temperror", "key unavailable"
		case msgdkim.IsPermFail(v.Err):
			reason := strings.TrimPrefix(v.Err.Error(), "dkim: ")
			if strings.HasPrefix(reason, "no key for signature") {
				// Not the DNS error's text, which names our DNS server.
				reason = "no key for signature"
			}
			out[i].result, out[i].reason = "permerror", reason
		default:
			// The signature or the body hash did not verify.
			out[i].result, out[i].reason = "fail", strings.TrimPrefix(v.Err.Error(), "dkim: ")
		}
	}
	return out
}

// tagList parses a DKIM tag=value list (RFC 6376 §3.2) leniently, for the
// report: the verifier parses it strictly.
func tagList(s string) map[string]string {
	m := make(map[string]string)
	for _, part := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		if _, dup := m[k]; !dup {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}
