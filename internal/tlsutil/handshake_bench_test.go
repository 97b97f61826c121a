//go:build unix

package tlsutil

import (
	"crypto/tls"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPollHandshake measures one POP3S poll's TLS handshake against
// postino's server configuration over loopback: full handshakes versus
// resumed ones, TLS 1.3 and 1.2. ns/op is the latency of one poll;
// cpu-us/op is the process CPU (client and server together) per poll.
func BenchmarkPollHandshake(b *testing.B) {
	for _, v := range []struct {
		name string
		max  uint16
	}{{"TLS1.3", tls.VersionTLS13}, {"TLS1.2", tls.VersionTLS12}} {
		for _, bc := range []struct {
			name   string
			resume bool
		}{{"full", false}, {"resumed", true}} {
			b.Run(v.name+"/"+bc.name, func(b *testing.B) {
				addr := resumeServer(b, "1.2")
				cfg := &tls.Config{InsecureSkipVerify: true, MaxVersion: v.max}
				if bc.resume {
					cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
					poll(b, addr, cfg)
				}
				b.ReportAllocs()
				cpu0 := cpuTime(b)
				b.ResetTimer()
				for b.Loop() {
					if got := poll(b, addr, cfg); got != bc.resume {
						b.Fatalf("resumed = %v", got)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-us/op")
			})
		}
	}
}

// cpuTime returns the user and system CPU time used by the process.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
