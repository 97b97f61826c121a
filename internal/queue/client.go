package queue

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/postino-mail/postino/internal/crlf"
)

// This file is the SMTP client. go-smtp's client neither pipelines nor
// takes a context, so the queue speaks SMTP itself; it is small because it
// only does what delivery needs.

// maxReplyLine bounds one reply line; RFC 5321 §4.5.3.1.5 sets 512.
const maxReplyLine = 2048

// maxReplyLines bounds a multiline reply.
const maxReplyLines = 100

// reply is an SMTP reply (RFC 5321 §4.2).
type reply struct {
	Code     int
	Enhanced string // "5.1.1" when the server gave one (RFC 2034)
	Lines    []string
}

// String returns the reply as one line: "550 5.1.1 User unknown".
func (r *reply) String() string {
	text := strings.Join(r.Lines, " ")
	if r.Enhanced != "" {
		return fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, text)
	}
	return strings.TrimSpace(fmt.Sprintf("%d %s", r.Code, text))
}

// Error makes a reply usable as an error.
func (r *reply) Error() string { return r.String() }

// errProtocol is a reply that is not SMTP.
var errProtocol = errors.New("protocol error")

// readReply reads one reply. Garbage (no three-digit code, codes that
// change between lines, overlong lines) is errProtocol.
func readReply(br *bufio.Reader) (*reply, error) {
	var r reply
	for n := 0; ; n++ {
		if n >= maxReplyLines {
			return nil, fmt.Errorf("%w: reply too long", errProtocol)
		}
		line, err := readLine(br)
		if err != nil {
			return nil, err
		}
		if len(line) < 3 || len(line) > 3 && line[3] != ' ' && line[3] != '-' {
			return nil, fmt.Errorf("%w: %q", errProtocol, truncate(line, 60))
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 200 || code > 599 || line[0] > '5' || line[1] > '5' {
			return nil, fmt.Errorf("%w: %q", errProtocol, truncate(line, 60))
		}
		if n > 0 && code != r.Code {
			return nil, fmt.Errorf("%w: code changed in multiline reply", errProtocol)
		}
		r.Code = code
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		if !utf8.ValidString(text) {
			text = strings.ToValidUTF8(text, "?")
		}
		if n == 0 {
			r.Enhanced, text = splitEnhanced(code, text)
		} else if r.Enhanced != "" {
			_, text = splitEnhanced(code, text)
		}
		r.Lines = append(r.Lines, text)
		if len(line) == 3 || line[3] == ' ' {
			return &r, nil
		}
	}
}

func readLine(br *bufio.Reader) (string, error) {
	var buf []byte
	for {
		b, err := br.ReadSlice('\n')
		buf = append(buf, b...)
		if len(buf) > maxReplyLine {
			return "", fmt.Errorf("%w: line too long", errProtocol)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		return strings.TrimRight(string(buf), "\r\n"), nil
	}
}

// splitEnhanced splits an RFC 3463 status code off a reply text when its
// class matches the reply's.
func splitEnhanced(code int, text string) (string, string) {
	st, rest, _ := strings.Cut(text, " ")
	if validStatus(st) && int(st[0]-'0') == code/100 {
		return st, rest
	}
	return "", text
}

// validStatus checks an RFC 3463 status code: class.subject.detail.
func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || len(s) > 11 {
		return false
	}
	if parts[0] != "2" && parts[0] != "4" && parts[0] != "5" {
		return false
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 {
			return false
		}
		for _, c := range p {
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// client is one SMTP connection.
type client struct {
	conn      net.Conn
	br        *bufio.Reader
	bw        *bufio.Writer
	host      string // the MX host name, for logs and Remote-MTA
	route     string // the route it serves, for reuse
	ext       map[string]string
	tls       bool
	timeout   time.Duration
	broken    bool // a network or protocol error: do not reuse
	stopWatch func() bool
}

func newClient(ctx context.Context, conn net.Conn, host string, timeout time.Duration) *client {
	c := &client{conn: conn, host: host, timeout: timeout}
	c.br = bufio.NewReaderSize(conn, 4096)
	c.bw = bufio.NewWriterSize(conn, 32*1024)
	c.watch(ctx)
	return c
}

// watch closes the connection when ctx ends, so that no read blocks past
// cancellation.
func (c *client) watch(ctx context.Context) {
	if c.stopWatch != nil {
		c.stopWatch()
	}
	conn := c.conn
	c.stopWatch = context.AfterFunc(ctx, func() { conn.Close() })
}

// deadline sets the I/O deadline for the next exchange.
func (c *client) deadline(d time.Duration) {
	c.conn.SetDeadline(time.Now().Add(d))
}

func (c *client) fail(err error) error {
	c.broken = true
	return err
}

// read reads one reply within the command timeout.
func (c *client) read() (*reply, error) {
	c.deadline(c.timeout)
	r, err := readReply(c.br)
	if err != nil {
		return nil, c.fail(err)
	}
	return r, nil
}

// cmd sends one command and reads its reply.
func (c *client) cmd(format string, args ...any) (*reply, error) {
	c.deadline(c.timeout)
	fmt.Fprintf(c.bw, format+"\r\n", args...)
	if err := c.bw.Flush(); err != nil {
		return nil, c.fail(err)
	}
	return c.read()
}

// greet reads the greeting and says EHLO (HELO when EHLO is refused).
func (c *client) greet(hostname string) error {
	r, err := c.read()
	if err != nil {
		return err
	}
	if r.Code != 220 {
		return c.fail(r)
	}
	return c.hello(hostname)
}

func (c *client) hello(hostname string) error {
	r, err := c.cmd("EHLO %s", hostname)
	if err != nil {
		return err
	}
	c.ext = make(map[string]string)
	if r.Code == 250 {
		for _, l := range r.Lines[1:] {
			k, v, _ := strings.Cut(l, " ")
			c.ext[strings.ToUpper(k)] = v
		}
		return nil
	}
	// RFC 5321 §3.2: fall back to HELO; no extensions then.
	r, err = c.cmd("HELO %s", hostname)
	if err != nil {
		return err
	}
	if r.Code != 250 {
		return c.fail(r)
	}
	return nil
}

func (c *client) has(ext string) bool {
	_, ok := c.ext[ext]
	return ok
}

// startTLS upgrades the connection (RFC 3207) and says EHLO again.
func (c *client) startTLS(ctx context.Context, cfg *tls.Config, hostname string) error {
	r, err := c.cmd("STARTTLS")
	if err != nil {
		return err
	}
	if r.Code != 220 {
		return r
	}
	if c.br.Buffered() > 0 {
		// RFC 3207 §5 (and CVE-2011-0411): nothing may follow 220.
		return c.fail(fmt.Errorf("%w: data after STARTTLS reply", errProtocol))
	}
	tc := tls.Client(c.conn, cfg)
	c.deadline(c.timeout)
	if err := tc.HandshakeContext(ctx); err != nil {
		return c.fail(fmt.Errorf("TLS handshake: %w", err))
	}
	c.conn = tc
	c.br.Reset(tc)
	c.bw.Reset(tc)
	c.tls = true
	c.watch(ctx)
	return c.hello(hostname)
}

// auth authenticates with PLAIN (RFC 4616) or LOGIN.
func (c *client) auth(user, pass string) error {
	mechs := strings.Fields(strings.ToUpper(c.ext["AUTH"]))
	has := func(m string) bool {
		for _, x := range mechs {
			if x == m {
				return true
			}
		}
		return false
	}
	var r *reply
	var err error
	switch {
	case has("PLAIN") || !has("LOGIN"):
		r, err = c.cmd("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
	default:
		r, err = c.cmd("AUTH LOGIN")
		for _, s := range []string{user, pass} {
			if err != nil || r.Code != 334 {
				break
			}
			r, err = c.cmd("%s", base64.StdEncoding.EncodeToString([]byte(s)))
		}
	}
	if err != nil {
		return err
	}
	if r.Code != 235 {
		return r
	}
	return nil
}

// rcptResult is the outcome for one recipient of a transaction: a reply
// (Reply set) or a failure of the connection (Err set).
type rcptResult struct {
	Reply *reply
	Err   error
}

// txn is what send needs of a message.
type txn struct {
	from       string
	rcpts      []Recipient
	size       int64
	body8bit   bool
	utf8       bool
	ret, envid string
	body       io.Reader
}

// send runs one mail transaction (RFC 5321 §3.3), pipelined when the
// server offers PIPELINING (RFC 2920), and returns one result per
// recipient. An error before any recipient result (MAIL refused, the
// connection lost) is returned as err; the caller applies it to all.
func (c *client) send(ctx context.Context, t *txn, dataDone time.Duration) (results []rcptResult, mailErr error) {
	dsn := c.has("DSN")
	var mail strings.Builder
	fmt.Fprintf(&mail, "MAIL FROM:<%s>", t.from)
	if c.has("SIZE") {
		fmt.Fprintf(&mail, " SIZE=%d", t.size) // RFC 1870 §6
	}
	if t.body8bit && c.has("8BITMIME") {
		mail.WriteString(" BODY=8BITMIME") // RFC 6152 §2
	}
	if t.utf8 {
		mail.WriteString(" SMTPUTF8") // RFC 6531 §3.4
	}
	if dsn {
		// RFC 3461 §4.3, §4.4: pass RET and ENVID on.
		if t.ret != "" {
			mail.WriteString(" RET=" + t.ret)
		}
		if t.envid != "" {
			mail.WriteString(" ENVID=" + xtext(t.envid))
		}
	}
	lines := []string{mail.String()}
	for _, r := range t.rcpts {
		var sb strings.Builder
		fmt.Fprintf(&sb, "RCPT TO:<%s>", r.Addr)
		if dsn {
			if len(r.Notify) > 0 {
				sb.WriteString(" NOTIFY=" + strings.Join(r.Notify, ","))
			}
			if r.ORcpt != "" {
				sb.WriteString(" ORCPT=" + orcptParam(r.ORcptType, r.ORcpt, t.utf8 && c.has("SMTPUTF8")))
			}
		}
		lines = append(lines, sb.String())
	}
	lines = append(lines, "DATA")
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			return nil, fmt.Errorf("%w: line break in address", errBadAddress)
		}
	}
	pipelined := c.has("PIPELINING")
	results = make([]rcptResult, len(t.rcpts))
	accepted := 0

	// RFC 2920 §3.1: MAIL, RCPT and DATA may be sent in one group, DATA
	// last; the replies come in order.
	if pipelined {
		c.deadline(c.timeout)
		for _, l := range lines {
			c.bw.WriteString(l + "\r\n")
		}
		if err := c.bw.Flush(); err != nil {
			return nil, c.fail(err)
		}
	}
	exchange := func(l string) (*reply, error) {
		if pipelined {
			return c.read()
		}
		return c.cmd("%s", l)
	}
	r, err := exchange(lines[0])
	if err != nil {
		return nil, err
	}
	if r.Code/100 != 2 {
		mailErr = r
		if !pipelined {
			c.reset()
			return nil, mailErr
		}
	}
	for i := range t.rcpts {
		if mailErr != nil {
			// Pipelined: read and ignore the replies (RCPT without MAIL).
			if _, err := c.read(); err != nil {
				return nil, err
			}
			continue
		}
		r, err := exchange(lines[1+i])
		if err != nil {
			return nil, err
		}
		results[i].Reply = r
		if r.Code/100 == 2 {
			accepted++
		}
	}
	if !pipelined && (mailErr != nil || accepted == 0) {
		c.reset()
		return results, mailErr
	}
	r, err = exchange("DATA")
	if err != nil {
		return nil, err
	}
	if r.Code != 354 {
		if mailErr == nil && accepted > 0 {
			// DATA refused: the reply applies to the accepted recipients.
			for i := range results {
				if results[i].Reply.Code/100 == 2 {
					results[i].Reply = r
				}
			}
		}
		c.reset()
		return results, mailErr
	}
	if mailErr != nil || accepted == 0 {
		// RFC 2920 §3.1: a server that said 354 after refusing every
		// recipient gets an empty message, which it must refuse.
		if _, err := c.cmd("."); err != nil {
			return nil, err
		}
		c.reset()
		return results, mailErr
	}
	if err := c.writeData(t.body); err != nil {
		return c.lost(results, err), nil
	}
	c.deadline(dataDone)
	r, err = readReply(c.br)
	if err != nil {
		return c.lost(results, c.fail(err)), nil
	}
	for i := range results {
		if results[i].Reply.Code/100 == 2 {
			results[i].Reply = r // RFC 5321 §3.3: one reply for all
		}
	}
	if r.Code/100 != 2 {
		c.reset()
	}
	return results, nil
}

// lost marks the accepted recipients as failed by a broken connection.
func (c *client) lost(results []rcptResult, err error) []rcptResult {
	for i := range results {
		if results[i].Reply != nil && results[i].Reply.Code/100 == 2 {
			results[i] = rcptResult{Err: err}
		}
	}
	return results
}

// writeData sends the message with dot-stuffing (RFC 5321 §4.5.2) and the
// final dot, its lines longer than 998 octets folded (see folder; Enqueue
// folds a message for a remote domain before signing it, so this changes
// only messages queued otherwise). Each write has the command timeout.
func (c *client) writeData(body io.Reader) error {
	// RFC 5321 §2.3.8: no bare CR or LF is ever sent, whatever the stored
	// message holds (Enqueue normalises already; a message stored by an
	// older version or another writer of the store may not be). Every line
	// then ends in CRLF, so a '.' after an LF is the only one that starts a
	// line and needs stuffing: "\r.\r\n" cannot pass as the end of data.
	br := bufio.NewReaderSize(newFolder(crlf.NewNormalizer(body, false)), 32*1024)
	bol := true // at the beginning of a line
	last := byte('\n')
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			c.deadline(c.timeout)
			if bol && line[0] == '.' {
				c.bw.WriteByte('.')
			}
			if _, werr := c.bw.Write(line); werr != nil {
				return c.fail(werr)
			}
			last = line[len(line)-1]
			bol = last == '\n'
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return c.fail(fmt.Errorf("reading queued message: %w", err))
		}
	}
	if last != '\n' {
		c.bw.WriteString("\r\n")
	}
	c.bw.WriteString(".\r\n")
	c.deadline(c.timeout)
	if err := c.bw.Flush(); err != nil {
		return c.fail(err)
	}
	return nil
}

// reset ends a failed transaction so the connection can be reused.
func (c *client) reset() {
	if c.broken {
		return
	}
	r, err := c.cmd("RSET")
	if err != nil || r.Code != 250 {
		c.broken = true
	}
}

// close ends the session politely (QUIT) and closes the connection.
func (c *client) close() {
	if !c.broken {
		c.conn.SetDeadline(time.Now().Add(5 * time.Second))
		c.bw.WriteString("QUIT\r\n")
		if c.bw.Flush() == nil {
			readReply(c.br)
		}
	}
	if c.stopWatch != nil {
		c.stopWatch()
	}
	c.conn.Close()
}

var errBadAddress = errors.New("bad address")

// xtext encodes a parameter value (RFC 3461 §4).
func xtext(s string) string {
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '!' || c > '~' || c == '+' || c == '=' {
			fmt.Fprintf(&sb, "+%02X", c)
		} else {
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// orcptParam encodes an ORCPT value: "rfc822;" with xtext, or "utf-8;"
// with RFC 6533 §3 utf-8-addr-unitext (to an SMTPUTF8 server) or
// utf-8-addr-xtext.
func orcptParam(typ, addr string, unitext bool) string {
	if !strings.EqualFold(typ, "utf-8") {
		return "rfc822;" + xtext(addr)
	}
	var sb strings.Builder
	for _, r := range addr {
		switch {
		case r == '+' || r == '=' || r == '\\' || r < '!' || r == 0x7f:
			fmt.Fprintf(&sb, "\\x{%X}", r)
		case r > 0x7f && !unitext:
			fmt.Fprintf(&sb, "\\x{%X}", r)
		default:
			sb.WriteRune(r)
		}
	}
	return "utf-8;" + sb.String()
}
