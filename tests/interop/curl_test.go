package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// curl retrieves message N with the URL pop3://HOST:PORT/N (RETR N) and
// writes it un-stuffed, with the line ends as received: no normalisation.
// "--ssl-reqd" on a pop3:// URL requires STLS; pop3s:// is implicit TLS.
// "-X DELE -I" on /N deletes message N; several URLs in one invocation
// share one connection (one session), so the numbers stay valid.

type curlMode struct {
	transport string // plain, stls or tls
	del       bool
	big       bool
}

func (m curlMode) name() string {
	if m.del {
		return m.transport + "-delete"
	}
	return m.transport + "-keep"
}

// base returns the URL prefix and the TLS arguments.
func (m curlMode) base(s *server) (string, []string) {
	switch m.transport {
	case "stls":
		return "pop3://localhost:" + s.pop3Port, []string{"--ssl-reqd", "--cacert", s.certFile, "--resolve", "localhost:" + s.pop3Port + ":127.0.0.1"}
	case "tls":
		return "pop3s://localhost:" + s.pop3sPort, []string{"--cacert", s.certFile, "--resolve", "localhost:" + s.pop3sPort + ":127.0.0.1"}
	}
	return "pop3://127.0.0.1:" + s.pop3Port, nil
}

func TestCurl(t *testing.T) {
	curl := testutil.NeedProgram(t, "curl")
	t.Parallel()
	if r := run(t, nil, nil, curl, "--version"); r.Code != 0 {
		t.Fatalf("curl --version:\n%s", r)
	} else {
		t.Logf("%s", strings.SplitN(r.Output, "\n", 2)[0])
	}
	s := startServer(t)
	modes := []curlMode{
		{transport: "plain", big: true},
		{transport: "stls"},
		{transport: "tls", del: true},
	}
	for _, m := range modes {
		t.Run(m.name(), func(t *testing.T) {
			mode := "keep (leave on server)"
			if m.del {
				mode = "delete (-X DELE -I)"
			}
			record(t, "curl", m.transport, mode, "one RETR per URL, exact bytes")
			user := "curl-" + m.name() + "@example.test"
			const pw = "curl secret"
			s.addUser(t, user, pw)
			msgs := smallCorpus()
			if m.big {
				msgs = fullCorpus()
			}
			want := s.fill(t, user, msgs)
			base, tlsArgs := m.base(s)
			common := append([]string{"--silent", "--show-error", "--max-time", "60", "--user", user + ":" + pw}, tlsArgs...)

			// LIST: pop3://host/ lists the messages.
			r := run(t, nil, nil, curl, append(common, base+"/")...)
			if r.Code != 0 {
				t.Fatalf("curl LIST failed:\n%s", r)
			}
			c := s.pop3Client(t, user, pw)
			list, err := c.List()
			c.Quit()
			if err != nil {
				t.Fatal(err)
			}
			var wantList strings.Builder
			for _, e := range list {
				fmt.Fprintf(&wantList, "%d %d\r\n", e.Number, e.Size)
			}
			if r.Output != wantList.String() {
				t.Errorf("curl LIST output %q, want %q", r.Output, wantList.String())
			}

			// Kept messages are downloaded twice: on PostgreSQL the second
			// time comes from the node's content cache (with sendfile(2)
			// in the clear), and must be the same octets.
			passes := 2
			if m.del {
				passes = 1
			}
			for pass := 1; pass <= passes; pass++ {
				dir := t.TempDir()
				var got [][]byte
				for n := 1; n <= len(msgs); n++ {
					file := filepath.Join(dir, strconv.Itoa(n)+".eml")
					r := run(t, nil, nil, curl, append(common, "--output", file, base+"/"+strconv.Itoa(n))...)
					if r.Code != 0 {
						t.Fatalf("curl RETR %d failed:\n%s", n, r)
					}
					b, err := os.ReadFile(file)
					if err != nil {
						t.Fatal(err)
					}
					if int64(len(b)) != list[n-1].Size {
						t.Errorf("curl got %d octets for message %d, LIST says %d", len(b), n, list[n-1].Size)
					}
					got = append(got, b)
				}
				compareDownloads(t, got, want, exact)
			}

			if m.transport != "plain" {
				// Without the certificate curl must refuse: the TLS in use is
				// really verified (exit 60: peer certificate cannot be
				// authenticated).
				var noCA []string
				for i := 0; i < len(common); i++ {
					if common[i] == "--cacert" {
						i++
						continue
					}
					noCA = append(noCA, common[i])
				}
				if r := run(t, []string{"CURL_CA_BUNDLE=/nonexistent"}, nil, curl, append(noCA, base+"/1")...); r.Code == 0 {
					t.Errorf("curl accepted the self-signed certificate without --cacert:\n%s", r)
				}
			}

			if !m.del {
				if n := s.stat(t, user, pw); n != len(msgs) {
					t.Errorf("keep mode: %d messages on the server, want %d", n, len(msgs))
				}
				return
			}
			args := append(common, "--request", "DELE", "--head")
			for n := 1; n <= len(msgs); n++ {
				args = append(args, base+"/"+strconv.Itoa(n))
			}
			if r := run(t, nil, nil, curl, args...); r.Code != 0 {
				t.Fatalf("curl DELE failed:\n%s", r)
			}
			if n := s.stat(t, user, pw); n != 0 {
				t.Errorf("delete mode: %d messages left on the server, want 0", n)
			}
		})
	}
}
