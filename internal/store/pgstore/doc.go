// Package pgstore is postino's mail store for a cluster: mailboxes in
// PostgreSQL, message contents in a content-addressed blob store
// (PostgreSQL itself or an S3 API), and the POP3 maildrop lock as a lease
// row that holds across every node sharing the database. It honours the
// contract of internal/store.
//
// # Schema
//
// The schema is created and upgraded by the versioned SQL files embedded
// from migrations/ (NNNN_name.sql). Migrate applies those the database
// lacks, each in its own transaction, under a PostgreSQL advisory lock so
// that many nodes starting at once are safe; the applied versions are
// rows of schema_version. A node refuses a database whose schema is newer
// than the newest it knows (ErrSchemaTooNew).
//
// Version 1 holds:
//
//   - mailboxes: one row per mailbox (canonical address), with the
//     counter of the POP3 UIDLs postino assigns;
//   - folders: per mailbox (POP3 sees INBOX), with IMAP4rev2's
//     UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ, so that IMAP can be added
//     without migrating existing data;
//   - messages: folder, IMAP UID (assigned at delivery), POP3 UIDL
//     (unique in the mailbox), exact wire size, internal date, flags,
//     modseq and the key of the blob holding the octets;
//   - pop3_uidls: every UIDL a mailbox ever had, so none is reused;
//   - blobs and blob_chunks: blob keys (hex SHA-256 of the wire form),
//     sizes and touch times; the octets in 256 KiB chunks when blobs are
//     kept in PostgreSQL;
//   - maildrop_locks: one lease row per locked mailbox (holder token,
//     node, expiry).
//
// Version 2 holds the outbound queue, worked by every node (see
// queue.PGStore): queue_messages (one per message, with the key of the
// blob holding its body) and queue_entries (one per destination domain,
// the entry as jsonb, next_attempt, and the claim as a lease: token,
// node, expiry), with the view queue_recipients (each recipient's
// status and last reply). The blob collector leaves blobs a queued
// message references alone.
//
// Version 3 holds what the nodes share about accounts:
//
//   - users (Users, an auth.Store): one row per user with its password
//     hash and the passwd-file's further fields, and users_version, a
//     change counter each lookup reads first;
//   - aliases and aliases_version (Aliases, an aliases.Source);
//   - login_failures: failed logins per address and account with their
//     window and block end (internal/authguard/pgguard);
//   - dkim_keys and dkim_version (DKIMKeys, a dkim.KeyStore);
//   - acme_cache (ACMECache, an autocert.Cache with a per-name advisory
//     lock, Lock).
//
// Version 4 adds the state of `postino fetch` (fetch_accounts,
// fetch_journal, fetch_leases; see internal/fetch, "State in
// PostgreSQL") and, on messages, downloaded_at and vaulted_at for
// pop3.expire and the deleted-mail vault (retention.go).
//
// Versions are numbered per feature and depend on version 1 only, so a
// build may lack some numbers: Migrate applies every embedded version the
// database lacks, in order.
//
// # Delivery
//
// Deliver converts the message to its wire form while spooling it to a
// temporary file, computing its size and SHA-256. It then touches the
// blob row (inserting it if new), writes the octets to the blob store
// unless they are already there, and only then runs the metadata
// transaction: it touches the blob row again under its row lock, checking
// that the row was touched within the grace period, assigns the IMAP UID
// and the POP3 UIDL and inserts the message. A message delivered to many
// mailboxes is stored once. With the octets in PostgreSQL, a content of up
// to 64 KiB is written by the statement that touches its row; the
// metadata transaction of a delivery to an existing mailbox is pipelined
// in two round trips (pgx batches), so that such a delivery costs three.
// A first delivery to a mailbox (which creates it) and an import use the
// transaction above.
//
// When the answer to the COMMIT is lost (the server, or its connection,
// died after receiving it; a standby was promoted), Deliver asks the
// database, for a bounded time, whether the message row is there, and
// reports success if it is: a failure would make the sender deliver the
// message again. The pipelined delivery does the same when its second
// batch, which carries the COMMIT, fails.
//
// # Reading
//
// OpenMaildrop takes the lock and reads the snapshot (the messages of
// INBOX not in the vault, with their internal dates) in one round trip.
// With the octets in PostgreSQL, opening a message of at most one chunk
// also reads the following small messages of the snapshot, up to one
// chunk's size in all, so that a client downloading its maildrop in order
// gets several per round trip.
//
// # Blob collection
//
// CollectBlobs removes blobs no message references and nobody touched
// for longer than the grace period. It locks each candidate row (FOR
// UPDATE SKIP LOCKED), deletes the octets, then the row. A delivery in
// flight has touched the row within the grace period, and its metadata
// transaction takes the same row lock before it references the blob: it
// either waits for the collector and finds the row gone (it then stores
// the blob again), or touches it first so that the collector skips it.
//
// # Maildrop lock
//
// OpenMaildrop inserts a lease row for the mailbox, or takes over an
// expired one, with an expiry of now() + LockTTL in the database's clock.
// One renewer per Store extends all of the node's leases in a single
// UPDATE every LockTTL/3, so sessions hold no database connection while
// idle. A session whose lease has not been renewed by LockTTL minus a
// margin, measured from the start of the last successful renewal, is
// ended (its Maildrop's Done channel closes and its context is
// cancelled) before the lease can expire in the database and pass to
// another node. Commit deletes inside a transaction that first checks,
// under the row's lock, that this session still holds an unexpired lease
// (fencing); otherwise nothing is applied.
package pgstore
