// Package antispam holds the MX's spam defences at the door, as inbound
// checks (package inbound):
//
//   - DNSBL: DNS blocklists and allowlists (RFC 5782) with zones, answer
//     filters and weights in Postfix's postscreen_dnsbl_sites syntax;
//     the weighted sum refuses the client at RCPT or adds to the spam
//     score.
//   - FCrDNS: forward-confirmed reverse DNS of the client's address.
//   - HELO: the syntax of the EHLO/HELO name (RFC 5321 §4.1.1.1) and
//     clients that claim to be this server.
//   - Greylist: optional greylisting of (client network, sender,
//     recipient) triplets, with a persistent Store.
//
// Refusing clients that talk before the greeting (pregreet) lives in
// package smtpin, whose listener writes the greeting.
//
// DNS work starts when the session begins, all lookups at once, and is
// awaited at the first RCPT (blocklists that refuse) or once the message
// is received (scores), so it runs while the client sends its envelope
// and message. A DNS failure never refuses mail: the check then adds
// nothing.
package antispam
