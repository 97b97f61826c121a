package config

import "time"

// MailAuthConfig is the [mailauth] section: sender authentication of the
// mail the MX receives (SPF, DKIM, DMARC) and the Authentication-Results
// field that reports it.
type MailAuthConfig struct {
	Enabled    bool     `toml:"enabled" comment:"Check SPF (RFC 7208), DKIM (RFC 6376) and DMARC (RFC 7489) on the MX, add an Authentication-Results field (RFC 8601) to every message and remove forged ones. Turn it on for a server that receives mail from the Internet; the lookups go to dns.server. Off by default so that a test or development server sends no DNS queries."`
	SPFFail    string   `toml:"spf_fail" comment:"What an SPF fail does: dmarc (nothing by itself; the sender's DMARC policy decides after DATA), mail (refuse MAIL FROM with 550 5.7.23), rcpt (refuse each RCPT TO) or tag (deliver marked as spam)."`
	DMARC      bool     `toml:"dmarc" comment:"Apply the DMARC policy of the From domain: p=reject refuses the message after DATA with 550 5.7.1, p=quarantine hands it to junk handling. false: report dmarc= in Authentication-Results only."`
	AuthservID string   `toml:"authserv_id" comment:"Name of this server in Authentication-Results (RFC 8601 §2.5); fields claiming it are removed from incoming mail. Empty: hostname."`
	Timeout    Duration `toml:"timeout" comment:"Time allowed for the DNS lookups of each of SPF, DKIM and DMARC for one message (RFC 7208 §4.6.4 asks for at least 20s)."`
}

// defaultMailAuth is the default [mailauth] section.
func defaultMailAuth() MailAuthConfig {
	return MailAuthConfig{
		Enabled: false,
		SPFFail: "dmarc",
		DMARC:   true,
		Timeout: D(20 * time.Second),
	}
}

// MailAuthServID returns the authserv-id: mailauth.authserv_id, or the
// hostname when it is empty.
func (c *Config) MailAuthServID() string {
	if c.MailAuth.AuthservID != "" {
		return c.MailAuth.AuthservID
	}
	return c.Hostname
}

func (c *Config) validateMailAuth(v *validator) {
	v.oneOf("mailauth.spf_fail", c.MailAuth.SPFFail, "dmarc", "mail", "rcpt", "tag")
	if id := c.MailAuth.AuthservID; id != "" {
		if msg := checkHostname(id); msg != "" {
			v.add("mailauth.authserv_id", "%s", msg)
		}
	}
	v.minDuration("mailauth.timeout", c.MailAuth.Timeout, time.Second)
}
