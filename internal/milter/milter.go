package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/postino-mail/postino/internal/inbound"
)

// Config is one filter.
type Config struct {
	// Name names the filter in logs and results ("milter:NAME").
	Name string
	// Network is "tcp" or "unix"; Address its host:port or socket path.
	Network, Address string
	// AcceptOnFailure accepts mail without this filter when it cannot be
	// reached or fails; false (the default) tempfails it (451 4.7.1).
	AcceptOnFailure bool
	// ConnectTimeout bounds connecting to the filter.
	ConnectTimeout time.Duration
	// Timeout bounds each exchange with the filter (reading its reply
	// to one command, or writing one packet).
	Timeout time.Duration
	// MaxVersion is the highest milter protocol version offered (2 to
	// 6; 0 means 6).
	MaxVersion int
	// Logger receives the filter's failures and ignored changes.
	Logger *slog.Logger
}

// ParseAddress splits a filter's address as configured: "unix:/path",
// "/path" or "host:port".
func ParseAddress(addr string) (network, address string, err error) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		if p == "" {
			return "", "", fmt.Errorf("milter address %q: empty socket path", addr)
		}
		return "unix", p, nil
	}
	if strings.HasPrefix(addr, "/") {
		return "unix", addr, nil
	}
	if _, _, err := net.SplitHostPort(strings.TrimPrefix(addr, "inet:")); err != nil {
		return "", "", fmt.Errorf("milter address %q: want host:port or unix:/path", addr)
	}
	return "tcp", strings.TrimPrefix(addr, "inet:"), nil
}

// Check is one filter installed on the MX. It implements inbound.Check.
type Check struct {
	cfg Config
	log *slog.Logger
}

// New returns the check of the filter cfg.
func New(cfg Config) *Check {
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxVersion < 2 || cfg.MaxVersion > int(gomilter.MaxClientProtocolVersion) {
		cfg.MaxVersion = int(gomilter.MaxClientProtocolVersion)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Check{cfg: cfg, log: log.With("milter", cfg.Name)}
}

// Name returns "milter:" and the filter's name.
func (c *Check) Name() string { return "milter:" + c.cfg.Name }

// Begin returns the filter's state for an SMTP session; it connects to
// the filter only at the first MAIL FROM.
func (c *Check) Begin(ctx context.Context, conn *inbound.Conn, v *inbound.Verdict) inbound.Session {
	return &session{c: c, conn: conn}
}

// client returns a go-milter client for one connection to the filter.
func (c *Check) client(ctx context.Context) *gomilter.Client {
	return gomilter.NewClient(c.cfg.Network, c.cfg.Address,
		gomilter.WithDialer(ctxDialer{ctx: ctx, timeout: c.cfg.ConnectTimeout}),
		gomilter.WithReadTimeout(c.cfg.Timeout),
		gomilter.WithWriteTimeout(c.cfg.Timeout),
		gomilter.WithMaximumVersion(uint32(c.cfg.MaxVersion)),
		// Every protocol feature the library has for that version (the
		// default set is version 6's, which older versions refuse).
		gomilter.WithProtocols(0),
		// Filters such as rspamd refuse an MTA that does not offer every
		// action; recipient and sender changes are then logged, not
		// applied (see the package doc).
		gomilter.WithActions(gomilter.AllClientSupportedActionMasks),
	)
}

// ctxDialer dials the filter within the session's context.
type ctxDialer struct {
	ctx     context.Context
	timeout time.Duration
}

func (d ctxDialer) Dial(network, addr string) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	return nd.DialContext(d.ctx, network, addr)
}

// session is a filter's state for one SMTP session.
type session struct {
	c    *Check
	conn *inbound.Conn
	cs   *gomilter.ClientSession // nil until the first MAIL, or after a failure
	// macros are the values the filter may ask for.
	macros *gomilter.MacroBag
	// connResult is what the filter said of the connection or HELO, when
	// it refused it: every transaction gets it at MAIL.
	connResult *inbound.Result
	// connAccepted: the filter accepted the whole connection.
	connAccepted bool
	// inTx: a transaction was started with the filter and not ended.
	inTx bool
	// txDone: the filter decided the transaction (accept, discard,
	// refusal) or failed: it is sent nothing more until the next MAIL.
	txDone bool
	// txFailed: the filter failed during the transaction.
	txFailed bool
}

// fail handles a filter that failed: the connection is dropped (the next
// transaction connects again) and, unless the filter is configured to be
// skipped on failure, the stage is tempfailed.
func (s *session) fail(v *inbound.Verdict, stage string, err error) {
	s.c.log.Warn("milter: filter failed", "id", s.conn.ID, "stage", stage, "err", err, "accept", s.c.cfg.AcceptOnFailure)
	if s.cs != nil {
		s.cs.Close()
		s.cs = nil
	}
	s.inTx = false
	s.txDone = true
	s.txFailed = true
	s.failResult(v)
}

// failResult adds what a failure of the filter demands.
func (s *session) failResult(v *inbound.Verdict) {
	if s.c.cfg.AcceptOnFailure {
		return
	}
	v.Add(inbound.Result{Check: s.c.Name(), Action: inbound.Tempfail,
		Reply: "Content filter unavailable, try again later", Code: 451, Enhanced: [3]int{4, 7, 1},
		Detail: "filter unavailable"})
}

// open connects to the filter and sends the connection and HELO.
func (s *session) open(ctx context.Context, v *inbound.Verdict) bool {
	m := gomilter.NewMacroBag()
	m.Set(gomilter.MacroMTAFQDN, s.conn.Hostname)
	m.Set(gomilter.MacroDaemonName, "postino")
	m.Set(gomilter.MacroMTAVersion, "postino")
	name := "unknown"
	family := gomilter.FamilyUnknown
	addr := ""
	if s.conn.Remote.IsValid() {
		ip := s.conn.Remote.Unmap()
		addr = ip.String()
		// As Postfix does for a client whose reverse DNS is not known.
		name = "[" + addr + "]"
		family = gomilter.FamilyInet
		if ip.Is6() {
			family = gomilter.FamilyInet6
		}
		m.Set(gomilter.MacroClientAddr, addr)
	}
	m.Set(gomilter.MacroClientName, name)
	if s.conn.TLS {
		m.Set(gomilter.MacroTlsVersion, "TLS")
	}
	s.macros = m
	cs, err := s.c.client(ctx).Session(m)
	if err != nil {
		s.fail(v, "connect", err)
		return false
	}
	s.cs = cs
	act, err := cs.Conn(name, family, 0, addr)
	if err != nil {
		s.fail(v, "connect", err)
		return false
	}
	if !s.connAction(act) {
		return true
	}
	act, err = cs.Helo(s.conn.Helo)
	if err != nil {
		s.fail(v, "helo", err)
		return false
	}
	s.connAction(act)
	return true
}

// connAction records the filter's reply to the connection or HELO and
// reports whether to go on.
func (s *session) connAction(act *gomilter.Action) bool {
	switch act.Type {
	case gomilter.ActionContinue:
		return true
	case gomilter.ActionAccept:
		s.connAccepted = true
	default:
		r := s.result(act, "connection")
		s.connResult = &r
	}
	return false
}

// result maps a refusing reply (reject, tempfail, custom reply) to a
// Result.
func (s *session) result(act *gomilter.Action, stage string) inbound.Result {
	r := inbound.Result{Check: s.c.Name(), Detail: fmt.Sprintf("refused at %s: %s", stage, act.SMTPReply)}
	switch act.Type {
	case gomilter.ActionTempFail:
		r.Action, r.Code, r.Enhanced = inbound.Tempfail, 451, [3]int{4, 7, 1}
		r.Reply = "Try again later"
	case gomilter.ActionRejectWithCode:
		code, enh, text, ok := parseReply(act.SMTPReply)
		if !ok {
			code, enh, text = 550, [3]int{5, 7, 1}, ""
		}
		r.Action, r.Code = inbound.Reject, code
		if code < 500 {
			r.Action = inbound.Tempfail
		}
		if enh == [3]int{} {
			enh = [3]int{code / 100, 7, 1}
		}
		r.Enhanced = enh
		r.Reply = text
		if r.Reply == "" {
			r.Reply = "Message refused"
		}
	case gomilter.ActionDiscard:
		// Never silently discard: hold it where it can be seen.
		r.Action = inbound.Quarantine
		r.Detail = "discard at " + stage + ": quarantined instead"
	default: // ActionReject
		r.Action, r.Code, r.Enhanced = inbound.Reject, 550, [3]int{5, 7, 1}
		r.Reply = "Message refused"
	}
	return r
}

// active reports whether the filter takes part in the current
// transaction.
func (s *session) active() bool {
	return !s.connAccepted && s.connResult == nil && !s.txDone && s.cs != nil
}

// Mail starts a transaction with the filter, connecting first when
// needed.
func (s *session) Mail(ctx context.Context, from string, v *inbound.Verdict) {
	if s.cs != nil && s.inTx {
		// RSET or a new MAIL after the filter decided: abort the old one.
		if err := s.cs.Abort(nil); err != nil {
			s.cs.Close()
			s.cs = nil
		}
	}
	s.inTx, s.txDone, s.txFailed = false, false, false
	if s.connAccepted {
		return
	}
	reused := s.cs != nil
	if s.cs == nil && s.connResult == nil {
		if !s.open(ctx, v) {
			return
		}
	}
	if s.connResult != nil {
		v.Add(*s.connResult)
		return
	}
	if s.connAccepted {
		return
	}
	s.macros.Set(gomilter.MacroMailAddr, from)
	s.macros.Set(gomilter.MacroMailHost, domainOf(from))
	s.macros.Set(gomilter.MacroMailMailer, "esmtp")
	act, err := s.cs.Mail(from, "")
	if err != nil && reused {
		// The filter may have closed a connection left idle between
		// transactions (rspamd's proxy timeout): connect once more.
		s.c.log.Debug("milter: connecting again", "id", s.conn.ID, "err", err)
		s.cs.Close()
		s.cs = nil
		if !s.open(ctx, v) {
			return
		}
		if s.connResult != nil {
			v.Add(*s.connResult)
			return
		}
		if s.connAccepted {
			return
		}
		act, err = s.cs.Mail(from, "")
	}
	if err != nil {
		s.fail(v, "mail", err)
		return
	}
	s.inTx = true
	s.stageAction(act, "MAIL", v)
}

// stageAction maps the reply to MAIL, RCPT, DATA or the header.
func (s *session) stageAction(act *gomilter.Action, stage string, v *inbound.Verdict) {
	switch act.Type {
	case gomilter.ActionContinue:
	case gomilter.ActionAccept:
		s.txDone = true
	default:
		v.Add(s.result(act, stage))
		s.txDone = true
	}
}

// Rcpt sends one recipient. The filter's refusal applies to it only.
func (s *session) Rcpt(ctx context.Context, env *inbound.Envelope, rcpt string, v *inbound.Verdict) {
	if s.txFailed {
		s.failResult(v)
		return
	}
	if !s.active() {
		return
	}
	s.macros.Set(gomilter.MacroQueueId, env.ID)
	s.macros.Set(gomilter.MacroRcptAddr, rcpt)
	s.macros.Set(gomilter.MacroRcptHost, domainOf(rcpt))
	s.macros.Set(gomilter.MacroRcptMailer, "local")
	act, err := s.cs.Rcpt(rcpt, "")
	if err != nil {
		s.fail(v, "rcpt", err)
		return
	}
	switch act.Type {
	case gomilter.ActionContinue:
	case gomilter.ActionAccept:
		s.txDone = true
	case gomilter.ActionDiscard:
		// Discard at RCPT discards the whole message (Sendmail).
		v.Add(s.result(act, "RCPT"))
		s.txDone = true
	default:
		// A refused recipient: the filter stays in the transaction.
		v.Add(s.result(act, "RCPT"))
	}
}

// Data sends the message and applies the filter's verdict and changes.
func (s *session) Data(ctx context.Context, env *inbound.Envelope, msg inbound.Message, v *inbound.Verdict) (inbound.Message, error) {
	if s.txFailed {
		s.failResult(v)
		return nil, nil
	}
	if !s.active() {
		return nil, nil
	}
	s.macros.Set(gomilter.MacroQueueId, env.ID)
	h, err := readHeader(msg.Reader())
	if errors.Is(err, ErrHeaderTooBig) {
		// Postfix drops what is over its header_size_limit; a message
		// is never changed behind the filter's back: it is refused.
		v.Add(inbound.Result{Check: s.c.Name(), Action: inbound.Reject, Code: 552, Enhanced: [3]int{5, 3, 4},
			Reply: "Message header too large", Detail: err.Error()})
		s.txDone = true
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("milter %s: reading the message: %w", s.c.cfg.Name, err)
	}
	start := time.Now()
	mods, act, err := s.send(msg, h)
	s.c.log.Debug("milter: message filtered", "id", s.conn.ID, "tx", env.ID, "ms", float64(time.Since(start).Microseconds())/1000, "err", err)
	if err != nil {
		s.fail(v, "data", err)
		return nil, nil
	}
	// The transaction stays open with the filter until the next MAIL
	// (or the end) aborts it, as Postfix's RSET does.
	s.txDone = true
	if act.Type != gomilter.ActionContinue && act.Type != gomilter.ActionAccept {
		v.Add(s.result(act, "DATA"))
		return nil, nil
	}
	if len(mods) == 0 {
		return nil, nil
	}
	return s.modify(msg, h, mods, v)
}

// send sends DATA, the header, the body and the end of the message. act
// is nil or the reply that ended the exchange.
func (s *session) send(msg inbound.Message, h *header) ([]gomilter.ModifyAction, *gomilter.Action, error) {
	act, err := s.cs.DataStart()
	if err != nil || act.Type != gomilter.ActionContinue {
		return nil, act, err
	}
	lead := s.cs.ProtocolOption(gomilter.OptHeaderLeadingSpace)
	for _, f := range h.fields {
		act, err := s.cs.HeaderField(f.name, f.value(lead), nil)
		if err != nil || act.Type != gomilter.ActionContinue {
			return nil, act, err
		}
		if s.cs.Skip() {
			break
		}
	}
	act, err = s.cs.HeaderEnd()
	if err != nil || act.Type != gomilter.ActionContinue {
		return nil, act, err
	}
	body := msg.Reader()
	if _, err := io.CopyN(io.Discard, body, h.size); err != nil && err != io.EOF {
		return nil, nil, fmt.Errorf("reading the message: %w", err)
	}
	return s.cs.BodyReadFrom(body)
}

// Scores and demands that rspamd and SpamAssassin put in their header
// fields. X-Spam and X-Spam-Score are junk handling's own: they are read
// here and not copied into the message.
var (
	scoreFields = []string{"X-Spam-Score", "X-Rspamd-Score"}
	ownFields   = []string{"X-Spam", "X-Spam-Score"}
)

// modify applies the filter's changes: the verdict fields, quarantine,
// header changes and a new body.
func (s *session) modify(msg inbound.Message, h *header, mods []gomilter.ModifyAction, v *inbound.Verdict) (inbound.Message, error) {
	var body []byte
	replaced := false
	var kept []gomilter.ModifyAction
	score, scored, spam := 0.0, false, false
	for _, m := range mods {
		switch m.Type {
		case gomilter.ActionQuarantine:
			v.Add(inbound.Result{Check: s.c.Name(), Action: inbound.Quarantine, Detail: "quarantine: " + m.Reason})
		case gomilter.ActionReplaceBody:
			if len(body)+len(m.Body) > MaxBodyReplacement {
				s.c.log.Warn("milter: body replacement over the limit ignored", "id", s.conn.ID, "limit", MaxBodyReplacement)
				continue
			}
			body = append(body, m.Body...)
			replaced = true
		case gomilter.ActionAddHeader, gomilter.ActionInsertHeader, gomilter.ActionChangeHeader:
			if m.HeaderValue != "" {
				if sc, ok := fieldScore(m.HeaderName, m.HeaderValue); ok && !scored {
					score, scored = sc, true
				}
				if fieldSpam(m.HeaderName, m.HeaderValue) {
					spam = true
				}
			}
			if isOwn(m.HeaderName) {
				continue
			}
			kept = append(kept, m)
		default:
			s.c.log.Warn("milter: change not applied", "id", s.conn.ID, "change", m.String())
		}
	}
	if scored || spam {
		r := inbound.Result{Check: s.c.Name(), Score: score, Detail: fmt.Sprintf("score %.2f spam %v", score, spam)}
		if spam {
			r.Action = inbound.Tag
		}
		v.Add(r)
	}
	if len(kept) == 0 && !replaced {
		return nil, nil
	}
	if err := h.apply(kept, s.cs != nil && s.cs.ProtocolOption(gomilter.OptHeaderLeadingSpace)); err != nil {
		s.c.log.Warn("milter: header changes not applied", "id", s.conn.ID, "err", err)
	}
	nm := &message{orig: msg, header: h.bytes(), bodyAt: h.size}
	if replaced {
		nm.body = normalizeCRLF(body)
		nm.replaced = true
	}
	return nm, nil
}

// fieldScore returns the score in a verdict field of rspamd or
// SpamAssassin.
func fieldScore(name, value string) (float64, bool) {
	value = strings.TrimSpace(value)
	for _, n := range scoreFields {
		if strings.EqualFold(name, n) {
			f, err := strconv.ParseFloat(strings.Fields(value + " x")[0], 64)
			return f, err == nil && !isInfOrNaN(f)
		}
	}
	if strings.EqualFold(name, "X-Spam-Status") {
		// SpamAssassin and rspamd: "Yes, score=12.3 required=5.0 ...".
		for _, w := range strings.FieldsFunc(value, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' }) {
			if v, ok := strings.CutPrefix(strings.ToLower(w), "score="); ok {
				f, err := strconv.ParseFloat(v, 64)
				return f, err == nil && !isInfOrNaN(f)
			}
		}
	}
	return 0, false
}

func isInfOrNaN(f float64) bool { return f != f || f > 1e9 || f < -1e9 }

// fieldSpam reports whether a field says the message is spam.
func fieldSpam(name, value string) bool {
	value = strings.ToLower(strings.TrimSpace(value))
	switch strings.ToLower(name) {
	case "x-spam", "x-spam-flag":
		return value == "yes" || value == "true"
	case "x-spam-status":
		return strings.HasPrefix(value, "yes")
	}
	return false
}

func isOwn(name string) bool {
	for _, n := range ownFields {
		if strings.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// normalizeCRLF makes every line end CRLF.
func normalizeCRLF(b []byte) []byte {
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	b = bytes.ReplaceAll(b, []byte("\r"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// End closes the connection to the filter.
func (s *session) End() {
	if s.cs != nil {
		s.cs.Close()
		s.cs = nil
	}
}

func domainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[i+1:]
	}
	return ""
}

// message is a message as a filter changed it: the new header block and
// the original body (read from the spool) or the filter's.
type message struct {
	orig     inbound.Message
	header   []byte
	bodyAt   int64
	body     []byte
	replaced bool
}

// Reader returns the changed message.
func (m *message) Reader() io.Reader {
	hdr := io.MultiReader(bytes.NewReader(m.header), strings.NewReader("\r\n"))
	if m.replaced {
		return io.MultiReader(hdr, bytes.NewReader(m.body))
	}
	return io.MultiReader(hdr, &skipReader{r: m.orig.Reader(), skip: m.bodyAt})
}

// Size returns the changed message's size.
func (m *message) Size() int64 {
	n := int64(len(m.header)) + 2
	if m.replaced {
		return n + int64(len(m.body))
	}
	return n + max(m.orig.Size()-m.bodyAt, 0)
}

// skipReader skips the first skip octets of r.
type skipReader struct {
	r    io.Reader
	skip int64
}

func (s *skipReader) Read(p []byte) (int, error) {
	if s.skip > 0 {
		n, err := io.CopyN(io.Discard, s.r, s.skip)
		s.skip -= n
		if err != nil {
			return 0, err
		}
	}
	return s.r.Read(p)
}
