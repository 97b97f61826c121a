// Package s3test runs a real S3 server for tests: versitygw (its posix
// backend in a temporary folder) on 127.0.0.1 at a free port. The binary
// is $VERSITYGW or versitygw in PATH; when it is missing the test is
// skipped, or fails under CI=true.
//
// Like testutil, it is meant for tests only.
package s3test

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/testutil"
)

// Server is a running S3 server.
type Server struct {
	// Endpoint is its URL (http://127.0.0.1:port).
	Endpoint string
	// AccessKey and SecretKey are the root credentials.
	AccessKey, SecretKey string
	// Dir is the posix backend's folder: bucket B is Dir/B.
	Dir string
}

// Start runs versitygw for the test, stopped at its end.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := os.Getenv("VERSITYGW")
	if bin == "" {
		p, err := exec.LookPath("versitygw")
		if err != nil {
			testutil.SkipOrFatal(t, "versitygw not found (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0, or set $VERSITYGW)")
		}
		bin = p
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var b [8]byte
	rand.Read(b[:])
	s := &Server{
		Endpoint:  "http://127.0.0.1:" + strconv.Itoa(port),
		AccessKey: "postinotest",
		SecretKey: hex.EncodeToString(b[:]),
		Dir:       filepath.Join(dir, "data"),
	}
	if err := os.Mkdir(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "versitygw.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--port", "127.0.0.1:"+strconv.Itoa(port), "--quiet", "posix", s.Dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return s
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logf.Name())
			t.Fatalf("versitygw did not answer: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
