// Package junk decides what happens to mail the inbound checks find to be
// spam, for each recipient, and marks tagged copies so that the filters of
// a POP3 user's mail program can file them: X-Spam: yes, X-Spam-Score and
// an optional subject prefix.
//
// The score is the sum of the checks' scores (inbound.Verdict.Score). It
// falls in a band: below TagScore clean, then tag, quarantine and, from
// RejectScore, reject. Each user chooses (the userdb_junk extra field of
// the user database, else the configured default):
//
//   - score: the band decides;
//   - tag: spam is tagged, below RejectScore;
//   - quarantine: spam is held, below RejectScore;
//   - reject: spam is refused from TagScore;
//   - off: nothing is done, even above RejectScore.
//
// A check that says a message is spam without a score (rspamd's
// "X-Spam: yes") puts it at least in the tag band; a check that demands
// Quarantine (a milter's quarantine or discard, a virus) has the copy held
// whatever the user chose. The MX refuses the message only when every
// copy would be refused; a copy for a user who refuses spam is otherwise
// quarantined, so that nothing is ever silently dropped.
package junk

import (
	"fmt"
	"strings"

	"github.com/postino-mail/postino/internal/inbound"
)

// Choice is a user's choice for spam.
type Choice int

// The choices.
const (
	// Default is no choice of the user's: the policy's default applies.
	Default Choice = iota
	// Score lets the score's band decide.
	Score
	// Tag delivers spam tagged.
	Tag
	// Quarantine holds spam.
	Quarantine
	// Reject refuses spam.
	Reject
	// Off delivers everything untouched.
	Off
)

var choiceNames = [...]string{"", "score", "tag", "quarantine", "reject", "off"}

// String returns the choice as written in the configuration.
func (c Choice) String() string {
	if c < 0 || int(c) >= len(choiceNames) {
		return "unknown"
	}
	return choiceNames[c]
}

// ParseChoice parses a choice: score, tag, quarantine, reject or off.
func ParseChoice(s string) (Choice, error) {
	for i, n := range choiceNames {
		if i > 0 && strings.EqualFold(s, n) {
			return Choice(i), nil
		}
	}
	return Default, fmt.Errorf("junk: unknown choice %q (score, tag, quarantine, reject or off)", s)
}

// Policy is the configured spam handling ([junk]).
type Policy struct {
	// TagScore, QuarantineScore and RejectScore start the bands.
	TagScore, QuarantineScore, RejectScore float64
	// Default is the choice of users who made none (never Default).
	Default Choice
	// SubjectPrefix is put in front of the Subject of tagged copies; ""
	// leaves it alone.
	SubjectPrefix string
}

// band returns the action of the score's band.
func (p *Policy) band(score float64) inbound.Action {
	switch {
	case score >= p.RejectScore:
		return inbound.Reject
	case score >= p.QuarantineScore:
		return inbound.Quarantine
	case score >= p.TagScore:
		return inbound.Tag
	}
	return inbound.Accept
}

// Decide returns what happens to a user's copy of a message: Accept, Tag,
// Quarantine or Reject. demanded is the strongest action the checks
// demanded (Tag or Quarantine; Accept for none).
func (p *Policy) Decide(score float64, demanded inbound.Action, c Choice) inbound.Action {
	if c == Default {
		c = p.Default
	}
	band := p.band(score)
	if demanded >= inbound.Tag && band < inbound.Tag {
		band = inbound.Tag
	}
	act := inbound.Accept
	switch c {
	case Off:
	case Tag, Quarantine:
		if band == inbound.Reject {
			act = inbound.Reject
		} else if band >= inbound.Tag {
			act = inbound.Tag
			if c == Quarantine {
				act = inbound.Quarantine
			}
		}
	case Reject:
		if band >= inbound.Tag {
			act = inbound.Reject
		}
	default: // Score
		act = band
	}
	if demanded == inbound.Quarantine && act < inbound.Quarantine {
		act = inbound.Quarantine
	}
	return act
}

// FormatScore writes a score as X-Spam-Score carries it: at most two
// decimals ("12.3", "5", "-0.5").
func FormatScore(score float64) string {
	s := fmt.Sprintf("%.2f", score)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		s = "0"
	}
	return s
}
