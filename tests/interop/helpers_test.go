// Package interop runs real POP3 clients (mpop, fetchmail, curl, Python's
// poplib) against the postino binary and compares what they download with
// what postino delivered, byte for byte, after undoing exactly the changes
// each client is documented to make.
//
// With POSTINO_TEST_BACKEND=postgres every test runs against the
// PostgreSQL store instead of Maildir (storage.backend = "postgres", a
// database of the test's own from internal/testutil/pgtest): the mail is
// delivered by "postino deliver" processes and downloaded through the
// server, as in a cluster where one node receives and another serves.
package interop

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
	"github.com/postino-mail/postino/pop3"
)

// binPath is the postino binary built by TestMain.
var binPath string

// extTimeout bounds every external command.
const extTimeout = 90 * time.Second

func TestMain(m *testing.M) {
	code := testutil.Main(m, "interop", &binPath, nil)
	writeMatrix()
	pgtest.Stop()
	os.Exit(code)
}

// backendEnv names the environment variable that chooses the mail store.
const backendEnv = "POSTINO_TEST_BACKEND"

// storageArgs returns the command-line arguments that point postino at
// the test's mail store: the data folder, and with backendEnv=postgres a
// configuration file (written on first use) naming a new database.
func (s *server) storageArgs(t testing.TB) []string {
	t.Helper()
	switch b := os.Getenv(backendEnv); b {
	case "", "maildir":
		return []string{"--data", s.data}
	case "postgres":
		if s.config == "" {
			s.config = filepath.Join(t.TempDir(), "postino.toml")
			cfg := fmt.Sprintf("[storage]\nbackend = \"postgres\"\npostgres_dsn = %q\n[admin]\nlisten = \"\"\n", pgtest.NewDB(t))
			if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			postino(t, nil, "db", "migrate", "--config", s.config, "--data", s.data)
		}
		return []string{"--config", s.config, "--data", s.data}
	default:
		t.Fatalf("%s=%q: want maildir or postgres", backendEnv, b)
		return nil
	}
}

// server is a running "postino serve" on loopback.
type server struct {
	*testutil.Serve
	t         testing.TB
	data      string
	pop3Addr  string
	pop3sAddr string
	pop3Port  string
	pop3sPort string
	certFile  string
	config    string // the configuration file, if any (storageArgs)
}

// startServer runs "postino serve" with a new data folder and free loopback
// ports, waits until it has printed both listeners (so they are this
// process's) and they accept, and stops it with SIGTERM at cleanup (it must
// exit 0). A port taken between picking and binding is retried.
func startServer(t testing.TB) *server {
	t.Helper()
	s := &server{t: t, data: t.TempDir()}
	s.certFile = filepath.Join(s.data, "tls", "cert.pem")
	s.Serve = testutil.StartServe(t, testutil.ServeConfig{
		Bin:       binPath,
		FreeAddrs: 2,
		Retry:     true,
		Setup: func(free []string) ([]string, map[string]string) {
			s.pop3Addr, s.pop3sAddr = free[0], free[1]
			_, s.pop3Port, _ = net.SplitHostPort(s.pop3Addr)
			_, s.pop3sPort, _ = net.SplitHostPort(s.pop3sAddr)
			return append(append([]string{"serve"}, s.storageArgs(t)...), "--pop3", s.pop3Addr, "--pop3s", s.pop3sAddr,
				"--smtp", "", "--submission", "", "--submissions", "", "--admin", ""), map[string]string{"pop3": s.pop3Addr, "pop3s": s.pop3sAddr}
		},
	})
	t.Cleanup(func() { s.Stop(t, 10*time.Second, s.Stderr) })
	return s
}

// run runs an external command with a timeout, the given extra
// environment and stdin, and returns its combined output and exit code.
// It fails the test if the command cannot start or times out.
var run = testutil.Runner{Timeout: extTimeout, WaitDelay: 5 * time.Second, MaxShown: 8000}.Run

// postino runs the binary and fails the test unless it exits 0.
func postino(t testing.TB, stdin []byte, args ...string) {
	t.Helper()
	if r := run(t, nil, stdin, binPath, args...); r.Code != 0 {
		t.Fatalf("postino failed:\n%s", r)
	}
}

// addUser creates a user on the server.
func (s *server) addUser(t testing.TB, addr, pw string) {
	t.Helper()
	postino(t, []byte(pw+"\n"), append([]string{"user", "add", addr, "--password-stdin"}, s.storageArgs(t)...)...)
}

// fill delivers the messages to rcpt with postino deliver and returns
// their expected wire forms by id.
func (s *server) fill(t testing.TB, rcpt string, msgs []testMsg) map[int][]byte {
	t.Helper()
	want := map[int][]byte{}
	for _, m := range msgs {
		postino(t, m.raw, append(append([]string{"deliver"}, s.storageArgs(t)...), "--from", sender, rcpt)...)
		want[m.id] = testutil.WireForm(sender, rcpt, m.raw)
	}
	return want
}

// pop3Client logs in with the repository's POP3 client.
func (s *server) pop3Client(t testing.TB, user, pw string) *pop3.Client {
	t.Helper()
	c := mailtest.DialPOP3(t, s.pop3Addr, 30*time.Second)
	if err := c.Login(user, pw); err != nil {
		c.Close()
		t.Fatalf("login %s: %v", user, err)
	}
	return c
}

// stat returns the number of messages in a mailbox, checked with the
// repository's POP3 client.
func (s *server) stat(t testing.TB, user, pw string) int {
	t.Helper()
	c := s.pop3Client(t, user, pw)
	defer c.Quit()
	n, _, err := c.Stat()
	if err != nil {
		t.Fatalf("STAT: %v", err)
	}
	return n
}

// uidls returns the mailbox's unique-ids.
func (s *server) uidls(t testing.TB, user, pw string) []string {
	t.Helper()
	c := s.pop3Client(t, user, pw)
	defer c.Quit()
	return mailtest.UIDLs(t, c)
}

// writeFile0600 writes a client configuration file readable only by its
// owner, as mpop and fetchmail demand.
func writeFile0600(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
}

// readDirFiles returns the contents of the regular files in dir (sorted by
// name).
func readDirFiles(t testing.TB, dir string) [][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// ---- normalisations ----

// normalizer undoes a client's documented change to one message. It returns
// an error when the message does not carry exactly that change.
type normalizer func([]byte) ([]byte, error)

// exact: the client keeps the bytes.
func exact(b []byte) ([]byte, error) { return b, nil }

// stripReceivedBy removes the one Received header field a client adds,
// recognised by sig (e.g. "(fetchmail-"), wherever the client put it in the
// header section. There must be exactly one such field.
func stripReceivedBy(sig string) normalizer {
	return func(b []byte) ([]byte, error) {
		end := len(b)
		for _, sep := range []string{"\r\n\r\n", "\n\n"} {
			if i := bytes.Index(b, []byte(sep)); i >= 0 && i < end {
				end = i + len(sep)/2
			}
		}
		type field struct{ start, end int }
		var found []field
		for pos := 0; pos < end; {
			// A field runs from pos to the next line not starting with
			// white space.
			next := pos
			for {
				nl := bytes.IndexByte(b[next:end], '\n')
				if nl < 0 {
					next = end
					break
				}
				next += nl + 1
				if next >= end || (b[next] != ' ' && b[next] != '\t') {
					break
				}
			}
			f := b[pos:next]
			if len(f) >= 9 && strings.EqualFold(string(f[:9]), "Received:") && bytes.Contains(f, []byte(sig)) {
				found = append(found, field{pos, next})
			}
			pos = next
		}
		if len(found) != 1 {
			return nil, fmt.Errorf("want exactly one Received header field containing %q, found %d in %q", sig, len(found), head(b))
		}
		out := append([]byte(nil), b[:found[0].start]...)
		return append(out, b[found[0].end:]...), nil
	}
}

// lfToCRLF undoes a conversion to LF line ends; the message must contain no
// CR at all (a half-converted message is a difference, not a
// normalisation).
func lfToCRLF(b []byte) ([]byte, error) {
	if i := bytes.IndexByte(b, '\r'); i >= 0 {
		return nil, fmt.Errorf("CR at offset %d in a message the client should have converted to LF", i)
	}
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")), nil
}

// chain applies normalisations in order.
func chain(ns ...normalizer) normalizer {
	return func(b []byte) ([]byte, error) {
		var err error
		for _, n := range ns {
			if b, err = n(b); err != nil {
				return nil, err
			}
		}
		return b, nil
	}
}

func head(b []byte) []byte {
	if len(b) > 300 {
		return b[:300]
	}
	return b
}

var idRE = regexp.MustCompile(`(?m)^X-Interop-Id: (\d+)\r?$`)

// compareDownloads normalises each downloaded message, identifies it by its
// X-Interop-Id header and compares it with the expected wire form. Every
// expected message must be there exactly once.
func compareDownloads(t testing.TB, got [][]byte, want map[int][]byte, norm normalizer) {
	t.Helper()
	seen := map[int]int{}
	for i, raw := range got {
		b, err := norm(raw)
		if err != nil {
			t.Errorf("download %d: %v", i, err)
			continue
		}
		m := idRE.FindSubmatch(b)
		if m == nil {
			t.Errorf("download %d has no X-Interop-Id header: %q", i, head(b))
			continue
		}
		id, _ := strconv.Atoi(string(m[1]))
		seen[id]++
		w, ok := want[id]
		if !ok {
			t.Errorf("download %d is message %d, which was not expected here", i, id)
			continue
		}
		if !bytes.Equal(b, w) {
			t.Errorf("message %d (%s) differs: %s", id, corpusName(id), describeDiff(b, w))
		}
	}
	var ids []int
	for id := range want {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("message %d (%s) downloaded %d times, want once", id, corpusName(id), seen[id])
		}
	}
}

// describeDiff locates the first difference between got and want.
func describeDiff(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-40)
	ctx := func(b []byte) []byte { return b[min(lo, len(b)):min(i+40, len(b))] }
	return fmt.Sprintf("got %d octets, want %d; first difference at offset %d:\n got ...%q...\nwant ...%q...",
		len(got), len(want), i, ctx(got), ctx(want))
}

// ---- the interop matrix ----

type matrixRow struct {
	client, transport, mode, delivery, result string
}

var (
	matrixMu   sync.Mutex
	matrixRows []matrixRow
)

// record adds this (sub)test to the matrix; its result is taken when the
// test ends.
func record(t *testing.T, client, transport, mode, delivery string) {
	t.Cleanup(func() {
		res := "PASS"
		switch {
		case t.Skipped():
			res = "SKIP"
		case t.Failed():
			res = "FAIL"
		}
		matrixMu.Lock()
		matrixRows = append(matrixRows, matrixRow{client, transport, mode, delivery, res})
		matrixMu.Unlock()
		t.Logf("matrix: %-9s | %-12s | %-26s | %-52s | %s", client, transport, mode, delivery, res)
	})
}

// matrixTable formats the rows recorded so far.
func matrixTable() string {
	matrixMu.Lock()
	rows := append([]matrixRow(nil), matrixRows...)
	matrixMu.Unlock()
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].client < rows[j].client })
	var b strings.Builder
	fmt.Fprintf(&b, "| %-9s | %-12s | %-26s | %-52s | %-6s |\n", "client", "transport", "mode", "delivery / normalisation", "result")
	fmt.Fprintf(&b, "|%s|%s|%s|%s|%s|\n", strings.Repeat("-", 11), strings.Repeat("-", 14), strings.Repeat("-", 28), strings.Repeat("-", 54), strings.Repeat("-", 8))
	for _, r := range rows {
		fmt.Fprintf(&b, "| %-9s | %-12s | %-26s | %-52s | %-6s |\n", r.client, r.transport, r.mode, r.delivery, r.result)
	}
	return b.String()
}

// writeMatrix prints the matrix in verbose mode and writes it to
// $INTEROP_MATRIX when set.
func writeMatrix() {
	table := matrixTable()
	if testing.Verbose() {
		fmt.Print("\nPOP3 client interop matrix:\n" + table)
	}
	if f := os.Getenv("INTEROP_MATRIX"); f != "" {
		if err := os.WriteFile(f, []byte(table), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "interop: writing %s: %v\n", f, err)
		}
	}
}
