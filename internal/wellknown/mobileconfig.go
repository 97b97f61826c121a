package wellknown

import (
	"bytes"
	"crypto/sha256"
	"encoding/xml"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// MobileconfigContentType is the media type of Apple configuration
// profiles.
const MobileconfigContentType = "application/x-apple-aspen-config"

// plist builds an XML property list (Apple's PropertyList-1.0 DTD).
type plist struct{ b bytes.Buffer }

func (p *plist) text(tag, s string) {
	p.b.WriteString("<" + tag + ">")
	xml.EscapeText(&p.b, []byte(s))
	p.b.WriteString("</" + tag + ">\n")
}

func (p *plist) key(k string)            { p.text("key", k) }
func (p *plist) str(k, v string)         { p.key(k); p.text("string", v) }
func (p *plist) integer(k string, v int) { p.key(k); p.text("integer", strconv.Itoa(v)) }
func (p *plist) boolean(k string, v bool) {
	p.key(k)
	if v {
		p.b.WriteString("<true/>\n")
	} else {
		p.b.WriteString("<false/>\n")
	}
}

// uuidFor returns a name-based UUID (RFC 9562 §5.8, from SHA-256) for
// parts, so that the same address always gets the same profile
// identifiers and installing it again replaces the previous one.
func uuidFor(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s;", len(p), p)
	}
	u := h.Sum(nil)[:16]
	u[6] = u[6]&0x0f | 0x80 // version 8
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// reverseDNS returns the profile identifier prefix for a host name.
func reverseDNS(host string) string {
	labels := strings.Split(host, ".")
	slices.Reverse(labels)
	return strings.Join(labels, ".")
}

// MobileconfigFor returns an Apple configuration profile for addr with one
// com.apple.mail.managed payload: a POP account over TLS (implicit TLS
// when the server has it, else STLS) and submission over TLS. The profile
// holds no password: the device asks for it.
func MobileconfigFor(s Server, addr string) []byte {
	popPort := s.POP3TLS
	if popPort == 0 {
		popPort = s.POP3
	}
	smtpPort := s.Submissions
	if smtpPort == 0 {
		smtpPort = s.Submission
	}
	id := reverseDNS(s.Hostname) + ".postino"
	p := &plist{}
	p.b.WriteString(xml.Header)
	p.b.WriteString(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">` + "\n")
	p.b.WriteString("<plist version=\"1.0\">\n<dict>\n")
	p.key("PayloadContent")
	p.b.WriteString("<array>\n<dict>\n")
	p.str("EmailAccountDescription", addr)
	p.str("EmailAccountName", addr)
	p.str("EmailAccountType", "EmailTypePOP")
	p.str("EmailAddress", addr)
	p.str("IncomingMailServerAuthentication", "EmailAuthPassword")
	p.str("IncomingMailServerHostName", s.Hostname)
	p.integer("IncomingMailServerPortNumber", popPort)
	p.boolean("IncomingMailServerUseSSL", true)
	p.str("IncomingMailServerUsername", addr)
	p.str("OutgoingMailServerAuthentication", "EmailAuthPassword")
	p.str("OutgoingMailServerHostName", s.Hostname)
	p.integer("OutgoingMailServerPortNumber", smtpPort)
	p.boolean("OutgoingMailServerUseSSL", true)
	p.str("OutgoingMailServerUsername", addr)
	p.boolean("OutgoingPasswordSameAsIncomingPassword", true)
	p.str("PayloadDisplayName", addr)
	p.str("PayloadIdentifier", id+".mail."+uuidFor("mail", addr))
	p.str("PayloadType", "com.apple.mail.managed")
	p.str("PayloadUUID", uuidFor("mail", s.Hostname, addr))
	p.integer("PayloadVersion", 1)
	p.b.WriteString("</dict>\n</array>\n")
	p.str("PayloadDisplayName", "Mail: "+addr)
	p.str("PayloadIdentifier", id+"."+uuidFor("profile", addr))
	p.boolean("PayloadRemovalDisallowed", false)
	p.str("PayloadType", "Configuration")
	p.str("PayloadUUID", uuidFor("profile", s.Hostname, addr))
	p.integer("PayloadVersion", 1)
	p.b.WriteString("</dict>\n</plist>\n")
	return p.b.Bytes()
}

// mobileconfig serves /mobileconfig?email=ADDRESS for an address of a
// local domain. It does not say whether the user exists: the profile only
// describes the server.
func (o *Options) mobileconfig(w http.ResponseWriter, r *http.Request) {
	if !o.onlyGet(w, r) {
		return
	}
	addr, domain, err := ParseAddress(r.URL.Query().Get("email"))
	if err != nil {
		o.refuse(w, r, http.StatusBadRequest, err)
		return
	}
	if !o.IsLocal(domain) {
		o.refuse(w, r, http.StatusNotFound, fmt.Errorf("domain %q is not local", domain))
		return
	}
	w.Header().Set("Content-Type", MobileconfigContentType)
	w.Header().Set("Content-Disposition", `attachment; filename="postino.mobileconfig"`)
	w.Write(MobileconfigFor(o.Server, addr))
}
