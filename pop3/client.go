package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
)

// Client is a POP3 client connection (RFC 1939). Its methods must not be
// called concurrently. A response body returned by Retr or Top must be
// read to its end (or closed) before the next command.
//
// The client does not trust the server with its memory: every response
// line is limited to MaxLine octets, a LIST or UIDL listing to the number
// of messages STAT reported (other listings to MaxListLines lines), and a
// message from RETR or TOP to the size the server announced for it (plus
// a small slack, see SizeSlack) and to MaxMessageSize. A response that
// breaks a limit ends the connection: the call returns a *LimitError, and
// every later call returns it again.
type Client struct {
	conn     net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	greeting string
	body     *bodyReader // the unfinished multi-line response, if any
	caps     map[string][]string
	err      error         // a broken limit: the connection is closed
	count    int           // messages by the last STAT; -1: unknown
	sizes    map[int]int64 // sizes announced by LIST, by message number

	// Timeout bounds each command's exchange; 0 means no limit.
	Timeout time.Duration
	// MaxLine limits the length of a response line, CRLF included; 0
	// means DefaultResponseLine. Message bodies are not subject to it.
	MaxLine int
	// MaxMessageSize limits the octets of one message (RETR) or message
	// part (TOP) that the client accepts, after byte-stuffing is removed;
	// 0 means no limit beyond the size the server announced.
	MaxMessageSize int64
}

// DefaultResponseLine is the default limit on a response line, CRLF included.
// RFC 2449 §4 limits responses to 512 octets and RFC 1939 lines are
// shorter; SASL challenges (RFC 5034 §4) are the longest lines a server
// legitimately sends, and SCRAM's stay well under 1 KiB.
const DefaultResponseLine = 4096

// MaxListLines limits a multi-line response that is neither a message nor
// a LIST or UIDL listing (CAPA, and any listing before STAT is known).
const MaxListLines = 1000

// SizeSlack is the margin a message may exceed the size announced for it
// (by LIST or in the +OK line of RETR) before the client gives up: an
// eighth of the announced size plus 1 KiB, for servers that count line
// ends as one octet where RFC 1939 §11 counts CRLF as two.
func SizeSlack(announced int64) int64 { return announced/8 + 1024 }

// Sentinel errors wrapped by a *LimitError.
var (
	// ErrLineTooLong means a response line exceeded Client.MaxLine.
	ErrLineTooLong = errors.New("pop3: response line too long")
	// ErrListingTooLong means a multi-line listing had more lines than
	// the maildrop has messages (or MaxListLines).
	ErrListingTooLong = errors.New("pop3: multi-line listing too long")
	// ErrMessageTooLarge means a message ran past the size announced for
	// it, or past Client.MaxMessageSize.
	ErrMessageTooLarge = errors.New("pop3: message larger than announced or allowed")
)

// LimitError reports a server response that broke one of the client's
// limits. The client has closed the connection when it returns one. It
// matches its sentinel under errors.Is (ErrLineTooLong, ErrListingTooLong,
// ErrMessageTooLarge).
type LimitError struct {
	// Err is the sentinel naming the limit.
	Err error
	// Command is the command the response answered ("" for the greeting).
	Command string
	// Limit is the limit that was exceeded, in octets or lines.
	Limit int64
}

// Error describes the broken limit.
func (e *LimitError) Error() string {
	cmd := e.Command
	if cmd == "" {
		cmd = "greeting"
	}
	unit := "octets"
	if e.Err == ErrListingTooLong {
		unit = "lines"
	}
	return fmt.Sprintf("%v (%s response over %d %s); connection closed", e.Err, cmd, e.Limit, unit)
}

// Unwrap returns the sentinel.
func (e *LimitError) Unwrap() error { return e.Err }

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
	c := &Client{conn: conn, count: -1}
	c.r = bufio.NewReaderSize(conn, readBufSize)
	c.w = bufio.NewWriter(conn)
	line, err := c.readResponse("")
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

// readBufSize is the size of the read buffer: the most the client holds
// of a response line, and the unit in which bodies are streamed.
const readBufSize = 32 * 1024

// maxLine returns the effective line limit.
func (c *Client) maxLine() int {
	if c.MaxLine > 0 {
		return min(c.MaxLine, readBufSize)
	}
	return DefaultResponseLine
}

// fail records a broken limit and closes the connection; every later call
// returns err.
func (c *Client) fail(err error) error {
	if c.err == nil {
		c.err = err
		c.conn.Close()
	}
	return c.err
}

// finishBody discards the rest of an unfinished multi-line response.
func (c *Client) finishBody() error {
	if c.err != nil {
		return c.err
	}
	if c.body == nil {
		return nil
	}
	_, err := io.Copy(io.Discard, c.body)
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

// readLine reads one response line without its line end. It never holds
// more than the read buffer: a line longer than the limit ends the
// connection with ErrLineTooLong.
func (c *Client) readLine(cmd string) (string, error) {
	if c.err != nil {
		return "", c.err
	}
	limit := c.maxLine()
	b, err := c.r.ReadSlice('\n')
	if len(b) > limit || errors.Is(err, bufio.ErrBufferFull) {
		return "", c.fail(&LimitError{Err: ErrLineTooLong, Command: cmd, Limit: int64(limit)})
	}
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// verb returns the command name of a command line, for errors.
func verb(line string) string {
	v, _, _ := strings.Cut(line, " ")
	return strings.ToUpper(v)
}

// readResponse reads a status line; -ERR becomes an *Error.
func (c *Client) readResponse(cmd string) (string, error) {
	line, err := c.readLine(cmd)
	if err != nil {
		return "", err
	}
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
	line := fmt.Sprintf(format, args...)
	if err := c.send(line); err != nil {
		return "", err
	}
	v := verb(line)
	if v == "RSET" {
		// RFC 1939 §5: RSET unmarks deleted messages, so the count
		// of the last STAT no longer bounds a listing.
		c.count = -1
	}
	return c.readResponse(v)
}

// bodyReader reads a message body (RETR, TOP) and stops it at its size
// limit, ending the connection.
type bodyReader struct {
	c     *Client
	d     *dotReader
	cmd   string
	n     int64 // octets returned so far
	limit int64 // -1: none
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.c.err != nil {
		return 0, b.c.err
	}
	n, err := b.d.Read(p)
	b.n += int64(n)
	if b.limit >= 0 && b.n > b.limit {
		over := b.n - b.limit
		b.n = b.limit
		return n - int(over), b.c.fail(&LimitError{Err: ErrMessageTooLarge, Command: b.cmd, Limit: b.limit})
	}
	return n, err
}

// messageLimit returns the most octets a message of the given announced
// size (-1: unknown) may have, or -1 for no limit.
func (c *Client) messageLimit(announced int64) int64 {
	limit := int64(-1)
	if announced >= 0 {
		limit = announced + SizeSlack(announced)
		if limit < announced { // overflow
			limit = math.MaxInt64
		}
	}
	if c.MaxMessageSize > 0 && (limit < 0 || c.MaxMessageSize < limit) {
		limit = c.MaxMessageSize
	}
	return limit
}

// announcedSize returns the size LIST gave for message n, or else the
// size in a "+OK nnn octets" reply (RFC 1939 §7 example), or -1.
func (c *Client) announcedSize(n int, reply string) int64 {
	if s, ok := c.sizes[n]; ok {
		return s
	}
	if f := strings.Fields(reply); len(f) >= 1 {
		if s, err := strconv.ParseInt(f[0], 10, 64); err == nil && s >= 0 && (len(f) == 1 || strings.EqualFold(f[1], "octets")) {
			return s
		}
	}
	return -1
}

// message sends RETR or TOP for message n and returns its limited body.
func (c *Client) message(n int, line string) (*bodyReader, error) {
	reply, err := c.Cmd("%s", line)
	if err != nil {
		return nil, err
	}
	return c.startBody(verb(line), n, reply), nil
}

// startBody starts reading the body of the RETR or TOP whose reply was
// just read.
func (c *Client) startBody(cmd string, n int, reply string) *bodyReader {
	limit := c.messageLimit(c.announcedSize(n, reply))
	c.body = &bodyReader{c: c, d: newDotReader(c.r), cmd: cmd, limit: limit}
	return c.body
}

// lines reads a whole multi-line response as lines without CRLF. It stops
// with ErrListingTooLong after maxLines lines.
func (c *Client) lines(maxLines int, format string, args ...any) ([]string, error) {
	line := fmt.Sprintf(format, args...)
	if _, err := c.Cmd("%s", line); err != nil {
		return nil, err
	}
	cmd := verb(line)
	var out []string
	for {
		l, err := c.readLine(cmd)
		if err != nil {
			if err == io.EOF {
				err = errMissingTerminator
			}
			return nil, err
		}
		// RFC 1939 §3: the terminating line, and byte-stuffing.
		if l == "." {
			return out, nil
		}
		if len(out) >= maxLines {
			return nil, c.fail(&LimitError{Err: ErrListingTooLong, Command: cmd, Limit: int64(maxLines)})
		}
		out = append(out, strings.TrimPrefix(l, "."))
	}
}

// listingBound returns how many entries a LIST or UIDL listing may have:
// the message count of STAT (RFC 1939 §5: LIST and UIDL list only the
// messages STAT counts), asking for it when it is not known.
func (c *Client) listingBound() (int, error) {
	if c.count < 0 {
		if _, _, err := c.Stat(); err != nil {
			return 0, err
		}
	}
	return c.count, nil
}

// Capabilities sends CAPA (RFC 2449 §5) and returns the capabilities by
// upper-case name with their arguments. The result is kept for HasCap.
func (c *Client) Capabilities() (map[string][]string, error) {
	lines, err := c.lines(MaxListLines, "CAPA")
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
	c.r = bufio.NewReaderSize(tc, readBufSize)
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
		line, err := c.readLine("AUTH")
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(line, "+OK"):
			return nil
		case strings.HasPrefix(line, "-ERR"):
			return parseError(line[4:])
		case strings.HasPrefix(line, "+"):
			chal, err := base64.StdEncoding.DecodeString(strings.TrimSpace(line[1:]))
			if err != nil {
				c.send("*")
				c.readResponse("AUTH")
				return fmt.Errorf("pop3: bad base64 challenge: %w", err)
			}
			resp, err := a.Next(chal)
			if err != nil {
				c.send("*")
				c.readResponse("AUTH")
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
	if err := errors.Join(err1, err2); err != nil || count < 0 || size < 0 {
		return 0, 0, fmt.Errorf("pop3: malformed STAT response %q", text)
	}
	c.count = count
	return count, size, nil
}

func parseNumbered(line string) (int, string, error) {
	num, rest, ok := strings.Cut(strings.TrimSpace(line), " ")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 1 {
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
	if err != nil || size < 0 {
		return ListEntry{}, fmt.Errorf("pop3: malformed scan line %q", line)
	}
	return ListEntry{Number: n, Size: size}, nil
}

// List sends LIST and returns every message's number and size. The
// listing may have no more entries than STAT counts messages; STAT is
// sent first when the count is not known. The sizes bound what Retr, Top
// and RetrAll accept for each message.
func (c *Client) List() ([]ListEntry, error) {
	bound, err := c.listingBound()
	if err != nil {
		return nil, err
	}
	lines, err := c.lines(bound, "LIST")
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
	c.sizes = make(map[int]int64, len(out))
	for _, e := range out {
		c.sizes[e.Number] = e.Size
	}
	return out, nil
}

// ListOne sends LIST n.
func (c *Client) ListOne(n int) (ListEntry, error) {
	text, err := c.Cmd("LIST %d", n)
	if err != nil {
		return ListEntry{}, err
	}
	e, err := parseListEntry(text)
	if err == nil {
		if c.sizes == nil {
			c.sizes = map[int]int64{}
		}
		c.sizes[e.Number] = e.Size
	}
	return e, err
}

// UIDL sends UIDL and returns every message's unique-id. The listing may
// have no more entries than STAT counts messages; STAT is sent first when
// the count is not known.
func (c *Client) UIDL() ([]UIDLEntry, error) {
	bound, err := c.listingBound()
	if err != nil {
		return nil, err
	}
	lines, err := c.lines(bound, "UIDL")
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
// ends as sent. Read it to the end before the next command. Reading fails
// with ErrMessageTooLarge, and the connection is closed, when the message
// runs past the size LIST (or the +OK line) announced plus SizeSlack, or
// past MaxMessageSize.
func (c *Client) Retr(n int) (io.Reader, error) {
	return c.message(n, "RETR "+strconv.Itoa(n))
}

// Top sends TOP n lines and returns the header and the first lines of the
// body, limited as Retr's answer is.
func (c *Client) Top(n, lines int) (io.Reader, error) {
	return c.message(n, "TOP "+strconv.Itoa(n)+" "+strconv.Itoa(lines))
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
		reply, err := c.readResponse("RETR")
		var perr *Error
		if err != nil && !errors.As(err, &perr) {
			return err
		}
		if err == nil {
			body = c.startBody("RETR", nums[done], reply)
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

// DeleAll marks the given messages as deleted, pipelining the DELE
// commands when the server announced PIPELINING in the last CAPA (RFC 2449
// §6.6: the client may send several commands at once and read the answers
// in order), and calls fn, if set, after each answer in order. An *Error
// for one message ends the exchange once the answers of the commands
// already sent are read (the client and server stay in step); any other
// error ends it at once. The deletions take effect only at QUIT
// (RFC 1939 §6).
func (c *Client) DeleAll(nums []int, fn func(n int) error) error {
	if err := c.finishBody(); err != nil {
		return err
	}
	window := 1
	if c.HasCap("PIPELINING") {
		window = 64
	}
	sent := 0
	var first error
	for done := 0; done < len(nums); done++ {
		for first == nil && sent < len(nums) && sent-done < window {
			c.w.WriteString("DELE " + strconv.Itoa(nums[sent]) + "\r\n")
			sent++
		}
		if done >= sent {
			break
		}
		if c.w.Buffered() > 0 {
			c.deadline()
			if err := c.w.Flush(); err != nil {
				return err
			}
		}
		_, err := c.readResponse("DELE")
		var perr *Error
		if err != nil && !errors.As(err, &perr) {
			return err
		}
		if err != nil {
			// Stop sending; the answers already due are still read.
			if first == nil {
				first = err
			}
			continue
		}
		if first == nil && fn != nil {
			if ferr := fn(nums[done]); ferr != nil {
				first = ferr
			}
		}
	}
	return first
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
	return &Client{conn: tc, r: bufio.NewReaderSize(tc, readBufSize), w: bufio.NewWriter(tc), count: -1}, nil
}
