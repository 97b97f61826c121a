package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Pebble is a running ACME test CA (Debian's pebble) with
// pebble-challtestsrv as its DNS server, both on loopback. Every name
// resolves to 127.0.0.1, so pebble validates challenges against the test's
// own listeners.
type Pebble struct {
	// Directory is the ACME directory URL.
	Directory string
	// Pool trusts pebble's own HTTPS certificate (for the directory
	// connection), not the certificates it issues.
	Pool *x509.CertPool
	// Management is the address of pebble's management interface.
	Management string
	// Log holds pebble's output.
	Log *SyncBuffer

	caPEM []byte // pebble's HTTPS certificate
}

// PebbleOptions are what the test sets of pebble's configuration.
type PebbleOptions struct {
	// HTTPPort and TLSPort are where pebble validates HTTP-01 and
	// TLS-ALPN-01 challenges (on 127.0.0.1).
	HTTPPort, TLSPort int
	// Validity is the lifetime of issued certificates; 0 is pebble's
	// default.
	Validity time.Duration
}

// StartPebble starts pebble-challtestsrv and pebble for the test and stops
// them when it ends. Real challenges are validated (PEBBLE_VA_ALWAYS_VALID
// is off), without pebble's random validation delays. Missing programs skip
// the test, or fail it under CI=true.
func StartPebble(t testing.TB, o PebbleOptions) *Pebble {
	t.Helper()
	pebble := NeedProgram(t, "pebble")
	challtest := NeedProgram(t, "pebble-challtestsrv")
	dir := t.TempDir()
	addrs := FreeAddrs(t, 4)
	dnsAddr, challMgmt, listen, mgmt := addrs[0], addrs[1], addrs[2], addrs[3]

	// The DNS server answers every A query with 127.0.0.1 and no AAAA
	// (the listeners are IPv4); every other challenge server is off.
	dnsLog := &SyncBuffer{}
	dns := exec.Command(challtest, "-dns01", dnsAddr, "-management", challMgmt,
		"-http01", "", "-https01", "", "-tlsalpn01", "",
		"-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	dns.Stdout, dns.Stderr = dnsLog, dnsLog
	dp, err := StartProcess(dns)
	if err != nil {
		t.Fatalf("starting pebble-challtestsrv: %v", err)
	}
	// Neither program exits 0 on SIGTERM: only check it was running.
	t.Cleanup(func() { stopPeer(t, dp, dnsLog) })

	// Pebble's HTTPS certificate, for 127.0.0.1 and localhost.
	c := NewCert(t, "localhost", "127.0.0.1")
	certPEM, keyPEM := c.PEM(t)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}}
	if o.Validity > 0 {
		cfg["pebble"].(map[string]any)["certificateValidityPeriod"] = uint64(o.Validity / time.Second)
	}
	data, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// The DNS server must answer before pebble validates anything.
	WaitFor(t, 10*time.Second, "pebble-challtestsrv DNS", func() bool {
		conn, err := net.Dial("tcp", dnsAddr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})

	log := &SyncBuffer{}
	cmd := exec.Command(pebble, "-config", cfgFile, "-dnsserver", dnsAddr)
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	cmd.Stdout, cmd.Stderr = log, log
	pp, err := StartProcess(cmd)
	if err != nil {
		t.Fatalf("starting pebble: %v", err)
	}
	t.Cleanup(func() {
		stopPeer(t, pp, log)
		if t.Failed() {
			t.Logf("pebble output:\n%s", log.String())
		}
	})
	p := &Pebble{Directory: "https://" + listen + "/dir", Pool: c.Pool(), Management: mgmt, Log: log, caPEM: certPEM}
	WaitFor(t, 20*time.Second, "pebble's directory", func() bool {
		resp, err := p.Client().Get(p.Directory)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// Client returns an HTTP client that trusts pebble's HTTPS certificate.
func (p *Pebble) Client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: p.Pool},
	}}
}

// CAFile writes pebble's HTTPS certificate to a PEM file in dir and
// returns its path, for a client configured with a CA file.
func (p *Pebble) CAFile(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "pebble-ca.pem")
	data := p.caPEM
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Roots returns a pool with the root that pebble's issued certificates
// chain to (management endpoint /roots/0).
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	resp, err := p.Client().Get("https://" + p.Management + "/roots/0")
	if err != nil {
		t.Fatalf("pebble roots: %v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble roots: %s %v", resp.Status, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatalf("pebble roots: no certificate in %q", data)
	}
	return pool
}

// Port returns the port of a host:port address.
func Port(t testing.TB, addr string) int {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(fmt.Errorf("port of %q: %w", addr, err))
	}
	return n
}

// stopPeer fails the test if the peer had exited before the end, then
// stops it.
func stopPeer(t testing.TB, p *Process, out fmt.Stringer) {
	t.Helper()
	if p.Exited() {
		t.Errorf("%s had exited before the end of the test (%v):\n%s", p.name(), p.Err(), out)
		return
	}
	p.Terminate(5 * time.Second)
}
