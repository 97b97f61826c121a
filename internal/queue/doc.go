// Package queue is postino's outbound mail queue: mail submitted for
// remote domains is stored durably, delivered to the recipient domain's
// mail exchangers over SMTP, retried while the remote side fails
// temporarily, and reported back to the sender with a delivery status
// notification when it finally cannot be delivered.
//
// # Storage
//
// A message is stored once (its body, DKIM-signed at Enqueue when the
// sender's domain is local) and has one Entry per destination domain: the
// unit of scheduling, claiming and delivery, with per-recipient status
// (pending, sent, failed, with the last reply), the attempt history, the
// next attempt time, the DSN parameters and what the message needs of the
// server (8BITMIME when it has octets over 127, SMTPUTF8 when an address
// or a header field is not ASCII). The Store interface is the contract;
// FileStore keeps it under DATA/queue (see FileStore for the layout), with
// write-to-tmp, fsync, rename and folder fsync for every change, and
// flock(2) claims that the kernel drops when a process dies, so that a
// kill -9 loses nothing and leaves nothing locked. Several processes can
// share the folder (the server's worker and the `postino queue` commands).
// PGStore keeps it in PostgreSQL for a cluster: every node works it, claims
// are leases renewed while a delivery runs and taken over once expired,
// and NOTIFY wakes the nodes when mail is queued.
//
// Delivery is at least once: an entry is written before a transaction
// (InFlight) and after it (each recipient's outcome). A recipient is sent
// again after a crash only when the remote 2xx reply to the final dot was
// not yet written down: when the process died between the reply and the
// fsync of the entry, or the reply never arrived (see Queue.process).
//
// # Delivery
//
//   - Routing (RFC 5321 §5.1): MX records in preference order, equal
//     preferences shuffled; the domain itself (A/AAAA) when it has no MX; a
//     null MX (RFC 7505) fails at once with 556 5.1.10; a domain or host
//     that does not exist is a bounce, a DNS failure a retry; MX hosts
//     naming ourselves and those after them are dropped. Every address of
//     every host is tried in turn until one greets us. Or, with
//     Options.Smarthost, one relay host with optional AUTH and required
//     TLS.
//   - Opportunistic STARTTLS (RFC 3207; RFC 7435), falling back to
//     cleartext if the handshake fails; PIPELINING (RFC 2920) of MAIL,
//     RCPT and DATA; SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC
//     6531) and DSN (RFC 3461: NOTIFY, ORCPT, RET, ENVID passed on). A
//     message that needs SMTPUTF8 or 8BITMIME from a server that lacks it,
//     or that exceeds its SIZE, bounces (5.6.7, 5.6.3, 5.3.4) instead of
//     being sent broken.
//   - One worker per entry at a time, at most Options.MaxPerDomain per
//     destination and Options.MaxConcurrent in all; a worker keeps its
//     connection for the next entry of the same destination.
//   - The SMTP client is our own (client.go): go-smtp's client has no
//     pipelining and no context. Replies that are not SMTP, a connection
//     that drops or hangs, are temporary failures.
//
// # Transport security
//
// For MX hosts (not fixed routes nor the smarthost), security.go applies
// the recipient domain's policy: DANE (RFC 7672) when the MX answer and
// the host's TLSA records are DNSSEC-validated (the AD bit of a
// SecureResolver), else MTA-STS (RFC 8461, Options.MTASTS), else
// opportunistic STARTTLS. Under DANE or an MTA-STS policy in enforce mode
// STARTTLS is mandatory, the certificate is checked after the handshake
// and before any mail is sent (TLSA match; WebPKI against Options.TLSRoots
// for the MX host name), and a host that fails is skipped with a
// temporary failure (4.7.4, 4.7.5): the mail waits for a host that
// passes. In MTA-STS testing mode the failures are only reported. Each
// session's outcome goes to Options.TLSReports for TLS-RPT (RFC 8460).
// RFC 7672 §2.2.2's check that the MX host's address records are
// themselves validated is not made: the TLSA records live under the
// host's name and are validated on their own.
//
// # Retries and bounces
//
// 4xx replies and connection failures leave a recipient pending; the next
// attempt comes after MinBackoff, doubling up to MaxBackoff (Postfix: 300
// s, 4000 s); after MaxLifetime (5 days) the recipients still pending
// fail. A 5xx reply fails a recipient at once. When an entry has no
// pending recipient, an RFC 3464 DSN (multipart/report, RFC 6522) goes to
// the sender for the failed recipients whose NOTIFY allows it, with the
// original header section or, for RET=FULL, the whole message, and the
// ENVID as Original-Envelope-Id; a "relayed"/"delivered" DSN answers
// NOTIFY=SUCCESS when the next hop does not speak DSN. DSNs have the null
// sender and are queued like any message, so they reach a local sender's
// mailbox through Options.Local and a remote one through SMTP. A message
// from the null sender, or a DSN, is never bounced (RFC 5321 §4.5.5).
// Delay warnings (Options.DelayWarning) are off by default, as in
// Postfix. Queue.Delete removes mail without a bounce, as Postfix's
// postsuper -d does.
//
// # Limitations
//
// Domain names are used as given: an internationalized domain is not
// converted to A-labels before the DNS lookup. 8-bit messages are not
// converted to quoted-printable for servers without 8BITMIME (they
// bounce). Connections are reused per destination domain, not across
// domains that share an MX host. FileStore's claims work only between
// processes of one machine (PGStore's across machines). Run rereads every entry when the queue
// changed, which is fine for thousands of entries, not millions.
package queue
