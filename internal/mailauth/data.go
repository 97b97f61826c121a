package mailauth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"

	"github.com/postino-mail/postino/internal/inbound"
)

// Data implements inbound.DataStage: it verifies the DKIM signatures,
// evaluates DMARC, adds the Authentication-Results field and returns the
// message without the fields that claim our authserv-id.
func (s *session) Data(ctx context.Context, env *inbound.Envelope, msg inbound.Message, v *inbound.Verdict) (inbound.Message, error) {
	h, err := readHeader(msg.Reader())
	if err != nil {
		var he *HeaderError
		if errors.As(err, &he) {
			// A header we cannot read whole could hide a forged
			// Authentication-Results field past what was read.
			v.Add(inbound.Result{Check: "mailauth", Action: inbound.Reject, Code: 552, Enhanced: [3]int{5, 6, 0},
				Reply: "Message header too large or malformed", Detail: he.Reason})
			return nil, nil
		}
		return nil, err
	}

	// SPF (started at MAIL FROM).
	sc := s.spf
	if sc == nil { // no MAIL stage ran (cannot happen on the MX)
		sc = s.startSPF(ctx, env.From)
		s.spf = sc
	}
	spfRes, spfErr := sc.wait(ctx)
	infos := []resinfo{spfInfo(sc, spfRes, spfErr)}
	if spfRes == spf.Fail && s.c.o.SPFFail == SPFFailTag {
		v.Add(inbound.Result{Check: "spf", Action: inbound.Tag, Detail: "spf=fail for " + sc.identity})
	}

	// DKIM.
	dctx, cancel := context.WithTimeout(ctx, s.c.o.Timeout)
	dk := verifyDKIM(dctx, s.c.o.Resolver, h, msg.Reader())
	cancel()
	if len(dk) == 0 {
		infos = append(infos, resinfo{method: "dkim", result: "none"})
	}
	for _, d := range dk {
		ri := resinfo{method: "dkim", result: d.result, comment: d.reason}
		if d.domain != "" {
			ri.props = append(ri.props, [2]string{"header.d", d.domain})
		}
		if d.selector != "" {
			ri.props = append(ri.props, [2]string{"header.s", d.selector})
		}
		// RFC 6008 §4: the first 8 characters of b= tell signatures of
		// one domain apart.
		if d.b != "" {
			ri.props = append(ri.props, [2]string{"header.b", d.b[:min(8, len(d.b))]})
		}
		infos = append(infos, ri)
	}

	// DMARC.
	var dm dmarcOutcome
	from, ferr := authorDomain(h)
	if ferr != nil {
		// RFC 7489 §6.6.1: without a single author domain DMARC cannot
		// be evaluated; such a message is refused when DMARC is
		// enforced (it is malformed per RFC 5322 §3.6 too).
		dm = dmarcOutcome{result: "permerror", reason: ferr.Error(), applied: dmarc.PolicyNone}
		if s.c.o.DMARC {
			dm.applied = dmarc.PolicyReject
		}
		infos = append(infos, resinfo{method: "dmarc", result: dm.result, comment: dm.reason})
	} else {
		mctx, cancel := context.WithTimeout(ctx, s.c.o.Timeout)
		dm = s.c.evalDMARC(mctx, from, sc, string(spfRes), dk)
		cancel()
		ri := resinfo{method: "dmarc", result: dm.result, comment: dm.reason}
		if dm.policy != "" {
			ri.comment = "p=" + string(dm.policy) + " dis=" + strings.ToUpper(string(dm.applied))
		}
		ri.props = [][2]string{{"header.from", from}}
		infos = append(infos, ri)
	}
	v.AddHeader(formatAuthRes(s.c.o.AuthservID, infos))
	s.enforce(dm, v)
	s.log(env, sc, spfRes, dk, dm)

	return s.strip(msg, h)
}

// spfInfo is the resinfo of the SPF result (RFC 8601 §2.7.2): the checked
// identity as smtp.mailfrom, or smtp.helo for the null sender.
func spfInfo(sc *spfCheck, r spf.Result, err error) resinfo {
	ri := resinfo{method: "spf", result: string(r)}
	// The comment names what went wrong, but not the DNS server.
	switch {
	case r == spf.PermError && err != nil:
		ri.comment = err.Error()
	case r == spf.TempError:
		ri.comment = "DNS error"
	}
	if sc.helo {
		ri.props = [][2]string{{"smtp.helo", sc.domain}}
	} else if sc.identity != "" {
		ri.props = [][2]string{{"smtp.mailfrom", sc.identity}}
	}
	return ri
}

// enforce adds the result DMARC demands.
func (s *session) enforce(dm dmarcOutcome, v *inbound.Verdict) {
	if !s.c.o.DMARC || dm.applied == dmarc.PolicyNone || dm.applied == "" {
		return
	}
	detail := fmt.Sprintf("dmarc=%s header.from=%s policy=%s", dm.result, dm.from, dm.applied)
	if dm.reason != "" {
		detail += " (" + dm.reason + ")"
	}
	if dm.maybeTemp {
		// An aligned check could not be done: the sender retries
		// rather than having its mail refused or held for a failure
		// that may not be real (RFC 7208 §8.6: 451 4.4.3).
		v.Add(inbound.Result{Check: "dmarc", Action: inbound.Tempfail, Code: 451, Enhanced: [3]int{4, 4, 3},
			Reply: "Temporary DNS error while checking the sender; try again later", Detail: detail})
		return
	}
	switch dm.applied {
	case dmarc.PolicyReject:
		// RFC 7489 §6.7, §10.3: reject after DATA with 5.7.1.
		reply := "Message refused by the DMARC policy of " + dm.from
		if dm.from == "" {
			reply = "Message has no single author address (RFC 7489 §6.6.1)"
		}
		v.Add(inbound.Result{Check: "dmarc", Action: inbound.Reject, Code: 550, Enhanced: [3]int{5, 7, 1}, Reply: reply, Detail: detail})
	case dmarc.PolicyQuarantine:
		v.Add(inbound.Result{Check: "dmarc", Action: inbound.Quarantine, Detail: detail})
	}
}

// log writes the line a DMARC aggregate report would be built from (RFC
// 7489 §7.2.1.1: source IP, header from, envelope from, the SPF and DKIM
// domains and results, the policy and the disposition).
func (s *session) log(env *inbound.Envelope, sc *spfCheck, spfRes spf.Result, dk []dkimResult, dm dmarcOutcome) {
	var dkims []string
	for _, d := range dk {
		dkims = append(dkims, d.domain+"/"+d.selector+"="+d.result)
	}
	s.c.o.Logger.Info("mailauth: message",
		"id", env.ID,
		"source_ip", s.conn.Remote.String(),
		"helo", s.conn.Helo,
		"envelope_from", env.From,
		"header_from", dm.from,
		"spf_domain", sc.domain,
		"spf_scope", map[bool]string{true: "helo", false: "mfrom"}[sc.helo],
		"spf", string(spfRes),
		"dkim", strings.Join(dkims, " "),
		"dmarc", dm.result,
		"policy", string(dm.policy),
		"disposition", string(dm.applied),
		"sampled_out", dm.sampledOut,
		"enforced", s.c.o.DMARC,
	)
}

// strip returns msg without the Authentication-Results fields that claim
// our authserv-id, or nil when it has none. RFC 8601 §5: an MTA must
// remove such fields from incoming mail, or mail readers that trust our
// results would trust the forgery; the id compares case-insensitively
// (§2.5). A field whose id cannot be read is removed too: it could claim
// ours for a reader more lenient than us.
func (s *session) strip(msg inbound.Message, h *header) (inbound.Message, error) {
	var kept bytes.Buffer
	removed := false
	for _, f := range h.fields {
		if f.is("Authentication-Results") {
			id, err := ParseAuthservID(f.value())
			if err != nil || strings.EqualFold(id, s.c.o.AuthservID) {
				removed = true
				continue
			}
		}
		kept.Write(f.raw)
	}
	if !removed {
		return nil, nil
	}
	// The empty line that ends the header, when there was one.
	kept.Write(h.end)
	return &stripped{orig: msg, header: kept.Bytes(), skip: h.size}, nil
}

// stripped is a message with a new header block: the header, then the
// original message after its first skip octets (its header block).
type stripped struct {
	orig   inbound.Message
	header []byte
	skip   int64
}

// Reader implements inbound.Message, streaming the body from the
// original.
func (m *stripped) Reader() io.Reader {
	r := m.orig.Reader()
	if _, err := io.CopyN(io.Discard, r, m.skip); err != nil {
		return io.MultiReader(bytes.NewReader(m.header), errReader{err})
	}
	return io.MultiReader(bytes.NewReader(m.header), r)
}

// Size implements inbound.Message.
func (m *stripped) Size() int64 { return m.orig.Size() - m.skip + int64(len(m.header)) }

// errReader fails every read.
type errReader struct{ err error }

// Read implements io.Reader.
func (e errReader) Read([]byte) (int, error) { return 0, e.err }
