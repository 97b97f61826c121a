package config

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/tlsutil"
)

// HTTPConfig is the [http] section.
type HTTPConfig struct {
	Listen string `toml:"listen" reload:"restart" comment:"Address for plain HTTP (host:port); empty disables it. The standard port is 80: ACME HTTP-01 challenges arrive there."`
}

// HTTPSConfig is the [https] section.
type HTTPSConfig struct {
	Listen string `toml:"listen" reload:"restart" comment:"Address for HTTPS (host:port); empty disables it. The standard port is 443: ACME TLS-ALPN-01 challenges and MTA-STS policy fetches arrive there."`
}

// MTASTSConfig is the [mta_sts] section.
type MTASTSConfig struct {
	Mode   string   `toml:"mode" comment:"Policy mode: testing (senders report failures but deliver anyway), enforce (senders deliver only over verified TLS to the mx names) or none (withdraws a policy)."`
	MX     []string `toml:"mx" comment:"Host names senders may deliver to (\"*.example.org\" patterns allowed): the names in the MX records of the local domains. Empty: hostname and tls.names."`
	MaxAge Duration `toml:"max_age" comment:"How long senders keep the policy (whole seconds, at most 8766h = one year, RFC 8461 §3.2)."`
}

// maxMTASTSAge is RFC 8461 §3.2's limit on max_age: 31557600 seconds.
const maxMTASTSAge = 31557600 * time.Second

// HostNames returns hostname and tls.names, lower-cased, without
// duplicates: the public names of this server.
func (c *Config) HostNames() []string {
	var out []string
	for _, n := range append([]string{c.Hostname}, c.TLS.Names...) {
		n = strings.TrimSuffix(strings.ToLower(n), ".")
		dup := false
		for _, o := range out {
			dup = dup || o == n
		}
		if !dup {
			out = append(out, n)
		}
	}
	return out
}

// MTASTSHosts returns mta_sts.mx, or HostNames when it is empty.
func (c *Config) MTASTSHosts() []string {
	if len(c.MTASTS.MX) > 0 {
		return c.MTASTS.MX
	}
	return c.HostNames()
}

// ACMEDir returns the folder where ACME certificates and the account key
// are kept, DATA/tls/acme.
func (c *Config) ACMEDir() string { return filepath.Join(c.TLSDir(), "acme") }

// CertificatePairs returns the certificate files in order: tls.cert and
// tls.key first when set, then each [[tls.certificate]], resolved against
// data_dir.
func (c *Config) CertificatePairs() (certs, keys []string) {
	if cert, key := c.TLSFiles(); cert != "" {
		certs, keys = append(certs, cert), append(keys, key)
	}
	for _, p := range c.TLS.Certificates {
		certs, keys = append(certs, c.ResolvePath(p.Cert)), append(keys, c.ResolvePath(p.Key))
	}
	return certs, keys
}

// validateWeb checks the ACME, HTTP(S) and MTA-STS keys.
func (c *Config) validateWeb(v *validator) {
	for i, p := range c.TLS.Certificates {
		if p.Cert == "" || p.Key == "" {
			v.add(fmt.Sprintf("tls.certificate[%d]", i), "cert and key must both be set")
		}
	}
	for i, n := range c.TLS.Names {
		if msg := checkDomain(n); msg != "" {
			v.add(fmt.Sprintf("tls.names[%d]", i), "%s", msg)
		}
	}
	if c.TLS.ACME {
		if at := strings.LastIndexByte(c.TLS.ACMEEmail, '@'); at <= 0 || checkDomain(c.TLS.ACMEEmail[at+1:]) != "" ||
			strings.ContainsAny(c.TLS.ACMEEmail, " \t\r\n<>\",") {
			v.add("tls.acme_email", "must be a contact address user@domain with tls.acme (got %q)", c.TLS.ACMEEmail)
		}
		if u, err := url.Parse(c.TLS.ACMEDirectory); err != nil || u.Scheme != "https" || u.Host == "" {
			v.add("tls.acme_directory", "must be an https:// URL (got %q)", c.TLS.ACMEDirectory)
		}
		// RFC 8555 §7.1.4 identifiers are DNS names; a CA refuses bare
		// names such as "localhost".
		if !strings.Contains(strings.Trim(c.Hostname, "."), ".") {
			v.add("hostname", "must be a public host name (with a dot) with tls.acme (got %q)", c.Hostname)
		}
		for i, n := range c.TLS.Names {
			if !strings.Contains(strings.Trim(n, "."), ".") {
				v.add(fmt.Sprintf("tls.names[%d]", i), "must be a public host name (with a dot) with tls.acme (got %q)", n)
			}
		}
		if c.HTTP.Listen == "" && c.HTTPS.Listen == "" {
			v.add("tls.acme", "needs https.listen (port 443, TLS-ALPN-01) or http.listen (port 80, HTTP-01) for the CA to check control of the names")
		}
	}
	v.addr("http.listen", c.HTTP.Listen)
	v.addr("https.listen", c.HTTPS.Listen)
	v.oneOf("mta_sts.mode", c.MTASTS.Mode, "testing", "enforce", "none")
	if a := c.MTASTS.MaxAge.Duration; a <= 0 || a > maxMTASTSAge || a%time.Second != 0 {
		v.add("mta_sts.max_age", "must be whole seconds between 1s and %s (got %s)", Duration{maxMTASTSAge}, c.MTASTS.MaxAge)
	}
	for i, mx := range c.MTASTS.MX {
		// RFC 8461 §3.2: an mx pattern is a host name, or "*." and one.
		if msg := checkDomain(strings.TrimPrefix(mx, "*.")); msg != "" {
			v.add(fmt.Sprintf("mta_sts.mx[%d]", i), "%s", msg)
		}
	}
}

// checkWebFiles checks the files of each [[tls.certificate]] (as tls.cert
// and tls.key are checked) and tls.acme_ca_file.
func (k *checker) checkWebFiles(c *Config, now time.Time) {
	for i, p := range c.TLS.Certificates {
		if p.Cert == "" || p.Key == "" {
			continue // validate reported it
		}
		key := fmt.Sprintf("tls.certificate[%d]", i)
		pc := tlsutil.CheckPair(c.ResolvePath(p.Cert), c.ResolvePath(p.Key), "", now)
		for _, e := range pc.Errors {
			k.conf(SeverityError, key+"."+e.Which, "%v", e.Err)
		}
		for _, w := range pc.Warnings {
			k.conf(SeverityWarning, key+"."+w.Which, "%v", w.Err)
		}
	}
	if f := c.TLS.ACMECAFile; f != "" {
		data, err := os.ReadFile(c.ResolvePath(f))
		if err == nil && !x509.NewCertPool().AppendCertsFromPEM(data) {
			err = fmt.Errorf("%s holds no PEM certificate", c.ResolvePath(f))
		}
		if err != nil {
			k.conf(SeverityError, "tls.acme_ca_file", "%v", err)
		}
	}
}
