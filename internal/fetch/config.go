package fetch

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"

	"github.com/postino-mail/postino/internal/config"
)

// SplitHostPortOpt splits "host:port", "[v6]:port" or returns a host
// alone ("host", "v6", "[v6]") with port 0.
func SplitHostPortOpt(s string) (string, int, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 || strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "[") {
		return strings.Trim(s, "[]"), 0, nil
	}
	var p int
	if _, err := fmt.Sscanf(s[i+1:], "%d", &p); err != nil {
		return "", 0, err
	}
	return strings.Trim(s[:i], "[]"), p, nil
}

// NewAccount turns a configured account into an Account. Relative paths
// are resolved against cfg's data_dir; stderr receives the output of an
// MDA destination, of password_command and the warnings of local
// delivery.
func NewAccount(cfg *config.Config, fa config.FetchAccount, stderr io.Writer) (*Account, error) {
	a := &Account{
		Name: fa.Name, Server: fa.Server, Port: fa.Port, Security: Security(fa.Security),
		AllowPlaintext: fa.AllowPlaintext, Insecure: fa.Insecure, Fingerprint: fa.Fingerprint,
		User: fa.User, Auth: fa.Auth, Delete: fa.Delete,
		DeleteAfter: time.Duration(fa.DeleteAfterDays) * 24 * time.Hour,
		MaxSize:     fa.MaxSize.Bytes(), MaxMessages: fa.MaxMessages, Timeout: fa.Timeout.Duration,
	}
	if fa.CAFile != "" {
		pool, err := SystemRootsWith(cfg.ResolvePath(fa.CAFile))
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		a.RootCAs = pool
	}
	dest, err := config.ParseFetchDestination(fa.Destination)
	if err != nil {
		return nil, err
	}
	if dest.Kind == config.FetchDestLocal {
		addr := dest.Arg
		logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		users := cfg.OpenUsers(nil)
		d, st, err := cfg.OpenDeliverer(users, logger)
		if err != nil {
			return nil, err
		}
		if _, err := cfg.FullResolver(users, d, logger); err != nil {
			return nil, err
		}
		d.Logger = nil
		l, err := NewLocal(d, st, addr)
		if err != nil {
			return nil, err
		}
		a.Dest = l
	} else {
		d, err := NewDestination(dest, fa.MDACheck)
		if err != nil {
			return nil, err
		}
		if m, ok := d.(*MDA); ok {
			m.Stderr = stderr
		}
		a.Dest = d
	}
	a.Password = PasswordSource(fa, stderr)
	return a, nil
}

// PasswordSource returns the account's password function: the configured
// password, the first line printed by password_command (its errors go to
// stderr), or a prompt on the terminal. The answer is kept for the life
// of the process.
func PasswordSource(fa config.FetchAccount, stderr io.Writer) func() (string, error) {
	var once sync.Once
	var pw string
	var err error
	return func() (string, error) {
		once.Do(func() {
			switch {
			case fa.Password != "":
				pw = fa.Password
			case fa.PasswordCommand != "":
				cmd := exec.Command("/bin/sh", "-c", fa.PasswordCommand)
				cmd.Stderr = stderr
				var out []byte
				out, err = cmd.Output()
				if err != nil {
					err = fmt.Errorf("password_command: %w", err)
					return
				}
				pw, _, _ = strings.Cut(string(out), "\n")
				pw = strings.TrimSuffix(pw, "\r")
			default:
				tty, terr := os.OpenFile("/dev/tty", os.O_RDWR, 0)
				if terr != nil || !term.IsTerminal(int(tty.Fd())) {
					if tty != nil {
						tty.Close()
					}
					err = errors.New("no password, no password_command, and no terminal to ask on")
					return
				}
				defer tty.Close()
				fmt.Fprintf(tty, "Password for %s@%s: ", fa.User, fa.Server)
				var b []byte
				b, err = term.ReadPassword(int(tty.Fd()))
				fmt.Fprintln(tty)
				pw = string(b)
			}
		})
		return pw, err
	}
}
