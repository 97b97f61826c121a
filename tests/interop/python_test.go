package interop

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil"
)

// Python's poplib returns a message as its lines without terminators, the
// byte-stuffing dot removed, plus an octet count that includes each line's
// terminator as received. The script joins the lines with CRLF and checks
// that the length equals that octet count, which proves every line ended
// with CRLF; so the result is the exact bytes.
const poplibScript = `
import json, os, poplib, ssl, sys

mode, host, port, user, pw, cafile, outdir, delete = sys.argv[1:9]
ctx = ssl.create_default_context(cafile=cafile)
if mode == "tls":
    p = poplib.POP3_SSL(host, int(port), context=ctx, timeout=60)
else:
    p = poplib.POP3(host, int(port), timeout=60)
    if mode == "stls":
        p.stls(context=ctx)
report = {"tls": isinstance(p.sock, ssl.SSLSocket), "caps": sorted(p.capa().keys()), "errors": []}
p.user(user)
p.pass_(pw)
count, size = p.stat()
resp, listing, _ = p.list()
sizes = {}
for line in listing:
    n, s = line.split()
    sizes[int(n)] = int(s)
resp, uidls, _ = p.uidl()
report["uidls"] = [l.split()[1].decode() for l in uidls]
total = 0
for n in range(1, count + 1):
    resp, lines, octets = p.retr(n)
    data = b"".join(l + b"\r\n" for l in lines)
    if len(data) != octets:
        report["errors"].append("message %d: %d octets received, %d after joining with CRLF" % (n, octets, len(data)))
    if sizes[n] != octets:
        report["errors"].append("message %d: LIST says %d octets, RETR gave %d" % (n, sizes[n], octets))
    if not resp.startswith(b"+OK"):
        report["errors"].append("RETR %d: %r" % (n, resp))
    total += octets
    with open(os.path.join(outdir, "%d.eml" % n), "wb") as f:
        f.write(data)
    if delete == "1":
        p.dele(n)
if total != size:
    report["errors"].append("STAT size %d, sum of RETR octets %d" % (size, total))
report["count"] = count
report["quit"] = p.quit().decode()
print(json.dumps(report))
`

type pythonMode struct {
	transport string // plain, stls or tls
	del       bool
	big       bool
}

func TestPythonPoplib(t *testing.T) {
	python := testutil.NeedProgram(t, "python3")
	t.Parallel()
	if r := run(t, nil, nil, python, "--version"); r.Code != 0 {
		t.Fatalf("python3 --version:\n%s", r)
	} else {
		t.Logf("%s", strings.TrimSpace(r.Output))
	}
	s := startServer(t)
	script := filepath.Join(t.TempDir(), "fetch.py")
	if err := os.WriteFile(script, []byte(poplibScript), 0o600); err != nil {
		t.Fatal(err)
	}
	modes := []pythonMode{
		{transport: "plain", big: true},
		{transport: "stls"},
		{transport: "tls", del: true},
	}
	for _, m := range modes {
		name := m.transport + map[bool]string{true: "-delete", false: "-keep"}[m.del]
		t.Run(name, func(t *testing.T) {
			mode := "keep (leave on server)"
			if m.del {
				mode = "delete"
			}
			class := map[string]string{"plain": "POP3", "stls": "POP3 + stls()", "tls": "POP3_SSL"}[m.transport]
			record(t, "poplib", m.transport, mode, class+", lines joined with CRLF, exact")
			user := "py-" + name + "@example.test"
			const pw = "python secret"
			s.addUser(t, user, pw)
			msgs := smallCorpus()
			if m.big {
				msgs = fullCorpus()
			}
			want := s.fill(t, user, msgs)
			host, port := "127.0.0.1", s.pop3Port
			switch m.transport {
			case "stls":
				host = "localhost" // verified against the certificate
			case "tls":
				host, port = "localhost", s.pop3sPort
			}
			out := t.TempDir()
			del := "0"
			if m.del {
				del = "1"
			}
			r := run(t, nil, nil, python, script, m.transport, host, port, user, pw, s.certFile, out, del)
			if r.Code != 0 {
				t.Fatalf("poplib script failed:\n%s", r)
			}
			var rep struct {
				TLS    bool     `json:"tls"`
				Caps   []string `json:"caps"`
				Errors []string `json:"errors"`
				UIDLs  []string `json:"uidls"`
				Count  int      `json:"count"`
				Quit   string   `json:"quit"`
			}
			if err := json.Unmarshal([]byte(r.Output), &rep); err != nil {
				t.Fatalf("script output is not JSON: %v\n%s", err, r)
			}
			for _, e := range rep.Errors {
				t.Errorf("poplib: %s", e)
			}
			if rep.TLS != (m.transport != "plain") {
				t.Errorf("TLS in use: %v, want %v", rep.TLS, m.transport != "plain")
			}
			if rep.Count != len(msgs) || len(rep.UIDLs) != len(msgs) {
				t.Errorf("poplib saw %d messages and %d UIDLs, want %d", rep.Count, len(rep.UIDLs), len(msgs))
			}
			if !strings.HasPrefix(rep.Quit, "+OK") {
				t.Errorf("QUIT answered %q", rep.Quit)
			}
			var got [][]byte
			for n := 1; n <= rep.Count; n++ {
				b, err := os.ReadFile(filepath.Join(out, strconv.Itoa(n)+".eml"))
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, b)
			}
			compareDownloads(t, got, want, exact)
			left := s.stat(t, user, pw)
			switch {
			case m.del && left != 0:
				t.Errorf("delete mode: %d messages left on the server, want 0", left)
			case !m.del && left != len(msgs):
				t.Errorf("keep mode: %d messages on the server, want %d", left, len(msgs))
			}
		})
	}
}
