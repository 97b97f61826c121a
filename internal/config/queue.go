package config

import (
	"net"
	"strings"
	"time"
)

// QueueConfig is the [queue] section: the outbound queue that delivers
// submitted mail to other domains.
type QueueConfig struct {
	MinBackoff          Duration `toml:"min_backoff" comment:"Delay before the first retry of a temporarily failed delivery; each further retry doubles it (Postfix: 5m)."`
	MaxBackoff          Duration `toml:"max_backoff" comment:"Longest delay between retries (Postfix: 4000s)."`
	MaxLifetime         Duration `toml:"max_lifetime" comment:"How long a message is retried before it is bounced to its sender (Postfix: 5 days)."`
	DelayWarning        Duration `toml:"delay_warning" comment:"Send the sender a 'delayed' notice once a message has waited this long; 0s: never (as in Postfix)."`
	ConnectTimeout      Duration `toml:"connect_timeout" comment:"Time allowed to connect to a remote server and read its greeting."`
	CommandTimeout      Duration `toml:"command_timeout" comment:"Time allowed for each reply of a remote server."`
	DataDoneTimeout     Duration `toml:"data_done_timeout" comment:"Time allowed for the reply to the end of the message data."`
	MaxPerDomain        int      `toml:"max_per_domain" comment:"Simultaneous deliveries to one destination domain."`
	MaxConcurrent       int      `toml:"max_concurrent" comment:"Simultaneous deliveries in all."`
	BounceSizeLimit     Size     `toml:"bounce_size_limit" comment:"Largest original message returned whole in a bounce (RET=FULL); larger ones are returned as headers."`
	STARTTLS            bool     `toml:"starttls" comment:"Use STARTTLS with remote servers that offer it (opportunistic: certificates are not verified, as with Postfix's 'may' level)."`
	DKIMDir             string   `toml:"dkim_dir" comment:"Directory of DKIM signing keys (DIR/<domain>/), made by 'postino dkim keygen'; mail from a local domain with keys is signed. Empty means DATA/dkim."`
	Routes              []string `toml:"routes" comment:"Static routes, like Postfix's transport map: \"domain=host:port\" sends that domain's mail to host:port instead of its MX hosts."`
	DNSServer           string   `toml:"dns_server" reload:"restart" comment:"Older name of dns.server, still accepted."`
	Smarthost           string   `toml:"smarthost" comment:"host:port of a relay host that receives all remote mail instead of the recipients' MX hosts; empty: deliver to MX hosts directly."`
	SmarthostUsername   string   `toml:"smarthost_username" comment:"User name for AUTH at the relay host; empty: no AUTH."`
	SmarthostPassword   string   `toml:"smarthost_password" comment:"Password for AUTH at the relay host (sent only over TLS or to loopback)."`
	SmarthostRequireTLS bool     `toml:"smarthost_require_tls" comment:"Refuse to send to the relay host without TLS (its certificate is verified)."`
	MTASTS              bool     `toml:"mta_sts" comment:"Apply the MTA-STS policies of recipient domains (RFC 8461): a domain that publishes mode enforce gets mail only over TLS with a valid certificate to the MX hosts its policy lists (otherwise the mail waits and is retried). Policies are cached in DATA/mta-sts. Needs starttls."`
	DANE                bool     `toml:"dane" comment:"Authenticate MX hosts with DNSSEC-validated TLSA records (DANE, RFC 7672); it takes precedence over MTA-STS. Effective only when dns.server is a DNSSEC-validating resolver (it must set the AD bit). Needs starttls."`
	TLSRPT              bool     `toml:"tls_rpt" comment:"Record the outcome of each TLS session with MX hosts per recipient domain (DATA/tlsrpt) and send daily aggregate reports (RFC 8460) to the addresses of domains that publish a _smtp._tls record."`
	TLSRPTSubmitter     string   `toml:"tls_rpt_submitter" comment:"Name of the organisation in TLS reports (and the domain of their sender, tlsrpt-noreply@...); empty: the host name."`
	TLSCAFile           string   `toml:"tls_ca_file" comment:"PEM file of extra certification authorities trusted for MX hosts under MTA-STS and for MTA-STS policy servers, besides the system's; empty: the system's only."`
}

// defaultQueue is the default [queue] section: Postfix's values where
// Postfix has one.
func defaultQueue() QueueConfig {
	return QueueConfig{
		MinBackoff:   D(5 * time.Minute),    // Postfix minimal_backoff_time, queue_run_delay (300s)
		MaxBackoff:   D(4000 * time.Second), // Postfix maximal_backoff_time
		MaxLifetime:  D(120 * time.Hour),    // Postfix maximal_queue_lifetime (5d)
		DelayWarning: D(0),                  // Postfix delay_warning_time (off)
		// Postfix smtp_connect_timeout (30s) and smtp_helo/mail/rcpt_timeout
		// (300s; RFC 5321 §4.5.3.2 asks for at least 5 minutes for MAIL and
		// RCPT).
		ConnectTimeout: D(30 * time.Second),
		CommandTimeout: D(5 * time.Minute),
		// Postfix smtp_data_done_timeout (600s; RFC 5321 §4.5.3.2.6).
		DataDoneTimeout: D(10 * time.Minute),
		MaxPerDomain:    20,    // Postfix default_destination_concurrency_limit
		MaxConcurrent:   100,   // Postfix default_process_limit
		BounceSizeLimit: 50000, // Postfix bounce_size_limit
		STARTTLS:        true,
		Routes:          []string{},
		MTASTS:          true,
		DANE:            true,
		TLSRPT:          true,
	}
}

func (c *Config) validateQueue(v *validator) {
	q := c.Queue
	v.minDuration("queue.min_backoff", q.MinBackoff, time.Second)
	if q.MaxBackoff.Duration < q.MinBackoff.Duration {
		v.add("queue.max_backoff", "must be at least queue.min_backoff (got %s)", q.MaxBackoff)
	}
	v.minDuration("queue.max_lifetime", q.MaxLifetime, time.Minute)
	if q.DelayWarning.Duration < 0 {
		v.add("queue.delay_warning", "must not be negative (got %s)", q.DelayWarning)
	}
	v.minDuration("queue.connect_timeout", q.ConnectTimeout, time.Second)
	v.minDuration("queue.command_timeout", q.CommandTimeout, time.Second)
	v.minDuration("queue.data_done_timeout", q.DataDoneTimeout, time.Second)
	v.atLeast("queue.max_per_domain", q.MaxPerDomain, 1)
	v.atLeast("queue.max_concurrent", q.MaxConcurrent, 1)
	for _, r := range q.Routes {
		d, addr, ok := strings.Cut(r, "=")
		if _, _, err := net.SplitHostPort(addr); !ok || d == "" || err != nil {
			v.add("queue.routes", "each route must be \"domain=host:port\" (got %q)", r)
		}
	}
	if q.DNSServer != "" {
		if _, _, err := net.SplitHostPort(q.DNSServer); err != nil {
			v.add("queue.dns_server", "must be host:port (got %q)", q.DNSServer)
		}
	}
	if q.TLSRPTSubmitter != "" && (strings.ContainsAny(q.TLSRPTSubmitter, " \t\r\n@<>/!") || len(q.TLSRPTSubmitter) > 253) {
		v.add("queue.tls_rpt_submitter", "must be a domain name (got %q)", q.TLSRPTSubmitter)
	}
	if q.Smarthost != "" {
		if _, _, err := net.SplitHostPort(q.Smarthost); err != nil {
			v.add("queue.smarthost", "must be host:port (got %q)", q.Smarthost)
		}
	}
}

// QueueDir returns the outbound queue's folder, DATA/queue.
func (c *Config) QueueDir() string { return c.ResolvePath("queue") }

// SRSKeyFile returns the file of the SRS secret (DATA/srs.key).
func (c *Config) SRSKeyFile() string { return c.ResolvePath("srs.key") }

// DKIMDir returns the folder of DKIM keys.
func (c *Config) DKIMDir() string {
	if c.Queue.DKIMDir == "" {
		return c.ResolvePath("dkim")
	}
	return c.ResolvePath(c.Queue.DKIMDir)
}

// QueueRoutes returns queue.routes as a map from lower-case domain to
// host:port.
func (c *Config) QueueRoutes() map[string]string {
	if len(c.Queue.Routes) == 0 {
		return nil
	}
	m := make(map[string]string, len(c.Queue.Routes))
	for _, r := range c.Queue.Routes {
		if d, addr, ok := strings.Cut(r, "="); ok {
			m[strings.ToLower(strings.TrimSpace(d))] = strings.TrimSpace(addr)
		}
	}
	return m
}
