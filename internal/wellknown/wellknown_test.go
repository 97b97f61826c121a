package wellknown

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

var testServer = Server{Hostname: "mail.example.org", POP3TLS: 1995, POP3: 1110, Submissions: 1465, Submission: 1587}

var testPolicy = &Policy{Mode: ModeTesting, MX: []string{"mail.example.org", "*.mx.example.org"}, MaxAge: 7 * 24 * time.Hour}

func newHandler() *Handler {
	return NewHandler(Options{
		Server:  testServer,
		IsLocal: func(d string) bool { return d == "example.org" || d == "example.net" },
		Policy:  testPolicy,
	})
}

// do runs one request through the handler; tls marks it as made over
// HTTPS.
func do(t *testing.T, h http.Handler, method, target, host string, body io.Reader, tls bool) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, target, body)
	r.Host = host
	if !tls {
		r.TLS = nil
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestPolicyTextAndID(t *testing.T) {
	want := "version: STSv1\r\nmode: testing\r\nmx: mail.example.org\r\nmx: *.mx.example.org\r\nmax_age: 604800\r\n"
	if got := testPolicy.Text(); got != want {
		t.Errorf("Text = %q, want %q", got, want)
	}
	id := testPolicy.ID()
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Errorf("ID %q is not 32 hex digits (RFC 8461 §3.1: 1*32 alphanumerics)", id)
	}
	other := *testPolicy
	other.Mode = ModeEnforce
	if other.ID() == id {
		t.Error("a changed policy keeps its id")
	}
	if testPolicy.ID() != id {
		t.Error("the id is not stable")
	}
}

func TestMTASTSOnlyOverHTTPSForLocalDomains(t *testing.T) {
	h := newHandler()
	w := do(t, h, "GET", "https://mta-sts.example.org/.well-known/mta-sts.txt", "mta-sts.example.org", nil, true)
	if w.Code != 200 || w.Body.String() != testPolicy.Text() || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		t.Errorf("policy: %d %q %q", w.Code, w.Header().Get("Content-Type"), w.Body.String())
	}
	for _, tc := range []struct {
		host string
		tls  bool
	}{
		{"mta-sts.example.org", false},    // plain HTTP
		{"mta-sts.example.com", true},     // not local
		{"mail.example.org", true},        // not mta-sts.
		{"mta-sts.", true},                // empty domain
		{"mta-sts.example.org:x:y", true}, // malformed host
	} {
		if w := do(t, h, "GET", "/.well-known/mta-sts.txt", tc.host, nil, tc.tls); w.Code != 404 {
			t.Errorf("host %q tls %v: status %d, want 404", tc.host, tc.tls, w.Code)
		}
	}
	if w := do(t, h, "POST", "/.well-known/mta-sts.txt", "mta-sts.example.org", nil, true); w.Code != 405 {
		t.Errorf("POST: %d", w.Code)
	}
}

func TestParseAddress(t *testing.T) {
	for _, ok := range []string{"alice@example.org", "a.b+c@Example.ORG"} {
		if _, _, err := ParseAddress(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{
		"", "alice", "@example.org", "alice@", "a@b@example.org", "alice@localhost",
		"al ice@example.org", "al\nice@example.org", "<alice>@example.org", "alice@exa_mple.org",
		"alice@-example.org", strings.Repeat("a", 65) + "@example.org",
		"a@" + strings.Repeat("x", 250) + ".org", "alice@example..org",
	} {
		if _, _, err := ParseAddress(bad); !errors.Is(err, ErrBadAddress) {
			t.Errorf("%q: %v, want ErrBadAddress", bad, err)
		}
	}
}

func TestAutodiscoverRequestLimits(t *testing.T) {
	good := `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
 <Request><EMailAddress>bob@example.org</EMailAddress>
 <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
 </Request></Autodiscover>`
	if addr, err := ParseAutodiscoverRequest(strings.NewReader(good)); err != nil || addr != "bob@example.org" {
		t.Fatalf("good request: %q %v", addr, err)
	}
	for name, bad := range map[string]string{
		"empty":      "",
		"no address": "<Autodiscover><Request></Request></Autodiscover>",
		"two":        "<Autodiscover><Request><EMailAddress>a@example.org</EMailAddress><EMailAddress>b@example.org</EMailAddress></Request></Autodiscover>",
		"misplaced":  "<Autodiscover><EMailAddress>a@example.org</EMailAddress></Autodiscover>",
		"unclosed":   "<Autodiscover><Request><EMailAddress>a@example.org</EMailAddress></Request>",
		"mismatched": "<Autodiscover><Request><EMailAddress>a@example.org</Request></EMailAddress></Autodiscover>",
		"doctype":    `<!DOCTYPE x [<!ENTITY e "a@example.org">]><Autodiscover><Request><EMailAddress>&e;</EMailAddress></Request></Autodiscover>`,
		"deep":       strings.Repeat("<a>", 20) + strings.Repeat("</a>", 20),
		"huge":       "<Autodiscover><Request><EMailAddress>" + strings.Repeat("a", MaxRequestBody) + "@example.org</EMailAddress></Request></Autodiscover>",
		"long addr":  "<Autodiscover><Request><EMailAddress>" + strings.Repeat("a", 300) + "@example.org</EMailAddress></Request></Autodiscover>",
		"many":       "<Autodiscover>" + strings.Repeat("<x/>", 2000) + "</Autodiscover>",
		"bad addr":   "<Autodiscover><Request><EMailAddress>not an address</EMailAddress></Request></Autodiscover>",
	} {
		if _, err := ParseAutodiscoverRequest(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestHostileRequests(t *testing.T) {
	h := newHandler()
	long := strings.Repeat("a", 5000) + "@example.org"
	for _, tc := range []struct {
		method, target, host string
		body                 string
		want                 int
	}{
		{"GET", "/mail/config-v1.1.xml", "autoconfig.example.com", "", 404},
		{"GET", "/mail/config-v1.1.xml?emailaddress=" + url.QueryEscape(long), "autoconfig.example.org", "", 400},
		{"GET", "/mail/config-v1.1.xml?emailaddress=bob", "autoconfig.example.org", "", 400},
		{"GET", "/mail/config-v1.1.xml?emailaddress=bob%40example.com", "autoconfig.example.org", "", 404},
		{"POST", "/mail/config-v1.1.xml", "autoconfig.example.org", "", 405},
		{"GET", "/mobileconfig?email=", "mail.example.org", "", 400},
		{"GET", "/mobileconfig?email=" + url.QueryEscape(long), "mail.example.org", "", 400},
		{"GET", "/mobileconfig?email=eve%40evil.example", "mail.example.org", "", 404},
		{"GET", "/mobileconfig?email=%3Cscript%3E%40example.org", "mail.example.org", "", 400},
		{"GET", "/autodiscover/autodiscover.xml", "autodiscover.example.org", "", 405},
		{"POST", "/autodiscover/autodiscover.xml", "autodiscover.example.org", "<x", 400},
		{"POST", "/autodiscover/autodiscover.xml", "autodiscover.example.org", strings.Repeat("x", 1<<20), 400},
		{"POST", "/autodiscover/autodiscover.xml", "autodiscover.example.org",
			"<Autodiscover><Request><EMailAddress>eve@evil.example</EMailAddress></Request></Autodiscover>", 404},
		{"GET", "/../../etc/passwd", "mail.example.org", "", 404},
	} {
		w := do(t, h, tc.method, tc.target, tc.host, strings.NewReader(tc.body), true)
		if w.Code != tc.want {
			t.Errorf("%s %s (host %s): %d, want %d", tc.method, tc.target[:min(len(tc.target), 60)], tc.host, w.Code, tc.want)
		}
		if strings.Contains(w.Body.String(), "example.com") || strings.Contains(w.Body.String(), "evil") {
			t.Errorf("%s: the error echoes the request: %q", tc.target[:min(len(tc.target), 60)], w.Body.String())
		}
	}
}

// plistDict decodes the first <dict> of an XML property list (and the
// dict in its PayloadContent array) into key → value text.
func plistDicts(t *testing.T, data []byte) (top, payload map[string]string) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = false // the DOCTYPE names a DTD that is not fetched
	var stack []map[string]string
	var key, text string
	var done []map[string]string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("plist: %v", err)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			text = ""
			switch e.Name.Local {
			case "dict":
				stack = append(stack, map[string]string{})
			case "true", "false":
				stack[len(stack)-1][key] = e.Name.Local
			}
		case xml.CharData:
			text += string(e)
		case xml.EndElement:
			switch e.Name.Local {
			case "key":
				key = text
			case "string", "integer":
				stack[len(stack)-1][key] = text
			case "dict":
				done = append(done, stack[len(stack)-1])
				stack = stack[:len(stack)-1]
			}
		}
	}
	if len(done) != 2 {
		t.Fatalf("plist has %d dicts, want 2:\n%s", len(done), data)
	}
	return done[1], done[0]
}

// TestDocumentsOverHTTPWithCurl fetches every document with curl from a
// loopback HTTPS server and checks the values against the Server.
func TestDocumentsOverHTTPWithCurl(t *testing.T) {
	curl := testutil.NeedProgram(t, "curl")
	cert := testutil.NewCert(t, "mta-sts.example.org", "autoconfig.example.org", "autodiscover.example.org", "mail.example.org", "example.org")
	srv := httptest.NewUnstartedServer(newHandler())
	srv.TLS = cert.Config()
	srv.StartTLS()
	defer srv.Close()
	port := srv.Listener.Addr().(interface{ String() string }).String()
	_, port, _ = strings.Cut(port, ":")
	caPEM, _ := cert.PEM(t)
	caFile := t.TempDir() + "/ca.pem"
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	rn := testutil.Runner{Timeout: 30 * time.Second, Split: true}
	fetch := func(host, path string, extra ...string) []byte {
		t.Helper()
		args := append([]string{"-sS", "--fail", "--cacert", caFile,
			"--resolve", host + ":" + port + ":127.0.0.1", "https://" + host + ":" + port + path}, extra...)
		r := rn.Run(t, nil, nil, curl, args...)
		if r.Code != 0 {
			t.Fatalf("curl %s%s: %s", host, path, r)
		}
		return []byte(r.Stdout)
	}

	// MTA-STS.
	if got := string(fetch("mta-sts.example.org", "/.well-known/mta-sts.txt")); got != testPolicy.Text() {
		t.Errorf("mta-sts.txt = %q", got)
	}

	// Thunderbird autoconfig, both forms.
	for _, f := range []struct{ host, path string }{
		{"autoconfig.example.org", "/mail/config-v1.1.xml?emailaddress=bob%40example.org"},
		{"example.org", "/.well-known/autoconfig/mail/config-v1.1.xml"},
	} {
		var cc ClientConfig
		if err := xml.Unmarshal(fetch(f.host, f.path), &cc); err != nil {
			t.Fatalf("%s: %v", f.path, err)
		}
		p := cc.Provider
		if p.Domain != "example.org" || len(p.Incoming) != 2 || len(p.Outgoing) != 2 {
			t.Fatalf("%s: %+v", f.path, cc)
		}
		in, out := p.Incoming[0], p.Outgoing[0]
		if in.Type != "pop3" || in.Hostname != testServer.Hostname || in.Port != testServer.POP3TLS || in.SocketType != "SSL" {
			t.Errorf("%s: first incoming server %+v, want POP3 over TLS", f.path, in)
		}
		if p.Incoming[1].Port != testServer.POP3 || p.Incoming[1].SocketType != "STARTTLS" {
			t.Errorf("%s: second incoming server %+v", f.path, p.Incoming[1])
		}
		if out.Type != "smtp" || out.Hostname != testServer.Hostname || out.Port != testServer.Submissions || out.SocketType != "SSL" {
			t.Errorf("%s: first outgoing server %+v", f.path, out)
		}
		if p.Outgoing[1].Port != testServer.Submission || p.Outgoing[1].SocketType != "STARTTLS" {
			t.Errorf("%s: second outgoing server %+v", f.path, p.Outgoing[1])
		}
	}

	// Outlook autodiscover (POX).
	req := `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>carol@example.net</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
	var ad AutodiscoverResponse
	body := fetch("autodiscover.example.org", "/Autodiscover/Autodiscover.xml", "-H", "Content-Type: text/xml", "--data-binary", req)
	if err := xml.Unmarshal(body, &ad); err != nil {
		t.Fatalf("autodiscover: %v\n%s", err, body)
	}
	ps := ad.Response.Account.Protocols
	if len(ps) != 2 || ps[0].Type != "POP3" || ps[1].Type != "SMTP" {
		t.Fatalf("autodiscover protocols: %+v", ps)
	}
	for i, want := range []int{testServer.POP3TLS, testServer.Submissions} {
		if ps[i].Server != testServer.Hostname || ps[i].Port != want || ps[i].SSL != "on" || ps[i].LoginName != "carol@example.net" {
			t.Errorf("autodiscover %s: %+v", ps[i].Type, ps[i])
		}
	}

	// Apple profile.
	top, mail := plistDicts(t, fetch("mail.example.org", "/mobileconfig?email=dave%40example.org"))
	if top["PayloadType"] != "Configuration" || mail["PayloadType"] != "com.apple.mail.managed" {
		t.Errorf("payload types %q, %q", top["PayloadType"], mail["PayloadType"])
	}
	for k, want := range map[string]string{
		"EmailAccountType":             "EmailTypePOP",
		"EmailAddress":                 "dave@example.org",
		"IncomingMailServerHostName":   testServer.Hostname,
		"IncomingMailServerPortNumber": strconv.Itoa(testServer.POP3TLS),
		"IncomingMailServerUseSSL":     "true",
		"IncomingMailServerUsername":   "dave@example.org",
		"OutgoingMailServerHostName":   testServer.Hostname,
		"OutgoingMailServerPortNumber": strconv.Itoa(testServer.Submissions),
		"OutgoingMailServerUseSSL":     "true",
	} {
		if mail[k] != want {
			t.Errorf("mobileconfig %s = %q, want %q", k, mail[k], want)
		}
	}
	if top["PayloadUUID"] == mail["PayloadUUID"] || len(top["PayloadUUID"]) != 36 {
		t.Errorf("payload UUIDs %q, %q", top["PayloadUUID"], mail["PayloadUUID"])
	}
}

func TestDocumentsWithoutImplicitTLS(t *testing.T) {
	s := Server{Hostname: "mail.example.org", POP3: 110, Submission: 587}
	cc := AutoconfigFor(s, "example.org", "")
	if len(cc.Provider.Incoming) != 1 || cc.Provider.Incoming[0].SocketType != "STARTTLS" || cc.Provider.Incoming[0].Username != "%EMAILADDRESS%" {
		t.Errorf("autoconfig: %+v", cc.Provider.Incoming)
	}
	ad := AutodiscoverFor(s, "a@example.org")
	if ps := ad.Response.Account.Protocols; len(ps) != 2 || ps[0].Port != 110 || ps[0].Encryption != "TLS" || ps[1].Port != 587 {
		t.Errorf("autodiscover: %+v", ps)
	}
}
