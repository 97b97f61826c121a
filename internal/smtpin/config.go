package smtpin

import (
	"time"

	"github.com/postino-mail/postino/internal/config"
)

// ConfigOptions returns the settings of an SMTP server of the given role
// (MX, submission or LMTP) from the configuration. The caller adds what is
// not a setting: TLS, Logger, Deliverer, Users, Aliases, Guard, Relay and
// SRS.
func ConfigOptions(c *config.Config, role Role) Options {
	s := c.SMTP
	return Options{
		Hostname:            c.Hostname,
		Role:                role,
		MaxMessageBytes:     int64(s.MaxMessageSize),
		MaxRecipients:       s.MaxRecipients,
		ReadTimeout:         s.CommandTimeout.Duration,
		DataTimeout:         s.DataTimeout.Duration,
		MaxErrors:           s.MaxErrors,
		MaxConnections:      s.MaxConnections,
		MaxConnectionsPerIP: s.MaxConnectionsPerIP,
		TrustedNetworks:     s.TrustedNetworkPrefixes(),
		LocalDomains:        s.LocalDomains,
		PlusSeparator:       s.PlusSeparator,
		PlaintextAuth:       s.PlaintextAuth,
		AllowAnySender:      !s.RestrictSender,
		Postmaster:          s.Postmaster,
		PregreetWait:        mxOnly(role, c.Antispam.PregreetWait.Duration),
		PregreetPassTTL:     c.Antispam.PregreetPassTTL.Duration,
	}
}

// mxOnly returns d for the MX and 0 for the other roles.
func mxOnly(role Role, d time.Duration) time.Duration {
	if role != RoleMX {
		return 0
	}
	return d
}
