package blackbox

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/wellknown"
)

// mailHost is a "postino serve" for example.test with every listener on
// a free loopback port and a certificate for the names of the domain.
type mailHost struct {
	*server
	config, caFile string
	addr           map[string]string // pop3, pop3s, smtp, submission, submissions, http, https
}

// startMailHost writes a configuration for mail.example.test (more
// sections appended), runs "postino init" and "postino dkim keygen
// example.test", and serves it until the test ends.
func startMailHost(t *testing.T, cert testutil.Cert, sections string) *mailHost {
	t.Helper()
	t.Setenv("POSTINO_CONFIG", "")
	dir := t.TempDir()
	certPEM, keyPEM := cert.PEM(t)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	free := testutil.FreeAddrs(t, 7)
	h := &mailHost{config: filepath.Join(dir, "postino.toml"), caFile: certFile, addr: map[string]string{
		"pop3": free[0], "pop3s": free[1], "smtp": free[2], "submission": free[3], "submissions": free[4], "http": free[5], "https": free[6],
	}}
	data := filepath.Join(dir, "data")
	conf := fmt.Sprintf(`hostname = "mail.example.test"
data_dir = %q
[tls]
cert = %q
key = %q
[pop3]
listen = %q
listen_tls = %q
[smtp]
listen = %q
submission = %q
submissions = %q
local_domains = ["example.test"]
[http]
listen = %q
[https]
listen = %q
%s
`, data, certFile, keyFile, h.addr["pop3"], h.addr["pop3s"], h.addr["smtp"], h.addr["submission"], h.addr["submissions"], h.addr["http"], h.addr["https"], sections)
	if err := os.WriteFile(h.config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init"}, {"dkim", "keygen", "example.test"}} {
		if r := postino(t, nil, append(args, "--config", h.config)...); r.Code != 0 {
			t.Fatalf("postino %v: %s", args, r)
		}
	}
	h.server = startServer(t, serverOpts{data: data, noAddrs: true, noDataFlag: true, pop3Addr: h.addr["pop3"], pop3sAddr: h.addr["pop3s"],
		extraArgs: []string{"--config", h.config}})
	testutil.WaitFor(t, 30*time.Second, "the listeners", func() bool {
		for _, a := range h.addr {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				return false
			}
			c.Close()
		}
		return true
	})
	return h
}

// port returns the port number of listener name.
func (h *mailHost) port(t *testing.T, name string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(h.addr[name])
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// curlGet runs curl against listener (http or https) of h for host and
// path, name resolved to 127.0.0.1, the test certificate trusted, and
// returns the HTTP status and the body.
func (h *mailHost) curl(t *testing.T, curl, listener, host, path string, extra ...string) (int, []byte) {
	t.Helper()
	port := strconv.Itoa(h.port(t, listener))
	out := filepath.Join(t.TempDir(), "body")
	args := append([]string{"-sS", "--max-time", "30", "--cacert", h.caFile, "--resolve", host + ":" + port + ":127.0.0.1",
		"--output", out, "--write-out", "%{http_code}", listener + "://" + host + ":" + port + path}, extra...)
	r := run(t, []string{"CURL_CA_BUNDLE=/nonexistent"}, nil, curl, args...)
	if r.Code != 0 {
		t.Fatalf("curl %s://%s%s: %s", listener, host, path, r)
	}
	code, err := strconv.Atoi(strings.TrimSpace(r.Stdout))
	if err != nil {
		t.Fatalf("curl %s://%s%s: status %q", listener, host, path, r.Stdout)
	}
	body, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return code, body
}

// plistDicts decodes the two <dict> of an Apple configuration profile:
// the top level and the mail payload, each as key → value text.
func plistDicts(t *testing.T, data []byte) (top, payload map[string]string) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = false // the DOCTYPE names a DTD that is not fetched
	var stack, done []map[string]string
	var key, text string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("plist: %v\n%s", err, data)
		}
		switch e := tok.(type) {
		case xml.StartElement:
			text = ""
			switch e.Name.Local {
			case "dict":
				stack = append(stack, map[string]string{})
			case "true", "false":
				if len(stack) == 0 {
					t.Fatalf("plist: <%s> outside a dict", e.Name.Local)
				}
				stack[len(stack)-1][key] = e.Name.Local
			}
		case xml.CharData:
			text += string(e)
		case xml.EndElement:
			switch e.Name.Local {
			case "key":
				key = text
			case "string", "integer":
				if len(stack) == 0 {
					t.Fatalf("plist: <%s> outside a dict", e.Name.Local)
				}
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

// TestServeWellKnownDocumentsWithCurl: the binary's HTTP and HTTPS
// listeners serve the Thunderbird autoconfig (both URL forms), the
// Outlook autodiscover answer, the Apple profile and the MTA-STS policy,
// fetched with curl and checked against the configuration; a foreign
// domain gets 404 and the policy is not served over plain HTTP.
func TestServeWellKnownDocumentsWithCurl(t *testing.T) {
	curl := testutil.NeedProgram(t, "curl")
	cert := testutil.NewCert(t, "mail.example.test", "mta-sts.example.test", "autoconfig.example.test", "autodiscover.example.test", "example.test")
	h := startMailHost(t, cert, "[mta_sts]\nmode = \"enforce\"\n")
	pop3, pop3s := h.port(t, "pop3"), h.port(t, "pop3s")
	submission, submissions := h.port(t, "submission"), h.port(t, "submissions")

	// Thunderbird autoconfig: both URL forms, over HTTP and HTTPS.
	for _, f := range []struct{ listener, host, path string }{
		{"https", "autoconfig.example.test", "/mail/config-v1.1.xml?emailaddress=bob%40example.test"},
		{"http", "autoconfig.example.test", "/mail/config-v1.1.xml"},
		{"https", "example.test", "/.well-known/autoconfig/mail/config-v1.1.xml"},
		{"http", "example.test", "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=bob%40example.test"},
	} {
		code, body := h.curl(t, curl, f.listener, f.host, f.path)
		var cc wellknown.ClientConfig
		if err := xml.Unmarshal(body, &cc); code != 200 || err != nil {
			t.Fatalf("%s://%s%s: %d %v\n%s", f.listener, f.host, f.path, code, err, body)
		}
		p := cc.Provider
		if p.Domain != "example.test" || len(p.Incoming) != 2 || len(p.Outgoing) != 2 {
			t.Fatalf("%s://%s%s: %+v", f.listener, f.host, f.path, cc)
		}
		in, out := p.Incoming, p.Outgoing
		if in[0].Type != "pop3" || in[0].Hostname != "mail.example.test" || in[0].Port != pop3s || in[0].SocketType != "SSL" ||
			in[1].Type != "pop3" || in[1].Hostname != "mail.example.test" || in[1].Port != pop3 || in[1].SocketType != "STARTTLS" {
			t.Errorf("%s://%s%s: incoming %+v, want POP3S on %d then STLS on %d", f.listener, f.host, f.path, in, pop3s, pop3)
		}
		if out[0].Type != "smtp" || out[0].Hostname != "mail.example.test" || out[0].Port != submissions || out[0].SocketType != "SSL" ||
			out[1].Port != submission || out[1].SocketType != "STARTTLS" {
			t.Errorf("%s://%s%s: outgoing %+v, want submissions on %d then submission on %d", f.listener, f.host, f.path, out, submissions, submission)
		}
	}

	// Outlook autodiscover, POSTed.
	req := `<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"><Request><EMailAddress>carol@example.test</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>`
	code, body := h.curl(t, curl, "https", "autodiscover.example.test", "/autodiscover/autodiscover.xml", "-H", "Content-Type: text/xml", "--data-binary", req)
	var ad wellknown.AutodiscoverResponse
	if err := xml.Unmarshal(body, &ad); code != 200 || err != nil {
		t.Fatalf("autodiscover: %d %v\n%s", code, err, body)
	}
	ps := ad.Response.Account.Protocols
	if len(ps) != 2 || ps[0].Type != "POP3" || ps[1].Type != "SMTP" {
		t.Fatalf("autodiscover protocols: %+v", ps)
	}
	for i, want := range []int{pop3s, submissions} {
		if ps[i].Server != "mail.example.test" || ps[i].Port != want || ps[i].SSL != "on" || ps[i].LoginName != "carol@example.test" {
			t.Errorf("autodiscover %s: %+v, want port %d with SSL", ps[i].Type, ps[i], want)
		}
	}

	// Apple profile for a user.
	code, body = h.curl(t, curl, "https", "mail.example.test", "/mobileconfig?email=dave%40example.test")
	if code != 200 {
		t.Fatalf("mobileconfig: %d\n%s", code, body)
	}
	top, mail := plistDicts(t, body)
	if top["PayloadType"] != "Configuration" || mail["PayloadType"] != "com.apple.mail.managed" {
		t.Errorf("payload types %q, %q", top["PayloadType"], mail["PayloadType"])
	}
	for k, want := range map[string]string{
		"EmailAccountType":             "EmailTypePOP",
		"EmailAddress":                 "dave@example.test",
		"IncomingMailServerHostName":   "mail.example.test",
		"IncomingMailServerPortNumber": strconv.Itoa(pop3s),
		"IncomingMailServerUseSSL":     "true",
		"IncomingMailServerUsername":   "dave@example.test",
		"OutgoingMailServerHostName":   "mail.example.test",
		"OutgoingMailServerPortNumber": strconv.Itoa(submissions),
		"OutgoingMailServerUseSSL":     "true",
	} {
		if mail[k] != want {
			t.Errorf("mobileconfig %s = %q, want %q", k, mail[k], want)
		}
	}

	// MTA-STS policy over HTTPS, as the configuration says.
	code, body = h.curl(t, curl, "https", "mta-sts.example.test", "/.well-known/mta-sts.txt")
	if want := "version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\nmax_age: 604800\r\n"; code != 200 || string(body) != want {
		t.Errorf("policy over HTTPS: %d %q, want %q", code, body, want)
	}
	// RFC 8461 §3.3: the policy is fetched over HTTPS only.
	if code, body := h.curl(t, curl, "http", "mta-sts.example.test", "/.well-known/mta-sts.txt"); code != 404 || strings.Contains(string(body), "STSv1") {
		t.Errorf("policy over plain HTTP: %d %q, want 404", code, body)
	}

	// A foreign domain gets nothing, whatever the document.
	for _, f := range []struct{ listener, host, path string }{
		{"http", "autoconfig.elsewhere.example", "/mail/config-v1.1.xml"},
		{"https", "autoconfig.example.test", "/mail/config-v1.1.xml?emailaddress=eve%40elsewhere.example"},
		{"https", "mail.example.test", "/mobileconfig?email=eve%40elsewhere.example"},
	} {
		if code, body := h.curl(t, curl, f.listener, f.host, f.path); code != 404 || strings.Contains(string(body), "elsewhere") {
			t.Errorf("%s://%s%s: %d %q, want 404", f.listener, f.host, f.path, code, body)
		}
	}
	code, body = h.curl(t, curl, "https", "autodiscover.example.test", "/autodiscover/autodiscover.xml", "-H", "Content-Type: text/xml", "--data-binary",
		"<Autodiscover><Request><EMailAddress>eve@elsewhere.example</EMailAddress></Request></Autodiscover>")
	if code != 404 || strings.Contains(string(body), "elsewhere") {
		t.Errorf("autodiscover of a foreign address: %d %q, want 404", code, body)
	}
	// The TLS is real: without the certificate curl refuses.
	port := strconv.Itoa(h.port(t, "https"))
	if r := run(t, []string{"CURL_CA_BUNDLE=/nonexistent"}, nil, curl, "-sS", "--max-time", "30", "--resolve", "mta-sts.example.test:"+port+":127.0.0.1",
		"https://mta-sts.example.test:"+port+"/.well-known/mta-sts.txt"); r.Code == 0 {
		t.Errorf("curl accepted the self-signed certificate without --cacert:\n%s", r)
	}
}
