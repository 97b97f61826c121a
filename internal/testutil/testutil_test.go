package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFreeAddrs(t *testing.T) {
	addrs := FreeAddrs(t, 3)
	seen := map[string]bool{}
	for _, a := range addrs {
		if !strings.HasPrefix(a, "127.0.0.1:") || seen[a] {
			t.Fatalf("FreeAddrs gave %v", addrs)
		}
		seen[a] = true
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	fmt.Fprintf(&b, "a%d", 1)
	b.Write([]byte("b"))
	if got := b.String(); got != "a1b" {
		t.Fatalf("got %q", got)
	}
}

func TestCRLFAndWireForm(t *testing.T) {
	if got := string(CRLF("a\nb\r\nc")); got != "a\r\nb\r\nc\r\n" {
		t.Errorf("CRLF: %q", got)
	}
	want := "Return-Path: <f@x.test>\r\nDelivered-To: r@y.test\r\nSubject: s\r\n\r\nbody\r\n"
	if got := string(WireForm("f@x.test", "r@y.test", []byte("Subject: s\n\nbody"))); got != want {
		t.Errorf("WireForm: %q", got)
	}
}

func TestRunner(t *testing.T) {
	sh := NeedProgram(t, "sh")
	r := Runner{Timeout: 10 * time.Second}.Run(t, []string{"TESTUTIL_X=42"}, []byte("in"), sh, "-c", `cat; echo " $TESTUTIL_X"; echo err >&2; exit 3`)
	if r.Code != 3 || r.Output != "in 42\nerr\n" {
		t.Errorf("combined: %+v", r)
	}
	r = Runner{Timeout: 10 * time.Second, Split: true}.Run(t, nil, nil, sh, "-c", "echo out; echo err >&2")
	if r.Code != 0 || r.Stdout != "out\n" || r.Stderr != "err\n" {
		t.Errorf("split: %+v", r)
	}
	if s := r.String(); s != "exit 0\nstdout:\nout\n\nstderr:\nerr\n" {
		t.Errorf("split String: %q", s)
	}
	long := Result{Output: strings.Repeat("x", 30), Code: 1, maxShown: 10}
	if s := long.String(); !strings.Contains(s, "xxxxx\n[... 20 bytes cut ...]\nxxxxx") {
		t.Errorf("cut String: %q", s)
	}
}

// TestWaitBanner runs a fake server that prints postino's banner for a
// listener it opened, and stops it with SIGTERM.
func TestWaitBanner(t *testing.T) {
	sh := NeedProgram(t, "sh")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	var out SyncBuffer
	cmd := exec.Command(sh, "-c", `trap 'exit 0' TERM; sleep 0.2; printf '%s' "$1"; while :; do sleep 0.05; done`, "sh", BannerLine("pop3", addr))
	cmd.Stdout = &out
	p, err := StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitBanner(&out, map[string]string{"pop3": addr, "pop3s": ""}, 10*time.Second, 10*time.Millisecond); err != nil {
		t.Fatalf("WaitBanner: %v (output %q)", err, out.String())
	}
	p.Stop(t, 10*time.Second, &out)
	if !p.Exited() || p.Err() != nil {
		t.Errorf("after Stop: exited %v, err %v", p.Exited(), p.Err())
	}
}

func TestWaitBannerExitedEarly(t *testing.T) {
	sh := NeedProgram(t, "sh")
	var out SyncBuffer
	cmd := exec.Command(sh, "-c", "exit 2")
	cmd.Stdout = &out
	p, err := StartProcess(cmd)
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitBanner(&out, map[string]string{"pop3": "127.0.0.1:1"}, 10*time.Second, 10*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "exited early") {
		t.Fatalf("WaitBanner: %v", err)
	}
	if code, ok := p.Wait(time.Second); !ok || code != 2 {
		t.Errorf("Wait: %d %v", code, ok)
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Errorf("ModuleRoot = %q: %v", root, err)
	}
	if _, err := os.Stat(filepath.Join(root, "internal", "testutil", "doc.go")); err != nil {
		t.Errorf("ModuleRoot = %q is not this module's root: %v", root, err)
	}
}

func TestParseJSONLog(t *testing.T) {
	lines, err := ParseJSONLog(`{"level":"INFO","msg":"a","n":1,"g":{"x":[1,{"y":2}]}}` + "\n" + `{"msg":"b"}` + "\n")
	if err != nil || len(lines) != 2 || lines[0].Str("msg") != "a" || lines[0].Str("n") != "1" || lines[1].Str("msg") != "b" {
		t.Fatalf("ParseJSONLog = %v, %v", lines, err)
	}
	for _, bad := range []string{
		`{"msg":"a","remote":"1.2.3.4","remote":2}`,
		`{"msg":"a","g":{"k":1,"k":2}}`,
		`postino serving /data`,
		`{"msg":"a"} {"msg":"b"}`,
		`[1,2]`,
	} {
		if _, err := ParseJSONLog(bad + "\n"); err == nil {
			t.Errorf("ParseJSONLog(%q) accepted", bad)
		}
	}
}
