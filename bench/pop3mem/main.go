// Command pop3mem measures the memory postino's POP3 server needs: the
// growth of the server process while a client downloads one very large
// message, and the memory held by many idle authenticated sessions.
//
// It builds nothing itself: pass the postino binary with -postino (the
// bench/run-memory script builds it). Everything runs on 127.0.0.1.
//
//	go build -o /tmp/postino ./cmd/postino
//	go run ./bench/pop3mem -postino /tmp/postino -sessions 10000 -retr-mb 100
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/postino-mail/postino/pop3"
)

func main() {
	bin := flag.String("postino", "", "path to the postino binary (required)")
	sessions := flag.Int("sessions", 10000, "idle authenticated sessions to hold")
	retrMB := flag.Int("retr-mb", 100, "size of the large message in MB (0 skips the RETR test)")
	flag.Parse()
	if *bin == "" {
		log.Fatal("-postino is required")
	}
	// Each idle session holds a descriptor here and one in the server;
	// raise the limit the server inherits where it is too low, as
	// LimitNOFILE does in the systemd unit.
	need := uint64(*sessions + 1024)
	var rl syscall.Rlimit
	must(syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl))
	if rl.Cur < need {
		rl.Cur = max(need, rl.Cur)
		rl.Max = max(rl.Max, rl.Cur)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			log.Printf("raising the descriptor limit to %d: %v (raise ulimit -n)", need, err)
		}
	}
	dir, err := os.MkdirTemp("", "pop3mem-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Users with a cheap {PLAIN} entry: this measures memory, not hashing.
	var pw strings.Builder
	n := max(*sessions, 1)
	for i := range n {
		fmt.Fprintf(&pw, "u%d@bench.test:{PLAIN}pw\n", i)
	}
	must(os.WriteFile(filepath.Join(dir, "users.passwd"), []byte(pw.String()), 0o600))
	port := freePort()
	conf := fmt.Sprintf("data_dir = %q\n[pop3]\nlisten = \"127.0.0.1:%d\"\nlisten_tls = \"\"\nmax_connections = %d\nmax_connections_per_ip = %d\n[delivery]\nmax_message_size = \"%dMiB\"\n",
		dir, port, n+100, n+100, *retrMB+10)
	must(os.WriteFile(filepath.Join(dir, "postino.toml"), []byte(conf), 0o600))

	if *retrMB > 0 {
		deliverLarge(*bin, dir, *retrMB)
	}
	cmd := exec.Command(*bin, "serve", "--config", filepath.Join(dir, "postino.toml"))
	cmd.Stderr = logSink()
	must(cmd.Start())
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	waitPort(addr)
	pid := cmd.Process.Pid
	fmt.Printf("postino pid %d, baseline RSS %.1f MB\n", pid, rssMB(pid, "VmRSS"))

	if *retrMB > 0 {
		measureRetr(pid, addr, *retrMB)
	}
	if *sessions > 0 {
		measureIdle(pid, addr, *sessions)
	}
}

func deliverLarge(bin, dir string, mb int) {
	r, w := io.Pipe()
	go func() {
		bw := bufio.NewWriter(w)
		fmt.Fprintf(bw, "Subject: large\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n")
		raw := make([]byte, 57)
		for written := 0; written < mb<<20; written += 78 {
			rand.Read(raw)
			bw.WriteString(base64.StdEncoding.EncodeToString(raw))
			bw.WriteByte('\n')
		}
		bw.Flush()
		w.Close()
	}()
	cmd := exec.Command(bin, "deliver", "--config", filepath.Join(dir, "postino.toml"), "u0@bench.test")
	cmd.Stdin = r
	cmd.Stderr = os.Stderr
	must(cmd.Run())
}

func measureRetr(pid int, addr string, mb int) {
	c, err := pop3.Dial(context.Background(), addr)
	must(err)
	must(c.Login("u0@bench.test", "pw"))
	before := rssMB(pid, "VmRSS")
	resetPeak(pid)
	start := time.Now()
	r, err := c.Retr(1)
	must(err)
	n, err := io.Copy(io.Discard, r)
	must(err)
	elapsed := time.Since(start)
	peak := rssMB(pid, "VmHWM")
	c.Quit()
	fmt.Printf("RETR of a %d MB message: %d octets in %v (%.0f MB/s); server RSS %.1f MB before, peak %.1f MB: growth %.1f MB\n",
		mb, n, elapsed.Round(time.Millisecond), float64(n)/1e6/elapsed.Seconds(), before, peak, peak-before)
}

func measureIdle(pid int, addr string, sessions int) {
	before := rssMB(pid, "VmRSS")
	clients := make([]*pop3.Client, sessions)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	start := time.Now()
	var mu sync.Mutex
	var firstErr error
	for i := range sessions {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := pop3.Dial(context.Background(), addr)
			if err == nil {
				err = c.Login("u"+strconv.Itoa(i)+"@bench.test", "pw")
			}
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if firstErr != nil {
		log.Fatalf("opening sessions: %v", firstErr)
	}
	time.Sleep(2 * time.Second) // let the runtime settle
	after := rssMB(pid, "VmRSS")
	fmt.Printf("%d idle authenticated sessions opened in %v: server RSS %.1f MB before, %.1f MB after: %.1f KB per session\n",
		sessions, time.Since(start).Round(time.Millisecond), before, after, (after-before)*1024/float64(sessions))
	for _, c := range clients {
		c.Quit()
	}
}

func rssMB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(err)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, field+":") {
			f := strings.Fields(line)
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	log.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// resetPeak resets VmHWM (writing 5 to clear_refs, Linux ≥ 4.0).
func resetPeak(pid int) {
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitPort(addr string) {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	log.Fatalf("postino did not start listening on %s", addr)
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// logSink returns where the server's log goes: standard error with
// POP3MEM_LOG=1, nowhere otherwise.
func logSink() io.Writer {
	if os.Getenv("POP3MEM_LOG") == "1" {
		return os.Stderr
	}
	return io.Discard
}
