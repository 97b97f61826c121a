package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness check: it returns nil when the part it checks
// (the mail store, the user database) can serve, or why not.
type Check struct {
	// Name names the part in the /readyz answer ("storage", "users").
	Name string
	// Run performs the check within ctx.
	Run func(ctx context.Context) error
}

// readyTimeout bounds each readiness check.
const readyTimeout = 5 * time.Second

// Handler returns the admin listener's handler:
//
//   - /metrics: the registry in the Prometheus exposition format;
//   - /healthz: 200 "ok" while the process serves HTTP at all;
//   - /readyz: 200 "ready" when every check passes, otherwise 503 with
//     one line per failed check ("storage: ...").
//
// Anything else is 404, and methods other than GET and HEAD are 405.
func (m *Metrics) Handler(checks []Check, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		var failed []string
		for _, c := range checks {
			ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			err := c.Run(ctx)
			cancel()
			if err != nil {
				failed = append(failed, c.Name+": "+err.Error())
				if logger != nil {
					logger.Warn("admin: not ready", "check", c.Name, "err", err)
				}
			}
		}
		if len(failed) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, f := range failed {
				fmt.Fprintln(w, f)
			}
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// Serve serves h on l until ctx is cancelled, then closes it. It returns
// nil after a shutdown.
func Serve(ctx context.Context, l net.Listener, h http.Handler, logger *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	if logger != nil {
		srv.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			srv.Shutdown(sctx)
			cancel()
		case <-done:
		}
	}()
	err := srv.Serve(l)
	close(done)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// CountingListener wraps l so that every accepted connection is counted
// as a connection of the named listener.
func (m *Metrics) CountingListener(l net.Listener, name string) net.Listener {
	if m == nil {
		return l
	}
	return &countingListener{Listener: l, m: m, name: name}
}

type countingListener struct {
	net.Listener
	m    *Metrics
	name string
}

func (c *countingListener) Accept() (net.Conn, error) {
	conn, err := c.Listener.Accept()
	if err == nil {
		c.m.Connection(c.name)
	}
	return conn, err
}
