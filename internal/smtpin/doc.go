// Package smtpin is postino's mail intake: an adapter over
// github.com/emersion/go-smtp (v0.25.1) that serves three roles from one
// code path:
//
//   - RoleMX (port 25): mail from the Internet for local recipients only.
//     No AUTH is offered; a recipient outside the local domains gets
//     "554 5.7.1 Relay access denied", so postino is never an open relay.
//   - RoleSubmission (587 with STARTTLS, 465 with implicit TLS through
//     ServeTLS; RFC 6409, RFC 8314): AUTH PLAIN or LOGIN is required before
//     MAIL, and is offered only over TLS unless the PlaintextAuth policy
//     allows it (from loopback by default). The sender, and every address
//     of the header From and Sender, must be an address of the
//     authenticated user unless AllowAnySender is set. Remote
//     recipients go to the Relay (the outbound queue).
//   - RoleLMTP (RFC 2033): final delivery for another MTA, with one reply
//     per recipient after the message.
//
// # What go-smtp does
//
// go-smtp owns the wire: the greeting, command parsing, the state checks
// (MAIL before RCPT before DATA), EHLO capabilities (PIPELINING, 8BITMIME,
// ENHANCEDSTATUSCODES, CHUNKING, STARTTLS, SIZE, SMTPUTF8 and DSN when
// enabled), STARTTLS itself, the SASL exchange of AUTH, the DATA
// dot-unstuffing, BDAT chunking (RFC 3030), the MAIL SIZE= check against
// Server.MaxMessageBytes (RFC 1870), the command line length limit, the
// per-command read and write deadlines, and LMTP's per-recipient replies
// through LMTPSession and its StatusCollector. Its DATA reader ends the
// message only at <CRLF>.<CRLF>: a dot line after a bare LF ("\n.\n",
// "\r\n.\n", "\n.\r\n") is message content, never an end of data, which
// is what defeats the 2023 "SMTP smuggling" class (a second message hidden
// in the first one). It closes the connection after 3 syntax errors of its
// own ("500 5.5.1 Too many errors").
//
// # What this package adds
//
//   - Recipient resolution at RCPT time (RFC 5321 §3.3 lets the server
//     reject a recipient there): exact local user, then alias expansion,
//     then plus-addressing (user+tag), then the domain's catch-all; an
//     unknown user of a local domain is "550 5.1.1 User unknown".
//   - The relay policy above, the authenticated sender check, the AUTH
//     policy (AUTH is advertised and accepted only when allowed; refused
//     AUTH is "538 5.7.11", RFC 4954 §6) and our own recipient limit
//     ("452 4.5.3 Too many recipients", RFC 5321 §4.5.3.1.8).
//   - Message data streamed into a spool file (delivery.Deliverer.Spool),
//     never held in memory. On the way, bare CR and bare LF are rewritten
//     as CRLF (RFC 5321 §2.3.8 forbids them; like Postfix's
//     smtpd_forbid_bare_newline=normalize, so that no later hop can read a
//     line end where we did not) and a NUL octet rejects the message with
//     "554 5.6.0" (RFC 6152 forbids NUL even in 8BITMIME data; POP3
//     clients choke on it). A message over the size limit is "552 5.3.4",
//     whether the client announced it with SIZE= or not.
//   - A Received trace header (RFC 5321 §4.4) per stored copy, with the
//     RFC 3848 / RFC 6531 "with" protocol, TLS and authentication comments,
//     folded; delivery.Deliverer.DeliverSpooled adds Return-Path and
//     Delivered-To and returns once the copy is durable. The final 250 (or
//     each LMTP reply) is sent only when every copy is durable.
//   - A limit on errors returned by our session methods (MaxErrors): the
//     command that reaches it is answered "421 4.7.0 Too many errors" and
//     the connection is closed.
//   - Connection limits, total and per client IP, enforced by a wrapping
//     net.Listener that answers "421 4.7.0 Too many connections".
//   - The pregreet test of the MX (PregreetWait, pregreet.go): the same
//     listener holds a new connection back from go-smtp, which writes the
//     greeting as soon as it gets one, and refuses a client that talks
//     meanwhile with "554 5.5.1"; go-smtp needs no change for it.
//   - A DATA timeout distinct from the command timeout, and Shutdown that
//     closes what is left when its context ends.
//
// # Limitations
//
// go-smtp v0.25.1 can panic (recovered and logged, nothing delivered) when
// a client disconnects right after a BDAT command, because the BDAT
// goroutine calls the Session of a closed connection.
// go-smtp does not tell HELO from EHLO, so the "with" protocol of a
// message received after HELO is recorded as ESMTP rather than SMTP. DSN
// parameters are accepted and passed to the Relay; success DSNs for local
// delivery (NOTIFY=SUCCESS) are not generated. Aliases that forward to
// remote addresses keep the original envelope sender (no SRS).
package smtpin
