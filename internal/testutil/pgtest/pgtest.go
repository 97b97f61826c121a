// Package pgtest runs a real PostgreSQL server for tests: initdb and
// pg_ctl from the Debian packages (/usr/lib/postgresql/*/bin or PATH), a
// cluster in a temporary folder listening on 127.0.0.1 at a free port,
// stopped when the test binary ends. Each test gets a fresh database of
// its own (NewDB). When the binaries are missing the test is skipped, or
// fails under CI=true.
//
// It also offers Proxy, a TCP relay in front of the server that a test can
// cut to simulate a node partitioned from the database.
//
// Like testutil, it is meant for tests only.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postino-mail/postino/internal/testutil"
)

// server is the one PostgreSQL of the test binary.
type server struct {
	bin   string // folder of initdb and pg_ctl
	dir   string // temporary root: data, socket, log
	port  int
	extra string // appended to postgresql.conf
	err   error
}

var (
	once sync.Once
	srv  server
)

// Main runs the tests of a package and then stops the server if one was
// started. Use it from TestMain: os.Exit(pgtest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	Stop()
	return code
}

// Stop stops the server if one was started. A TestMain that runs the
// tests otherwise (testutil.Main) calls it after them.
func Stop() {
	if srv.dir != "" {
		srv.stop()
		srv.dir = ""
	}
}

// binDir finds the folder holding initdb and pg_ctl.
func binDir() (string, error) {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	sort.Strings(found)
	if len(found) > 0 {
		return filepath.Dir(found[len(found)-1]), nil
	}
	p, err := exec.LookPath("pg_ctl")
	if err != nil {
		return "", fmt.Errorf("no pg_ctl in /usr/lib/postgresql/*/bin nor in PATH (Debian: postgresql)")
	}
	// A symbolic link into the installation's folder, or the folder.
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	return filepath.Dir(p), nil
}

// start initialises and starts the cluster.
func (s *server) start() error {
	bin, err := binDir()
	if err != nil {
		return err
	}
	s.bin = bin
	dir, err := os.MkdirTemp("", "postino-pgtest-")
	if err != nil {
		return err
	}
	s.dir = dir
	port, err := freePort()
	if err != nil {
		return err
	}
	s.port = port
	data := filepath.Join(dir, "data")
	sock := filepath.Join(dir, "sock")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	asPostgres := os.Geteuid() == 0
	if asPostgres {
		// initdb refuses to run as root: the cluster belongs to postgres.
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root and no postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{dir, data, sock} {
			if err := os.Chown(d, uid, gid); err != nil {
				return err
			}
		}
	}
	run := s.run
	if err := run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"); err != nil {
		return err
	}
	conf := fmt.Sprintf("\nport = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\nmax_connections = 200\n%s", port, sock, s.extra)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		return err
	}
	return s.launch()
}

// run runs one of the server's programs (as postgres when root), its
// output to a file of the server's folder.
func (s *server) run(name string, args ...string) error {
	path := filepath.Join(s.bin, name)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	// Never a pipe for the daemon's output: pg_ctl's server keeps it
	// open and the wait would never end.
	logf, err := os.OpenFile(filepath.Join(s.dir, name+".out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o666)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("%s: %w\n%s", name, err, out)
	}
	return nil
}

// launch starts the initialised cluster and waits until it accepts
// connections.
func (s *server) launch() error {
	return s.run("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-l", filepath.Join(s.dir, "server.log"), "-w", "-t", "60", "start")
}

// halt stops the server at once, as a crash would (pg_ctl stop -m
// immediate: no checkpoint, recovery at the next start), keeping its data.
func (s *server) halt() error {
	return s.run("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-m", "immediate", "-w", "-t", "60", "stop")
}

// stop stops the cluster and removes its folder.
func (s *server) stop() {
	s.halt()
	os.RemoveAll(s.dir)
}

// freePort returns a TCP port free on 127.0.0.1 at the time of the call.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr returns host:port of the test binary's server, starting it on
// first use. The caller's package must stop it with Main.
func Addr(t testing.TB) string {
	t.Helper()
	once.Do(func() { srv.err = srv.start() })
	if srv.err != nil {
		testutil.SkipOrFatal(t, "no PostgreSQL for the test: %v", srv.err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.port))
}

// NewDB creates an empty database for the test and returns its DSN
// (a postgres:// URL, user postgres, no password). The database is
// dropped at the end of the test.
func NewDB(t testing.TB) string {
	t.Helper()
	addr := Addr(t)
	var b [6]byte
	rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	if err := psql("CREATE DATABASE " + name); err != nil {
		t.Fatalf("creating database: %v", err)
	}
	t.Cleanup(func() {
		psql("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
	})
	return DSN(addr, name)
}

// DSN returns the URL of database name at host:port addr.
func DSN(addr, name string) string {
	return "postgres://postgres@" + addr + "/" + name + "?sslmode=disable"
}

// psql runs one SQL statement as postgres on the test server.
func psql(sql string) error {
	return psqlAt(net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.port)), sql)
}

// psqlAt runs one SQL statement as postgres on the server at addr.
func psqlAt(addr, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, DSN(addr, "postgres"))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%q: %w", sql, err)
	}
	return nil
}
