package server

import (
	"log/slog"
	"net"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/proxyproto"
)

// proxyWrap returns the function that puts a listener behind the PROXY
// protocol (proxy.trusted): TCP listeners only, and none when no balancer
// is trusted.
func proxyWrap(cfg *config.Config, logger *slog.Logger) func(net.Listener) net.Listener {
	opts := proxyproto.Options{Trusted: cfg.ProxyTrusted(), HeaderTimeout: cfg.Proxy.HeaderTimeout.Duration, Logger: logger}
	return func(l net.Listener) net.Listener {
		if l.Addr().Network() != "tcp" {
			return l
		}
		return proxyproto.NewListener(l, opts)
	}
}
