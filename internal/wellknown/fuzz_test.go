package wellknown

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseAutodiscoverRequest: any body either yields an address that
// ParseAddress accepts, or an ErrBadRequest/ErrBadAddress error; it never
// panics.
func FuzzParseAutodiscoverRequest(f *testing.F) {
	for _, s := range []string{
		`<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>bob@example.org</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`,
		`<?xml version="1.0"?><a:Autodiscover xmlns:a="x"><a:Request><a:EMailAddress>x@y.z</a:EMailAddress></a:Request></a:Autodiscover>`,
		`<Autodiscover><Request><EMailAddress>a@b.c</EMailAddress><EMailAddress>d@e.f</EMailAddress></Request></Autodiscover>`,
		`<!DOCTYPE x><Autodiscover/>`,
		`<Autodiscover><Request><EMailAddress><![CDATA[q@w.e]]></EMailAddress></Request></Autodiscover>`,
		"",
		"<",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		addr, err := ParseAutodiscoverRequest(strings.NewReader(body))
		if err != nil {
			if !errors.Is(err, ErrBadRequest) && !errors.Is(err, ErrBadAddress) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if again, _, err := ParseAddress(addr); err != nil || again != addr {
			t.Fatalf("returned address %q does not parse again: %v", addr, err)
		}
	})
}

// FuzzParseAddress: an accepted address is at most MaxAddressLen octets,
// has one '@' and a lower-case domain.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"alice@example.org", "A@B.C", "@", "a@b", "a b@c.d", "x@-y.z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, domain, err := ParseAddress(s)
		if err != nil {
			return
		}
		if len(addr) > MaxAddressLen || strings.Count(addr, "@") != 1 || domain != strings.ToLower(domain) ||
			!strings.HasSuffix(addr, "@"+domain) {
			t.Fatalf("ParseAddress(%q) = %q, %q", s, addr, domain)
		}
	})
}
