package config

import (
	"crypto/x509"
	"fmt"
	"os"
)

// MTASTSDir returns the folder of cached MTA-STS policies, DATA/mta-sts.
func (c *Config) MTASTSDir() string { return c.ResolvePath("mta-sts") }

// TLSRPTDir returns the folder of TLS-RPT results, DATA/tlsrpt.
func (c *Config) TLSRPTDir() string { return c.ResolvePath("tlsrpt") }

// TLSRPTSubmitter returns queue.tls_rpt_submitter, or the host name.
func (c *Config) TLSRPTSubmitter() string {
	if c.Queue.TLSRPTSubmitter != "" {
		return c.Queue.TLSRPTSubmitter
	}
	return c.Hostname
}

// QueueTLSRoots returns the roots that verify MX hosts under MTA-STS and
// MTA-STS policy servers: the system's, plus the certificates of
// queue.tls_ca_file. With no such file it returns nil (the system's
// roots).
func (c *Config) QueueTLSRoots() (*x509.CertPool, error) {
	if c.Queue.TLSCAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.ResolvePath(c.Queue.TLSCAFile))
	if err != nil {
		return nil, fmt.Errorf("queue.tls_ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("queue.tls_ca_file: no certificate in %s", c.Queue.TLSCAFile)
	}
	return pool, nil
}
