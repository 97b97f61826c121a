package config

import (
	"net"
	"time"
)

// AdminConfig is the [admin] section.
type AdminConfig struct {
	Listen string `toml:"listen" reload:"restart" comment:"Address (host:port) of the admin HTTP listener, serving Prometheus metrics at /metrics and the probes /healthz (the process is up) and /readyz (the mail store is writable and the user database readable). It has no authentication: keep it on loopback or a private network. Empty disables it. If the address cannot be bound, postino logs the error and serves mail without it."`
}

// DefaultAdminListen is the default admin.listen: loopback, port 9110.
const DefaultAdminListen = "127.0.0.1:9110"

// defaultAdmin returns the defaults of the [admin] section.
func defaultAdmin() AdminConfig {
	return AdminConfig{Listen: DefaultAdminListen}
}

// maxVaultDays bounds pop3.vault_days (about 27 years).
const maxVaultDays = 9999

// validateAdmin checks the [admin] section and the retention keys of
// [pop3].
func (c *Config) validateAdmin(v *validator) {
	v.addr("admin.listen", c.Admin.Listen)
	if c.Admin.Listen != "" && checkAddr(c.Admin.Listen) == "" {
		if host, _, _ := net.SplitHostPort(c.Admin.Listen); host == "" {
			v.add("admin.listen", "must name an address to bind, such as 127.0.0.1:9110 (got %q, every interface): the listener has no authentication", c.Admin.Listen)
		}
	}
	v.addr("fetch.metrics_listen", c.Fetch.MetricsListen)
	v.intRange("pop3.vault_days", c.POP3.VaultDays, 0, maxVaultDays)
	v.minDuration("pop3.sweep_interval", c.POP3.SweepInterval, time.Minute)
}

// ExpireDays returns pop3.expire as a number of days, or -1 for NEVER.
// 0 days removes downloaded messages at the next sweep (RFC 2449 §6.7:
// EXPIRE 0 asks clients not to leave mail on the server).
func (p *POP3Config) ExpireDays() int {
	n := 0
	if p.Expire == ExpireNever || !isDays(p.Expire) {
		return -1
	}
	for i := range len(p.Expire) {
		n = n*10 + int(p.Expire[i]-'0')
	}
	return n
}
