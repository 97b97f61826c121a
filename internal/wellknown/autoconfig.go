package wellknown

import (
	"encoding/xml"
	"fmt"
	"net/http"
	"strings"
)

// ClientConfig is Thunderbird's autoconfig document (clientConfig version
// 1.1, as described at wiki.mozilla.org/Thunderbird:Autoconfiguration).
type ClientConfig struct {
	XMLName  xml.Name      `xml:"clientConfig"`
	Version  string        `xml:"version,attr"`
	Provider EmailProvider `xml:"emailProvider"`
}

// EmailProvider is the emailProvider element of a ClientConfig.
type EmailProvider struct {
	ID               string         `xml:"id,attr"`
	Domain           string         `xml:"domain"`
	DisplayName      string         `xml:"displayName"`
	DisplayShortName string         `xml:"displayShortName"`
	Incoming         []ServerConfig `xml:"incomingServer"`
	Outgoing         []ServerConfig `xml:"outgoingServer"`
}

// ServerConfig is an incomingServer or outgoingServer element.
type ServerConfig struct {
	Type           string `xml:"type,attr"`
	Hostname       string `xml:"hostname"`
	Port           int    `xml:"port"`
	SocketType     string `xml:"socketType"`
	Authentication string `xml:"authentication"`
	Username       string `xml:"username"`
}

// AutoconfigFor returns the autoconfig document of domain, offering POP3
// over TLS first, then POP3 with STLS, then submission over TLS and with
// STARTTLS, as s has them. user is the login name, or Thunderbird's
// placeholder %EMAILADDRESS% (postino's users log in with their address).
func AutoconfigFor(s Server, domain, user string) ClientConfig {
	if user == "" {
		user = "%EMAILADDRESS%"
	}
	cc := ClientConfig{Version: "1.1", Provider: EmailProvider{
		ID: domain, Domain: domain, DisplayName: domain, DisplayShortName: domain,
	}}
	add := func(list *[]ServerConfig, typ string, port int, socket string) {
		if port != 0 {
			*list = append(*list, ServerConfig{Type: typ, Hostname: s.Hostname, Port: port,
				SocketType: socket, Authentication: "password-cleartext", Username: user})
		}
	}
	// RFC 8314 §3: implicit TLS first.
	add(&cc.Provider.Incoming, "pop3", s.POP3TLS, "SSL")
	add(&cc.Provider.Incoming, "pop3", s.POP3, "STARTTLS")
	add(&cc.Provider.Outgoing, "smtp", s.Submissions, "SSL")
	add(&cc.Provider.Outgoing, "smtp", s.Submission, "STARTTLS")
	return cc
}

// autoconfig serves /mail/config-v1.1.xml on autoconfig.DOMAIN and
// /.well-known/autoconfig/mail/config-v1.1.xml on DOMAIN. Thunderbird adds
// ?emailaddress=ADDRESS; its domain then chooses the document.
func (o *Options) autoconfig(w http.ResponseWriter, r *http.Request, host string) {
	if !o.onlyGet(w, r) {
		return
	}
	domain := strings.TrimPrefix(host, "autoconfig.")
	user := ""
	if q := r.URL.Query(); q.Has("emailaddress") {
		addr, d, err := ParseAddress(q.Get("emailaddress"))
		if err != nil {
			o.refuse(w, r, http.StatusBadRequest, err)
			return
		}
		domain, user = d, addr
	}
	if !o.IsLocal(domain) {
		o.refuse(w, r, http.StatusNotFound, fmt.Errorf("domain %q is not local", domain))
		return
	}
	writeXML(w, "application/xml", AutoconfigFor(o.Server, domain, user))
}

// writeXML writes v as an XML document.
func writeXML(w http.ResponseWriter, contentType string, v any) {
	data, err := xml.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType+"; charset=utf-8")
	w.Write([]byte(xml.Header))
	w.Write(data)
	w.Write([]byte("\n"))
}
