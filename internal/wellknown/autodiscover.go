package wellknown

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Limits of ParseAutodiscoverRequest.
const (
	maxXMLTokens  = 1000 // elements, texts and the like in a request
	maxXMLDepthAD = 8
)

// ErrBadRequest is wrapped by the errors of ParseAutodiscoverRequest.
var ErrBadRequest = errors.New("wellknown: invalid autodiscover request")

// ParseAutodiscoverRequest reads an Outlook autodiscover POX request
// ([MS-OXDSCLI] §2.2.3, namespace
// http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006)
// (<Autodiscover><Request><EMailAddress>...) and returns the address,
// checked by ParseAddress. It reads at most MaxRequestBody octets, refuses
// documents deeper than 8 elements or with more than 1000 tokens, and
// needs exactly one EMailAddress inside Request.
func ParseAutodiscoverRequest(r io.Reader) (addr string, err error) {
	lr := &io.LimitedReader{R: r, N: MaxRequestBody + 1}
	dec := xml.NewDecoder(lr)
	dec.Strict = true
	var path []string
	var found []string
	var text []byte
	for n := 0; ; n++ {
		if n > maxXMLTokens {
			return "", fmt.Errorf("%w: more than %d tokens", ErrBadRequest, maxXMLTokens)
		}
		tok, err := dec.RawToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			if lr.N <= 0 {
				return "", fmt.Errorf("%w: longer than %d octets", ErrBadRequest, MaxRequestBody)
			}
			return "", fmt.Errorf("%w: %v", ErrBadRequest, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			path = append(path, t.Name.Local)
			if len(path) > maxXMLDepthAD {
				return "", fmt.Errorf("%w: nested deeper than %d", ErrBadRequest, maxXMLDepthAD)
			}
			text = text[:0]
		case xml.CharData:
			// Longer than any address: kept cut, ParseAddress refuses it.
			text = append(text, t...)
			if len(text) > MaxAddressLen+1 {
				text = text[:MaxAddressLen+1]
			}
		case xml.EndElement:
			if len(path) == 0 || path[len(path)-1] != t.Name.Local {
				return "", fmt.Errorf("%w: unbalanced element %q", ErrBadRequest, t.Name.Local)
			}
			if len(path) == 3 && path[0] == "Autodiscover" && path[1] == "Request" && path[2] == "EMailAddress" {
				found = append(found, string(text))
			}
			path = path[:len(path)-1]
		case xml.Directive:
			// No DTD: no entity expansion, no external references.
			return "", fmt.Errorf("%w: directives are not allowed", ErrBadRequest)
		}
	}
	if lr.N <= 0 {
		return "", fmt.Errorf("%w: longer than %d octets", ErrBadRequest, MaxRequestBody)
	}
	if len(path) != 0 {
		return "", fmt.Errorf("%w: unclosed element %q", ErrBadRequest, path[len(path)-1])
	}
	if len(found) != 1 {
		return "", fmt.Errorf("%w: want one Autodiscover/Request/EMailAddress, found %d", ErrBadRequest, len(found))
	}
	addr, _, err = ParseAddress(found[0])
	if err != nil {
		return "", err
	}
	return addr, nil
}

// AutodiscoverResponse is the POX autodiscover answer.
type AutodiscoverResponse struct {
	XMLName  xml.Name           `xml:"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006 Autodiscover"`
	Response AutodiscoverResult `xml:"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a Response"`
}

// AutodiscoverResult is the Response element.
type AutodiscoverResult struct {
	Account AutodiscoverAccount `xml:"Account"`
}

// AutodiscoverAccount is the Account element.
type AutodiscoverAccount struct {
	AccountType string                 `xml:"AccountType"`
	Action      string                 `xml:"Action"`
	Protocols   []AutodiscoverProtocol `xml:"Protocol"`
}

// AutodiscoverProtocol is one Protocol element: a server to use.
type AutodiscoverProtocol struct {
	Type           string `xml:"Type"`
	Server         string `xml:"Server"`
	Port           int    `xml:"Port"`
	LoginName      string `xml:"LoginName"`
	DomainRequired string `xml:"DomainRequired"`
	SPA            string `xml:"SPA"`
	SSL            string `xml:"SSL"`
	Encryption     string `xml:"Encryption,omitempty"`
	AuthRequired   string `xml:"AuthRequired"`
}

// AutodiscoverFor returns the answer for addr: POP3 and SMTP entries with
// TLS on, implicit TLS preferred (RFC 8314 §3).
func AutodiscoverFor(s Server, addr string) AutodiscoverResponse {
	acc := AutodiscoverAccount{AccountType: "email", Action: "settings"}
	proto := func(typ string, port int, encryption string) AutodiscoverProtocol {
		return AutodiscoverProtocol{Type: typ, Server: s.Hostname, Port: port, LoginName: addr,
			DomainRequired: "off", SPA: "off", SSL: "on", Encryption: encryption, AuthRequired: "on"}
	}
	switch {
	case s.POP3TLS != 0:
		acc.Protocols = append(acc.Protocols, proto("POP3", s.POP3TLS, "SSL"))
	case s.POP3 != 0:
		acc.Protocols = append(acc.Protocols, proto("POP3", s.POP3, "TLS"))
	}
	switch {
	case s.Submissions != 0:
		acc.Protocols = append(acc.Protocols, proto("SMTP", s.Submissions, "SSL"))
	case s.Submission != 0:
		acc.Protocols = append(acc.Protocols, proto("SMTP", s.Submission, "TLS"))
	}
	return AutodiscoverResponse{Response: AutodiscoverResult{Account: acc}}
}

// autodiscover answers Outlook's POST to /autodiscover/autodiscover.xml.
func (o *Options) autodiscover(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		o.refuse(w, r, http.StatusMethodNotAllowed, fmt.Errorf("method %s", r.Method))
		return
	}
	body := http.MaxBytesReader(w, r.Body, MaxRequestBody+1)
	addr, err := ParseAutodiscoverRequest(body)
	if err != nil {
		o.refuse(w, r, http.StatusBadRequest, err)
		return
	}
	_, domain, _ := ParseAddress(addr)
	if !o.IsLocal(domain) {
		o.refuse(w, r, http.StatusNotFound, fmt.Errorf("domain %q is not local", domain))
		return
	}
	writeXML(w, "application/xml", AutodiscoverFor(o.Server, addr))
}
