// Package mailauth authenticates the senders of mail arriving on the MX:
// SPF (RFC 7208) for the envelope sender (and the HELO name for the null
// sender), DKIM signatures (RFC 6376, ed25519 of RFC 8463 included) and
// DMARC (RFC 7489) for the author's domain in the From field. It adds one
// Authentication-Results field (RFC 8601) with postino's authserv-id to
// every message and removes the fields that claim that id from incoming
// mail, so that what a mail reader trusts was written by us.
//
// The Check implements inbound.Check. SPF starts at MAIL FROM in a
// goroutine (so that its DNS lookups run while the client sends RCPT and
// DATA), or runs at once when an SPF fail is refused at MAIL. DKIM and
// DMARC run once the message is received. Every lookup goes through the
// Resolver given (postino's one DNS client).
//
// Outcomes:
//   - SPF fail is refused at MAIL or RCPT (550 5.7.23, RFC 7372 §3.2),
//     tagged as spam, or left to DMARC (the default), as SPFFail says.
//   - DMARC fail under p=reject is refused after DATA with 550 5.7.1;
//     under p=quarantine the message gets a Quarantine result (junk
//     handling acts on it). pct is honoured (RFC 7489 §6.6.4).
//   - A temporary DNS error (temperror) never refuses by itself; mail
//     goes through with the temperror noted (RFC 7208 §8.6 leaves the
//     choice to the receiver). But when DMARC would refuse or quarantine a
//     message and an aligned SPF or DKIM check could not be done because
//     of a temporary error, the message is refused with 451 4.4.3 so the
//     sender retries: the failure may not be real.
//   - One log line per message holds what a DMARC aggregate report (RFC
//     7489 §7.2) would need.
package mailauth
