package cluster

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/postino-mail/postino/internal/testutil/mailtest"
)

// cacheFiles lists the contents in a node's blob cache (DATA/blobcache),
// by file name.
func cacheFiles(t *testing.T, c *cluster, name string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(c.dir, name, "blobcache", "??", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range matches {
		names = append(names, filepath.Base(m))
	}
	slices.Sort(names)
	return names
}

// TestNodeCache: a node keeps the contents it downloads in its own cache
// ([storage] cache_dir) and serves them again from there, byte for byte
// (over cleartext with sendfile(2)); a content with a line starting with
// a dot is marked as such. A node stopped cleanly keeps its cache, a
// node killed with SIGKILL starts with an empty one.
func TestNodeCache(t *testing.T) {
	c := newCluster(t)
	n1 := c.start(t, "node1", c.dsn)
	dotted := message("with a dot line")
	plain := "From: bob@remote.example\r\nTo: " + alice + "\r\nSubject: plain\r\n\r\nno dot lines here\r\n"
	for _, m := range []string{dotted, plain} {
		if l := smtpSend(t, n1.smtp, m, alice); !strings.HasPrefix(l, "250") {
			t.Fatalf("SMTP: %q", l)
		}
	}
	download := func(n *node, what string) [][]byte {
		t.Helper()
		p := n.loginWait(t, alice)
		got := mailtest.RetrAll(t, p, what)
		if err := p.Quit(); err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || !strings.HasSuffix(string(got[1]), "\r\n\r\nno dot lines here\r\n") ||
			!strings.HasSuffix(string(got[0]), strings.Replace(dotted, "\r\n..a line", "\r\n.a line", 1)) {
			t.Fatalf("%s: %d messages, not the ones sent", what, len(got))
		}
		return got
	}
	if files := cacheFiles(t, c, "node1"); len(files) != 0 {
		t.Fatalf("cache before any download: %v", files)
	}
	first := download(n1, "first download")
	files := cacheFiles(t, c, "node1")
	if len(files) != 2 || strings.HasSuffix(files[0], ".dot") == strings.HasSuffix(files[1], ".dot") {
		t.Fatalf("cache after a download: %v, want two contents, one marked .dot", files)
	}
	second := download(n1, "from the cache")
	for i := range first {
		if string(first[i]) != string(second[i]) {
			t.Fatalf("message %d differs when read from the cache", i+1)
		}
	}

	n1.stop(t)
	if _, err := os.Stat(filepath.Join(c.dir, "node1", "blobcache", "clean")); err != nil {
		t.Fatalf("no clean-close marker after SIGTERM: %v", err)
	}
	n1 = c.start(t, "node1", c.dsn)
	if got := cacheFiles(t, c, "node1"); !slices.Equal(got, files) {
		t.Fatalf("cache after a clean restart: %v, want %v", got, files)
	}
	third := download(n1, "after a clean restart")
	for i := range first {
		if string(first[i]) != string(third[i]) {
			t.Fatalf("message %d differs after the restart", i+1)
		}
	}

	n1.kill9(t)
	n1 = c.start(t, "node1", c.dsn)
	if got := cacheFiles(t, c, "node1"); len(got) != 0 {
		t.Fatalf("cache after SIGKILL and restart: %v, want empty", got)
	}
	download(n1, "after SIGKILL")
	if got := cacheFiles(t, c, "node1"); !slices.Equal(got, files) {
		t.Fatalf("cache refilled: %v, want %v", got, files)
	}
}
