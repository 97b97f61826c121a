package smtpin

import (
	"errors"
	"fmt"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/metrics"
)

// The inbound checks (Options.Checks) judge mail on the MX only: mail
// from authenticated users (submission) and from LMTP (a trusted
// front-end that judged it already) is not judged again. See package
// inbound for the stages.

// checkSession is one check's state for an SMTP session.
type checkSession struct {
	name string
	s    inbound.Session
}

// checksOn reports whether this session's mail goes through checks.
func (s *session) checksOn() bool {
	return len(s.roleChecks()) > 0
}

// roleChecks returns the checks of the session's role: Checks on the
// MX, SubmissionChecks on submission and LMTP.
func (s *session) roleChecks() []inbound.Check {
	if s.opts.Role == RoleMX {
		return s.opts.Checks
	}
	return s.opts.SubmissionChecks
}

// beginChecks starts the checks for the session.
func (s *session) beginChecks() {
	if !s.checksOn() {
		return
	}
	s.iconn = &inbound.Conn{ID: s.id, Remote: s.remote, Helo: s.conn.Hostname(), TLS: s.tls != nil, Hostname: s.opts.Hostname}
	s.connVerdict = &inbound.Verdict{}
	for _, c := range s.roleChecks() {
		t0 := time.Now()
		cs := c.Begin(s.ctx, s.iconn, s.connVerdict)
		s.opts.Metrics.CheckTime(c.Name(), metrics.StageConnect, time.Since(t0))
		if cs != nil {
			s.checks = append(s.checks, checkSession{c.Name(), cs})
		}
	}
}

// endChecks ends the checks' sessions.
func (s *session) endChecks() {
	for _, c := range s.checks {
		if e, ok := c.s.(inbound.Ender); ok {
			e.End()
		}
	}
	s.checks = nil
}

// checkReply returns the reply refusing a command for a result that
// demands Reject or Tempfail, or nil.
func checkReply(r inbound.Result) *smtp.SMTPError {
	switch r.Action {
	case inbound.Reject:
		code, enh := r.Code, r.Enhanced
		if code == 0 {
			code = 550
		}
		if enh == [3]int{} {
			enh = [3]int{5, 7, 1}
		}
		return smtpErr(code, enh[0], enh[1], enh[2], replyText(r, "Message refused"))
	case inbound.Tempfail:
		code, enh := r.Code, r.Enhanced
		if code == 0 {
			code = 451
		}
		if enh == [3]int{} {
			enh = [3]int{4, 7, 1}
		}
		return smtpErr(code, enh[0], enh[1], enh[2], replyText(r, "Try again later"))
	}
	return nil
}

func replyText(r inbound.Result, def string) string {
	if r.Reply != "" {
		return r.Reply
	}
	return def
}

// checksRefuse reports whether v demands that the command be refused, with
// the reply and the log's reason.
func checksRefuse(v *inbound.Verdict) (*smtp.SMTPError, string) {
	r, ok := v.Strongest()
	if !ok {
		return nil, ""
	}
	if e := checkReply(r); e != nil {
		return e, fmt.Sprintf("%s: %s", r.Check, r.Detail)
	}
	return nil, ""
}

// mailChecks runs the checks' MAIL stage for a new transaction. Only
// what the MAIL stage itself demands refuses MAIL; what the session's
// checks found (blocklists at Begin) is enforced at RCPT, as Postfix's
// smtpd_delay_reject does, so that the sender's log names the recipient.
func (s *session) mailChecks(tx *transaction) (*smtp.SMTPError, string) {
	if s.connVerdict == nil {
		return nil, ""
	}
	tx.verdict = s.connVerdict.Clone()
	stage := &inbound.Verdict{}
	for _, c := range s.checks {
		if m, ok := c.s.(inbound.MailStage); ok {
			t0 := time.Now()
			m.Mail(s.ctx, tx.from, stage)
			s.opts.Metrics.CheckTime(c.name, metrics.StageMail, time.Since(t0))
		}
	}
	if e, reason := checksRefuse(stage); e != nil {
		return e, reason
	}
	merge(tx.verdict, stage)
	return nil, ""
}

// rcptChecks runs the checks' RCPT stage for a recipient that resolved
// to res. What a recipient's stage demands applies to that recipient only
// (greylisting tempfails one triplet); what the session or MAIL found
// applies to all.
func (s *session) rcptChecks(tx *transaction, rcpt string, res delivery.Resolution) (*smtp.SMTPError, string) {
	if tx.verdict == nil {
		return nil, ""
	}
	if e, reason := checksRefuse(tx.verdict); e != nil {
		return e, reason
	}
	env := s.envelope(tx)
	env.Rcpts = append(env.Rcpts, rcpt)
	for _, t := range res.Local {
		env.Mailboxes = append(env.Mailboxes, t.Mailbox)
	}
	stage := &inbound.Verdict{}
	for _, c := range s.checks {
		if r, ok := c.s.(inbound.RcptStage); ok {
			t0 := time.Now()
			r.Rcpt(s.ctx, env, rcpt, stage)
			s.opts.Metrics.CheckTime(c.name, metrics.StageRcpt, time.Since(t0))
		}
	}
	if e, reason := checksRefuse(stage); e != nil {
		return e, reason
	}
	merge(tx.verdict, stage)
	return nil, ""
}

// envelope returns the transaction's envelope for the checks.
func (s *session) envelope(tx *transaction) *inbound.Envelope {
	env := &inbound.Envelope{ID: tx.id, From: tx.from}
	for _, rc := range tx.rcpts {
		env.Rcpts = append(env.Rcpts, rc.canon)
		for _, t := range rc.res.Local {
			env.Mailboxes = append(env.Mailboxes, t.Mailbox)
		}
	}
	return env
}

// checkRefusal is a message refused by the checks after DATA.
type checkRefusal struct {
	reply  *smtp.SMTPError
	reason string
}

func (e *checkRefusal) Error() string { return "refused by checks: " + e.reason }

// dataChecks runs the checks' DATA stage over the spooled message. It
// returns the message to deliver (sp, or a replacement spooled by the
// deliverer, which the caller closes when it is not sp), or a
// *checkRefusal.
func (s *session) dataChecks(tx *transaction, sp *delivery.Spool) (*delivery.Spool, error) {
	if tx.verdict == nil {
		return sp, nil
	}
	env := s.envelope(tx)
	var msg inbound.Message = sp
	cur := sp
	for _, c := range s.checks {
		d, ok := c.s.(inbound.DataStage)
		if !ok {
			continue
		}
		t0 := time.Now()
		repl, err := d.Data(s.ctx, env, msg, tx.verdict)
		s.opts.Metrics.CheckTime(c.name, metrics.StageData, time.Since(t0))
		if err != nil {
			s.log.Warn("smtp: check failed", "id", tx.id, "check", c.name, "err", err)
		}
		if repl == nil || repl == msg {
			continue
		}
		// A check changed the message: spool the new one, so that the
		// next checks and the delivery read it again and again.
		ns, err := s.opts.Deliverer.Spool(s.ctx, repl.Reader())
		if cl, ok := repl.(interface{ Close() error }); ok {
			cl.Close()
		}
		if err != nil {
			if cur != sp {
				cur.Close()
			}
			return nil, fmt.Errorf("spooling the message as %s changed it: %w", c.name, err)
		}
		if cur != sp {
			cur.Close()
		}
		cur, msg = ns, ns
	}
	if e, reason := checksRefuse(tx.verdict); e != nil {
		if cur != sp {
			cur.Close()
		}
		return nil, &checkRefusal{reply: e, reason: reason}
	}
	return cur, nil
}

// merge adds what stage found to v.
func merge(v, stage *inbound.Verdict) {
	for _, r := range stage.Results() {
		v.Add(r)
	}
	if h := stage.Headers(); h != "" {
		v.AddHeader(h)
	}
}

// asCheckRefusal returns the reply of a message refused by the checks.
func asCheckRefusal(err error) (*smtp.SMTPError, bool) {
	var cr *checkRefusal
	if errors.As(err, &cr) {
		return cr.reply, true
	}
	return nil, false
}
