// Package fetch is postino's POP3 fetch client (`postino fetch`): it
// downloads remote mailboxes into a local postino mailbox, a Maildir, an
// mbox file or an MDA command, and delivers every message exactly once,
// even when the process is killed at any instant.
//
// # Exit codes
//
// ExitCode maps a run's outcome onto the exit status of `postino fetch`:
//
//	0  new mail: at least one message was delivered, no error
//	1  no new mail, no error
//	2  network error or temporary server error ([SYS/TEMP]), after retries
//	3  authentication failed (or no password available)
//	4  protocol error: an unexpected answer from the server
//	5  TLS failure: no TLS, STLS missing, certificate not trusted or not
//	   matching the pinned fingerprint
//	6  delivery failed: the destination refused or failed to store a
//	   message (it stays on the server)
//	7  locked: another fetch of the account is running (or, with the
//	   state in PostgreSQL, the run lost its lease), or the server
//	   answered [IN-USE] or [LOGIN-DELAY]
//	64 usage error, 78 configuration error
//
// With several accounts the highest error code (2–7) wins; without errors
// the result is 0 if any account had new mail, else 1. In daemon mode the
// process runs until SIGINT or SIGTERM and then exits 0.
//
// # State
//
// Each account has, in the state directory (fetch.state_dir, default
// DATA/fetch, or $XDG_STATE_HOME/postino, ~/.local/state/postino, without
// a data directory):
//
//   - NAME.state, a JSON snapshot replaced atomically (written to
//     NAME.state.tmp, fsync'd, renamed, directory fsync'd):
//
//     {"version": 1, "account": "work", "server": "USER@HOST:PORT",
//     "updated": TIME, "messages": {KEY: {"first_seen": TIME,
//     "delivered_at": TIME, "dest": "new/1700000000.M1P2Q3X....host",
//     "sha256": HEX, "size": 1234, "pending": true,
//     "body_sha256": HEX, "body_size": 1100, "gone_since": TIME,
//     "dele_at": TIME, "expunged_at": TIME}}}
//
//     KEY is the UIDL; on servers without UIDL it is
//     "hdr:<first 32 hex digits of SHA-256 of TOP n 0>-<occurrence>", and
//     without TOP either "sha256:<SHA-256 of the message>", with
//     "-<occurrence>" from the second of identical messages listed
//     together. A UIDL that RFC 1939 §7 does not allow (not 1 to 70
//     characters 0x21–0x7E: spaces, a bare CR, non-ASCII) or that the
//     server lists for several messages is not used: the message is
//     identified by its content ("sha256:" key) with a warning, and is
//     downloaded again on each run while it stays on the server.
//     delivered_at is absent for messages seen but not delivered
//     (skipped, or first seen in an interrupted run); pending marks an
//     intent without a done record, and body_sha256 and body_size (the
//     SHA-256 and length of its body with LF line ends) are kept while it
//     is pending; gone_since marks messages no longer on the server,
//     which are forgotten after 90 days; dele_at marks messages postino
//     fetch deleted, and expunged_at those whose deletion a successful
//     QUIT confirmed (forgotten 90 days later).
//
//   - NAME.journal, the records written between snapshots, one per line:
//     "CRC32HEX JSON\n" where JSON is {"op": "intent"|"done"|"abandon"|
//     "dele"|"expunged", "key", "at", "sha256", "size", "dest",
//     "body_sha256", "body_size"}. An intent line is fsync'd (with every
//     line before it) before its delivery begins; done and dele lines are
//     fsync'd before any DELE; expunged lines right after QUIT. A torn or
//     corrupt line (the process died while appending it) is ignored: its
//     step had not started. The journal is folded into a new snapshot at
//     the start and end of every run, and then removed.
//
//   - NAME.lock, flock'ed for the whole run, so that a cron job and a
//     daemon never fetch one account at the same time (exit code 7).
//
// # Exactly once
//
// Every delivered message gets a first header field
// "X-Postino-Fetch: ACCOUNT KEY SHA256", where SHA256 is the digest of the
// message as downloaded. Messages are downloaded (RETR pipelined) and
// delivered in batches of at most 64 messages and 8 MiB (a larger message
// is a batch of its own), so that a crash costs at most one batch's
// downloads; for each batch:
//
//  1. RETR each message into the spool file (unlinked, so that a crash
//     leaves nothing), hashing it (SHA-256 of the whole message, of its
//     header section and of its body).
//  2. Append the intent records of the batch (key, SHA-256, size, and the
//     SHA-256 and length of the body with LF line ends) and fsync them
//     once, with every line before them.
//  3. Deliver each message, durably: Maildir writes tmp/, fsyncs the file
//     and renames it into new/ (new/ is fsync'd once for the batch, after
//     its last message); mbox appends under an fcntl lock and a dot-lock
//     and fsyncs; local delivery fsyncs file and directory; an MDA's exit
//     status 0 is taken as durable. A Maildir directory, a parent of it or
//     an mbox file created on the way has its parent directory fsync'd, so
//     that the copy cannot vanish in a power failure that the done record
//     survives.
//  4. Append the done records of the batch and fsync them once. A done
//     record lost in a crash leaves its intent, which recovery settles as
//     in the next paragraph.
//  5. Once every batch is settled, with the delete policy, DELE (after
//     durable dele records, pipelined when the server allows); deletions take effect at QUIT,
//     which RFC 1939 makes all-or-nothing on the server, and its +OK is
//     recorded (expunged).
//
// A kill before 2 leaves no trace: the message is downloaded again. A kill
// between 2 and 4 (or a crash that loses an unsynced done record) leaves a
// pending intent; the next run, before
// connecting, asks the destination (Destination.Find) for the message's
// marker: Maildir by the token of the ID in the file name (a name in new/
// or cur/ is complete, rename being atomic, and its directory is fsync'd
// before the done record, since a kill may have come before the batch's
// fsync of new/; a leftover in tmp/ is removed), mbox by scanning for the marker and checking that the entry
// decodes to the recorded SHA-256, or that its body has the recorded
// length and SHA-256 (a mail reader may have rewritten the header); any
// other entry with the marker is a partial copy, never taken as
// delivered: it is truncated away when it ends the file, and otherwise
// left in place with a warning. The local mailbox is searched by reading
// header sections newest first. Found: the done record is written and the
// message is not delivered again. Not found: the intent is abandoned and the message,
// still on the server since DELE waits for step 4, is downloaded again.
// A kill after 4 leaves a done record: the message is never delivered
// again, and is deleted by a later run if the policy says so (a kill
// before QUIT's answer leaves it on the server; a QUIT that succeeded
// leaves nothing to do). Nothing is ever deleted from the server before
// its done record is durable, so nothing is lost; nothing with a done
// record or a found marker is delivered twice.
//
// The MDA destination cannot be inspected: after an interruption between
// starting the MDA and recording its success, exactly-once needs
// mda_check (a command that answers whether $POSTINO_FETCH_ID was
// delivered); without it that one message is delivered again and a warning
// names it: at-least-once for that window only, and never a loss. The MDA
// is killed with postino (PR_SET_PDEATHSIG) so it cannot finish unseen
// after the check.
//
// UIDL changes. A delivered message whose key leaves the listing is kept
// as "gone" for 90 days. A new key whose downloaded content has the
// SHA-256 of a gone record that postino fetch never deleted is the same
// message renamed by the server: it is recorded as delivered and not
// delivered again (one extra download, no duplicate). Content identifies
// the same server message under a changed UIDL only while that message
// is still on the server: a message deleted with DELE (the delete or
// delete_after policy) is never matched, so a later message with the same
// content is a new message and is delivered. Likewise a "sha256:" key
// whose message was deleted (a successful QUIT) is new when its content
// comes back. Two identical messages present at the same time are two
// messages.
//
// Servers without UIDL (warned about): messages are identified by the
// SHA-256 of their header section, obtained with TOP n 0, plus an
// occurrence number for identical headers; headers carry Received,
// Message-ID and Date fields, so they are unique in practice. Without TOP
// as well, every message is downloaded on each run and identified by the
// SHA-256 of its content. With such servers, delete = true is advisable.
//
// # State in PostgreSQL
//
// With fetch.state = "postgres", Fetcher.States is a PGStates and the
// state of every account lives in the database of the cluster (schema
// version 4 of internal/store/pgstore), keyed by the account's name, so
// that `postino fetch --daemon` can run on every node:
//
//   - fetch_accounts holds the snapshot (the JSON document NAME.state
//     holds otherwise), fetch_journal the records written since (the
//     lines of NAME.journal: intent, done, abandon, dele, expunged), in
//     order. A record that the file protocol fsyncs is committed at the
//     same point instead; those it leaves unsynced are held in memory
//     until the next commit. The snapshot is replaced, and the records it
//     folds in deleted, in one transaction.
//   - fetch_leases replaces NAME.lock: a run inserts the account's lease
//     row (or takes over an expired one) with an expiry of the lease
//     length (storage.lock_ttl) in the database's clock, else fails with
//     ErrStateLocked (exit code 7). It renews the lease every third of its
//     length and deletes the row at the end. A lease not renewed for its
//     length minus a quarter, counted from the start of the last
//     successful renewal, is given up: StateFile.Lost closes, the run's
//     context is cancelled and it ends with ErrLeaseLost (exit code 7),
//     before the lease can expire in the database and pass to another
//     node. A dead node's lease expires; the next run to take it settles
//     the intents the dead run left exactly as after a crash (Find at the
//     destination).
//   - Every commit first checks, in its transaction and under the lease
//     row's lock, that the run's lease is still its own and unexpired
//     (fencing): a run whose lease passed to another node commits nothing
//     more, so it can neither start a delivery (no intent) nor send a
//     DELE (no dele record) after the takeover.
//
// The delivery and its done record are not one transaction, even for a
// local: destination in PostgreSQL: the intent protocol already covers
// the gap between them, for every kind of destination alike.
//
// # Other behaviour
//
// RETR and DELE are pipelined when the server announces PIPELINING
// (RFC 2449 §6.6). Each command has
// a timeout (Account.Timeout); a network error ends the session without
// QUIT (so the server deletes nothing) and the run reconnects up to
// Fetcher.Retries times, resuming where it stopped; so does an [IN-USE]
// answer, which a server gives while it is still closing a session that
// was cut. Authentication
// follows the server's offer: SCRAM-SHA-256, then APOP on a connection
// without TLS, SASL PLAIN, USER/PASS, LOGIN. TLS is verified against the
// system roots (plus Account.RootCAs), or a pinned SHA-256 certificate
// fingerprint replaces that verification, or Account.Insecure disables it.
//
// A crash-test hook, the environment variable named by DebugKillEnv, makes
// the process SIGKILL itself at a named step; the tests use it to kill at
// every step boundary, in addition to kills after random delays.
package fetch
