// Command pop3load is a POP3 load generator built on postino's own client
// (package pop3). It drives any POP3 server — postino, Dovecot, … — with the
// same client behaviour, so that servers can be compared side by side (see
// bench/compare/pop3.sh).
//
// Modes:
//
//	download  USER/PASS, CAPA, STAT, UIDL, RETR of every message (pipelined
//	          when the server advertises PIPELINING), QUIT. Nothing is
//	          deleted, so the mailbox stays the same from run to run.
//	poll      USER/PASS, STAT, UIDL, QUIT: a client checking for new mail.
//	stat      USER/PASS, STAT, QUIT: the cost of opening a maildrop.
//	idle      open -sessions authenticated sessions and hold them; with
//	          -pids, report the memory of the server's processes (the given
//	          PIDs and all their descendants, so every Dovecot process is
//	          counted) before and after, per session.
//	fill      helper, no network: write -count messages of -size octets
//	          straight into DIR/new (-dir) under Maildir names that carry
//	          ,S= and ,W= as postino and Dovecot write them.
//
// Worker i always uses user i mod nusers, so with -concurrency ≤ nusers no
// two sessions contend for one maildrop lock.
//
//	pop3load -mode download -addr 127.0.0.1:110 -users 'u%d@bench.test' -nusers 64 \
//	         -password secret -concurrency 16 -duration 10s
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/postino-mail/postino/pop3"
)

type options struct {
	mode        string
	addr        string
	transport   string
	users       []string
	password    string
	concurrency int
	duration    time.Duration
	sessions    int
	insecure    bool
	serverName  string
	timeout     time.Duration
	settle      time.Duration
	pids        []int
	label       string
}

// Result is what a run reports; -json prints it as one JSON object.
type Result struct {
	Label       string  `json:"label,omitempty"`
	Mode        string  `json:"mode"`
	Transport   string  `json:"transport"`
	Addr        string  `json:"addr"`
	Concurrency int     `json:"concurrency"`
	Sessions    int64   `json:"sessions"`
	Errors      int64   `json:"errors"`
	ErrorKinds  []Count `json:"error_kinds,omitempty"`
	ElapsedSec  float64 `json:"elapsed_s"`
	SessionsPS  float64 `json:"sessions_per_s"`
	Messages    int64   `json:"messages"`
	Bytes       int64   `json:"bytes"`
	MBPS        float64 `json:"mb_per_s"`
	P50ms       float64 `json:"p50_ms"`
	P90ms       float64 `json:"p90_ms"`
	P99ms       float64 `json:"p99_ms"`
	Maxms       float64 `json:"max_ms"`
	Meanms      float64 `json:"mean_ms"`

	// idle mode
	Idle *IdleResult `json:"idle,omitempty"`
}

// IdleResult is the memory of the server's processes around -sessions idle
// authenticated sessions.
type IdleResult struct {
	Open            int     `json:"open"`
	SetupSec        float64 `json:"setup_s"`
	ProcsBefore     int     `json:"procs_before"`
	ProcsAfter      int     `json:"procs_after"`
	PSSBeforeKB     int64   `json:"pss_before_kb"`
	PSSAfterKB      int64   `json:"pss_after_kb"`
	RSSBeforeKB     int64   `json:"rss_before_kb"`
	RSSAfterKB      int64   `json:"rss_after_kb"`
	PSSPerSessionKB float64 `json:"pss_per_session_kb"`
	RSSPerSessionKB float64 `json:"rss_per_session_kb"`
}

// Count is an error text and how often it occurred.
type Count struct {
	Text string `json:"text"`
	N    int64  `json:"n"`
}

func main() {
	var o options
	var usersArg, pidsArg, fillDir string
	var nusers, fillCount, fillSize int
	var jsonOut bool
	flag.StringVar(&o.mode, "mode", "poll", "download, poll, stat, idle or fill")
	flag.StringVar(&o.addr, "addr", "127.0.0.1:110", "server `host:port`")
	flag.StringVar(&o.transport, "transport", "plain", "plain, stls (STLS after the greeting) or tls (implicit TLS)")
	flag.StringVar(&usersArg, "users", "u%d@bench.test", "user names: a file (one per line; passwd-file lines are cut at ':') or a pattern with %d")
	flag.IntVar(&nusers, "nusers", 64, "number of users made from a -users pattern (u0..u<n-1>)")
	flag.StringVar(&o.password, "password", "", "password of every user")
	flag.IntVar(&o.concurrency, "concurrency", 8, "parallel sessions (workers)")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "run for this long (download, poll, stat)")
	flag.IntVar(&o.sessions, "sessions", 0, "run exactly this many sessions instead of -duration; in idle mode, the sessions to hold")
	flag.BoolVar(&o.insecure, "insecure", false, "do not verify the server certificate")
	flag.StringVar(&o.serverName, "servername", "localhost", "TLS server name")
	flag.DurationVar(&o.timeout, "timeout", 60*time.Second, "limit for each command exchange")
	flag.DurationVar(&o.settle, "settle", 3*time.Second, "idle: wait this long after the sessions are up before measuring")
	flag.StringVar(&pidsArg, "pids", "", "idle: comma-separated PIDs of the server; each and all its descendants are measured")
	flag.StringVar(&o.label, "label", "", "free text copied into the result")
	flag.BoolVar(&jsonOut, "json", false, "print the result as JSON")
	flag.StringVar(&fillDir, "dir", "", "fill: the Maildir to fill (new/ is created)")
	flag.IntVar(&fillCount, "count", 1000, "fill: number of messages")
	flag.IntVar(&fillSize, "size", 2048, "fill: approximate message size in octets")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("pop3load: ")

	if o.mode == "fill" {
		if fillDir == "" {
			log.Fatal("fill needs -dir")
		}
		if err := fill(fillDir, fillCount, fillSize); err != nil {
			log.Fatal(err)
		}
		return
	}
	var err error
	o.users, err = loadUsers(usersArg, nusers)
	if err != nil {
		log.Fatal(err)
	}
	if len(o.users) == 0 {
		log.Fatal("no users")
	}
	for _, p := range strings.Split(pidsArg, ",") {
		if p = strings.TrimSpace(p); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil {
				log.Fatalf("-pids: %v", err)
			}
			o.pids = append(o.pids, n)
		}
	}
	switch o.transport {
	case "plain", "stls", "tls":
	default:
		log.Fatalf("unknown -transport %q", o.transport)
	}
	if o.concurrency < 1 {
		o.concurrency = 1
	}
	raiseNoFile(uint64(max(o.sessions, o.concurrency)) + 1024)

	var res *Result
	switch o.mode {
	case "download", "poll", "stat":
		if o.concurrency > len(o.users) {
			log.Printf("warning: -concurrency %d > %d users: workers share mailboxes and may get [IN-USE]", o.concurrency, len(o.users))
		}
		res = runLoad(&o)
	case "idle":
		if o.sessions <= 0 {
			log.Fatal("idle needs -sessions")
		}
		if o.sessions > len(o.users) {
			log.Printf("warning: %d sessions > %d users: servers that lock the maildrop refuse the extra ones", o.sessions, len(o.users))
		}
		res = runIdle(&o)
	default:
		log.Fatalf("unknown -mode %q", o.mode)
	}
	res.Label = o.label
	if jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.Encode(res)
		return
	}
	printResult(res)
}

func loadUsers(arg string, n int) ([]string, error) {
	if strings.Contains(arg, "%d") {
		out := make([]string, n)
		for i := range n {
			out[i] = strings.ReplaceAll(arg, "%d", strconv.Itoa(i))
		}
		return out, nil
	}
	data, err := os.ReadFile(arg)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		u, _, _ := strings.Cut(line, ":")
		out = append(out, u)
	}
	return out, nil
}

func (o *options) tlsConfig() *tls.Config {
	return &tls.Config{InsecureSkipVerify: o.insecure, ServerName: o.serverName}
}

// connect dials, starts TLS as asked and logs in.
func (o *options) connect(ctx context.Context, user string) (*pop3.Client, error) {
	var c *pop3.Client
	var err error
	if o.transport == "tls" {
		c, err = pop3.DialTLS(ctx, o.addr, o.tlsConfig())
	} else {
		c, err = pop3.Dial(ctx, o.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	c.Timeout = o.timeout
	if o.transport == "stls" {
		if err := c.StartTLS(o.tlsConfig()); err != nil {
			c.Close()
			return nil, fmt.Errorf("stls: %w", err)
		}
	}
	if err := c.Login(user, o.password); err != nil {
		c.Close()
		return nil, fmt.Errorf("login: %w", err)
	}
	return c, nil
}

type sessionStats struct {
	messages, bytes int64
}

// session runs one session of the load modes.
func (o *options) session(user string) (sessionStats, error) {
	var st sessionStats
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	c, err := o.connect(ctx, user)
	if err != nil {
		return st, err
	}
	defer c.Close()
	if o.mode == "download" {
		// RetrAll pipelines only if the last CAPA listed PIPELINING.
		if _, err := c.Capabilities(); err != nil {
			return st, fmt.Errorf("capa: %w", err)
		}
	}
	count, _, err := c.Stat()
	if err != nil {
		return st, fmt.Errorf("stat: %w", err)
	}
	if o.mode != "stat" {
		uids, err := c.UIDL()
		if err != nil {
			return st, fmt.Errorf("uidl: %w", err)
		}
		if len(uids) != count {
			return st, fmt.Errorf("uidl: %d entries, stat said %d", len(uids), count)
		}
	}
	if o.mode == "download" && count > 0 {
		nums := make([]int, count)
		for i := range nums {
			nums[i] = i + 1
		}
		err := c.RetrAll(nums, func(n int, msg io.Reader, err error) error {
			if err != nil {
				return fmt.Errorf("retr %d: %w", n, err)
			}
			k, err := io.Copy(io.Discard, msg)
			st.bytes += k
			st.messages++
			return err
		})
		if err != nil {
			return st, fmt.Errorf("retr: %w", err)
		}
	}
	if err := c.Quit(); err != nil {
		return st, fmt.Errorf("quit: %w", err)
	}
	return st, nil
}

func runLoad(o *options) *Result {
	var (
		started  atomic.Int64
		messages atomic.Int64
		bytes    atomic.Int64
		errs     atomic.Int64
		mu       sync.Mutex
		kinds    = map[string]int64{}
		lats     = make([][]time.Duration, o.concurrency)
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(o.duration)
	for w := range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := o.users[w%len(o.users)]
			for {
				if o.sessions > 0 {
					if started.Add(1) > int64(o.sessions) {
						return
					}
				} else if time.Now().After(deadline) {
					return
				}
				t0 := time.Now()
				st, err := o.session(user)
				d := time.Since(t0)
				messages.Add(st.messages)
				bytes.Add(st.bytes)
				if err != nil {
					errs.Add(1)
					mu.Lock()
					kinds[errorKind(err)]++
					mu.Unlock()
					time.Sleep(10 * time.Millisecond) // do not spin on a refusing server
					continue
				}
				lats[w] = append(lats[w], d)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r := &Result{
		Mode: o.mode, Transport: o.transport, Addr: o.addr, Concurrency: o.concurrency,
		Sessions: int64(len(all)), Errors: errs.Load(), ElapsedSec: elapsed.Seconds(),
		Messages: messages.Load(), Bytes: bytes.Load(),
	}
	r.SessionsPS = float64(r.Sessions) / elapsed.Seconds()
	r.MBPS = float64(r.Bytes) / 1e6 / elapsed.Seconds()
	if len(all) > 0 {
		var sum time.Duration
		for _, d := range all {
			sum += d
		}
		r.P50ms = ms(pct(all, 0.50))
		r.P90ms = ms(pct(all, 0.90))
		r.P99ms = ms(pct(all, 0.99))
		r.Maxms = ms(all[len(all)-1])
		r.Meanms = ms(sum / time.Duration(len(all)))
	}
	r.ErrorKinds = topKinds(kinds)
	return r
}

func pct(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func errorKind(err error) string {
	s := err.Error()
	if len(s) > 120 {
		s = s[:120]
	}
	return s
}

func topKinds(m map[string]int64) []Count {
	var out []Count
	for k, v := range m {
		out = append(out, Count{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].N > out[j].N })
	if len(out) > 5 {
		out = out[:5]
	}
	return out
}

func runIdle(o *options) *Result {
	r := &Result{Mode: o.mode, Transport: o.transport, Addr: o.addr, Concurrency: o.concurrency}
	ir := &IdleResult{}
	r.Idle = ir
	if len(o.pids) > 0 {
		ir.ProcsBefore, ir.PSSBeforeKB, ir.RSSBeforeKB = measure(o.pids)
	}
	clients := make([]*pop3.Client, o.sessions)
	var (
		next  atomic.Int64
		errs  atomic.Int64
		mu    sync.Mutex
		kinds = map[string]int64{}
		wg    sync.WaitGroup
	)
	start := time.Now()
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.sessions {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
				c, err := o.connect(ctx, o.users[i%len(o.users)])
				cancel()
				if err != nil {
					errs.Add(1)
					mu.Lock()
					kinds[errorKind(err)]++
					mu.Unlock()
					continue
				}
				c.Timeout = 0
				clients[i] = c
			}
		}()
	}
	wg.Wait()
	ir.SetupSec = time.Since(start).Seconds()
	for _, c := range clients {
		if c != nil {
			ir.Open++
		}
	}
	r.Sessions, r.Errors, r.ErrorKinds = int64(ir.Open), errs.Load(), topKinds(kinds)
	time.Sleep(o.settle)
	if len(o.pids) > 0 {
		ir.ProcsAfter, ir.PSSAfterKB, ir.RSSAfterKB = measure(o.pids)
		if ir.Open > 0 {
			ir.PSSPerSessionKB = float64(ir.PSSAfterKB-ir.PSSBeforeKB) / float64(ir.Open)
			ir.RSSPerSessionKB = float64(ir.RSSAfterKB-ir.RSSBeforeKB) / float64(ir.Open)
		}
	}
	// Check that the sessions are still alive, then end them.
	var quitErrs atomic.Int64
	sem := make(chan struct{}, 64)
	for _, c := range clients {
		if c == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c.Timeout = o.timeout
			if err := c.Quit(); err != nil {
				quitErrs.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := quitErrs.Load(); n > 0 {
		r.Errors += n
		r.ErrorKinds = append(r.ErrorKinds, Count{"QUIT failed after the idle period", n})
	}
	r.ElapsedSec = time.Since(start).Seconds()
	return r
}

// measure sums PSS (from smaps_rollup) and RSS over the given processes
// and all their descendants.
func measure(roots []int) (procs int, pssKB, rssKB int64) {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(data)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	seen := map[int]bool{}
	var walk func(int)
	walk = func(pid int) {
		if seen[pid] {
			return
		}
		seen[pid] = true
		for _, c := range children[pid] {
			walk(c)
		}
	}
	for _, p := range roots {
		walk(p)
	}
	for pid := range seen {
		pss, okP := procField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
		rss, okR := procField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
		if !okP && !okR {
			continue // gone, or a kernel thread
		}
		if !okP {
			pss = rss
		}
		procs++
		pssKB += pss
		rssKB += rss
	}
	return procs, pssKB, rssKB
}

func procField(path, field string) (int64, bool) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, field) {
			f := strings.Fields(line[len(field):])
			if len(f) == 0 {
				return 0, false
			}
			n, err := strconv.ParseInt(f[0], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func printResult(r *Result) {
	if r.Label != "" {
		fmt.Printf("[%s] ", r.Label)
	}
	fmt.Printf("mode=%s transport=%s addr=%s concurrency=%d\n", r.Mode, r.Transport, r.Addr, r.Concurrency)
	if ir := r.Idle; ir != nil {
		fmt.Printf("  %d idle authenticated sessions up in %.1fs, %d errors\n", ir.Open, ir.SetupSec, r.Errors)
		if ir.ProcsAfter > 0 {
			fmt.Printf("  server processes %d -> %d; PSS %.1f -> %.1f MB (%.1f KB/session); RSS %.1f -> %.1f MB (%.1f KB/session)\n",
				ir.ProcsBefore, ir.ProcsAfter, float64(ir.PSSBeforeKB)/1024, float64(ir.PSSAfterKB)/1024, ir.PSSPerSessionKB,
				float64(ir.RSSBeforeKB)/1024, float64(ir.RSSAfterKB)/1024, ir.RSSPerSessionKB)
		}
	} else {
		fmt.Printf("  %d sessions in %.1fs: %.1f sessions/s, %d messages, %.1f MB/s, %d errors\n",
			r.Sessions, r.ElapsedSec, r.SessionsPS, r.Messages, r.MBPS, r.Errors)
		fmt.Printf("  session latency ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f  mean %.2f\n",
			r.P50ms, r.P90ms, r.P99ms, r.Maxms, r.Meanms)
	}
	for _, k := range r.ErrorKinds {
		fmt.Printf("  error x%d: %s\n", k.N, k.Text)
	}
}

func raiseNoFile(need uint64) {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil || rl.Cur >= need {
		return
	}
	rl.Cur = min(max(need, rl.Cur), max(rl.Max, need))
	if rl.Max < rl.Cur {
		rl.Max = rl.Cur
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		log.Printf("raising the descriptor limit to %d: %v", need, err)
	}
}

// fill writes count messages of about size octets into dir/new, named as
// Dovecot and postino name delivered messages:
// <secs>.M<usecs>P<pid>Q<n>R<random>.<host>,S=<file size>,W=<wire size>.
// Messages have LF line ends; the wire size counts CRLF.
func fill(dir string, count, size int) error {
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	host, _ := os.Hostname()
	host = strings.NewReplacer("/", `\057`, ":", `\072`, ",", `\054`).Replace(host)
	if host == "" {
		host = "localhost"
	}
	pid := os.Getpid()
	base := time.Now().Add(-time.Duration(count) * time.Millisecond)
	var rnd [8]byte
	var b strings.Builder
	for i := range count {
		b.Reset()
		fmt.Fprintf(&b, "From: filler@bench.test\nTo: big@bench.test\nSubject: message %d\nMessage-ID: <fill.%d.%d@bench.test>\n\n", i, pid, i)
		for b.Len() < size {
			b.WriteString("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\n")
		}
		body := b.String()
		lines := int64(strings.Count(body, "\n"))
		t := base.Add(time.Duration(i) * time.Millisecond)
		if _, err := rand.Read(rnd[:]); err != nil {
			return err
		}
		name := fmt.Sprintf("%d.M%dP%dQ%dR%s.%s,S=%d,W=%d", t.Unix(), t.Nanosecond()/1000, pid, i+1,
			hex.EncodeToString(rnd[:]), host, len(body), int64(len(body))+lines)
		if err := os.WriteFile(filepath.Join(dir, "new", name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	return nil
}
