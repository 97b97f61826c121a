package smtpin

import (
	"fmt"
	"io"
	"strings"

	"github.com/postino-mail/postino/internal/delivery"
	"github.com/postino-mail/postino/internal/inbound"
	"github.com/postino-mail/postino/internal/junk"
	"github.com/postino-mail/postino/internal/quarantine"
)

// Junk is the MX's spam handling (Options.Junk): what the checks' score
// and demands do to each recipient's copy (package junk).
type Junk struct {
	// Policy holds the score bands, the default choice and the subject
	// prefix.
	Policy junk.Policy
	// Choice returns a mailbox's own choice (junk.Default for none).
	Choice func(mailbox string) junk.Choice
	// Quarantine holds quarantined copies; nil tags them instead.
	Quarantine *quarantine.Store
}

// junkPlan is what happens to each copy of a judged message.
type junkPlan struct {
	score   float64
	local   map[string]inbound.Action // by mailbox: Accept, Tag or Quarantine
	remote  inbound.Action            // Accept or Tag
	reasons string
}

// errSpam refuses a message every recipient refuses as spam.
var errSpam = smtpErr(550, 5, 7, 1, "Message refused as spam")

// planJunk decides the fate of each copy from the checks' verdict. It
// returns a *checkRefusal when every copy would be refused (RFC 5321 has
// one reply for the message after DATA); a copy for a user who refuses
// spam is otherwise quarantined, never dropped.
func (s *session) planJunk(tx *transaction) (*junkPlan, error) {
	j := s.opts.Junk
	if j == nil || tx.verdict == nil {
		return nil, nil
	}
	score := tx.verdict.Score()
	demanded := inbound.Accept
	if r, ok := tx.verdict.Strongest(); ok && r.Action <= inbound.Quarantine {
		demanded = r.Action
	}
	var reasons []string
	for _, r := range tx.verdict.Results() {
		if r.Score != 0 || r.Action != inbound.Accept {
			reasons = append(reasons, fmt.Sprintf("%s %s %s", r.Check, junk.FormatScore(r.Score), r.Detail))
		}
	}
	p := &junkPlan{score: score, local: map[string]inbound.Action{}, reasons: strings.Join(reasons, "; ")}
	all, remote := true, false
	for _, rc := range tx.rcpts {
		for _, t := range rc.res.Local {
			if _, done := p.local[t.Mailbox]; done {
				continue
			}
			c := junk.Default
			if j.Choice != nil {
				c = j.Choice(t.Mailbox)
			}
			a := j.Policy.Decide(score, demanded, c)
			all = all && a == inbound.Reject
			if a == inbound.Reject {
				a = inbound.Quarantine
			}
			if a == inbound.Quarantine && j.Quarantine == nil {
				a = inbound.Tag
			}
			p.local[t.Mailbox] = a
		}
		if len(rc.res.Remote) > 0 {
			remote = true
		}
	}
	if remote {
		// Forwarded copies: the default choice; they can only be tagged.
		a := j.Policy.Decide(score, demanded, junk.Default)
		all = all && a == inbound.Reject
		if a >= inbound.Tag {
			p.remote = inbound.Tag
		}
	}
	if all {
		return nil, &checkRefusal{reply: errSpam, reason: fmt.Sprintf("junk: score %s: %s", junk.FormatScore(score), p.reasons)}
	}
	return p, nil
}

// action returns what happens to mailbox's copy.
func (p *junkPlan) action(mailbox string) inbound.Action {
	if p == nil {
		return inbound.Accept
	}
	return p.local[mailbox]
}

// deliverLocal stores one copy as the plan says: as it is, tagged, or in
// the quarantine.
func (s *session) deliverLocal(tx *transaction, p *junkPlan, t delivery.Target, sp *delivery.Spool, hdr string) error {
	d := s.opts.Deliverer
	ctx := delivery.WithMessageID(s.ctx, tx.id)
	switch p.action(t.Mailbox) {
	case inbound.Quarantine:
		id, err := s.opts.Junk.Quarantine.Hold(ctx, quarantine.Meta{User: t.Mailbox, Sender: tx.from, Recipient: t.DeliveredTo, Score: p.score, Reasons: p.reasons},
			io.MultiReader(strings.NewReader(hdr), sp.Reader()))
		if err == nil {
			s.log.Info("smtp: quarantined", "id", tx.id, "mailbox", t.Mailbox, "quarantine_id", id, "score", p.score)
		}
		return err
	case inbound.Tag:
		r := junk.Tagged(sp.Reader(), p.score, s.opts.Junk.Policy.SubjectPrefix)
		defer r.Close()
		_, err := d.DeliverStream(ctx, tx.from, t.DeliveredTo, t.Mailbox, r, hdr)
		if err == nil {
			s.log.Info("smtp: delivered tagged as spam", "id", tx.id, "mailbox", t.Mailbox, "score", p.score)
		}
		return err
	}
	_, err := d.DeliverSpooled(ctx, tx.from, t.DeliveredTo, t.Mailbox, sp, hdr)
	return err
}

// relayReader returns the message to relay to remote recipients: tagged
// when the plan says so. close releases it.
func (p *junkPlan) relayReader(sp *delivery.Spool, prefix string) (r io.Reader, close func()) {
	if p == nil || p.remote != inbound.Tag {
		return sp.Reader(), func() {}
	}
	tr := junk.Tagged(sp.Reader(), p.score, prefix)
	return tr, func() { tr.Close() }
}
