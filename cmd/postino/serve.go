package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/server"
)

func runServe(env *cmdEnv, args []string) int {
	fs := newFlags(env, "serve", "serve [flags]")
	common := &fs.common
	pop3Addr := fs.String("pop3", "", "POP3 listen `ADDR` (host:port; \"\" disables; overrides pop3.listen)")
	pop3sAddr := fs.String("pop3s", "", "POP3 over implicit TLS listen `ADDR` (overrides pop3.listen_tls)")
	hostname := fs.String("hostname", "", "server host `NAME` (overrides hostname)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate `FILE` (PEM; overrides tls.cert)")
	tlsKey := fs.String("tls-key", "", "TLS private key `FILE` (PEM; overrides tls.key)")
	smtpAddr := fs.String("smtp", "", "SMTP (MX) listen `ADDR` (overrides smtp.listen)")
	subAddr := fs.String("submission", "", "submission (STARTTLS) listen `ADDR` (overrides smtp.submission)")
	subsAddr := fs.String("submissions", "", "submission over implicit TLS listen `ADDR` (overrides smtp.submissions)")
	dnsServer := fs.String("dns-server", "", "DNS `ADDR` (host:port) for every lookup (overrides dns.server)")
	lmtpAddr := fs.String("lmtp", "", "LMTP listen `ADDR`: host:port or a unix socket path (overrides smtp.lmtp)")
	adminAddr := fs.String("admin", "", "admin HTTP listen `ADDR` for /metrics, /healthz and /readyz (overrides admin.listen)")
	pos, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		errorf(env, "serve: unexpected argument %q", pos[0])
		return exitUsage
	}
	// Flags override the file (at start and on reload); an empty address
	// disables a listener.
	override := func(cfg *config.Config) {
		for name, apply := range map[string]func(){
			"pop3":        func() { cfg.POP3.Listen = *pop3Addr },
			"pop3s":       func() { cfg.POP3.ListenTLS = *pop3sAddr },
			"hostname":    func() { cfg.Hostname = *hostname },
			"tls-cert":    func() { cfg.TLS.Cert = *tlsCert },
			"tls-key":     func() { cfg.TLS.Key = *tlsKey },
			"smtp":        func() { cfg.SMTP.Listen = *smtpAddr },
			"submission":  func() { cfg.SMTP.Submission = *subAddr },
			"submissions": func() { cfg.SMTP.Submissions = *subsAddr },
			"lmtp":        func() { cfg.SMTP.LMTP = *lmtpAddr },
			"dns-server":  func() { cfg.DNS.Server, cfg.Queue.DNSServer = *dnsServer, "" },
			"admin":       func() { cfg.Admin.Listen = *adminAddr },
		} {
			if flagSet(fs, name) {
				apply()
			}
		}
	}
	cfg, err := common.load()
	if err != nil {
		errorf(env, "%v", err)
		return exitConfigError
	}
	override(cfg)
	if err := cfg.Validate(); err != nil {
		errorf(env, "%v", err)
		return exitConfigError
	}
	level := new(slog.LevelVar)
	level.Set(cfg.SlogLevel())
	logger := newLogger(env, cfg, level)
	if cfg.LogFormat == "json" {
		// Whatever a library writes with the standard log package stays
		// JSON too.
		slog.SetDefault(logger)
	}
	if err := checkPrivileges(cfg, logger); err != nil {
		serveError(env, cfg, logger, err)
		return exitConfigError
	}
	// Signals are caught from here on, before the listeners open: a
	// SIGTERM sent as soon as the banner is out (or even before) is a
	// graceful stop, never the default action that kills the process.
	sigs := env.signals
	if sigs == nil {
		c := make(chan os.Signal, 4)
		signal.Notify(c, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(c)
		sigs = c
	}
	srv, err := server.Build(cfg, logger)
	if err != nil {
		serveError(env, cfg, logger, err)
		return exitConfigError
	}
	if err := dropPrivileges(cfg, logger); err != nil {
		serveError(env, cfg, logger, err)
		srv.Abort()
		return exitConfigError
	}
	srv.StartAdmin(cfg, logger)
	srv.Start()
	printBanner(env, srv, cfg, common.source, logger)

	for {
		select {
		case err := <-srv.Failed():
			logger.Error("listener failed", "err", err)
			srv.Shutdown(logger)
			return exitError
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reload(srv, common, override, level, logger)
				continue
			}
			logger.Info("shutting down", "signal", sig.String())
			if !srv.Shutdown(logger) {
				return exitError
			}
			return exitOK
		}
	}
}

// serveError reports an error that stops serve: through the logger with
// log_format = "json", so that the output stays JSON, else as the other
// commands do.
func serveError(env *cmdEnv, cfg *config.Config, logger *slog.Logger, err error) {
	if cfg.LogFormat == "json" {
		logger.Error("serve: "+err.Error(), "err", err)
		return
	}
	errorf(env, "%v", err)
}

// reload applies SIGHUP: the configuration file serve started with is read
// again, with the same flags over it, and handed to the server, which
// applies what can change live; the log level follows. A file that does not
// load or validate is refused as a whole (the log line names its errors);
// the certificate and the user database are read again in any case.
func reload(srv *server.Server, common *commonFlags, override func(*config.Config), level *slog.LevelVar, logger *slog.Logger) {
	src := common.source
	next, err := config.Load(src.Path)
	if err == nil {
		if common.dataDir != "" {
			next.DataDir = common.dataDir
		}
		override(next)
		err = next.Validate()
	}
	if err != nil {
		logger.Error("reload: configuration refused, keeping the old one", "config", src.String(), "err", err)
		srv.ReloadFiles(logger)
		return
	}
	if _, err := srv.Reload(next, logger); err == nil {
		level.Set(srv.Config().SlogLevel())
	}
}

func newLogger(env *cmdEnv, cfg *config.Config, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(env.stderr, opts))
	}
	return slog.New(slog.NewTextHandler(env.stderr, opts))
}

// printBanner tells what is served: as text on standard output, or, with
// log_format = "json", as log lines (so that everything serve writes is
// JSON): "serving" with the version, data folder and config, one
// "listening" line per listener, and "users".
func printBanner(env *cmdEnv, s *server.Server, cfg *config.Config, src config.Source, logger *slog.Logger) {
	if cfg.LogFormat == "json" {
		logger.Info("serving", "version", versionString(), "data_dir", cfg.DataDir, "config", src.String())
		for _, l := range s.Listeners() {
			logger.Info("listening", "listener", l.Name, "addr", l.Addr)
		}
		if fp, ok := s.SelfSigned(); ok {
			logger.Info("TLS: self-signed certificate", "sha256", fp)
		}
		users, _ := s.Users().List()
		logger.Info("users", "count", len(users), "file", cfg.UsersFile())
		return
	}
	w := env.stdout
	fmt.Fprintf(w, "postino %s serving %s\n", versionString(), cfg.DataDir)
	fmt.Fprintf(w, "config: %s\n", src)
	for _, l := range s.Listeners() {
		fmt.Fprintf(w, "  %-12s %s\n", l.Name, l.Addr)
	}
	if len(s.Listeners()) == 0 {
		fmt.Fprintln(w, "  (no listeners enabled)")
	}
	if fp, ok := s.SelfSigned(); ok {
		fmt.Fprintf(w, "TLS: self-signed certificate, SHA-256 fingerprint %s\n", fp)
	}
	users, _ := s.Users().List()
	fmt.Fprintf(w, "%d users in %s\n", len(users), cfg.UsersFile())
	if len(users) == 0 {
		where := "--data " + cfg.DataDir
		if src.Path != "" {
			where = "--config " + src.Path + " " + where
		}
		fmt.Fprintf(w, "Add one with:  postino user add %s alice@example.test\n", where)
		fmt.Fprintf(w, "Deliver mail:  postino deliver %s alice@example.test < message.eml\n", where)
	}
}
