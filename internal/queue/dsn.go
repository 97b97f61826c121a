package queue

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/postino-mail/postino/internal/crlf"
)

// dsnAction is the kind of a delivery status notification.
type dsnAction int

const (
	actionFailed    dsnAction = iota // permanent failure or expiry
	actionDelayed                    // delay warning
	actionDelivered                  // NOTIFY=SUCCESS: delivered locally or relayed to a non-DSN server
)

// maxHeaderBytes bounds the original header section returned in a DSN.
const maxHeaderBytes = 256 << 10

// notifyAllows applies RFC 3461 §4.1: NEVER suppresses every DSN; without
// NOTIFY, FAILURE and DELAY are reported (the usual default) but not
// SUCCESS.
func notifyAllows(notify []string, kind string) bool {
	if len(notify) == 0 {
		return kind != "SUCCESS"
	}
	for _, n := range notify {
		if n == "NEVER" {
			return false
		}
	}
	for _, n := range notify {
		if n == kind {
			return true
		}
	}
	return false
}

// report queues the DSN of the given kind for the recipients of e it
// concerns, if any. It never reports to the null sender, nor about a DSN
// (RFC 5321 §4.5.5, RFC 3461 §6.2: no notification loops).
func (q *Queue) report(ctx context.Context, e *Entry, action dsnAction) error {
	if e.From == "" || e.DSN {
		return nil
	}
	var rcpts []*Recipient
	suffix := ""
	for i := range e.Recipients {
		r := &e.Recipients[i]
		var ok bool
		switch action {
		case actionFailed:
			ok, suffix = r.Status == StatusFailed && notifyAllows(r.Notify, "FAILURE"), "F"
		case actionDelayed:
			ok, suffix = r.Status == StatusPending && notifyAllows(r.Notify, "DELAY"), "D"
		case actionDelivered:
			// RFC 3461 §6.2.6: "relayed" when the next hop cannot take
			// over the request; a DSN-capable one reports itself.
			ok, suffix = r.Status == StatusSent && notifyAllows(r.Notify, "SUCCESS") && (e.Local || r.NoRemoteDSN), "S"
		}
		if ok {
			rcpts = append(rcpts, r)
		}
	}
	if len(rcpts) == 0 {
		return nil
	}
	id := e.ID + "-" + suffix
	to := e.From
	if q.options().SRS != nil {
		// A forwarded message's sender was rewritten with SRS: its DSN goes
		// to the original sender (if the address is still valid).
		if orig, err := q.options().SRS.Reverse(to); err == nil {
			to = orig
		}
	}
	body, err := q.buildDSN(ctx, e, action, rcpts, id, to)
	if err != nil {
		q.options().Logger.Error("queue: building DSN", "id", e.MessageID, "entry", e.ID, "err", err)
		return err
	}
	if err := q.enqueueDSN(ctx, id, to, body); err != nil {
		q.options().Logger.Error("queue: queueing DSN", "id", e.MessageID, "entry", e.ID, "err", err)
		return err
	}
	q.options().Logger.Info("queue: DSN queued", "id", e.MessageID, "entry", e.ID, "dsn", id, "to", to, "rcpts", len(rcpts))
	return nil
}

// enqueueDSN queues a DSN with the null sender, signed as DSNDomain: the
// DSN is postino's own message. Queueing the same id twice is a no-op.
func (q *Queue) enqueueDSN(ctx context.Context, id, to string, body []byte) error {
	eid := entryID(id, 1)
	if _, err := q.store.Get(ctx, eid); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	// RFC 5321 §2.3.8: the returned header or message comes from the
	// queue's copy, which a message queued by an older version may hold
	// with bare CR or LF; the DSN is normalised, as Enqueue does, before
	// it is signed.
	if norm, err := io.ReadAll(crlf.NewNormalizer(bytes.NewReader(body), false)); err == nil {
		body = norm
	}
	if sig := q.sign(ctx, q.dsnDomain(), bytes.NewReader(body)); sig != "" {
		body = append([]byte(sig), body...)
	}
	now := q.options().Clock.Now()
	d := domainOf(to)
	hdr, _, _ := bytes.Cut(body, []byte("\r\n\r\n"))
	e := &Entry{
		Version:      entryVersion,
		ID:           eid,
		MessageID:    id,
		Domain:       d,
		Local:        d != "" && q.options().IsLocalDomain(d),
		Size:         int64(len(body)),
		Need8BitMIME: !isASCII(string(body)),
		NeedSMTPUTF8: !isASCII(to) || !isASCII(string(hdr)),
		DSN:          true,
		Arrival:      now,
		Expires:      now.Add(q.options().MaxLifetime),
		NextAttempt:  now,
		Recipients:   []Recipient{{Addr: to, Status: StatusPending}},
	}
	if err := q.store.AddMessage(ctx, id, bytes.NewReader(body), []*Entry{e}); err != nil {
		return err
	}
	q.Kick()
	return nil
}

// dsnDomain returns the domain DSNs are signed as (Options.DSNDomain).
func (q *Queue) dsnDomain() string {
	if q.options().DSNDomain != "" {
		return q.options().DSNDomain
	}
	for d := strings.ToLower(q.options().Hostname); strings.Contains(d, "."); _, d, _ = strings.Cut(d, ".") {
		if q.options().IsLocalDomain(d) {
			return d
		}
	}
	return ""
}

// buildDSN writes an RFC 3464 report: multipart/report (RFC 6522) with a
// human-readable part, message/delivery-status, and the original message
// (RET=FULL, failures only, up to BounceSizeLimit) or its header section.
// With non-ASCII addresses or text the RFC 6533 message/global-* types
// are used.
func (q *Queue) buildDSN(ctx context.Context, e *Entry, action dsnAction, rcpts []*Recipient, id, to string) ([]byte, error) {
	now := q.options().Clock.Now()
	host := q.options().Hostname
	var b [12]byte
	rand.Read(b[:])
	boundary := "=_postino_" + hex.EncodeToString(b[:])

	// The original message: all of it, or its header section. RFC 3461
	// §4.3: RET=FULL is a request. A DSN is postino's own message, signed
	// as ours, so it returns the whole text only of mail a user of ours
	// submitted; mail from anyone else (the MX) gets its header section,
	// as RET=HDRS, or a bounce would have us sign text of the sender's
	// choosing.
	full := action == actionFailed && e.Return == "FULL" && e.AuthUser != "" && e.Size <= q.options().BounceSizeLimit
	var orig bytes.Buffer
	if rc, err := q.store.OpenMessage(ctx, e.MessageID); err == nil {
		if full {
			_, err = io.Copy(&orig, io.LimitReader(rc, q.options().BounceSizeLimit+1))
		} else {
			err = copyHeader(&orig, rc)
		}
		rc.Close()
		if err != nil {
			return nil, err
		}
	} else {
		return nil, err
	}
	origBytes := orig.Bytes()
	if !full {
		origBytes = append(bytes.TrimRight(origBytes, "\r\n"), "\r\n"...)
	} else if !bytes.HasSuffix(origBytes, []byte("\n")) {
		origBytes = append(origBytes, "\r\n"...)
	}

	var st strings.Builder // the message/delivery-status body
	fmt.Fprintf(&st, "Reporting-MTA: dns; %s\r\n", host)
	if e.EnvelopeID != "" {
		fmt.Fprintf(&st, "Original-Envelope-Id: %s\r\n", oneLine(e.EnvelopeID))
	}
	fmt.Fprintf(&st, "Arrival-Date: %s\r\n", e.Arrival.Format(time.RFC1123Z))
	var human strings.Builder
	for _, r := range rcpts {
		st.WriteString("\r\n")
		if r.ORcpt != "" {
			typ := r.ORcptType
			if typ == "" {
				typ = "rfc822"
			}
			fmt.Fprintf(&st, "Original-Recipient: %s; %s\r\n", strings.ToLower(typ), oneLine(r.ORcpt))
		}
		fmt.Fprintf(&st, "Final-Recipient: %s; %s\r\n", addrType(r.Addr), oneLine(r.Addr))
		act, status := "failed", r.Enhanced
		switch action {
		case actionDelayed:
			act = "delayed"
			if status == "" || status[0] != '4' {
				status = "4.0.0"
			}
		case actionDelivered:
			act, status = "relayed", "2.0.0"
			if e.Local {
				act = "delivered"
			}
		default:
			if status == "" || status[0] == '2' {
				status = "5.0.0"
			}
		}
		fmt.Fprintf(&st, "Action: %s\r\nStatus: %s\r\n", act, status)
		if r.RemoteMTA != "" && r.RemoteMTA != "local" {
			fmt.Fprintf(&st, "Remote-MTA: dns; %s\r\n", oneLine(r.RemoteMTA))
		}
		if r.Reply != "" {
			dt := "smtp"
			if r.Code == 0 {
				dt = "X-Postino"
			}
			fmt.Fprintf(&st, "Diagnostic-Code: %s; %s\r\n", dt, oneLine(r.Reply))
		}
		if !r.Updated.IsZero() {
			fmt.Fprintf(&st, "Last-Attempt-Date: %s\r\n", r.Updated.Format(time.RFC1123Z))
		}
		if action == actionDelayed {
			fmt.Fprintf(&st, "Will-Retry-Until: %s\r\n", e.Expires.Format(time.RFC1123Z))
		}
		fmt.Fprintf(&human, "<%s>: %s\r\n", oneLine(r.Addr), oneLine(r.Reply))
	}

	subject, intro := "", ""
	switch action {
	case actionFailed:
		subject = "Undelivered Mail Returned to Sender"
		intro = "I'm sorry to have to inform you that your message could not\r\nbe delivered to one or more recipients. It's attached below.\r\n"
	case actionDelayed:
		subject = "Delayed Mail (still being retried)"
		intro = fmt.Sprintf("Your message could not be delivered for %s.\r\nIt will be retried until it is %s old.\r\n",
			now.Sub(e.Arrival).Round(time.Minute), q.options().MaxLifetime.Round(time.Hour))
	case actionDelivered:
		subject = "Successful Mail Delivery Report"
		intro = "Your message was successfully delivered to the destination(s)\r\nlisted below.\r\n"
	}
	global := !isASCII(st.String()) || !isASCII(human.String()) || !isASCII(string(origBytes))
	stType, hdrType, msgType := "message/delivery-status", "text/rfc822-headers", "message/rfc822"
	if global {
		// RFC 6533 §6: non-ASCII in the report or the returned message.
		stType, hdrType, msgType = "message/global-delivery-status", "message/global-headers", "message/global"
	}

	var m bytes.Buffer
	fmt.Fprintf(&m, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n", host)
	fmt.Fprintf(&m, "To: <%s>\r\n", oneLine(to))
	fmt.Fprintf(&m, "Subject: %s\r\n", subject)
	fmt.Fprintf(&m, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&m, "Message-ID: <%s@%s>\r\n", id, host)
	m.WriteString("Auto-Submitted: auto-replied\r\n") // RFC 3834 §5
	m.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&m, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n", boundary)
	m.WriteString("This is a MIME-encapsulated message.\r\n\r\n")

	fmt.Fprintf(&m, "--%s\r\n", boundary)
	m.WriteString("Content-Description: Notification\r\n")
	if isASCII(human.String()) {
		m.WriteString("Content-Type: text/plain; charset=us-ascii\r\n\r\n")
	} else {
		m.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n")
	}
	fmt.Fprintf(&m, "This is the mail system at host %s.\r\n\r\n%s\r\n", host, intro)
	m.WriteString("For further assistance, please send mail to postmaster.\r\n\r\n")
	m.WriteString("                   The mail system\r\n\r\n")
	m.WriteString(human.String())
	m.WriteString("\r\n")

	fmt.Fprintf(&m, "--%s\r\n", boundary)
	fmt.Fprintf(&m, "Content-Description: Delivery report\r\nContent-Type: %s\r\n\r\n", stType)
	m.WriteString(st.String())
	m.WriteString("\r\n")

	fmt.Fprintf(&m, "--%s\r\n", boundary)
	if full {
		fmt.Fprintf(&m, "Content-Description: Undelivered Message\r\nContent-Type: %s\r\n", msgType)
		if !isASCII(string(origBytes)) {
			m.WriteString("Content-Transfer-Encoding: 8bit\r\n")
		}
	} else {
		fmt.Fprintf(&m, "Content-Description: Undelivered Message Headers\r\nContent-Type: %s\r\n", hdrType)
	}
	m.WriteString("\r\n")
	m.Write(origBytes)
	fmt.Fprintf(&m, "\r\n--%s--\r\n", boundary)
	return m.Bytes(), nil
}

// copyHeader copies the header section of a message (up to the empty
// line, at most maxHeaderBytes).
func copyHeader(w io.Writer, r io.Reader) error {
	br := bufio.NewReader(io.LimitReader(r, maxHeaderBytes))
	for {
		line, err := br.ReadString('\n')
		if strings.TrimRight(line, "\r\n") == "" {
			return nil
		}
		if !strings.HasSuffix(line, "\n") {
			line += "\r\n"
		}
		io.WriteString(w, strings.TrimRight(line, "\r\n")+"\r\n")
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// addrType is the RFC 3464 address type of an address: utf-8 (RFC 6533)
// when it is not ASCII.
func addrType(addr string) string {
	if isASCII(addr) {
		return "rfc822"
	}
	return "utf-8"
}

// oneLine makes a value safe for one header line.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, s)
}
