// Command smtpload is an SMTP load generator for postino's benchmarks: N
// concurrent senders, each a loopback connection that sends messages one
// after another (MAIL, RCPT, DATA; pipelined when the server offers
// PIPELINING), one recipient per message, the recipients spread round-robin
// over a set of users. It reports messages/s, per-message latency (from
// sending MAIL to the 250 that ends DATA) and errors, as text or -json.
//
// With -maildirs it also measures end-to-end durable delivery: after the
// last reply it polls the given Maildir new/ folders until they hold every
// accepted message, and reports messages ÷ time from the start until the
// last file appeared. For a server that stores before its 250 (postino)
// that is the send time; for a queueing MTA (Postfix) it includes the
// queue's drain into the Maildirs.
//
// Only loopback addresses are accepted.
//
//	smtpload -addr 127.0.0.1:2525 -users 'u%d@bench.test' -nusers 64 \
//	    -concurrency 100 -count 50 -size 10240 \
//	    -maildirs '/data/mail/bench.test/*/Maildir/new' -json
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Label        string        `json:"label,omitempty"`
	Addr         string        `json:"addr"`
	Concurrency  int           `json:"concurrency"`
	Size         int           `json:"size"`
	Pipelining   bool          `json:"pipelining"`
	PerConn      int           `json:"per_conn"`
	Messages     int64         `json:"messages"` // accepted (250 after DATA)
	Errors       int64         `json:"errors"`
	ErrorKinds   []errorKind   `json:"error_kinds,omitempty"`
	SendSeconds  float64       `json:"send_s"`
	MsgsPerS     float64       `json:"msgs_per_s"` // accepted ÷ send time
	MBPerS       float64       `json:"mb_per_s"`
	P50ms        float64       `json:"p50_ms"`
	P90ms        float64       `json:"p90_ms"`
	P99ms        float64       `json:"p99_ms"`
	MaxMs        float64       `json:"max_ms"`
	Durable      *durableStats `json:"durable,omitempty"`
	DurMsgsPerS  float64       `json:"durable_msgs_per_s,omitempty"`
	Connections  int64         `json:"connections"`
	ServerHello  string        `json:"server_greeting,omitempty"`
	StartedAtUTC string        `json:"started_at"`
}

type durableStats struct {
	Before   int     `json:"files_before"`
	After    int     `json:"files_after"`
	Seconds  float64 `json:"seconds"` // start of the run until the last file appeared
	DrainS   float64 `json:"drain_s"` // of which after the last reply
	TimedOut bool    `json:"timed_out,omitempty"`
}

type errorKind struct {
	Text  string `json:"text"`
	Count int64  `json:"count"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:2525", "SMTP server (loopback host:port)")
	conc := flag.Int("concurrency", 100, "concurrent senders (one connection each at a time)")
	count := flag.Int("count", 0, "messages per sender (0: run for -duration)")
	dur := flag.Duration("duration", 10*time.Second, "how long to send when -count is 0")
	size := flag.Int("size", 10240, "message size in octets (headers and body, CRLF line ends)")
	users := flag.String("users", "u%d@bench.test", "recipient pattern; %d is replaced by 0..nusers-1")
	nusers := flag.Int("nusers", 64, "number of recipients the messages are spread over")
	from := flag.String("from", "sender@load.test", "envelope sender")
	helo := flag.String("helo", "load.test", "EHLO name")
	perConn := flag.Int("per-conn", 0, "messages per connection before QUIT and a new connection (0: one connection per sender)")
	pipelining := flag.Bool("pipelining", true, "send MAIL, RCPT and DATA in one write when the server offers PIPELINING")
	timeout := flag.Duration("timeout", 60*time.Second, "time allowed for each reply")
	maildirs := flag.String("maildirs", "", "glob of Maildir new/ folders to watch for end-to-end delivery (empty: don't)")
	waitMax := flag.Duration("wait", 5*time.Minute, "longest wait for the Maildirs after the last reply")
	label := flag.String("label", "", "label copied into the result")
	jsonOut := flag.Bool("json", false, "print the result as one JSON line")
	msgFile := flag.String("message", "", "send this file's content as every message (header and body, e.g. DKIM-signed) instead of generated ones; -size is then ignored")
	flag.Parse()

	if err := checkLoopback(*addr); err != nil {
		fatal(err)
	}
	if *conc < 1 || *nusers < 1 || *size < 512 {
		fatal(errors.New("need -concurrency ≥ 1, -nusers ≥ 1, -size ≥ 512"))
	}
	if !strings.Contains(*users, "%d") {
		fatal(errors.New("-users needs a %d"))
	}
	rcpts := make([]string, *nusers)
	for i := range rcpts {
		rcpts[i] = strings.Replace(*users, "%d", strconv.Itoa(i), 1)
	}

	var before int
	if *maildirs != "" {
		n, err := countFiles(*maildirs)
		if err != nil {
			fatal(err)
		}
		before = n
	}

	res := &result{
		Label: *label, Addr: *addr, Concurrency: *conc, Size: *size,
		Pipelining: *pipelining, PerConn: *perConn,
		StartedAtUTC: time.Now().UTC().Format(time.RFC3339),
	}
	var (
		next      atomic.Int64 // message sequence: recipient and Message-ID
		accepted  atomic.Int64
		conns     atomic.Int64
		errMu     sync.Mutex
		errKinds  = map[string]int64{}
		nerr      atomic.Int64
		latMu     sync.Mutex
		latencies []time.Duration
		greeting  atomic.Value
	)
	addErr := func(err error) {
		nerr.Add(1)
		k := err.Error()
		if len(k) > 120 {
			k = k[:120]
		}
		errMu.Lock()
		errKinds[k]++
		errMu.Unlock()
	}
	run := fmt.Sprintf("%x", time.Now().UnixNano())
	body := makeBody(*size - len(header(*from, rcpts[0], run, 0, 0)))
	fixed := *msgFile != ""
	if fixed {
		b, err := os.ReadFile(*msgFile)
		if err != nil {
			fatal(err)
		}
		body = wireMessage(b)
		res.Size = len(body)
	}

	start := time.Now()
	deadline := start.Add(*dur)
	var wg sync.WaitGroup
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			lat := make([]time.Duration, 0, 256)
			defer func() {
				latMu.Lock()
				latencies = append(latencies, lat...)
				latMu.Unlock()
			}()
			sent := 0
			more := func() bool {
				if *count > 0 {
					return sent < *count
				}
				return time.Now().Before(deadline)
			}
			for more() {
				c, err := dial(*addr, *helo, *timeout)
				if err != nil {
					addErr(err)
					sent++ // a failed connection counts as a failed message
					time.Sleep(50 * time.Millisecond)
					continue
				}
				conns.Add(1)
				if g := greeting.Load(); g == nil {
					greeting.Store(c.greeting)
				}
				pipe := *pipelining && c.pipelining
				inConn := 0
				for more() && (*perConn == 0 || inConn < *perConn) {
					seq := next.Add(1) - 1
					rcpt := rcpts[seq%int64(len(rcpts))]
					hdr := ""
					if !fixed {
						hdr = header(*from, rcpt, run, seq, w)
					}
					t0 := time.Now()
					err := c.send(*from, rcpt, hdr, body, pipe)
					sent++
					inConn++
					if err != nil {
						addErr(err)
						var se *smtpErr
						if errors.As(err, &se) && se.code != 421 {
							continue // a refusal: the session goes on
						}
						break // I/O error or 421: a new connection
					}
					lat = append(lat, time.Since(t0))
					accepted.Add(1)
				}
				c.quit()
			}
		}(w)
	}
	wg.Wait()
	sendDur := time.Since(start)

	res.Messages = accepted.Load()
	res.Errors = nerr.Load()
	res.Connections = conns.Load()
	res.SendSeconds = sendDur.Seconds()
	res.MsgsPerS = float64(res.Messages) / sendDur.Seconds()
	res.MBPerS = float64(res.Messages) * float64(*size) / 1e6 / sendDur.Seconds()
	if g, ok := greeting.Load().(string); ok {
		res.ServerHello = g
	}
	slices.Sort(latencies)
	res.P50ms = ms(pct(latencies, 50))
	res.P90ms = ms(pct(latencies, 90))
	res.P99ms = ms(pct(latencies, 99))
	if len(latencies) > 0 {
		res.MaxMs = ms(latencies[len(latencies)-1])
	}
	for k, n := range errKinds {
		res.ErrorKinds = append(res.ErrorKinds, errorKind{k, n})
	}
	slices.SortFunc(res.ErrorKinds, func(a, b errorKind) int { return int(b.Count - a.Count) })

	if *maildirs != "" {
		d := &durableStats{Before: before}
		want := before + int(res.Messages)
		end := time.Now().Add(*waitMax)
		for {
			n, err := countFiles(*maildirs)
			if err != nil {
				fatal(err)
			}
			now := time.Now()
			d.After = n
			if n >= want {
				d.Seconds = now.Sub(start).Seconds()
				break
			}
			if now.After(end) {
				d.Seconds = now.Sub(start).Seconds()
				d.TimedOut = true
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		d.DrainS = d.Seconds - sendDur.Seconds()
		if d.DrainS < 0 {
			d.DrainS = 0
		}
		res.Durable = d
		// Only messages that reached a Maildir count.
		got := min(d.After-before, int(res.Messages))
		res.DurMsgsPerS = float64(got) / d.Seconds
	}

	if *jsonOut {
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
		return
	}
	fmt.Printf("%d messages in %.2fs: %.0f msgs/s, %.1f MB/s; latency p50 %.2f p90 %.2f p99 %.2f max %.2f ms; %d connections; errors %d\n",
		res.Messages, res.SendSeconds, res.MsgsPerS, res.MBPerS, res.P50ms, res.P90ms, res.P99ms, res.MaxMs, res.Connections, res.Errors)
	for _, k := range res.ErrorKinds {
		fmt.Printf("  %d × %s\n", k.Count, k.Text)
	}
	if d := res.Durable; d != nil {
		fmt.Printf("durable: %d new files in the Maildirs after %.2fs (drain %.2fs after the last reply)%s: %.0f msgs/s\n",
			d.After-d.Before, d.Seconds, d.DrainS, map[bool]string{true: " TIMED OUT", false: ""}[d.TimedOut], res.DurMsgsPerS)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "smtpload:", err)
	os.Exit(2)
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s is not a loopback address: smtpload only talks to loopback", addr)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p + 99) / 100
	return s[max(0, min(i-1, len(s)-1))]
}

// countFiles counts the entries of every folder matching glob.
func countFiles(glob string) (int, error) {
	dirs, err := filepath.Glob(glob)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range dirs {
		f, err := os.Open(d)
		if err != nil {
			return 0, err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return 0, err
		}
		n += len(names)
	}
	return n, nil
}

// header is the message's header section; the body makes up the rest of
// the size. Fixed length, so every message has the same size.
func header(from, to, run string, seq int64, w int) string {
	return fmt.Sprintf("From: Load Sender <%s>\r\nTo: <%s>\r\nSubject: smtpload message %012d\r\n"+
		"Message-ID: <%s.%012d.%04d@load.test>\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n"+
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", from, to, seq, run, seq, w)
}

// wireMessage returns the message b as DATA sends it: CRLF line ends, a
// final line end, lines starting with a dot doubled (RFC 5321 §4.5.2).
func wireMessage(b []byte) []byte {
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	s = strings.TrimSuffix(s, "\n")
	var out strings.Builder
	for l := range strings.SplitSeq(s, "\n") {
		if strings.HasPrefix(l, ".") {
			out.WriteByte('.')
		}
		out.WriteString(l)
		out.WriteString("\r\n")
	}
	return []byte(out.String())
}

// makeBody returns a body of n octets in lines of at most 86, ending in
// CRLF; no line starts with a dot, so no dot-stuffing is needed. (With
// recipients of different lengths, message sizes differ by those octets.)
func makeBody(n int) []byte {
	var b strings.Builder
	line := 0
	for b.Len() < n {
		l := fmt.Sprintf("line %05d of a benchmark message: lorem ipsum dolor sit amet, consectetur adipisci", line)
		if rest := n - b.Len() - 2; len(l) > rest {
			l = l[:max(rest, 1)]
		}
		b.WriteString(l)
		b.WriteString("\r\n")
		line++
	}
	return []byte(b.String())
}

// --- a small SMTP client ---------------------------------------------------

type conn struct {
	nc         net.Conn
	r          *bufio.Reader
	w          *bufio.Writer
	timeout    time.Duration
	greeting   string
	pipelining bool
}

type smtpErr struct {
	stage string
	code  int
	text  string
}

func (e *smtpErr) Error() string {
	// The text of the reply without queue ids or other per-message parts.
	t := e.text
	if i := strings.IndexAny(t, "\r\n"); i >= 0 {
		t = t[:i]
	}
	if len(t) > 60 {
		t = t[:60]
	}
	return fmt.Sprintf("%s: %d %s", e.stage, e.code, t)
}

func dial(addr, helo string, timeout time.Duration) (*conn, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", errors.Unwrap(err))
	}
	c := &conn{nc: nc, r: bufio.NewReaderSize(nc, 4096), w: bufio.NewWriterSize(nc, 16384), timeout: timeout}
	code, text, err := c.reply()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if code != 220 {
		nc.Close()
		return nil, &smtpErr{"greeting", code, text}
	}
	c.greeting = firstLine(text)
	c.w.WriteString("EHLO " + helo + "\r\n")
	if err := c.w.Flush(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	code, text, err = c.reply()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if code != 250 {
		nc.Close()
		return nil, &smtpErr{"EHLO", code, text}
	}
	for _, l := range strings.Split(text, "\n") {
		if strings.EqualFold(strings.TrimSpace(l), "PIPELINING") {
			c.pipelining = true
		}
	}
	return c, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// reply reads one (possibly multi-line) reply: its code and its lines'
// texts joined by "\n".
func (c *conn) reply() (int, string, error) {
	c.nc.SetReadDeadline(time.Now().Add(c.timeout))
	var text []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.EOF) {
				return 0, "", errors.New("connection closed")
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return 0, "", errors.New("reply timeout")
			}
			return 0, "", errors.New("read error")
		}
		l = strings.TrimRight(l, "\r\n")
		if len(l) < 3 {
			return 0, "", fmt.Errorf("malformed reply %q", l)
		}
		code, err := strconv.Atoi(l[:3])
		if err != nil {
			return 0, "", fmt.Errorf("malformed reply %q", l)
		}
		if len(l) > 4 {
			text = append(text, l[4:])
		} else {
			text = append(text, "")
		}
		if len(l) == 3 || l[3] == ' ' {
			return code, strings.Join(text, "\n"), nil
		}
	}
}

func (c *conn) flush() error {
	c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	if err := c.w.Flush(); err != nil {
		return errors.New("write error")
	}
	return nil
}

// expect reads a reply and checks its code.
func (c *conn) expect(stage string, want int) error {
	code, text, err := c.reply()
	if err != nil {
		return fmt.Errorf("%s: %w", stage, err)
	}
	if code != want {
		return &smtpErr{stage, code, text}
	}
	return nil
}

// send runs one mail transaction. A failed MAIL or RCPT is followed by
// RSET, so the connection stays usable.
func (c *conn) send(from, to, hdr string, body []byte, pipe bool) error {
	if pipe {
		// RFC 2920: MAIL, RCPT and DATA in one write, then their replies.
		c.w.WriteString("MAIL FROM:<" + from + ">\r\nRCPT TO:<" + to + ">\r\nDATA\r\n")
		if err := c.flush(); err != nil {
			return err
		}
		errM := c.expect("MAIL", 250)
		errR := c.expect("RCPT", 250)
		errD := c.expect("DATA", 354)
		if err := cmp(errM, errR); err != nil || errD != nil {
			if errD == nil { // DATA accepted although MAIL or RCPT failed: end it empty
				c.w.WriteString(".\r\n")
				c.flush()
				c.reply()
			}
			if err == nil {
				err = errD
			}
			c.rset()
			return err
		}
	} else {
		for _, s := range []struct {
			cmd, stage string
			want       int
		}{
			{"MAIL FROM:<" + from + ">\r\n", "MAIL", 250},
			{"RCPT TO:<" + to + ">\r\n", "RCPT", 250},
			{"DATA\r\n", "DATA", 354},
		} {
			c.w.WriteString(s.cmd)
			if err := c.flush(); err != nil {
				return err
			}
			if err := c.expect(s.stage, s.want); err != nil {
				c.rset()
				return err
			}
		}
	}
	c.w.WriteString(hdr)
	c.w.Write(body)
	c.w.WriteString(".\r\n")
	if err := c.flush(); err != nil {
		return err
	}
	return c.expect("end of DATA", 250)
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (c *conn) rset() {
	c.w.WriteString("RSET\r\n")
	if c.flush() == nil {
		c.reply()
	}
}

func (c *conn) quit() {
	c.w.WriteString("QUIT\r\n")
	if c.flush() == nil {
		c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		c.reply()
	}
	c.nc.Close()
}
