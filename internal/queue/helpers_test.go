package queue

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postino-mail/postino/internal/config"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/store"
	"github.com/postino-mail/postino/internal/store/maildir"
	"github.com/postino-mail/postino/internal/store/pgstore"
	"github.com/postino-mail/postino/internal/testutil"
	"github.com/postino-mail/postino/internal/testutil/mailtest"
	"github.com/postino-mail/postino/internal/testutil/pgtest"
)

// ---- a scriptable loopback SMTP server ----

// srvConfig scripts a test SMTP server. Zero values behave like a
// well-behaved modern server.
type srvConfig struct {
	name string
	// ext are the EHLO keywords; nil means defaultExt.
	ext []string
	// tls offers STARTTLS with this configuration.
	tls *tls.Config
	// greeting replaces "220 <name> ESMTP".
	greeting string
	// mail, rcpt and dataDone give replies ("" means accept).
	mail     func(from string) string
	rcpt     func(to string) string
	dataDone func(n int, msg string) string
	// hang stops answering at a stage: "greeting", "mail", "data-done".
	hang string
	// dropInData closes the connection after this many message lines
	// (when > 0) of the n-th message (dropMsg, 1-based; 0 = all).
	dropInData int
	dropMsg    int
	// garbage answers the greeting with junk.
	garbage bool
	// strictPipelining reads the whole MAIL/RCPT/DATA group before
	// replying, which deadlocks a client that does not pipeline.
	strictPipelining bool
	// auth requires AUTH PLAIN with these credentials ("user:pass").
	auth string
	// onData is called when message data starts (after 354), e.g. to
	// block; false drops the connection without reading the message.
	onData func(n int) bool
}

var defaultExt = []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES", "SIZE 10000000"}

// gotMsg is a message the server accepted.
type gotMsg struct {
	mailLine  string
	rcptLines []string
	rcpts     []string
	data      string
	tls       bool
	authed    bool
}

type testServer struct {
	cfg  srvConfig
	ln   net.Listener
	mu   sync.Mutex
	msgs []gotMsg
	// conns counts connections; dataStarted counts DATA phases begun.
	conns, dataStarted int
	wg                 sync.WaitGroup
}

func newServer(t testing.TB, cfg srvConfig) *testServer {
	t.Helper()
	if cfg.name == "" {
		cfg.name = "mx.test"
	}
	if cfg.ext == nil {
		cfg.ext = defaultExt
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{cfg: cfg, ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns++
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return s
}

func (s *testServer) addr() string { return s.ln.Addr().String() }

func (s *testServer) messages() []gotMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]gotMsg(nil), s.msgs...)
}

func (s *testServer) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func addrOf(line string) string {
	i, j := strings.IndexByte(line, '<'), strings.IndexByte(line, '>')
	if i < 0 || j < i {
		return ""
	}
	return line[i+1 : j]
}

func (s *testServer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	reply := func(lines ...string) {
		for _, l := range lines {
			bw.WriteString(l + "\r\n")
		}
		bw.Flush()
	}
	hang := func() { io.Copy(io.Discard, br) }
	if s.cfg.hang == "greeting" {
		hang()
		return
	}
	if s.cfg.garbage {
		reply("HELLO THERE, I AM NOT AN SMTP SERVER")
		hang()
		return
	}
	if s.cfg.greeting != "" {
		reply(s.cfg.greeting)
	} else {
		reply("220 " + s.cfg.name + " ESMTP test")
	}
	isTLS, authed := false, false
	var cur *gotMsg
	accepted := 0
	var pipeBuf []string // strict pipelining: replies held until DATA
	send := func(l string) {
		if pipeBuf != nil {
			pipeBuf = append(pipeBuf, l)
			return
		}
		reply(l)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb := strings.ToUpper(strings.Fields(line + " x")[0])
		switch verb {
		case "EHLO":
			lines := []string{"250-" + s.cfg.name}
			ext := append([]string(nil), s.cfg.ext...)
			if s.cfg.tls != nil && !isTLS {
				ext = append(ext, "STARTTLS")
			}
			if s.cfg.auth != "" {
				ext = append(ext, "AUTH PLAIN LOGIN")
			}
			for i, e := range ext {
				sep := "-"
				if i == len(ext)-1 {
					sep = " "
				}
				lines = append(lines, "250"+sep+e)
			}
			if len(ext) == 0 {
				lines = []string{"250 " + s.cfg.name}
			}
			reply(lines...)
		case "HELO":
			reply("250 " + s.cfg.name)
		case "STARTTLS":
			reply("220 2.0.0 go ahead")
			tc := tls.Server(c, s.cfg.tls)
			if err := tc.Handshake(); err != nil {
				return
			}
			c = tc
			br = bufio.NewReader(tc)
			bw = bufio.NewWriter(tc)
			isTLS = true
		case "AUTH":
			f := strings.Fields(line)
			want := base64.StdEncoding.EncodeToString([]byte("\x00" + strings.Replace(s.cfg.auth, ":", "\x00", 1)))
			if len(f) == 3 && strings.EqualFold(f[1], "PLAIN") && f[2] == want {
				authed = true
				reply("235 2.7.0 ok")
			} else {
				reply("535 5.7.8 bad credentials")
			}
		case "MAIL":
			if s.cfg.auth != "" && !authed {
				reply("530 5.7.0 authentication required")
				continue
			}
			if s.cfg.hang == "mail" {
				hang()
				return
			}
			if s.cfg.strictPipelining {
				pipeBuf = []string{}
			}
			cur = &gotMsg{mailLine: line, tls: isTLS, authed: authed}
			accepted = 0
			r := ""
			if s.cfg.mail != nil {
				r = s.cfg.mail(addrOf(line))
			}
			if r == "" {
				r = "250 2.1.0 ok"
			}
			if !strings.HasPrefix(r, "2") {
				cur = nil
			}
			send(r)
		case "RCPT":
			if cur == nil {
				send("503 5.5.1 need MAIL")
				continue
			}
			r := ""
			if s.cfg.rcpt != nil {
				r = s.cfg.rcpt(addrOf(line))
			}
			if r == "" {
				r = "250 2.1.5 ok"
			}
			if strings.HasPrefix(r, "2") {
				cur.rcptLines = append(cur.rcptLines, line)
				cur.rcpts = append(cur.rcpts, addrOf(line))
				accepted++
			}
			send(r)
		case "DATA":
			if cur == nil || accepted == 0 {
				send("554 5.5.1 no valid recipients")
				if pipeBuf != nil {
					reply(pipeBuf...)
					pipeBuf = nil
				}
				continue
			}
			send("354 go ahead")
			if pipeBuf != nil {
				reply(pipeBuf...)
				pipeBuf = nil
			}
			s.mu.Lock()
			s.dataStarted++
			n := s.dataStarted
			s.mu.Unlock()
			if s.cfg.onData != nil && !s.cfg.onData(n) {
				return
			}
			var data strings.Builder
			lines := 0
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				lines++
				if s.cfg.dropInData > 0 && lines >= s.cfg.dropInData && (s.cfg.dropMsg == 0 || s.cfg.dropMsg == n) {
					return // connection dropped in the middle of DATA
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(strings.TrimPrefix(l, "."))
			}
			if s.cfg.hang == "data-done" {
				hang()
				return
			}
			r := ""
			if s.cfg.dataDone != nil {
				r = s.cfg.dataDone(n, data.String())
			}
			if r == "" {
				r = "250 2.0.0 queued as X"
			}
			if strings.HasPrefix(r, "2") {
				cur.data = data.String()
				s.mu.Lock()
				s.msgs = append(s.msgs, *cur)
				s.mu.Unlock()
			}
			cur = nil
			reply(r)
		case "RSET":
			cur = nil
			reply("250 2.0.0 ok")
		case "NOOP":
			reply("250 2.0.0 ok")
		case "QUIT":
			reply("221 2.0.0 bye")
			return
		default:
			reply("500 5.5.2 what?")
		}
	}
}

// ---- DNS and dialing ----

// testNet resolves names from maps and dials "ip:port" through a map to
// the loopback test servers; anything else is refused.
type testNet struct {
	mu      sync.Mutex
	mx      map[string][]*net.MX
	mxErr   map[string]error
	hosts   map[string][]string
	hostErr map[string]error
	routes  map[string]string // "127.0.0.2:25" -> real address
	dials   []string
}

func newNet() *testNet {
	return &testNet{mx: map[string][]*net.MX{}, mxErr: map[string]error{}, hosts: map[string][]string{}, hostErr: map[string]error{}, routes: map[string]string{}}
}

func notFound(name string) error {
	return &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (n *testNet) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.mxErr[name]; err != nil {
		return nil, err
	}
	mxs, ok := n.mx[name]
	if !ok {
		return nil, notFound(name)
	}
	out := make([]*net.MX, len(mxs))
	for i, m := range mxs {
		c := *m
		out[i] = &c
	}
	return out, nil
}

func (n *testNet) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.hostErr[host]; err != nil {
		return nil, err
	}
	ips, ok := n.hosts[host]
	if !ok {
		return nil, notFound(host)
	}
	var out []net.IPAddr
	for _, ip := range ips {
		out = append(out, net.IPAddr{IP: net.ParseIP(ip)})
	}
	return out, nil
}

func (n *testNet) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	n.mu.Lock()
	n.dials = append(n.dials, addr)
	real, ok := n.routes[addr]
	n.mu.Unlock()
	if !ok {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, real)
}

func (n *testNet) dialed() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.dials...)
}

// host makes name resolve to ip and ip:25 reach srv (srv nil: refused).
func (n *testNet) host(name, ip string, srv *testServer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hosts[name] = append(n.hosts[name], ip)
	if srv != nil {
		n.routes[ip+":25"] = srv.addr()
	}
}

// addMX adds an MX record.
func (n *testNet) addMX(domain, host string, pref uint16) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mx[domain] = append(n.mx[domain], &net.MX{Host: host + ".", Pref: pref})
}

// ---- a fake clock ----

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// After fires quickly in real time, so that Run keeps polling.
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	return time.After(min(d, 20*time.Millisecond))
}

// ---- local delivery ----

type userMap map[string]string

func (u userMap) LookupAddress(a string) (string, bool) {
	m, ok := u[strings.ToLower(a)]
	return m, ok
}

// env is a queue with its surroundings.
type env struct {
	t       testing.TB
	dir     string
	q       *Queue
	net     *testNet
	clock   *fakeClock
	store   *maildir.Store
	deliver *delivery.Deliverer
	opts    Options
	nextIP  int
	pg      *pgstore.Store // the database of the queue, when onPostgres
	dsn     string
}

const localDomain = "example.test"

// defaultOptions are the options of the default configuration, with the
// host name postino.test.
func defaultOptions() Options {
	o := ConfigOptions(config.Default(), nil)
	o.Hostname = "postino.test"
	return o
}

func newEnv(t testing.TB, mod func(*Options)) *env {
	t.Helper()
	dir := t.TempDir()
	ms, err := maildir.New(filepath.Join(dir, "mail"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ms.Close() })
	d := &delivery.Deliverer{Store: ms, Users: userMap{"alice@example.test": "alice@example.test", "bob@example.test": "bob@example.test"}, SpoolDir: dir}
	e := &env{t: t, dir: dir, net: newNet(), clock: newClock(), store: ms, deliver: d}
	e.opts = defaultOptions()
	e.opts.Logger = testLogger(t)
	e.opts.Resolver = e.net
	e.opts.Dialer = e.net
	e.opts.Clock = e.clock
	e.opts.IsLocalDomain = func(d string) bool { return d == localDomain }
	e.opts.Local = d
	e.opts.ConnectTimeout = 2 * time.Second
	e.opts.CommandTimeout = 2 * time.Second
	e.opts.DataDoneTimeout = 2 * time.Second
	if mod != nil {
		mod(&e.opts)
	}
	if onPostgres {
		e.dsn = pgEnvDSN
		if e.dsn == "" {
			e.dsn = pgtest.NewDB(t)
		}
		e.pg = openTestPG(t, e.dsn, dir)
		pgEnvs.Add(1)
		e.q, err = OpenPG(e.pg, e.opts)
	} else {
		e.q, err = Open(filepath.Join(dir, "queue"), e.opts)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.q.Close() })
	return e
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("QUEUE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// enqueue queues a simple message.
func (e *env) enqueue(from string, rcpts []string, params envelope.DSNParams, body string) string {
	e.t.Helper()
	id, err := e.q.Enqueue(context.Background(), from, rcpts, params, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

// runOnce delivers what is due.
func (e *env) runOnce() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.q.RunOnce(ctx)
}

// entries returns the queue's entries.
func (e *env) entries() []*Entry {
	e.t.Helper()
	list, err := e.q.List(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return list
}

// mailbox returns the messages in a local mailbox.
func (e *env) mailbox(user string) []string {
	e.t.Helper()
	return mailtest.StoreMessages(e.t, e.store, user)
}

var _ store.Store = (*maildir.Store)(nil)

func simpleMsg(subject string) string {
	return "From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: " + subject + "\r\nMessage-ID: <" + subject + "@example.test>\r\n\r\nHello.\r\n.a line with a dot\r\n"
}

// ---- TLS ----

// testTLS returns a server config with a fresh self-signed certificate for
// mx.test and smarthost.test, and a pool trusting it.
func testTLS(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	c := testutil.NewCert(t, "mx.test", "smarthost.test")
	return c.Config(), c.Pool()
}
