package pop3

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// state is a session state of RFC 1939 §3.
type state uint8

const (
	stateAuthorization state = 1 << iota
	stateTransaction
	stateUpdate
)

// command is one entry of the command table: which states accept it, how
// many arguments it takes, and its handler.
type command struct {
	states  state
	minArgs int
	maxArgs int
	// rest: the handler takes the remainder of the line as one argument
	// (PASS: RFC 1939 §7 passwords may contain spaces).
	rest    bool
	handler func(s *session, args []string) error
}

// commands is the command table. Every command is checked against its
// allowed states and argument count here, before its handler runs.
var commands map[string]command

func init() {
	both := stateAuthorization | stateTransaction
	commands = map[string]command{
		// RFC 1939 §5, §6, §7.
		"USER": {states: stateAuthorization, minArgs: 1, maxArgs: 1, rest: true, handler: (*session).cmdUSER},
		"PASS": {states: stateAuthorization, minArgs: 1, maxArgs: 1, rest: true, handler: (*session).cmdPASS},
		"QUIT": {states: both, handler: (*session).cmdQUIT},
		"STAT": {states: stateTransaction, handler: (*session).cmdSTAT},
		"LIST": {states: stateTransaction, maxArgs: 1, handler: (*session).cmdLIST},
		"RETR": {states: stateTransaction, minArgs: 1, maxArgs: 1, handler: (*session).cmdRETR},
		"DELE": {states: stateTransaction, minArgs: 1, maxArgs: 1, handler: (*session).cmdDELE},
		"NOOP": {states: stateTransaction, handler: (*session).cmdNOOP},
		"RSET": {states: stateTransaction, handler: (*session).cmdRSET},
		"TOP":  {states: stateTransaction, minArgs: 2, maxArgs: 2, handler: (*session).cmdTOP},
		"UIDL": {states: stateTransaction, maxArgs: 1, handler: (*session).cmdUIDL},
		// RFC 2449 §5.
		"CAPA": {states: both, handler: (*session).cmdCAPA},
		// RFC 2595 §4.
		"STLS": {states: stateAuthorization, handler: (*session).cmdSTLS},
		// RFC 5034 §4.
		"AUTH": {states: stateAuthorization, maxArgs: 2, handler: (*session).cmdAUTH},
		// RFC 6856 §2, §3.
		"UTF8": {states: stateAuthorization, handler: (*session).cmdUTF8},
		"LANG": {states: both, maxArgs: 1, handler: (*session).cmdLANG},
	}
}

// Parsing limits.
const (
	// maxArgLen: RFC 2449 §4 limits arguments to 40 characters. User
	// names and passwords (rest-of-line arguments) and AUTH initial
	// responses are exempt and limited by the line length only.
	maxArgLen = 40
	// maxKeywordLen: keywords are 3 or 4 characters (RFC 2449 §4).
	maxKeywordLen = 4
)

// ParseCommand splits a command line (without CRLF) into its keyword, in
// upper case, and its arguments. With rest set, everything after the
// keyword and one space is a single argument. It rejects NUL and other
// control characters, invalid UTF-8, empty keywords and over-long
// keywords and arguments.
func ParseCommand(line string, rest func(keyword string) bool) (keyword string, args []string, err error) {
	if !utf8.ValidString(line) {
		return "", nil, errors.New("Invalid UTF-8 in command.")
	}
	for i := 0; i < len(line); i++ {
		if c := line[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return "", nil, errors.New("Control characters are not allowed in commands.")
		}
	}
	kw, tail, hasTail := strings.Cut(line, " ")
	if kw == "" {
		return "", nil, errors.New("Empty command.")
	}
	if len(kw) > maxKeywordLen {
		return "", nil, errors.New("Unknown command.")
	}
	for i := 0; i < len(kw); i++ {
		// RFC 1939 §3: keywords are printable ASCII; letters and
		// digits are all any command uses (UTF8, RFC 6856).
		if c := kw[i] | 0x20; (c < 'a' || c > 'z') && (kw[i] < '0' || kw[i] > '9') {
			return "", nil, errors.New("Unknown command.")
		}
	}
	kw = strings.ToUpper(kw)
	if !hasTail {
		return kw, nil, nil
	}
	if rest != nil && rest(kw) {
		return kw, []string{tail}, nil
	}
	args = strings.Fields(tail)
	if len(args) > 4 {
		return "", nil, errors.New("Too many arguments.")
	}
	for _, a := range args {
		if len(a) > maxArgLen && kw != "AUTH" {
			return "", nil, errors.New("Argument too long.")
		}
	}
	return kw, args, nil
}

func restArg(kw string) bool { return commands[kw].rest }

// session is one POP3 connection.
type session struct {
	srv *Server
	// cfg holds the settings when the session began (the Server, or the
	// settings Update gave it since): an update applies to the sessions
	// that begin after it.
	cfg    *Server
	conn   net.Conn
	r      *bufio.Reader
	w      *bufio.Writer // small: most of a session's life is idle
	cw     io.Writer     // the connection, with WriteTimeout per write
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	ipKey    netip.Prefix
	hasIPKey bool

	state        state
	tls          *tls.ConnectionState
	utf8         bool
	user         string // argument of the last successful USER
	lastWasUSER  bool
	badCommands  int
	authFailures int
	loginPending bool // a LoginGuard attempt is in progress

	authUser string
	drop     Maildrop
	msgs     []MessageInfo
	deleted  []bool
	// retrieved marks the messages sent whole (RETR, or a TOP that
	// reached the end), for UpdateNotifier.
	retrieved []bool
	nDeleted  int

	quit bool // the session ends after the current reply

	deadline  time.Time // end of MaxSessionTime, or zero
	lineTimer bool      // the read deadline is LineTimeout's
	tokens    float64   // CommandsPerSecond bucket
	lastTok   time.Time

	intMu       sync.Mutex
	interrupted bool
	revoked     bool // the maildrop's lock was lost (Revocable)
}

func newSession(srv *Server, c net.Conn) *session {
	ctx, cancel := context.WithCancel(context.Background())
	id := srv.nextID.Add(1)
	return &session{
		srv:    srv,
		cfg:    srv.settings(),
		conn:   c,
		ctx:    ctx,
		cancel: cancel,
		state:  stateAuthorization,
		log:    srv.logger().With("proto", "pop3", "id", id, "remote", c.RemoteAddr().String()),
	}
}

// interrupt wakes a session blocked reading a command so that it notices
// the server is shutting down.
func (s *session) interrupt() {
	s.intMu.Lock()
	s.interrupted = true
	s.intMu.Unlock()
	s.conn.SetReadDeadline(time.Now())
}

func (s *session) isInterrupted() bool {
	s.intMu.Lock()
	defer s.intMu.Unlock()
	return s.interrupted
}

func (s *session) connInfo() *ConnInfo {
	return &ConnInfo{RemoteAddr: s.conn.RemoteAddr(), LocalAddr: s.conn.LocalAddr(), TLS: s.tls}
}

func (s *session) run() {
	defer func() {
		if s.drop != nil {
			// A session that ends without QUIT deletes nothing (RFC 1939 §6).
			if err := s.drop.Close(); err != nil {
				s.log.Error("closing maildrop", "user", s.authUser, "err", err)
			}
			s.drop = nil
		}
		s.cancel()
		s.conn.Close()
		s.log.Debug("connection closed")
	}()
	if tc, ok := s.conn.(*tls.Conn); ok {
		// RFC 8314 §3.3: implicit TLS, the handshake comes first.
		tc.SetDeadline(time.Now().Add(DefaultHandshakeTimeout))
		if err := tc.HandshakeContext(s.ctx); err != nil {
			s.log.Debug("tls handshake failed", "err", err)
			return
		}
		tc.SetDeadline(time.Time{})
		cs := tc.ConnectionState()
		s.tls = &cs
	}
	s.r = bufio.NewReaderSize(s.conn, 1024)
	s.cw = s.deadlineWriter(s.conn)
	s.w = bufio.NewWriterSize(s.cw, 4096)
	if s.cfg.MaxSessionTime > 0 {
		s.deadline = time.Now().Add(s.cfg.MaxSessionTime)
	}
	s.log.Debug("connection opened", "tls", s.tls != nil)
	// RFC 1939 §4: the greeting. No APOP timestamp: APOP is not offered.
	s.reply("+OK postino ready.")
	for !s.quit {
		line, err := s.readLine(orDefault(s.cfg.MaxLine, DefaultMaxLine))
		if err != nil {
			s.srv.releaseSlot(s)
			s.readFailed(err)
			return
		}
		s.dispatch(line)
	}
	// The slot is free before the client reads the last reply.
	s.srv.releaseSlot(s)
	s.flush()
}

// readFailed answers a failed read where there is still someone to answer.
func (s *session) readFailed(err error) {
	switch {
	case s.isRevoked():
		// RFC 3206 §4: a temporary failure; no UPDATE (RFC 1939 §6).
		s.reply("-ERR [SYS/TEMP] Maildrop lock lost, closing connection.")
		s.flush()
	case s.srv.closing.Load() && s.isInterrupted():
		s.reply("-ERR [SYS/TEMP] Server shutting down, try again later.")
		s.flush()
	case isTimeout(err) && !s.deadline.IsZero() && !time.Now().Before(s.deadline):
		s.reply("-ERR Session time limit reached, closing connection.")
		s.flush()
	case isTimeout(err) && s.lineTimer:
		s.reply("-ERR Command line timed out.")
		s.flush()
	case isTimeout(err):
		// RFC 1939 §3: autologout timer expired; no UPDATE.
		s.reply("-ERR Autologout; idle for too long.")
		s.flush()
	case errors.Is(err, errLineTooLong):
		// readLine only returns this error when it cannot resync.
		s.reply("-ERR Line too long.")
		s.flush()
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

var errLineTooLong = errors.New("line too long")

// readLine reads one line of at most max octets (CRLF included) and
// returns it without its line end. Commands are flushed out first when no
// more pipelined input is waiting, so pipelined commands are answered in
// one write (RFC 2449 §6.6).
func (s *session) readLine(max int) (string, error) {
	for {
		if s.r.Buffered() == 0 {
			if err := s.flush(); err != nil {
				return "", err
			}
		}
		idle := time.Now().Add(orDefault(s.cfg.Autologout, DefaultAutologout))
		if !s.deadline.IsZero() && s.deadline.Before(idle) {
			idle = s.deadline
		}
		s.conn.SetReadDeadline(idle)
		if s.isInterrupted() {
			return "", errInterrupted
		}
		if s.isRevoked() {
			return "", errRevoked
		}
		if s.r.Buffered() == 0 {
			// Wait for the line to begin (autologout applies), then give
			// the rest of it LineTimeout (slowloris).
			if _, err := s.r.Peek(1); err != nil {
				return "", err
			}
			line := time.Now().Add(orDefault(s.cfg.LineTimeout, DefaultLineTimeout))
			if line.Before(idle) {
				s.conn.SetReadDeadline(line)
				s.lineTimer = true
			}
		}
		s.throttle()
		var buf []byte
		tooLong := false
		for {
			chunk, err := s.r.ReadSlice('\n')
			if !tooLong {
				if len(buf)+len(chunk) > max {
					tooLong, buf = true, nil
				} else {
					buf = append(buf, chunk...)
				}
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				return "", err
			}
			break
		}
		s.lineTimer = false
		if tooLong {
			// The rest of the over-long line has been discarded: answer
			// and carry on with the next line.
			s.reply("-ERR Line too long.")
			if s.countBad() {
				return "", errTooManyBad
			}
			continue
		}
		line := string(buf)
		line = strings.TrimSuffix(line, "\n")
		line = strings.TrimSuffix(line, "\r")
		return line, nil
	}
}

var (
	errInterrupted = &timeoutError{}
	errTooManyBad  = errors.New("too many bad commands")
)

type timeoutError struct{}

func (*timeoutError) Error() string   { return "interrupted" }
func (*timeoutError) Timeout() bool   { return true }
func (*timeoutError) Temporary() bool { return true }

// throttle makes a session that sends more than CommandsPerSecond
// commands wait (a token bucket holding one second's worth).
func (s *session) throttle() {
	rate := float64(s.cfg.CommandsPerSecond)
	if rate <= 0 {
		return
	}
	now := time.Now()
	if s.lastTok.IsZero() {
		s.tokens = rate
	} else {
		s.tokens = min(rate, s.tokens+now.Sub(s.lastTok).Seconds()*rate)
	}
	s.lastTok = now
	if s.tokens < 1 {
		wait := time.Duration((1 - s.tokens) / rate * float64(time.Second))
		time.Sleep(wait)
		s.lastTok = s.lastTok.Add(wait)
		s.tokens = 1
	}
	s.tokens--
}

// countBad records a failed command and reports whether the connection
// must end; if so the goodbye has been queued.
func (s *session) countBad() bool {
	s.badCommands++
	if s.badCommands >= orDefault(s.cfg.MaxBadCommands, DefaultMaxBadCommands) {
		s.reply("-ERR Too many bad commands, closing connection.")
		s.srv.releaseSlot(s)
		s.flush()
		s.quit = true
		return true
	}
	return false
}

func (s *session) dispatch(line string) {
	kw, args, err := ParseCommand(line, restArg)
	if err != nil {
		s.fail(err.Error())
		return
	}
	cmd, ok := commands[kw]
	wasUSER := s.lastWasUSER
	s.lastWasUSER = false
	switch {
	case !ok:
		s.fail("Unknown command.")
		return
	case cmd.states&s.state == 0:
		// One central check of the states of RFC 1939 §3.
		if s.state == stateAuthorization {
			s.fail("Not logged in.")
		} else {
			s.fail("Command not valid in this state.")
		}
		return
	case len(args) < cmd.minArgs:
		s.fail("Missing argument.")
		return
	case len(args) > cmd.maxArgs:
		s.fail("Too many arguments.")
		return
	}
	if kw == "PASS" && !wasUSER {
		// RFC 1939 §7: PASS only immediately after a successful USER.
		s.fail("No user name given, send USER first.")
		return
	}
	s.log.Debug("command", "cmd", kw)
	if err := cmd.handler(s, args); err != nil {
		if errors.Is(err, errAbort) {
			s.quit = true
			return
		}
		var e *Error
		if errors.As(err, &e) {
			s.reply(e.line())
		} else {
			s.reply("-ERR " + err.Error())
		}
		s.countBad()
		return
	}
	if kw == "USER" {
		s.lastWasUSER = true
	}
	s.badCommands = 0
}

// errAbort ends the connection without a further reply (the stream is no
// longer in a state where one could be sent).
var errAbort = errors.New("abort connection")

// fail answers -ERR text and counts a bad command.
func (s *session) fail(text string) {
	s.reply("-ERR " + text)
	s.countBad()
}

func (s *session) reply(line string) {
	s.w.WriteString(line)
	s.w.WriteString("\r\n")
}

// deadlineWriter gives every write to the client WriteTimeout, so that a
// client that stops reading is dropped while one that reads a large message
// slowly is not.
func (s *session) deadlineWriter(c net.Conn) io.Writer {
	return &connWriter{c: c, timeout: orDefault(s.cfg.WriteTimeout, DefaultWriteTimeout)}
}

type connWriter struct {
	c       net.Conn
	timeout time.Duration
}

func (w *connWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.c.Write(p)
}

func (s *session) flush() error {
	if s.w.Buffered() == 0 {
		return nil
	}
	return s.w.Flush()
}

// plaintextAllowed reports whether cleartext authentication may be used
// on this connection (RFC 2595 §2.2, policy-controlled).
func (s *session) plaintextAllowed() bool {
	if s.tls != nil {
		return true
	}
	switch s.cfg.Plaintext {
	case PlaintextAlways:
		return true
	case PlaintextNever:
		return false
	}
	ap, err := netip.ParseAddrPort(s.conn.RemoteAddr().String())
	return err == nil && ap.Addr().IsLoopback()
}

var errPlaintext = &Error{Code: CodeAuth, Text: "Plaintext authentication disallowed on non-secure connections, use STLS or port 995."}

// parseMsg parses a message-number argument (RFC 1939 §5) and checks that
// it names a message that exists and is not marked as deleted.
func (s *session) parseMsg(arg string) (int, error) {
	n, err := strconv.ParseUint(arg, 10, 31)
	if err != nil || arg[0] == '+' {
		return 0, &Error{Text: "Invalid message number."}
	}
	if n < 1 || int(n) > len(s.msgs) {
		return 0, &Error{Text: "No such message."}
	}
	i := int(n) - 1
	if s.deleted[i] {
		return 0, &Error{Text: fmt.Sprintf("Message %d already deleted.", n)}
	}
	return i, nil
}

func (s *session) total() (count int, size int64) {
	for i, m := range s.msgs {
		if !s.deleted[i] {
			count++
			size += m.Size
		}
	}
	return count, size
}

func (s *session) cmdUSER(args []string) error {
	if !s.plaintextAllowed() {
		return errPlaintext
	}
	name := args[0]
	if name == "" {
		return &Error{Text: "Missing user name."}
	}
	s.user = name
	return s.okf("Send your password.")
}

func (s *session) cmdPASS(args []string) error {
	if !s.plaintextAllowed() {
		return errPlaintext
	}
	user := s.user
	s.user = ""
	return s.login(user, args[0])
}

// login checks credentials, opens the maildrop and enters the TRANSACTION
// state (RFC 1939 §7), or answers why not.
func (s *session) login(username, password string) error {
	if err := s.loginAllowed(); err != nil {
		return s.authFailed(username, err)
	}
	user, err := s.cfg.Backend.Authenticate(s.ctx, s.connInfo(), username, password)
	if errors.Is(err, ErrAuthFailed) {
		s.loginFailed(username)
	}
	if err != nil {
		s.loginAbandoned() // a temporary error: nothing to count
		return s.authFailed(username, err)
	}
	s.loginSucceeded(user)
	return s.openMaildrop(user)
}

// openMaildrop opens an authenticated user's maildrop.
func (s *session) openMaildrop(user string) error {
	drop, err := s.cfg.Backend.OpenMaildrop(s.ctx, s.connInfo(), user)
	if err != nil {
		e := errorFor(err)
		if e == ErrTemporary {
			s.log.Error("opening maildrop", "user", user, "err", err)
		} else {
			// RFC 2449 §8.1: [IN-USE], [LOGIN-DELAY] and the like.
			s.logRefusal(slog.LevelInfo, user, e, err)
		}
		// The connection stays usable: the client may retry later.
		return e
	}
	s.authUser, s.drop = user, drop
	s.watchRevocation(drop)
	s.msgs = drop.Messages()
	s.deleted = make([]bool, len(s.msgs))
	s.retrieved = make([]bool, len(s.msgs))
	s.state = stateTransaction
	s.log = s.log.With("user", user)
	n, size := s.total()
	s.log.Info("login", "messages", n, "octets", size, "tls", s.tls != nil)
	return s.okf("Logged in, %d messages (%d octets).", n, size)
}

// logRefusal logs a refused login or maildrop with the keys user, code
// (the response code, as "-ERR [AUTH]") and reason: err's text, which
// may tell more than the response (an unknown user or a wrong password):
// it goes to the log only.
func (s *session) logRefusal(level slog.Level, user string, e *Error, err error) {
	code := "-ERR"
	if e.Code != "" {
		code += " [" + e.Code + "]"
	}
	s.log.Log(s.ctx, level, "pop3: refused", "user", user, "code", code, "reason", strings.TrimPrefix(strings.TrimPrefix(err.Error(), "pop3: "), "["+e.Code+"] "))
}

// authFailed answers a failed login and ends the connection after too
// many (RFC 3206 §5: [AUTH] on a credential failure).
func (s *session) authFailed(username string, err error) error {
	e := errorFor(err)
	if e == ErrTemporary {
		s.log.Error("authentication backend failure", "err", err)
		return e
	}
	s.authFailures++
	level := slog.LevelInfo
	if errors.Is(err, ErrLoginDelay) {
		level = slog.LevelWarn // an address the backend blocks
	}
	s.logRefusal(level, username, e, err)
	if s.authFailures >= orDefault(s.cfg.MaxAuthFailures, DefaultMaxAuthFailures) {
		s.reply(e.line())
		s.reply("-ERR Too many failed logins, closing connection.")
		return errAbort
	}
	return e
}

func (s *session) okf(format string, a ...any) error {
	s.reply("+OK " + fmt.Sprintf(format, a...))
	return nil
}

func (s *session) cmdQUIT([]string) error {
	s.quit = true
	if s.state != stateTransaction {
		return s.okf("Bye.")
	}
	// RFC 1939 §6: the UPDATE state. The commit must not be interrupted
	// by shutdown or a dropped connection: it is all-or-nothing anyway,
	// but finishing it is what the client asked for.
	s.state = stateUpdate
	var del []int
	for i, d := range s.deleted {
		if d {
			del = append(del, i)
		}
	}
	if len(del) > 0 {
		if err := s.drop.Commit(context.WithoutCancel(s.ctx), del); err != nil {
			s.log.Error("update failed", "err", err)
			// RFC 1939 §6: "-ERR some deleted messages not removed".
			s.reply("-ERR [SYS/TEMP] Some deleted messages not removed.")
			return nil
		}
	}
	if u, ok := s.drop.(UpdateNotifier); ok {
		var got []int
		for i, r := range s.retrieved {
			if r && !s.deleted[i] {
				got = append(got, i)
			}
		}
		if err := u.Updated(context.WithoutCancel(s.ctx), got); err != nil {
			s.log.Error("recording the session's downloads failed", "err", err)
		}
	}
	// The lock is released before the answer, so that a client that
	// reconnects as soon as it reads +OK finds its maildrop free.
	if err := s.drop.Close(); err != nil {
		s.log.Error("closing maildrop", "err", err)
	}
	s.drop = nil
	n, _ := s.total()
	s.log.Info("logout", "deleted", len(del), "left", n)
	return s.okf("Logging out, %d messages left.", n)
}

func (s *session) cmdSTAT([]string) error {
	// RFC 1939 §5: "+OK nn mm", deleted messages not counted.
	n, size := s.total()
	return s.okf("%d %d", n, size)
}

func (s *session) cmdLIST(args []string) error {
	if len(args) == 1 {
		i, err := s.parseMsg(args[0])
		if err != nil {
			return err
		}
		return s.okf("%d %d", i+1, s.msgs[i].Size)
	}
	n, size := s.total()
	s.okf("%d messages (%d octets)", n, size)
	var b []byte
	for i, m := range s.msgs {
		if s.deleted[i] {
			continue
		}
		b = strconv.AppendInt(b[:0], int64(i+1), 10)
		b = append(b, ' ')
		b = strconv.AppendInt(b, m.Size, 10)
		b = append(b, '\r', '\n')
		s.w.Write(b)
	}
	s.w.WriteString(".\r\n")
	return nil
}

func (s *session) cmdUIDL(args []string) error {
	if len(args) == 1 {
		i, err := s.parseMsg(args[0])
		if err != nil {
			return err
		}
		return s.okf("%d %s", i+1, s.msgs[i].UID)
	}
	s.okf("Unique-ID listing follows.")
	var b []byte
	for i, m := range s.msgs {
		if s.deleted[i] {
			continue
		}
		b = strconv.AppendInt(b[:0], int64(i+1), 10)
		b = append(b, ' ')
		b = append(b, m.UID...)
		b = append(b, '\r', '\n')
		s.w.Write(b)
	}
	s.w.WriteString(".\r\n")
	return nil
}

func (s *session) cmdDELE(args []string) error {
	i, err := s.parseMsg(args[0])
	if err != nil {
		return err
	}
	s.deleted[i] = true
	s.nDeleted++
	return s.okf("Message %d deleted.", i+1)
}

func (s *session) cmdNOOP([]string) error { return s.okf("") }

func (s *session) cmdRSET([]string) error {
	clear(s.deleted)
	s.nDeleted = 0
	n, size := s.total()
	return s.okf("%d messages (%d octets).", n, size)
}

func (s *session) cmdRETR(args []string) error {
	i, err := s.parseMsg(args[0])
	if err != nil {
		return err
	}
	return s.sendMessage(i, -1)
}

func (s *session) cmdTOP(args []string) error {
	i, err := s.parseMsg(args[0])
	if err != nil {
		return err
	}
	// RFC 1939 §7: a non-negative number of body lines. A count larger
	// than the body sends the whole message (fetchmail's TOP n 99999999).
	lines, err := strconv.ParseUint(args[1], 10, 63)
	if err != nil || args[1][0] == '+' {
		return &Error{Text: "Invalid number of lines."}
	}
	return s.sendMessage(i, int64(lines))
}

// sendMessage sends message i as a multi-line response: all of it, or with
// bodyLines >= 0 its header and that many body lines (TOP).
func (s *session) sendMessage(i int, bodyLines int64) error {
	rc, err := s.drop.Open(s.ctx, i)
	if err != nil {
		s.log.Error("opening message", "msg", i+1, "err", err)
		return errorFor(err)
	}
	defer rc.Close()
	if bodyLines < 0 && s.tls == nil {
		if fm, ok := rc.(FileMessage); ok {
			if head, f, ok := fm.MessageFile(); ok {
				if rf := readerFrom(s.conn); rf != nil {
					return s.sendFile(i, rf, head, f)
				}
			}
		}
	}
	// A large message goes out through a large pooled buffer: with the
	// session's small one it would cost a system call per 4 KB.
	out := s.w
	if s.msgs[i].Size > largeMessage {
		if err := s.w.Flush(); err != nil {
			return errAbort
		}
		out = bigWriters.Get().(*bufio.Writer)
		out.Reset(s.cw)
		defer func() {
			out.Reset(nil)
			bigWriters.Put(out)
		}()
	}
	if bodyLines < 0 {
		fmt.Fprintf(out, "+OK %d octets\r\n", s.msgs[i].Size)
	} else {
		out.WriteString("+OK Top of message follows.\r\n")
	}
	dw := newDotWriter(out)
	var n int64
	whole := bodyLines < 0
	if whole {
		n, err = copyBuffered(dw, rc)
		if err == nil && n != s.msgs[i].Size {
			err = fmt.Errorf("message %d: read %d octets, listed %d", i+1, n, s.msgs[i].Size)
		}
	} else {
		// fetchmail's TOP n 99999999 downloads the message too.
		_, whole, err = copyTop(dw, rc, bodyLines)
	}
	if err != nil {
		// The +OK is out and part of the message may be too: the only
		// safe thing left is to drop the connection. Nothing is deleted.
		s.log.Error("sending message failed", "msg", i+1, "err", err)
		return errAbort
	}
	if err := dw.Close(); err != nil {
		return errAbort
	}
	if out != s.w && out.Flush() != nil {
		return errAbort
	}
	if whole {
		s.retrieved[i] = true
	}
	return nil
}

// sendFile sends message i, head followed by the whole of f, as RETR's
// response on a cleartext connection: the file's octets go from the page
// cache to the socket with sendfile(2), without passing through the
// process. f holds no line starting with "." (FileMessage), so only head
// is dot-stuffed (RFC 1939 §3).
func (s *session) sendFile(i int, rf io.ReaderFrom, head []byte, f *os.File) error {
	size := s.msgs[i].Size - int64(len(head))
	fmt.Fprintf(s.w, "+OK %d octets\r\n", s.msgs[i].Size)
	dw := newDotWriter(s.w)
	dw.Write(head)
	if err := s.w.Flush(); err != nil {
		return errAbort
	}
	timeout := orDefault(s.cfg.WriteTimeout, DefaultWriteTimeout)
	var sent int64
	for sent < size {
		// One write deadline per piece, as for every other write.
		s.conn.SetWriteDeadline(time.Now().Add(timeout))
		n, err := rf.ReadFrom(&io.LimitedReader{R: f, N: min(size-sent, sendFilePiece)})
		sent += n
		if err != nil || n == 0 {
			// The +OK is out and part of the message may be too: the
			// only safe thing left is to drop the connection.
			s.log.Error("sending message failed", "msg", i+1, "sent", sent, "size", size, "err", err)
			return errAbort
		}
	}
	var one [1]byte
	if n, _ := f.Read(one[:]); n != 0 {
		// Longer than listed: the listed size is what the client was
		// promised, and it did not get that message.
		s.log.Error("sending message failed", "msg", i+1, "err", "file longer than the listed size")
		return errAbort
	}
	if _, err := s.w.WriteString(".\r\n"); err != nil {
		return errAbort
	}
	s.retrieved[i] = true
	return nil
}

// sendFilePiece is the most one sendfile(2) call of sendFile sends under
// one write deadline.
const sendFilePiece = 1 << 20

// readerFrom returns the TCP connection under c (through connections
// that wrap one and say so with NetConn, as the PROXY protocol's do),
// or nil.
func readerFrom(c net.Conn) io.ReaderFrom {
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return nil
		}
	}
}

// largeMessage is the size from which RETR and TOP use a bigWriters
// buffer.
const largeMessage = 16 * 1024

var bigWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 128*1024) }}

var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

func copyBuffered(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bp)
	return io.CopyBuffer(writerOnly{dst}, src, *bp)
}

// writerOnly hides ReadFrom so io.CopyBuffer uses our buffer.
type writerOnly struct{ io.Writer }

func (s *session) cmdCAPA([]string) error {
	// RFC 2449 §5: capabilities, one per line. Capabilities usable in
	// the AUTHORIZATION state are announced in both states.
	s.okf("Capability list follows.")
	caps := []string{"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"}
	if s.plaintextAllowed() {
		caps = append(caps, "USER")
	}
	if m := s.mechanisms(); len(m) > 0 {
		caps = append(caps, "SASL "+strings.Join(m, " "))
	}
	if s.cfg.TLSConfig != nil && s.tls == nil && s.state == stateAuthorization {
		// RFC 2595 §4: not after TLS is active.
		caps = append(caps, "STLS")
	}
	expire := s.cfg.Expire
	if expire == "" {
		expire = "NEVER"
	}
	if ep, ok := s.cfg.Backend.(ExpirePolicy); ok {
		// RFC 2449 §6.7: before login, USER says that the value may
		// vary by user; after it, the user's own value.
		if s.state == stateAuthorization {
			expire += " USER"
		} else if v := ep.UserExpire(s.ctx, s.authUser); v != "" {
			expire = v
		}
	}
	caps = append(caps,
		"EXPIRE "+expire,
		"LOGIN-DELAY "+strconv.Itoa(s.cfg.LoginDelay),
		"UTF8 USER", // RFC 6856 §2: UTF-8 user names and passwords accepted.
		"LANG",
	)
	if s.cfg.Implementation != "" {
		caps = append(caps, "IMPLEMENTATION "+s.cfg.Implementation)
	}
	for _, c := range caps {
		s.reply(c)
	}
	s.reply(".")
	return nil
}

func (s *session) cmdSTLS([]string) error {
	// RFC 2595 §4.
	if s.tls != nil {
		return &Error{Text: "TLS is already active."}
	}
	if s.cfg.TLSConfig == nil {
		return &Error{Text: "TLS is not available."}
	}
	s.reply("+OK Begin TLS negotiation.")
	if err := s.flush(); err != nil {
		return errAbort
	}
	// Anything the client pipelined after STLS was sent in the clear and
	// must not be executed under TLS (the STARTTLS command injection
	// flaw): the old reader and its buffer are dropped.
	tc := tls.Server(s.conn, s.cfg.TLSConfig)
	tc.SetDeadline(time.Now().Add(DefaultHandshakeTimeout))
	if err := tc.HandshakeContext(s.ctx); err != nil {
		s.log.Info("STLS handshake failed", "err", err)
		return errAbort
	}
	tc.SetDeadline(time.Time{})
	cs := tc.ConnectionState()
	s.conn, s.tls = tc, &cs
	s.r = bufio.NewReaderSize(tc, 1024)
	s.cw = s.deadlineWriter(tc)
	s.w = bufio.NewWriterSize(s.cw, 4096)
	// The client must discard what it knew; so do we (RFC 2595 §4).
	s.user = ""
	return nil
}

func (s *session) cmdUTF8([]string) error {
	// RFC 6856 §2: UTF8 is allowed only before authentication.
	s.utf8 = true
	return s.okf("UTF8 enabled.")
}

func (s *session) cmdLANG(args []string) error {
	// RFC 6856 §3: postino speaks English only.
	if len(args) == 0 {
		s.okf("Language listing follows.")
		s.reply("en English")
		s.reply(".")
		return nil
	}
	switch strings.ToLower(args[0]) {
	case "en", "*", "i-default":
		return s.okf("en Language is English.")
	}
	return &Error{Text: "Unsupported language."}
}
