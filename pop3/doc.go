// Package pop3 implements the Post Office Protocol version 3: a server
// (Server) that serves maildrops from any storage behind the small Backend
// interface, and a client (Client) used by postino's fetch feature and
// tests.
//
// # Implementation notes
//
// Standards implemented, server side:
//
//   - RFC 1939: USER, PASS, STAT, LIST, RETR, DELE, NOOP, RSET, QUIT, TOP,
//     UIDL; the AUTHORIZATION, TRANSACTION and UPDATE states. Every command
//     is looked up in one table that names the states it is valid in and
//     its argument count, and is checked there before its handler runs.
//     APOP is not offered: it needs the server to keep plaintext-equivalent
//     secrets.
//   - RFC 2449: CAPA in both states, with TOP, UIDL, USER, SASL,
//     RESP-CODES, AUTH-RESP-CODE, PIPELINING, EXPIRE, LOGIN-DELAY and
//     IMPLEMENTATION. Pipelined commands are answered in order; replies are
//     flushed only when no further command is waiting, so a pipelined batch
//     is answered in as few writes as possible.
//   - RFC 3206: [AUTH] on credential failures, [SYS/TEMP] and [SYS/PERM] on
//     system faults; RFC 2449 [IN-USE] when the maildrop is locked and
//     [LOGIN-DELAY].
//   - RFC 2595: STLS in the AUTHORIZATION state. Input pipelined behind STLS
//     is discarded, so nothing sent in the clear is executed under TLS.
//     Implicit TLS (RFC 8314) is served by ServeTLS.
//   - RFC 5034: AUTH with PLAIN (RFC 4616) and LOGIN, initial responses,
//     "=" for an empty initial response, "*" to cancel, -ERR for bad base64.
//     AUTH without arguments lists the mechanisms, as several clients
//     expect.
//   - RFC 6856: UTF8 (the "UTF8 USER" capability: UTF-8 user names and
//     passwords) and LANG (English only).
//
// Sizes. LIST and STAT report exactly the octets RETR sends for a message
// before byte-stuffing: the Backend delivers messages in wire form (CRLF
// line ends, ending in CRLF) and the server checks that the octets it sent
// match the listed size, dropping the connection if storage disagrees
// rather than sending a message of a different size.
//
// Limits. Command lines are limited to Server.MaxLine octets (RFC 2449 §4
// asks for at least 255), arguments to 40 characters except user names,
// passwords and SASL responses; NUL, other control characters and invalid
// UTF-8 are refused with -ERR; a run of failed commands and repeated login
// failures end the connection; the autologout timer (RFC 1939 §3, 10
// minutes by default) and a write timeout bound idle and stalled clients.
// None of these ends a session with UPDATE: a dropped, timed-out or
// refused session never deletes anything.
//
// Optional Backend features are found by type assertion: LoginGuard
// (brute-force protection around every mechanism), SCRAMBackend,
// ExpirePolicy (an EXPIRE value per user, RFC 2449 §6.7) and, on a
// Maildrop, UpdateNotifier (told at QUIT which messages were downloaded
// whole, for retention).
//
// Client side, Client speaks the same commands, pipelines RETR when the
// server offers PIPELINING (Client.RetrAll), and returns each -ERR as an
// *Error carrying its response code. It bounds what a hostile server can
// make it hold: response lines (Client.MaxLine), listings (the message
// count of STAT) and messages (the announced size, Client.MaxMessageSize);
// a broken limit closes the connection with a *LimitError.
package pop3
