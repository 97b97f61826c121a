package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postino-mail/postino/internal/testutil"
)

// Halt stops the test binary's shared server at once, as a crash would
// (pg_ctl stop -m immediate), keeping its data; Restart starts it again
// on the same port. Tests that halt it must not run in parallel with
// others of the package.
func Halt(t testing.TB) {
	t.Helper()
	Addr(t)
	if err := srv.halt(); err != nil {
		t.Fatalf("stopping PostgreSQL: %v", err)
	}
}

// Restart starts the shared server after Halt, on the same port and data,
// and waits until it accepts connections (after crash recovery).
func Restart(t testing.TB) {
	t.Helper()
	if err := srv.launch(); err != nil {
		t.Fatalf("starting PostgreSQL again: %v", err)
	}
}

// Instance is a PostgreSQL server of a test's own, apart from the shared
// one: for tests that need a particular configuration, such as a primary
// and a streaming-replication standby. It is stopped and removed at the
// end of the test.
type Instance struct {
	s server
}

// NewInstance initialises and starts a server on a free loopback port;
// conf is appended to its postgresql.conf.
func NewInstance(t testing.TB, conf string) *Instance {
	t.Helper()
	i := &Instance{s: server{extra: conf}}
	t.Cleanup(func() {
		if i.s.dir != "" {
			i.s.stop()
		}
	})
	if err := i.s.start(); err != nil {
		testutil.SkipOrFatal(t, "no PostgreSQL for the test: %v", err)
	}
	return i
}

// Addr returns the server's host:port.
func (i *Instance) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(i.s.port))
}

// Exec runs one SQL statement as postgres in the database postgres.
func (i *Instance) Exec(t testing.TB, sql string) {
	t.Helper()
	if err := psqlAt(i.Addr(), sql); err != nil {
		t.Fatal(err)
	}
}

// Stop stops the server at once (pg_ctl stop -m immediate), keeping its
// data: for the clients, the machine died.
func (i *Instance) Stop(t testing.TB) {
	t.Helper()
	if err := i.s.halt(); err != nil {
		t.Fatalf("stopping PostgreSQL: %v", err)
	}
}

// Start starts the server again after Stop.
func (i *Instance) Start(t testing.TB) {
	t.Helper()
	if err := i.s.launch(); err != nil {
		t.Fatalf("starting PostgreSQL: %v", err)
	}
}

// Promote turns a standby into a primary (pg_ctl promote, waiting until
// it accepts writes).
func (i *Instance) Promote(t testing.TB) {
	t.Helper()
	if err := i.s.run("pg_ctl", "-D", filepath.Join(i.s.dir, "data"), "-w", "-t", "60", "promote"); err != nil {
		t.Fatalf("promoting the standby: %v", err)
	}
}

// PrimaryConf is the postgresql.conf of a primary whose every commit
// waits for a synchronous standby: a commit acknowledged to a client is
// on both servers.
const PrimaryConf = "wal_level = replica\nsynchronous_standby_names = '*'\nsynchronous_commit = on\nmax_wal_senders = 5\n"

// NewStandby makes a streaming-replication standby of i with
// pg_basebackup -R (as postgres), started on a port of its own, and waits
// until the primary counts it as a synchronous standby. The standby's own
// synchronous_standby_names is empty, so that once promoted it commits
// alone.
func (i *Instance) NewStandby(t testing.TB) *Instance {
	t.Helper()
	st := &Instance{s: server{bin: i.s.bin}}
	t.Cleanup(func() {
		if st.s.dir != "" {
			st.s.stop()
		}
	})
	dir, err := os.MkdirTemp("", "postino-pgtest-standby-")
	if err != nil {
		t.Fatal(err)
	}
	st.s.dir = dir
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	st.s.port = port
	sock := filepath.Join(dir, "sock")
	if err := os.Mkdir(sock, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, d := range []string{dir, sock} {
			if err := os.Chown(d, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
	}
	data := filepath.Join(dir, "data")
	if err := st.s.run("pg_basebackup", "-D", data, "-R", "-X", "stream", "-h", "127.0.0.1", "-p", strconv.Itoa(i.s.port), "-U", "postgres", "--no-sync", "-c", "fast"); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("\nport = %d\nunix_socket_directories = '%s'\nsynchronous_standby_names = ''\nhot_standby = on\n", port, sock)
	f, err := os.OpenFile(filepath.Join(data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(conf)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.s.launch(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		var state string
		c, err := pgx.Connect(ctx, DSN(i.Addr(), "postgres"))
		if err == nil {
			c.QueryRow(ctx, "SELECT coalesce(string_agg(sync_state, ','), '') FROM pg_stat_replication").Scan(&state)
			c.Close(ctx)
		}
		if strings.Contains(state, "sync") && !strings.Contains(state, "async") {
			return st
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the standby is not a synchronous standby of the primary (pg_stat_replication: %q)", state)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// NewDB creates an empty database on the server and returns its DSN.
// It is not dropped: the server goes at the end of the test.
func (i *Instance) NewDB(t testing.TB, name string) string {
	t.Helper()
	i.Exec(t, "CREATE DATABASE "+name)
	return DSN(i.Addr(), name)
}
