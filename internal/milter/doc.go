// Package milter runs external mail filters over the milter protocol
// (Sendmail's and Postfix's), as an inbound.Check of the MX: rspamd's
// proxy worker, spamass-milter, clamav-milter and OpenDMARC work as they
// do with Postfix. The protocol itself is github.com/d--j/go-milter's
// client.
//
// The conversation follows the SMTP dialogue, as Postfix's smtpd does, so
// that a filter can refuse a sender or a recipient when it is given: the
// connection to the filter is opened at the first MAIL FROM (connect and
// HELO are sent then), MAIL and each RCPT are sent at their stage, and
// the header, the body and the end of the message are sent once the
// message is received and spooled. A session that sends no mail costs
// the filter nothing.
//
// The filter's replies map onto the verdict:
//
//   - continue and accept add nothing (accept skips the rest of the
//     transaction);
//   - reject is Reject (550 5.7.1, or the filter's own reply code and
//     text); tempfail is Tempfail (451 4.7.1);
//   - discard is Quarantine: postino never drops a message silently, so
//     the message is held where the user and the administrator see it;
//   - quarantine (SMFIR_QUARANTINE) is Quarantine;
//   - header additions, insertions, changes and deletions and a body
//     replacement give a replacement message, streamed from the spool
//     (only a replaced body, which the protocol sends whole, is held in
//     memory);
//   - rspamd's and SpamAssassin's verdict fields among the added headers
//     become a score and a demand: X-Spam-Score, X-Rspamd-Score or the
//     score= of X-Spam-Status is the Result's Score; "X-Spam: yes" (or
//     X-Spam-Flag: YES, or X-Spam-Status: Yes) demands Tag. X-Spam and
//     X-Spam-Score themselves are not copied into the message: junk
//     handling writes its own for each recipient.
//
// Recipient and sender changes (add/delete recipient, change from) are
// offered in the negotiation, as filters such as rspamd refuse an MTA
// that does not offer them, but are not applied: they are logged.
//
// When the filter cannot be reached or breaks the protocol, the filter's
// on_failure setting decides: Tempfail (the sender retries later; the
// default) or accept without this filter.
package milter
