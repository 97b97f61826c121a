package tlsutil

import "crypto/tls"

// ServerConfig returns the tls.Config for postino's TLS listeners (implicit
// TLS and STLS/STARTTLS), serving the certificates of src: a Reloader, or a
// CertSet choosing one by SNI.
//
// minVersion is "1.3" for TLS 1.3 only; anything else (normally "1.2")
// means TLS 1.2 or later. For TLS 1.2 only forward-secret AEAD suites are
// enabled: ECDHE with ECDSA or RSA, and AES-GCM or ChaCha20-Poly1305. TLS 1.3
// suites are not configurable and are all AEAD.
func ServerConfig(src CertificateSource, minVersion string) *tls.Config {
	v := uint16(tls.VersionTLS12)
	if minVersion == "1.3" {
		v = tls.VersionTLS13
	}
	return &tls.Config{
		// Mail is downloaded in bulk: full-size records (RFC 8446
		// §5.1, 2^14 octets) from the first octet, not the small
		// records crypto/tls starts a connection with for web pages.
		DynamicRecordSizingDisabled: true,
		MinVersion:                  v,
		GetCertificate:              src.GetCertificate,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}
