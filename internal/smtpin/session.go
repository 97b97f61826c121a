package smtpin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	smtp "github.com/emersion/go-smtp"

	"github.com/postino-mail/postino/internal/auth"
	"github.com/postino-mail/postino/internal/authguard"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/envelope"
	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/metrics"
	"github.com/postino-mail/postino/internal/srs"
	"github.com/postino-mail/postino/pop3"
)

// Replies of this package. RFC 3463 gives the enhanced codes.
var (
	errTooManyErrors   = smtpErr(421, 4, 7, 0, "Too many errors, closing connection")
	errAuthRequired    = smtpErr(530, 5, 7, 0, "Authentication required")                                     // RFC 4954 §6
	errAuthInvalid     = smtpErr(535, 5, 7, 8, "Authentication credentials invalid")                          // RFC 4954 §6
	errAuthEncryption  = smtpErr(538, 5, 7, 11, "Encryption required for requested authentication mechanism") // RFC 4954 §6
	errAuthBlocked     = smtpErr(454, 4, 7, 0, "Too many failed logins from your address, try again later")
	errAuthTemp        = smtpErr(454, 4, 7, 0, "Temporary authentication failure")           // RFC 4954 §6
	errAuthMech        = smtpErr(504, 5, 5, 4, "Unrecognized authentication type")           // RFC 4954 §4
	errAuthInTx        = smtpErr(503, 5, 5, 1, "AUTH not allowed during a mail transaction") // RFC 4954 §4
	errAuthNotHere     = smtpErr(502, 5, 5, 1, "Authentication is not available on this service")
	errAuthSyntax      = smtpErr(501, 5, 5, 2, "Invalid authentication exchange")
	errSenderSyntax    = smtpErr(501, 5, 1, 7, "Bad sender address syntax")
	errRcptSyntax      = smtpErr(501, 5, 1, 3, "Bad recipient address syntax")
	errNeedUTF8        = smtpErr(553, 5, 6, 7, "Non-ASCII address requires SMTPUTF8") // RFC 6531 §3.5
	errSenderNotOwned  = smtpErr(553, 5, 7, 1, "Sender address not owned by user")
	errTooManyRcpts    = smtpErr(452, 4, 5, 3, "Too many recipients") // RFC 5321 §4.5.3.1.10
	errUnknownUser     = smtpErr(550, 5, 1, 1, "User unknown")
	errRelayDenied     = smtpErr(554, 5, 7, 1, "Relay access denied")
	errRelayNotYet     = smtpErr(450, 4, 7, 1, "Relaying is not available on this server yet")
	errForwardNotYet   = smtpErr(451, 4, 3, 0, "Forwarding to remote addresses is not available on this server yet")
	errTooBig          = smtpErr(552, 5, 3, 4, "Message size exceeds fixed maximum message size") // RFC 1870 §6.3
	errNULData         = smtpErr(554, 5, 6, 0, "Message contains NUL octets")
	errEmpty           = smtpErr(554, 5, 6, 0, "Empty message")
	errReceiving       = smtpErr(421, 4, 4, 2, "Error receiving the message, closing connection")
	errTemp            = smtpErr(451, 4, 3, 0, "Temporary local problem, try again later")
	errNoTransaction   = smtpErr(503, 5, 5, 1, "Bad sequence of commands")
	errSessionInternal = smtpErr(421, 4, 3, 0, "Internal error, closing connection")
)

// Replies for quotas (RFC 3463 X.2.2: mailbox full).
var (
	// RFC 1870 §6.1: 552 for a message the recipient's quota cannot hold.
	errMailboxFull = smtpErr(552, 5, 2, 2, "Mailbox full: the message does not fit in the recipient's quota")
	// RFC 3463 X.2.2 is a persistent transient failure.
	errMailboxFullNow = smtpErr(452, 4, 2, 2, "Mailbox full, try again later")
)

func smtpErr(code, a, b, c int, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{a, b, c}, Message: msg}
}

// session is one client's SMTP session. go-smtp makes a new one at the
// first EHLO and again after STARTTLS. Its methods are called from the
// connection's goroutine, except Data with BDAT, which go-smtp runs in a
// goroutine of its own; mu guards what they share.
type session struct {
	srv *Server
	// opts and resolver are the server's options when the session began:
	// a reload applies to the sessions that begin after it.
	opts     *Options
	resolver *delivery.Resolver
	conn     *smtp.Conn
	tc       *trackedConn
	remote   netip.Addr // invalid for a unix socket
	local    bool       // loopback address or unix socket
	tls      *tls.ConnectionState
	ctx      context.Context
	cancel   context.CancelFunc
	log      *slog.Logger
	// id names the session in log lines before a transaction starts.
	id string

	mu   sync.Mutex
	user string       // authenticated user, or ""
	tx   *transaction // current transaction, nil before MAIL

	// The inbound checks (checks.go), on the MX only.
	iconn       *inbound.Conn
	connVerdict *inbound.Verdict // what the checks found of the session
	checks      []checkSession
}

// transaction is the envelope of one message.
type transaction struct {
	id    string
	from  string // "" for the null sender
	helo  string
	utf8  bool
	ret   string
	envid string
	size  int64 // declared with MAIL FROM SIZE= (RFC 1870), 0 when not
	rcpts []*recipient
	// verdict is what the inbound checks found (nil without checks).
	verdict *inbound.Verdict
}

// recipient is one accepted RCPT.
type recipient struct {
	addr   string // as go-smtp passed it: the key of LMTP statuses
	canon  string // parsed form
	res    delivery.Resolution
	notify []string
	orcpt  string
	otype  string
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	var tc *trackedConn
	switch nc := c.Conn().(type) {
	case *trackedConn:
		tc = nc
	case *tls.Conn:
		tc, _ = nc.NetConn().(*trackedConn)
	}
	if tc == nil {
		return nil, errSessionInternal
	}
	if tc.isClosing() {
		tc.closeAfterWrite.Store(true)
		return nil, errTooManyErrors
	}
	ctx, cancel := context.WithCancel(context.Background())
	cur := s.cur.Load()
	ss := &session{
		srv:      s,
		opts:     &cur.opts,
		resolver: cur.resolver,
		conn:     c,
		tc:       tc,
		remote:   tc.ip,
		local:    !tc.ip.IsValid() || tc.ip.IsLoopback(),
		ctx:      ctx,
		cancel:   cancel,
		id:       newID(),
	}
	if st, ok := c.TLSConnectionState(); ok {
		ss.tls = &st
	}
	ss.log = cur.opts.Logger.With("role", cur.opts.Role.String(), "remote", c.Conn().RemoteAddr().String(), "tls", ss.tls != nil)
	ss.log.Debug("smtp: session", "id", ss.id, "helo", c.Hostname())
	ss.beginChecks()
	return ss, nil
}

func (c *trackedConn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// refusal is what the log line of a refused command tells: never sent to
// the client.
type refusal struct {
	from, rcpt string // the envelope addresses concerned, when known
	reason     string // why, for the log
	warn       bool   // policy or attack-like: logged at Warn, not Info
}

// fail counts a failed command and returns the reply for it: e, or the
// 421 of the error limit (MaxErrors), after which the connection is
// closed. It logs one line for the refusal, with the keys id, from, rcpt,
// code and reason (remote comes with the session's logger). sync says
// whether go-smtp writes the reply right after we return, before any
// other write; when it is false (BDAT data, handled in another goroutine)
// the limit takes effect at the next command.
func (s *session) fail(e *smtp.SMTPError, sync bool, r refusal) error {
	s.logRefusal(e, r)
	s.tc.mu.Lock()
	s.tc.errors++
	reached := s.tc.errors >= s.opts.MaxErrors
	if reached {
		s.tc.closing = true
	}
	s.tc.mu.Unlock()
	if reached && sync {
		s.logRefusal(errTooManyErrors, refusal{from: r.from, rcpt: r.rcpt, reason: "too many errors, closing the connection", warn: true})
		s.tc.closeAfterWrite.Store(true)
		return errTooManyErrors
	}
	return e
}

// logRefusal writes the log line of a refusal: the transaction's id and
// sender when there is one, else the session's id.
func (s *session) logRefusal(e *smtp.SMTPError, r refusal) {
	id := s.id
	s.mu.Lock()
	if s.tx != nil {
		id = s.tx.id
		if r.from == "" {
			r.from = s.tx.from
		}
	}
	s.mu.Unlock()
	level := slog.LevelInfo
	if r.warn {
		level = slog.LevelWarn
	}
	if r.reason == "" {
		r.reason = e.Message
	}
	s.log.Log(s.ctx, level, "smtp: refused", "id", id, "from", r.from, "rcpt", r.rcpt, "code", replyCode(e), "reason", r.reason)
	s.opts.Metrics.Refused(s.opts.Role.String(), replyCode(e))
}

// replyCode returns the basic and enhanced status codes of a reply, for
// example "550 5.1.1".
func replyCode(e *smtp.SMTPError) string {
	if e.EnhancedCode == (smtp.EnhancedCode{}) || e.EnhancedCode == smtp.NoEnhancedCode {
		return strconv.Itoa(e.Code)
	}
	return fmt.Sprintf("%d %d.%d.%d", e.Code, e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2])
}

// checkClosing returns the 421 of the error limit when it was reached
// (and arms the close), else nil.
func (s *session) checkClosing() error {
	if s.tc.isClosing() {
		s.tc.closeAfterWrite.Store(true)
		return errTooManyErrors
	}
	return nil
}

// authAllowed applies the PlaintextAuth policy: AUTH needs TLS unless the
// policy says otherwise (RFC 8314 §3, RFC 4954 §4 "a server ... SHOULD
// NOT advertise" mechanisms it would refuse).
func (s *session) authAllowed() bool {
	if s.tls != nil {
		return true
	}
	switch s.opts.PlaintextAuth {
	case pop3.PlaintextAlways:
		return true
	case pop3.PlaintextLoopback:
		return s.local
	}
	return false
}

// AuthMechanisms lists the SASL mechanisms offered in EHLO: PLAIN and
// LOGIN on submission when AUTH is allowed, none otherwise (so that AUTH
// is never advertised before TLS where it would be refused).
func (s *session) AuthMechanisms() []string {
	if s.opts.Role != RoleSubmission || !s.authAllowed() {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth starts a SASL exchange (RFC 4954).
func (s *session) Auth(mech string) (sasl.Server, error) {
	if err := s.checkClosing(); err != nil {
		return nil, err
	}
	if s.opts.Role != RoleSubmission {
		return nil, s.fail(errAuthNotHere, true, refusal{reason: "AUTH on a service without authentication", warn: true})
	}
	s.mu.Lock()
	inTx := s.tx != nil
	s.mu.Unlock()
	if inTx {
		return nil, s.fail(errAuthInTx, true, refusal{reason: "AUTH during a mail transaction"})
	}
	if !s.authAllowed() {
		return nil, s.fail(errAuthEncryption, true, refusal{reason: "AUTH without TLS", warn: true})
	}
	var srv sasl.Server
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		srv = sasl.NewPlainServer(func(identity, username, password string) error {
			// RFC 4616 §2: an authorization identity other than the
			// user's own is not supported: a failed login, which the
			// guard refuses, counts and delays like a wrong password.
			if g := s.opts.Guard; g != nil && identity != "" && identity != username {
				if ok, _ := g.Begin(s.tc.RemoteAddr()); !ok {
					return s.fail(errAuthBlocked, true, refusal{from: username, reason: "login refused: too many failed logins from this address", warn: true})
				}
				authguard.Wait(s.ctx, g.EndFailure(s.tc.RemoteAddr(), username))
			}
			if identity != "" && identity != username {
				return s.fail(errAuthInvalid, true, refusal{from: username, reason: "login failed: authorization identity " + strconv.Quote(identity) + " is not the user", warn: true})
			}
			return s.authenticate(username, password)
		})
	case sasl.Login:
		srv = &loginServer{check: s.authenticate}
	default:
		return nil, s.fail(errAuthMech, true, refusal{reason: "unknown SASL mechanism " + strconv.Quote(mech)})
	}
	return &countingSASL{srv, s}, nil
}

// authenticate checks credentials against the user database.
func (s *session) authenticate(username, password string) error {
	g := s.opts.Guard
	remote := s.tc.RemoteAddr()
	if g != nil {
		// The attempt is counted as in progress until it ends, so that
		// guesses sent in parallel cannot all be checked before the
		// first failure is counted.
		if ok, _ := g.Begin(remote); !ok {
			s.opts.Metrics.Login("smtp", metrics.ResultBlocked)
			return s.fail(errAuthBlocked, true, refusal{from: username, reason: "login refused: too many failed logins from this address", warn: true})
		}
	}
	user, err := s.opts.Users.Authenticate(s.ctx, username, password)
	switch {
	case g == nil:
	case err == nil:
		g.EndSuccess(remote, user)
	case errors.Is(err, auth.ErrInvalidCredentials):
		authguard.Wait(s.ctx, g.EndFailure(remote, username))
	default:
		g.Abandon(remote) // nothing was learnt about the password
	}
	switch {
	case err == nil:
		s.mu.Lock()
		s.user = user
		s.mu.Unlock()
		s.log.Info("smtp: authenticated", "user", user)
		s.opts.Metrics.Login("smtp", metrics.ResultOK)
		return nil
	case errors.Is(err, auth.ErrInvalidCredentials):
		// The cause (unknown user or wrong password) is for the log
		// only: the client gets the same reply for both.
		s.opts.Metrics.Login("smtp", metrics.ResultFailed)
		return s.fail(errAuthInvalid, true, refusal{from: username, reason: "login failed: " + auth.FailureReason(err), warn: true})
	default:
		s.log.Error("smtp: authentication error", "user", username, "err", err)
		return s.fail(errAuthTemp, true, refusal{from: username, reason: "login failed: " + err.Error()})
	}
}

// countingSASL counts SASL exchanges that fail on malformed input.
type countingSASL struct {
	sasl.Server
	s *session
}

func (c *countingSASL) Next(resp []byte) ([]byte, bool, error) {
	ch, done, err := c.Server.Next(resp)
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			return nil, true, c.s.fail(errAuthSyntax, true, refusal{reason: "invalid SASL exchange: " + err.Error(), warn: true})
		}
	}
	return ch, done, err
}

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login-00): "Username:", then "Password:". An
// initial response is taken as the user name.
type loginServer struct {
	step     int
	username string
	check    func(username, password string) error
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		if resp == nil {
			l.step = 1
			return []byte("Username:"), false, nil
		}
		l.username, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 1:
		l.username, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.check(l.username, string(resp))
	}
	return nil, true, errors.New("sasl: unexpected LOGIN response")
}

// Reset ends the transaction (RSET, after a message, a new EHLO).
func (s *session) Reset() {
	s.mu.Lock()
	s.tx = nil
	s.mu.Unlock()
}

// Logout ends the session.
func (s *session) Logout() error {
	s.endChecks()
	s.cancel()
	return nil
}

// Mail starts a transaction (RFC 5321 §4.1.1.2).
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	if err := s.checkClosing(); err != nil {
		return err
	}
	s.mu.Lock()
	user := s.user
	s.mu.Unlock()
	if s.opts.Role == RoleSubmission && user == "" {
		// RFC 4954 §6: 530 when AUTH is required before MAIL.
		return s.fail(errAuthRequired, true, refusal{from: from, reason: "MAIL before AUTH on submission", warn: true})
	}
	if opts == nil {
		opts = &smtp.MailOptions{}
	}
	tx := &transaction{
		id:    newID(),
		helo:  s.conn.Hostname(),
		utf8:  opts.UTF8,
		ret:   string(opts.Return),
		envid: opts.EnvelopeID,
		size:  opts.Size,
	}
	if from != "" {
		a, err := parseAddress(from)
		if err != nil {
			return s.fail(errSenderSyntax, true, refusal{from: from, reason: "bad sender address: " + err.Error()})
		}
		if !a.ascii() && !opts.UTF8 {
			return s.fail(errNeedUTF8, true, refusal{from: from, reason: "non-ASCII sender without SMTPUTF8"})
		}
		if s.opts.Role == RoleSubmission && !s.opts.AllowAnySender && !s.resolver.Owns(user, a.String()) {
			return s.fail(errSenderNotOwned, true, refusal{from: a.String(), reason: "sender address not owned by user " + user, warn: true})
		}
		tx.from = a.String()
	}
	if e, reason := s.mailChecks(tx); e != nil {
		return s.fail(e, true, refusal{from: tx.from, reason: reason, warn: true})
	}
	s.mu.Lock()
	s.tx = tx
	s.mu.Unlock()
	s.log.Debug("smtp: mail", "id", tx.id, "from", tx.from)
	return nil
}

// Rcpt adds a recipient (RFC 5321 §4.1.1.3), resolved at once so that an
// unknown user is refused now rather than bounced later.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if err := s.checkClosing(); err != nil {
		return err
	}
	s.mu.Lock()
	tx := s.tx
	s.mu.Unlock()
	if tx == nil {
		return s.fail(errNoTransaction, true, refusal{rcpt: to, reason: "RCPT before MAIL"})
	}
	if len(tx.rcpts) >= s.opts.MaxRecipients {
		return s.fail(errTooManyRcpts, true, refusal{rcpt: to, reason: fmt.Sprintf("more than %d recipients", s.opts.MaxRecipients)})
	}
	a, err := parseAddress(to)
	if err != nil {
		if !strings.EqualFold(to, "postmaster") {
			return s.fail(errRcptSyntax, true, refusal{rcpt: to, reason: "bad recipient address: " + err.Error()})
		}
		// RFC 5321 §4.1.1.3, §4.5.1: "Postmaster" without a domain (in
		// any case) must be accepted; it is the primary domain's.
		d := s.srv.primaryDomain()
		if d == "" {
			s.log.Error("smtp: no local domain for postmaster")
			return s.fail(errUnknownUser, true, refusal{rcpt: to, reason: "no local domain for postmaster"})
		}
		a = address{local: "postmaster", domain: d}
	}
	if !a.ascii() && !tx.utf8 {
		return s.fail(errNeedUTF8, true, refusal{rcpt: to, reason: "non-ASCII recipient without SMTPUTF8"})
	}
	rcpt := a.String()
	res, found := s.resolver.Resolve(rcpt, s.log)
	switch {
	case found && len(res.Remote) > 0 && s.opts.Relay == nil:
		return s.fail(errForwardNotYet, true, refusal{rcpt: rcpt, reason: "forwarding to a remote address without an outbound queue"})
	case found:
	case s.srv.isLocalDomain(a.domain) && srs.IsSRS(rcpt):
		// A forged, expired or garbled SRS address: someone tried to
		// use us as a bounce relay.
		return s.fail(errUnknownUser, true, refusal{rcpt: rcpt, reason: "invalid SRS address", warn: true})
	case s.srv.isLocalDomain(a.domain):
		return s.fail(errUnknownUser, true, refusal{rcpt: rcpt, reason: "unknown user"})
	case s.opts.Role != RoleSubmission:
		// MX and LMTP take mail for local recipients only: never an
		// open relay.
		return s.fail(errRelayDenied, true, refusal{rcpt: rcpt, reason: "relay denied: not a local domain", warn: true})
	case s.opts.Relay == nil:
		return s.fail(errRelayNotYet, true, refusal{rcpt: rcpt, reason: "relay to a remote address without an outbound queue"})
	default:
		// Authenticated submission (Mail requires AUTH) to a remote
		// address.
		res = delivery.Resolution{Remote: []string{a.String()}}
	}
	if e, reason := s.rcptChecks(tx, rcpt, res); e != nil {
		return s.fail(e, true, refusal{rcpt: rcpt, reason: reason, warn: true})
	}
	if e := s.quotaAtRcpt(tx, res); e != nil {
		return s.fail(e, true, refusal{rcpt: rcpt, reason: "mailbox over quota"})
	}
	rc := &recipient{addr: to, canon: a.String(), res: res}
	if opts != nil {
		for _, n := range opts.Notify {
			rc.notify = append(rc.notify, string(n))
		}
		rc.orcpt, rc.otype = opts.OriginalRecipient, string(opts.OriginalRecipientType)
	}
	s.mu.Lock()
	tx.rcpts = append(tx.rcpts, rc)
	s.mu.Unlock()
	s.log.Debug("smtp: rcpt", "id", tx.id, "rcpt", rc.canon, "local_copies", len(res.Local), "remote_rcpts", len(res.Remote))
	return nil
}

// quotaAtRcpt returns the reply refusing a recipient whose mailbox is full
// or, when MAIL FROM declared the message's SIZE, would not hold it; nil
// otherwise (the quota is checked again with the real size after DATA).
func (s *session) quotaAtRcpt(tx *transaction, res delivery.Resolution) *smtp.SMTPError {
	d := s.opts.Deliverer
	for _, t := range res.Local {
		// RFC 3463 X.2.2 is a persistent transient failure: a mailbox
		// already full is refused with 452, so that the sender retries
		// while the user frees space over POP3, and the other recipients
		// of the transaction are served (RFC 5321 §4.2.5).
		err := d.CheckQuota(s.ctx, t.Mailbox, 0)
		if errors.Is(err, delivery.ErrOverQuota) {
			s.log.Info("smtp: mailbox full", "id", tx.id, "mailbox", t.Mailbox, "err", err)
			return errMailboxFullNow
		}
		if err != nil {
			s.log.Warn("smtp: quota check", "id", tx.id, "mailbox", t.Mailbox, "err", err)
			continue // checked again after DATA
		}
		// RFC 1870 §6.1: a declared size that cannot be accepted for this
		// recipient is refused at RCPT with 552.
		if tx.size > 0 {
			if err := d.CheckQuota(s.ctx, t.Mailbox, tx.size); errors.Is(err, delivery.ErrOverQuota) {
				s.log.Info("smtp: declared size over quota", "id", tx.id, "mailbox", t.Mailbox, "size", tx.size, "err", err)
				return errMailboxFull
			}
		}
	}
	return nil
}

// Data receives the message (DATA or BDAT) and delivers it.
func (s *session) Data(r io.Reader) error {
	_, bdat := r.(*io.PipeReader)
	if err := s.checkClosing(); err != nil {
		if bdat {
			return errTooManyErrors
		}
		return err
	}
	tx := s.startData(bdat)
	if tx == nil {
		return s.fail(errNoTransaction, !bdat, refusal{reason: "DATA before MAIL"})
	}
	out, err := s.receive(r, tx, bdat)
	if err != nil {
		return s.dataFail(err, bdat)
	}
	if rc, err := out.firstError(tx); err != nil {
		return s.fail(err, !bdat, refusal{rcpt: rc.canon, reason: "message not stored"})
	}
	s.opts.Metrics.Received(s.opts.Role.String())
	return smtpErr(250, 2, 0, 0, "OK: queued as "+tx.id)
}

// LMTPData receives the message and sets one status per recipient (RFC
// 2033 §4.2): each after its copies are durable.
func (s *session) LMTPData(r io.Reader, status smtp.StatusCollector) error {
	_, bdat := r.(*io.PipeReader)
	if s.tc.isClosing() {
		return errTooManyErrors
	}
	tx := s.startData(bdat)
	if tx == nil {
		return errNoTransaction
	}
	out, err := s.receive(r, tx, bdat)
	if err != nil {
		// go-smtp gives this reply to every recipient.
		e := s.dataError(err)
		s.logRefusal(e, refusal{reason: "message not received: " + err.Error()})
		return e
	}
	for _, rc := range tx.rcpts {
		if e := out.status(rc); e != nil {
			// RFC 2033 §4.2: one reply per recipient, one log line each.
			s.logRefusal(e, refusal{rcpt: rc.canon, reason: "message not stored"})
			status.SetStatus(rc.addr, e)
		} else {
			status.SetStatus(rc.addr, smtpErr(250, 2, 0, 0, "OK: delivered as "+tx.id))
		}
	}
	s.opts.Metrics.Received(s.opts.Role.String())
	return nil
}

// startData returns the transaction and, for DATA, sets the data timeout
// (the deadline go-smtp set for the DATA command line is the command
// timeout; the next command line sets its own again).
func (s *session) startData(bdat bool) *transaction {
	if !bdat {
		s.conn.Conn().SetReadDeadline(time.Now().Add(s.opts.DataTimeout))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tx
}

// dataError maps an error receiving the message to its reply.
func (s *session) dataError(err error) *smtp.SMTPError {
	switch {
	case errors.Is(err, smtp.ErrDataTooLarge), errors.Is(err, delivery.ErrTooBig):
		return errTooBig
	case errors.Is(err, errNUL):
		return errNULData
	case errors.Is(err, delivery.ErrMalformed):
		return errEmpty
	case errors.Is(err, delivery.ErrOverQuota):
		return errMailboxFull
	case errors.As(err, new(*fromNotOwnedError)):
		return errFromNotOwned
	}
	if e, ok := asCheckRefusal(err); ok {
		return e
	}
	return errReceiving
}

// dataFail answers a message that could not be received. After an I/O
// error (the client vanished or timed out) the rest of the message could
// still arrive and must not be read as commands, so a DATA connection is
// closed after the reply.
func (s *session) dataFail(err error, bdat bool) error {
	e := s.dataError(err)
	r := refusal{reason: "message not received: " + err.Error()}
	if e == errReceiving {
		s.logRefusal(e, r)
		if !bdat {
			s.tc.closeAfterWrite.Store(true)
		}
		return e
	}
	return s.fail(e, !bdat, r)
}

// outcome is what happened to the copies of one message.
type outcome struct {
	local    map[string]error // mailbox -> result
	relayErr error            // nil when relayed or nothing to relay
}

// status returns the reply for one recipient: nil when all its copies are
// stored or queued.
func (o *outcome) status(rc *recipient) *smtp.SMTPError {
	for _, t := range rc.res.Local {
		if err := o.local[t.Mailbox]; err != nil {
			return deliveryError(err)
		}
	}
	if len(rc.res.Remote) > 0 && o.relayErr != nil {
		return errTemp
	}
	return nil
}

// firstError returns the first recipient that failed and its reply.
func (o *outcome) firstError(tx *transaction) (*recipient, *smtp.SMTPError) {
	for _, rc := range tx.rcpts {
		if e := o.status(rc); e != nil {
			return rc, e
		}
	}
	return nil, nil
}

func deliveryError(err error) *smtp.SMTPError {
	if errors.Is(err, delivery.ErrMalformed) {
		return errEmpty
	}
	if errors.Is(err, delivery.ErrOverQuota) {
		return errMailboxFull
	}
	return errTemp
}

// receive spools the message and stores one copy per distinct local
// mailbox, each with its own Received header, then hands remote
// recipients to the Relay. It returns an error only when the message
// itself could not be received.
func (s *session) receive(r io.Reader, tx *transaction, bdat bool) (*outcome, error) {
	d := s.opts.Deliverer
	norm := newNormalizer(r)
	// With the sender check on, a submitted message's header is read
	// from the spool before anything is stored, so it is not streamed.
	checkFrom := s.opts.Role == RoleSubmission && !s.opts.AllowAnySender
	if t, rc, ok := singleLocal(tx); ok && !bdat && !checkFrom && tx.verdict == nil {
		// One copy to make: stream it straight into the mailbox instead
		// of spooling it first (half the files created and written). The
		// store shows it only once it is complete and durable. Not for
		// BDAT, whose end is only known to be complete after the read.
		s.mu.Lock()
		user := s.user
		s.mu.Unlock()
		hdr := s.trace(tx, user, rc.canon).header()
		_, err := d.DeliverStream(delivery.WithMessageID(s.ctx, tx.id), tx.from, t.DeliveredTo, t.Mailbox, norm, hdr)
		if err != nil && !errors.Is(err, delivery.ErrStore) {
			return nil, err // the message itself was not received
		}
		if norm.Bare() > 0 {
			s.log.Info("smtp: bare CR or LF in message rewritten as CRLF", "id", tx.id, "count", norm.Bare())
		}
		if err != nil {
			s.log.Error("smtp: storing message", "id", tx.id, "mailbox", t.Mailbox, "err", err)
		}
		return &outcome{local: map[string]error{t.Mailbox: err}}, nil
	}
	sp, err := d.Spool(s.ctx, norm)
	if err != nil {
		return nil, err
	}
	defer sp.Close()
	if norm.Bare() > 0 {
		s.log.Info("smtp: bare CR or LF in message rewritten as CRLF", "id", tx.id, "count", norm.Bare())
	}
	s.mu.Lock()
	user := s.user
	s.mu.Unlock()
	if checkFrom {
		if err := s.checkHeaderFrom(user, sp.Reader()); err != nil {
			return nil, err
		}
	}
	var plan *junkPlan // what junk handling does to each copy
	if tx.verdict != nil {
		// The checks read the whole message before any copy is stored.
		judged, err := s.dataChecks(tx, sp)
		if err != nil {
			return nil, err
		}
		if judged != sp {
			defer judged.Close()
			sp = judged
		}
		if plan, err = s.planJunk(tx); err != nil {
			return nil, err
		}
	}
	out := &outcome{local: make(map[string]error)}
	over, copies := s.overQuota(tx, sp)
	for mb := range over {
		if plan.action(mb) == inbound.Quarantine {
			delete(over, mb) // held, not stored in the mailbox
		}
	}
	if len(over) > 0 && (len(over) == copies || s.opts.Relay == nil) {
		// Nothing is stored: the single reply refuses the whole message
		// (552 5.2.2), rather than tell the sender of a failure that some
		// recipients did receive.
		for mb := range over {
			out.local[mb] = fmt.Errorf("%w: %s", delivery.ErrOverQuota, mb)
		}
		return out, nil
	}
	failed := false
	var bounce []string // over-quota copies the queue bounces
	for _, rc := range tx.rcpts {
		for _, t := range rc.res.Local {
			if _, done := out.local[t.Mailbox]; done {
				continue // one copy per mailbox
			}
			if over[t.Mailbox] {
				out.local[t.Mailbox] = nil
				bounce = append(bounce, t.DeliveredTo)
				continue
			}
			hdr := s.trace(tx, user, rc.canon).header()
			err := s.deliverLocal(tx, plan, t, sp, hdr)
			out.local[t.Mailbox] = err
			if err != nil {
				failed = true
				s.log.Error("smtp: storing message", "id", tx.id, "mailbox", t.Mailbox, "err", err)
			}
		}
	}
	if len(bounce) > 0 && !failed {
		// RFC 5321 §4.2.5 has one reply for all recipients: the copies
		// that do not fit go to the queue, whose local delivery finds the
		// mailbox full and bounces them with a DSN (5.2.2), as Postfix
		// does, while the others are delivered (or fits by then).
		hdr := s.trace(tx, user, "").header()
		id, err := s.opts.Relay.Enqueue(s.ctx, tx.from, bounce, envelope.DSNParams{Return: tx.ret, EnvelopeID: tx.envid}, io.MultiReader(strings.NewReader(hdr), sp.Reader()))
		if err != nil {
			failed = true
			s.log.Error("smtp: queueing over-quota copies", "id", tx.id, "err", err)
			for _, rc := range tx.rcpts {
				for _, t := range rc.res.Local {
					if over[t.Mailbox] {
						out.local[t.Mailbox] = err
					}
				}
			}
		} else {
			s.log.Info("smtp: over-quota copies queued for a bounce", "id", tx.id, "queue_id", id, "rcpts", len(bounce))
		}
	}
	// Remote recipients are queued only when every local copy is stored
	// (and, with SMTP's single reply, a retry then duplicates nothing
	// remote).
	var rcpts []string
	params := envelope.DSNParams{Return: tx.ret, EnvelopeID: tx.envid}
	for _, rc := range tx.rcpts {
		for _, addr := range rc.res.Remote {
			if containsString(rcpts, addr) {
				continue
			}
			rd := envelope.RecipientDSN{Notify: rc.notify, OriginalRecipientType: rc.otype, OriginalRecipient: rc.orcpt}
			if rd.OriginalRecipient == "" && addr != rc.canon {
				rd.OriginalRecipientType = "rfc822"
				if !isASCII(rc.canon) {
					rd.OriginalRecipientType = "utf-8"
				}
				rd.OriginalRecipient = rc.canon
			}
			rcpts = append(rcpts, addr)
			params.Recipients = append(params.Recipients, rd)
		}
	}
	if len(rcpts) > 0 {
		if failed && s.opts.Role != RoleLMTP {
			out.relayErr = errors.New("not queued: local delivery failed")
		} else {
			forClause := ""
			if len(rcpts) == 1 && len(tx.rcpts) == 1 {
				forClause = tx.rcpts[0].canon
			}
			hdr := s.trace(tx, user, forClause).header()
			// The queue signs only what an authenticated user submitted.
			params.AuthUser = user
			// The queue keeps the transaction's id: the one of the reply
			// and of every log line about the message.
			params.ID = tx.id
			from := s.srv.forwardSender(tx.from, user, s.log)
			var prefix string
			if s.opts.Junk != nil {
				prefix = s.opts.Junk.Policy.SubjectPrefix
			}
			body, done := plan.relayReader(sp, prefix)
			_, err := s.opts.Relay.Enqueue(s.ctx, from, rcpts, params, io.MultiReader(strings.NewReader(hdr), body))
			done()
			out.relayErr = err
			if err != nil {
				s.log.Error("smtp: queueing message", "id", tx.id, "err", err)
			} else {
				s.log.Info("smtp: queued", "id", tx.id, "from", from, "rcpts", len(rcpts))
			}
		}
	}
	return out, nil
}

// overQuota returns the local mailboxes of the transaction whose quota
// cannot hold the spooled message (nil when none), and the number of
// distinct local mailboxes. For SMTP only: LMTP answers per recipient, so
// there each copy is simply refused by its own delivery.
func (s *session) overQuota(tx *transaction, sp *delivery.Spool) (over map[string]bool, copies int) {
	if s.opts.Role == RoleLMTP {
		return nil, 0
	}
	d := s.opts.Deliverer
	seen := map[string]bool{}
	for _, rc := range tx.rcpts {
		for _, t := range rc.res.Local {
			if seen[t.Mailbox] {
				continue
			}
			seen[t.Mailbox] = true
			if err := d.CheckQuota(s.ctx, t.Mailbox, sp.Size()); errors.Is(err, delivery.ErrOverQuota) {
				if over == nil {
					over = map[string]bool{}
				}
				over[t.Mailbox] = true
			}
		}
	}
	return over, len(seen)
}

// singleLocal reports whether the transaction makes exactly one copy, in
// one local mailbox, and nothing for the Relay.
func singleLocal(tx *transaction) (delivery.Target, *recipient, bool) {
	var t delivery.Target
	var first *recipient
	n := 0
	for _, rc := range tx.rcpts {
		if len(rc.res.Remote) > 0 {
			return delivery.Target{}, nil, false
		}
		for _, lt := range rc.res.Local {
			if n == 0 {
				t, first, n = lt, rc, 1
			} else if lt.Mailbox != t.Mailbox {
				return delivery.Target{}, nil, false
			}
		}
	}
	return t, first, n == 1 && len(tx.rcpts) == 1
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// trace returns the Received header data for a copy for rcpt ("" for
// none).
func (s *session) trace(tx *transaction, user, rcpt string) *trace {
	return &trace{
		helo:     tx.helo,
		remote:   s.remote,
		hostname: s.opts.Hostname,
		lmtp:     s.opts.Role == RoleLMTP,
		utf8:     tx.utf8,
		tls:      s.tls,
		user:     user,
		id:       tx.id,
		rcpt:     rcpt,
		date:     s.srv.now(),
		checks:   tx.checkHeaders(),
	}
}

// checkHeaders returns the header fields the inbound checks add
// (Authentication-Results...), "" without checks.
func (tx *transaction) checkHeaders() string {
	if tx.verdict == nil {
		return ""
	}
	return tx.verdict.Headers()
}

// newID returns a new session or message id (envelope.NewMessageID): a
// transaction's id is also its message's id in the queue.
func newID() string {
	return envelope.NewMessageID(time.Now())
}
