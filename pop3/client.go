package pop3

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

	"github.com/emersion/go-sasl"
)

// Client is a POP3 client connection (RFC 1939). Its methods must not be
// called concurrently. A response body returned by Retr or Top must be
// read to its end (or closed) before the next command.
type Client struct {
	conn     net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	greeting string
	body     *dotReader // the unfinished multi-line response, if any
	caps     map[string][]string

	// Timeout bounds each command's exchange; 0 means no limit.
	Timeout time.Duration
}

// ListEntry is one line of a LIST response.
type ListEntry struct {
	Number int
	Size   int64
}

// UIDLEntry is one line of a UIDL response.
type UIDLEntry struct {
	Number int
	UID    string
}

// Dial connects to a POP3 server in the clear and reads its greeting.
func Dial(ctx context.Context, addr string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newClientCtx(ctx, c)
}

// DialTLS connects to a POP3 server over implicit TLS (port 995, RFC 8314)
// and reads its greeting.
func DialTLS(ctx context.Context, addr string, cfg *tls.Config) (*Client, error) {
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return newClientCtx(ctx, c)
}

func newClientCtx(ctx context.Context, c net.Conn) (*Client, error) {
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
		defer c.SetDeadline(time.Time{})
	}
	cl, err := NewClient(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	return cl, nil
}

// NewClient starts a client on an established connection and reads the
// server's greeting.
func NewClient(conn net.Conn) (*Client, error) {
	c := &Client{conn: conn}
	c.r = bufio.NewReaderSize(conn, 32*1024)
	c.w = bufio.NewWriter(conn)
	line, err := c.readResponse()
	if err != nil {
		return nil, err
	}
	c.greeting = line
	return c, nil
}

// Greeting returns the text of the server's greeting.
func (c *Client) Greeting() string { return c.greeting }

// Conn returns the underlying connection.
func (c *Client) Conn() net.Conn { return c.conn }

// Close closes the connection without QUIT: the server enters no UPDATE
// state and deletes nothing.
func (c *Client) Close() error { return c.conn.Close() }

func (c *Client) deadline() {
	if c.Timeout > 0 {
		c.conn.SetDeadline(time.Now().Add(c.Timeout))
	}
}

// finishBody discards the rest of an unfinished multi-line response.
func (c *Client) finishBody() error {
	if c.body == nil {
		return nil
	}
	err := c.body.drain()
	c.body = nil
	return err
}

func (c *Client) send(line string) error {
	if err := c.finishBody(); err != nil {
		return err
	}
	c.deadline()
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	return c.w.Flush()
}

// readResponse reads a status line; -ERR becomes an *Error.
func (c *Client) readResponse() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+OK"):
		return strings.TrimPrefix(line[3:], " "), nil
	case strings.HasPrefix(line, "-ERR"):
		return "", parseError(line[4:])
	}
	return "", fmt.Errorf("pop3: unexpected response %q", line)
}

// Cmd sends a command line and returns the text of the +OK reply.
func (c *Client) Cmd(format string, args ...any) (string, error) {
	if err := c.send(fmt.Sprintf(format, args...)); err != nil {
		return "", err
	}
	return c.readResponse()
}

// cmdBody sends a command with a multi-line answer and returns its body.
func (c *Client) cmdBody(format string, args ...any) (*dotReader, error) {
	if _, err := c.Cmd(format, args...); err != nil {
		return nil, err
	}
	c.body = newDotReader(c.r)
	return c.body, nil
}

// lines reads a whole multi-line response as lines without CRLF.
func (c *Client) lines(format string, args ...any) ([]string, error) {
	body, err := c.cmdBody(format, args...)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(body)
	c.body = nil
	if err != nil {
		return nil, err
	}
	s := strings.TrimSuffix(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	if s == "" {
		return nil, nil
	}
	return strings.Split(s, "\n"), nil
}

// Capabilities sends CAPA (RFC 2449 §5) and returns the capabilities by
// upper-case name with their arguments. The result is kept for HasCap.
func (c *Client) Capabilities() (map[string][]string, error) {
	lines, err := c.lines("CAPA")
	if err != nil {
		return nil, err
	}
	caps := make(map[string][]string, len(lines))
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 {
			caps[strings.ToUpper(f[0])] = f[1:]
		}
	}
	c.caps = caps
	return caps, nil
}

// HasCap reports whether the last CAPA listed the capability.
func (c *Client) HasCap(name string) bool {
	_, ok := c.caps[strings.ToUpper(name)]
	return ok
}

// StartTLS sends STLS (RFC 2595 §4) and starts TLS. The capabilities
// learned before are forgotten.
func (c *Client) StartTLS(cfg *tls.Config) error {
	if _, err := c.Cmd("STLS"); err != nil {
		return err
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.conn = tc
	c.r = bufio.NewReaderSize(tc, 32*1024)
	c.w = bufio.NewWriter(tc)
	c.caps = nil
	return nil
}

// Login authenticates with USER and PASS (RFC 1939 §7).
func (c *Client) Login(user, password string) error {
	if _, err := c.Cmd("USER %s", user); err != nil {
		return err
	}
	_, err := c.Cmd("PASS %s", password)
	return err
}

// Auth authenticates with a SASL mechanism (RFC 5034), sending an initial
// response when the mechanism has one.
func (c *Client) Auth(a sasl.Client) error {
	mech, ir, err := a.Start()
	if err != nil {
		return err
	}
	cmd := "AUTH " + mech
	if ir != nil {
		if len(ir) == 0 {
			cmd += " ="
		} else {
			cmd += " " + base64.StdEncoding.EncodeToString(ir)
		}
	}
	if err := c.send(cmd); err != nil {
		return err
	}
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, "+OK"):
			return nil
		case strings.HasPrefix(line, "-ERR"):
			return parseError(line[4:])
		case strings.HasPrefix(line, "+"):
			chal, err := base64.StdEncoding.DecodeString(strings.TrimSpace(line[1:]))
			if err != nil {
				c.send("*")
				c.readResponse()
				return fmt.Errorf("pop3: bad base64 challenge: %w", err)
			}
			resp, err := a.Next(chal)
			if err != nil {
				c.send("*")
				c.readResponse()
				return err
			}
			if err := c.send(base64.StdEncoding.EncodeToString(resp)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("pop3: unexpected response %q", line)
		}
	}
}

// Stat sends STAT and returns the number of messages and their total size.
func (c *Client) Stat() (count int, size int64, err error) {
	text, err := c.Cmd("STAT")
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(text)
	if len(f) < 2 {
		return 0, 0, fmt.Errorf("pop3: malformed STAT response %q", text)
	}
	count, err1 := strconv.Atoi(f[0])
	size, err2 := strconv.ParseInt(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("pop3: malformed STAT response %q", text)
	}
	return count, size, nil
}

func parseNumbered(line string) (int, string, error) {
	num, rest, ok := strings.Cut(strings.TrimSpace(line), " ")
	n, err := strconv.Atoi(num)
	if !ok || err != nil {
		return 0, "", fmt.Errorf("pop3: malformed scan line %q", line)
	}
	return n, strings.TrimSpace(rest), nil
}

func parseListEntry(line string) (ListEntry, error) {
	n, rest, err := parseNumbered(line)
	if err != nil {
		return ListEntry{}, err
	}
	f, _, _ := strings.Cut(rest, " ")
	size, err := strconv.ParseInt(f, 10, 64)
	if err != nil {
		return ListEntry{}, fmt.Errorf("pop3: malformed scan line %q", line)
	}
	return ListEntry{Number: n, Size: size}, nil
}

// List sends LIST and returns every message's number and size.
func (c *Client) List() ([]ListEntry, error) {
	lines, err := c.lines("LIST")
	if err != nil {
		return nil, err
	}
	out := make([]ListEntry, 0, len(lines))
	for _, l := range lines {
		e, err := parseListEntry(l)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// ListOne sends LIST n.
func (c *Client) ListOne(n int) (ListEntry, error) {
	text, err := c.Cmd("LIST %d", n)
	if err != nil {
		return ListEntry{}, err
	}
	return parseListEntry(text)
}

// UIDL sends UIDL and returns every message's unique-id.
func (c *Client) UIDL() ([]UIDLEntry, error) {
	lines, err := c.lines("UIDL")
	if err != nil {
		return nil, err
	}
	out := make([]UIDLEntry, 0, len(lines))
	for _, l := range lines {
		n, uid, err := parseNumbered(l)
		if err != nil {
			return nil, err
		}
		out = append(out, UIDLEntry{Number: n, UID: uid})
	}
	return out, nil
}

// UIDLOne sends UIDL n.
func (c *Client) UIDLOne(n int) (UIDLEntry, error) {
	text, err := c.Cmd("UIDL %d", n)
	if err != nil {
		return UIDLEntry{}, err
	}
	num, uid, err := parseNumbered(text)
	return UIDLEntry{Number: num, UID: uid}, err
}

// Retr sends RETR n and returns the message, un-stuffed, with its line
// ends as sent. Read it to the end before the next command.
func (c *Client) Retr(n int) (io.Reader, error) {
	return c.cmdBody("RETR %d", n)
}

// Top sends TOP n lines and returns the header and the first lines of the
// body.
func (c *Client) Top(n, lines int) (io.Reader, error) {
	return c.cmdBody("TOP %d %d", n, lines)
}

// RetrAll retrieves the given messages, pipelining the RETR commands when
// the server announced PIPELINING in the last CAPA (RFC 2449 §6.6), and
// calls fn with each message in order. fn must read what it needs before
// returning; the rest is discarded. An *Error for one message is passed to
// fn as err; any other error ends the exchange.
func (c *Client) RetrAll(nums []int, fn func(n int, msg io.Reader, err error) error) error {
	if err := c.finishBody(); err != nil {
		return err
	}
	window := 1
	if c.HasCap("PIPELINING") {
		window = 64
	}
	sent := 0
	for done := 0; done < len(nums); done++ {
		for sent < len(nums) && sent-done < window {
			c.w.WriteString("RETR " + strconv.Itoa(nums[sent]) + "\r\n")
			sent++
		}
		if c.w.Buffered() > 0 {
			c.deadline()
			if err := c.w.Flush(); err != nil {
				return err
			}
		}
		var body io.Reader
		_, err := c.readResponse()
		var perr *Error
		if err != nil && !errors.As(err, &perr) {
			return err
		}
		if err == nil {
			c.body = newDotReader(c.r)
			body = c.body
		}
		if ferr := fn(nums[done], body, err); ferr != nil {
			return ferr
		}
		if err := c.finishBody(); err != nil {
			return err
		}
	}
	return nil
}

// Dele sends DELE n.
func (c *Client) Dele(n int) error {
	_, err := c.Cmd("DELE %d", n)
	return err
}

// Noop sends NOOP.
func (c *Client) Noop() error {
	_, err := c.Cmd("NOOP")
	return err
}

// Rset sends RSET.
func (c *Client) Rset() error {
	_, err := c.Cmd("RSET")
	return err
}

// Quit sends QUIT, which in the TRANSACTION state makes the server remove
// the messages marked as deleted (RFC 1939 §6), and closes the connection.
// An error means the deletions may not have been applied.
func (c *Client) Quit() error {
	_, err := c.Cmd("QUIT")
	c.conn.Close()
	return err
}

// NewClientAfterTLS starts a client on a connection on which the server
// has just answered STLS with +OK: it performs the TLS handshake and
// continues without a greeting.
func NewClientAfterTLS(conn net.Conn, cfg *tls.Config) (*Client, error) {
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return &Client{conn: tc, r: bufio.NewReaderSize(tc, 32*1024), w: bufio.NewWriter(tc)}, nil
}
