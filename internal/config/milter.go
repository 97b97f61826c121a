package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// MilterConfig is one [[milter]] table: an external filter the MX runs
// each message through, over the milter protocol (rspamd's proxy worker,
// spamass-milter, clamav-milter, OpenDMARC). Filters run in the order of
// the file.
type MilterConfig struct {
	Name           string   `toml:"name" example:"rspamd" comment:"Name of the filter, in logs and in the results of the checks: letters, digits, '.', '_' and '-'."`
	Address        string   `toml:"address" example:"127.0.0.1:11332" comment:"Where the filter listens: host:port (inet:host:port as in Postfix is accepted) or unix:/path/to/socket."`
	OnFailure      string   `toml:"on_failure" example:"tempfail" comment:"What happens to mail when the filter cannot be reached, times out or breaks the protocol: tempfail (451 4.7.1, the sender retries: nothing is lost; the default) or accept (the mail goes on without this filter). Empty means tempfail."`
	ConnectTimeout Duration `toml:"connect_timeout" example:"10s" comment:"Time allowed to connect to the filter; 0s means 10s."`
	Timeout        Duration `toml:"timeout" example:"30s" comment:"Time allowed for each reply of the filter (rspamd's scan of a message happens at the end of the message); 0s means 30s."`
	Protocol       int      `toml:"protocol" example:"6" comment:"Highest milter protocol version offered, 2 to 6, as Postfix's milter_protocol (older filters may need 2); 0 means 6."`
}

// Values of MilterConfig.OnFailure.
const (
	MilterTempfail = "tempfail"
	MilterAccept   = "accept"
)

// Default timeouts of a filter, for its zero values.
const (
	defaultMilterConnectTimeout = 10 * time.Second
	defaultMilterTimeout        = 30 * time.Second
)

// ConnectTimeoutOrDefault returns connect_timeout, or its default.
func (m MilterConfig) ConnectTimeoutOrDefault() time.Duration {
	if m.ConnectTimeout.Duration > 0 {
		return m.ConnectTimeout.Duration
	}
	return defaultMilterConnectTimeout
}

// TimeoutOrDefault returns timeout, or its default.
func (m MilterConfig) TimeoutOrDefault() time.Duration {
	if m.Timeout.Duration > 0 {
		return m.Timeout.Duration
	}
	return defaultMilterTimeout
}

// ProtocolOrDefault returns protocol, or its default (6).
func (m MilterConfig) ProtocolOrDefault() int {
	if m.Protocol == 0 {
		return 6
	}
	return m.Protocol
}

// AcceptOnFailure reports whether mail goes on without the filter when it
// fails.
func (m MilterConfig) AcceptOnFailure() bool { return m.OnFailure == MilterAccept }

var milterNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func (c *Config) validateMilters(v *validator) {
	seen := map[string]bool{}
	for i, m := range c.Milters {
		key := fmt.Sprintf("milter[%d]", i)
		if !milterNameRE.MatchString(m.Name) {
			v.add(key+".name", "must be 1 to 64 letters, digits, '.', '_' or '-' (got %q)", m.Name)
		} else if seen[m.Name] {
			v.add(key+".name", "%q is the name of another filter", m.Name)
		}
		seen[m.Name] = true
		if msg := checkMilterAddress(m.Address); msg != "" {
			v.add(key+".address", "%s (got %q)", msg, m.Address)
		}
		if m.OnFailure != "" {
			v.oneOf(key+".on_failure", m.OnFailure, MilterTempfail, MilterAccept)
		}
		if m.Protocol != 0 && (m.Protocol < 2 || m.Protocol > 6) {
			v.add(key+".protocol", "must be 2 to 6, or 0 for 6 (got %d)", m.Protocol)
		}
		if m.ConnectTimeout.Duration < 0 || m.Timeout.Duration < 0 {
			v.add(key, "timeouts must not be negative")
		}
	}
}

// checkMilterAddress returns what is wrong with a filter's address, or "".
func checkMilterAddress(a string) string {
	if p, ok := strings.CutPrefix(a, "unix:"); ok {
		if !strings.HasPrefix(p, "/") {
			return "unix: needs an absolute socket path"
		}
		return ""
	}
	if a == "" || checkAddr(strings.TrimPrefix(a, "inet:")) != "" {
		return "must be host:port or unix:/path"
	}
	return ""
}
