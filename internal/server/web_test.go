package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/wellknown"
)

// writeCert writes a test certificate for names into dir and returns its
// files.
func writeCert(t *testing.T, dir string, c testutil.Cert) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM := c.PEM(t)
	name := c.Leaf.Subject.CommonName
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// tlsLeaf opens a TLS connection to a listener of the given kind: implicit
// TLS, or the plain protocol upgraded with STLS (POP3) or STARTTLS (SMTP).
// It returns the leaf certificate the server presented.
func tlsLeaf(t *testing.T, kind, addr string, cfg *tls.Config) (*x509.Certificate, error) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(nc)
	reply := func() string {
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v", kind, err)
			}
			if len(l) < 4 || l[3] != '-' {
				return l
			}
		}
	}
	switch kind {
	case "stls":
		reply()
		io.WriteString(nc, "STLS\r\n")
		if l := reply(); !strings.HasPrefix(l, "+OK") {
			t.Fatalf("STLS: %q", l)
		}
	case "starttls":
		reply()
		io.WriteString(nc, "EHLO client.example.test\r\n")
		reply()
		io.WriteString(nc, "STARTTLS\r\n")
		if l := reply(); !strings.HasPrefix(l, "220") {
			t.Fatalf("STARTTLS: %q", l)
		}
	}
	tc := tls.Client(nc, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc.ConnectionState().PeerCertificates[0], nil
}

// listenerKinds are the TLS listeners and how each starts TLS.
var listenerKinds = []struct{ name, kind string }{
	{"pop3s", "implicit"}, {"pop3", "stls"}, {"smtp", "starttls"},
	{"submission", "starttls"}, {"submissions", "implicit"}, {"https", "implicit"},
}

// TestSNIOnEveryListener: with two certificate files, every TLS listener
// (POP3S, STLS, SMTP STARTTLS, submission, submissions, HTTPS) presents
// the one matching the name the client asks for, and the primary host
// name's to a client that names none or an unknown name.
func TestSNIOnEveryListener(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPS.Listen = "127.0.0.1:0"
	primary := testutil.NewCert(t, "mail.example.test")
	other := testutil.NewCert(t, "mail.example.net", "pop.example.net")
	cfg.TLS.Cert, cfg.TLS.Key = writeCert(t, cfg.DataDir, primary)
	c2, k2 := writeCert(t, cfg.DataDir, other)
	cfg.TLS.Certificates = append(cfg.TLS.Certificates, config.CertificateFiles{Cert: c2, Key: k2})
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := Build(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown(slog.New(slog.DiscardHandler))
	addr := map[string]string{}
	for _, l := range srv.Listeners() {
		addr[l.Name] = l.Addr
	}
	for _, l := range listenerKinds {
		for _, tc := range []struct {
			sni  string
			want testutil.Cert
		}{
			{"pop.example.net", other}, {"mail.example.net", other},
			{"mail.example.test", primary}, {"", primary}, {"unknown.example.org", primary},
		} {
			cfg := &tls.Config{ServerName: tc.sni, RootCAs: tc.want.Pool()}
			if tc.sni == "" || tc.sni == "unknown.example.org" {
				// Compared by hand below: the name cannot verify.
				cfg.InsecureSkipVerify = true
			}
			leaf, err := tlsLeaf(t, l.kind, addr[l.name], cfg)
			if err != nil {
				t.Errorf("%s, SNI %q: %v", l.name, tc.sni, err)
				continue
			}
			if !leaf.Equal(tc.want.Leaf) {
				t.Errorf("%s, SNI %q: got the certificate of %v", l.name, tc.sni, leaf.DNSNames)
			}
		}
	}
}

// TestWellKnownDocumentsFromConfig: the HTTP and HTTPS listeners serve the
// documents with the configured host name and listener ports; the MTA-STS
// policy only over HTTPS.
func TestWellKnownDocumentsFromConfig(t *testing.T) {
	cfg := testConfig(t)
	a := testutil.FreeAddrs(t, 6)
	cfg.POP3.ListenTLS, cfg.POP3.Listen, cfg.SMTP.Submissions, cfg.SMTP.Submission = a[0], a[1], a[2], a[3]
	cfg.HTTP.Listen, cfg.HTTPS.Listen = a[4], a[5]
	cfg.MTASTS.Mode = "enforce"
	cert := testutil.NewCert(t, "mail.example.test", "mta-sts.example.test", "autoconfig.example.test")
	cfg.TLS.Cert, cfg.TLS.Key = writeCert(t, cfg.DataDir, cert)
	srv, err := Build(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown(slog.New(slog.DiscardHandler))
	get := func(scheme, host, path string) (int, []byte) {
		t.Helper()
		listen := cfg.HTTP.Listen
		if scheme == "https" {
			listen = cfg.HTTPS.Listen
		}
		tr := &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: cert.Pool(), ServerName: host},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, listen)
			},
		}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(scheme + "://" + host + path)
		if err != nil {
			t.Fatalf("%s://%s%s: %v", scheme, host, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	code, body := get("https", "mta-sts.example.test", "/.well-known/mta-sts.txt")
	want := "version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\nmax_age: 604800\r\n"
	if code != 200 || string(body) != want {
		t.Errorf("policy over HTTPS: %d %q, want %q", code, body, want)
	}
	if code, _ := get("http", "mta-sts.example.test", "/.well-known/mta-sts.txt"); code != 404 {
		t.Errorf("policy over plain HTTP: %d, want 404", code)
	}
	for _, scheme := range []string{"http", "https"} {
		code, body := get(scheme, "autoconfig.example.test", "/mail/config-v1.1.xml")
		var cc wellknown.ClientConfig
		if err := xml.Unmarshal(body, &cc); code != 200 || err != nil {
			t.Fatalf("%s autoconfig: %d %v %s", scheme, code, err, body)
		}
		in, out := cc.Provider.Incoming, cc.Provider.Outgoing
		if len(in) != 2 || in[0].Hostname != cfg.Hostname || in[0].Port != listenerPort(cfg.POP3.ListenTLS) ||
			in[1].Port != listenerPort(cfg.POP3.Listen) || len(out) != 2 ||
			out[0].Port != listenerPort(cfg.SMTP.Submissions) || out[1].Port != listenerPort(cfg.SMTP.Submission) {
			t.Errorf("%s autoconfig: %+v", scheme, cc.Provider)
		}
	}
	// With curl, as a client would: autodiscover (POST) and the profile.
	curl := testutil.NeedProgram(t, "curl")
	caPEM, _ := cert.PEM(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	rn := testutil.Runner{Timeout: 30 * time.Second, Split: true}
	httpsPort := listenerPort(cfg.HTTPS.Listen)
	r := rn.Run(t, nil, nil, curl, "-sS", "--fail", "--cacert", caFile,
		"--resolve", fmt.Sprintf("mail.example.test:%d:127.0.0.1", httpsPort),
		"-H", "Content-Type: text/xml", "--data-binary",
		"<Autodiscover><Request><EMailAddress>alice@example.test</EMailAddress></Request></Autodiscover>",
		fmt.Sprintf("https://mail.example.test:%d/autodiscover/autodiscover.xml", httpsPort))
	if r.Code != 0 {
		t.Fatalf("curl autodiscover: %s", r)
	}
	var ad wellknown.AutodiscoverResponse
	if err := xml.Unmarshal([]byte(r.Stdout), &ad); err != nil {
		t.Fatalf("autodiscover: %v\n%s", err, r.Stdout)
	}
	ps := ad.Response.Account.Protocols
	if len(ps) != 2 || ps[0].Type != "POP3" || ps[0].Port != listenerPort(cfg.POP3.ListenTLS) || ps[0].Server != cfg.Hostname ||
		ps[1].Type != "SMTP" || ps[1].Port != listenerPort(cfg.SMTP.Submissions) || ps[0].LoginName != "alice@example.test" {
		t.Errorf("autodiscover: %+v", ps)
	}
	r = rn.Run(t, nil, nil, curl, "-sS", "--fail", "--cacert", caFile, "-D", "-",
		"--resolve", fmt.Sprintf("mail.example.test:%d:127.0.0.1", httpsPort),
		fmt.Sprintf("https://mail.example.test:%d/mobileconfig?email=alice%%40example.test", httpsPort))
	if r.Code != 0 || !strings.Contains(r.Stdout, "application/x-apple-aspen-config") ||
		!strings.Contains(r.Stdout, fmt.Sprintf("<integer>%d</integer>", listenerPort(cfg.POP3.ListenTLS))) {
		t.Errorf("curl mobileconfig: %s", r)
	}
	if code, _ := get("http", "autoconfig.elsewhere.example", "/mail/config-v1.1.xml"); code != 404 {
		t.Errorf("autoconfig of a foreign domain: %d, want 404", code)
	}
}

// TestReloadAddsCertificate: a [[tls.certificate]] added to the
// configuration is served by SNI after Reload, without a restart, and a
// changed MTA-STS mode is served at once.
func TestReloadAddsCertificate(t *testing.T) {
	cfg := testConfig(t)
	cfg.HTTPS.Listen = "127.0.0.1:0"
	primary := testutil.NewCert(t, "mail.example.test", "mta-sts.example.test")
	cfg.TLS.Cert, cfg.TLS.Key = writeCert(t, cfg.DataDir, primary)
	logger := slog.New(slog.DiscardHandler)
	srv, err := Build(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer srv.Shutdown(logger)
	addr := map[string]string{}
	for _, l := range srv.Listeners() {
		addr[l.Name] = l.Addr
	}
	other := testutil.NewCert(t, "pop.example.net")
	sniLeaf := func() *x509.Certificate {
		t.Helper()
		leaf, err := tlsLeaf(t, "implicit", addr["pop3s"], &tls.Config{ServerName: "pop.example.net", InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	if sniLeaf().Equal(other.Leaf) {
		t.Fatal("served before it is configured")
	}
	next := *srv.Config()
	c, k := writeCert(t, cfg.DataDir, other)
	next.TLS.Certificates = []config.CertificateFiles{{Cert: c, Key: k}}
	next.MTASTS.Mode = "enforce"
	if _, err := srv.Reload(&next, logger); err != nil {
		t.Fatal(err)
	}
	if !sniLeaf().Equal(other.Leaf) {
		t.Error("the added certificate is not served after Reload")
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: primary.Pool()},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr["https"])
		},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://mta-sts.example.test/.well-known/mta-sts.txt")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "mode: enforce\r\n") {
		t.Errorf("policy after Reload: %q", body)
	}
	// Oversized headers are refused.
	req, _ := http.NewRequest("GET", "https://mta-sts.example.test/.well-known/mta-sts.txt", nil)
	req.Header.Set("X-Big", strings.Repeat("x", 64<<10))
	resp, err = (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("64 KiB header: %s", resp.Status)
		}
	}
}
