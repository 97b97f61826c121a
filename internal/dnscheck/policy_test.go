package dnscheck

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/wellknown"
)

// TestPolicyFetch: the policy at https://mta-sts.DOMAIN/.well-known/
// mta-sts.txt is fetched over verified HTTPS and compared with the plan's;
// each way of serving it wrong is a FAIL with the policy to serve.
func TestPolicyFetch(t *testing.T) {
	cert := testutil.NewCert(t, "mta-sts.example.test")
	pol := wellknown.Policy{Mode: wellknown.ModeTesting, MX: []string{"mail.example.test"}, MaxAge: 7 * 24 * time.Hour}
	var serve func(w http.ResponseWriter, r *http.Request)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serve(w, r) }))
	srv.TLS = cert.Config()
	srv.StartTLS()
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	text := func(ct, body string) func(http.ResponseWriter, *http.Request) {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/.well-known/mta-sts.txt" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", ct)
			w.Write([]byte(body))
		}
	}
	for _, c := range []struct {
		name   string
		serve  func(http.ResponseWriter, *http.Request)
		roots  bool
		status Status
		detail string
	}{
		{"same", text("text/plain; charset=utf-8", pol.Text()), true, OK, "policy mode testing, mx mail.example.test, max_age 604800"},
		{"LF and other order", text("text/plain", "version: STSv1\nmx: MAIL.example.test\nmax_age: 604800\nmode: testing\nx-ext: 1\n"), true, OK, "policy mode testing"},
		{"other mode", text("text/plain", strings.Replace(pol.Text(), "testing", "enforce", 1)), true, Fail, "is not this server's (mode testing"},
		{"other mx", text("text/plain", strings.Replace(pol.Text(), "mail.example.test", "mx.example.test", 1)), true, Fail, "mx mx.example.test"},
		{"html", text("text/html", pol.Text()), true, Fail, `Content-Type "text/html", want text/plain`},
		{"not found", http.NotFound, true, Fail, "HTTP status 404"},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://elsewhere.test/", http.StatusFound)
		}, true, Fail, "HTTP status 302"},
		{"garbage", text("text/plain", "mode: testing\n"), true, Fail, `invalid policy: mta-sts: invalid policy: no version`},
		{"untrusted certificate", text("text/plain", pol.Text()), false, Fail, "failed to verify certificate"},
	} {
		t.Run(c.name, func(t *testing.T) {
			serve = c.serve
			o := Options{HTTPSPort: port, Timeout: 5 * time.Second, Now: time.Now}
			if c.roots {
				o.Roots = cert.Pool()
			}
			ch := &checker{p: &Plan{Domain: "example.test", MTASTS: pol}, o: o}
			ch.policy(context.Background(), "mta-sts.example.test.", []netip.Addr{netip.MustParseAddr("127.0.0.1")})
			f := ch.out[len(ch.out)-1]
			if f.Status != c.status || !strings.Contains(f.Detail, c.detail) {
				t.Fatalf("got %s\nwant %s with %q", f, c.status, c.detail)
			}
			if f.Status == Fail && !strings.Contains(f.Fix, "mode: testing") {
				t.Errorf("fix %q lacks the policy", f.Fix)
			}
		})
	}
}
