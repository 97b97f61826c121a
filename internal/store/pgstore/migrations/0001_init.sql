-- postino schema version 1: mailboxes, folders, messages, blobs, maildrop
-- leases. See the package documentation of internal/store/pgstore.

-- One row per mailbox (a canonical user address). uidl_next numbers the
-- POP3 UIDLs postino assigns; it only grows.
CREATE TABLE mailboxes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    uidl_next  bigint      NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Folders of a mailbox (POP3 sees INBOX only). uidvalidity, uidnext and
-- highestmodseq are IMAP4rev2's (RFC 9051 §2.3.1.1, RFC 7162 §3.1.2).
CREATE TABLE folders (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailbox_id    bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    name          text   NOT NULL,
    uidvalidity   bigint NOT NULL CHECK (uidvalidity BETWEEN 1 AND 4294967295),
    uidnext       bigint NOT NULL DEFAULT 1,
    highestmodseq bigint NOT NULL DEFAULT 1,
    UNIQUE (mailbox_id, name)
);

-- Message contents, content-addressed: key is the hex SHA-256 of the
-- wire form (CRLF line ends). The octets live in the blob store (the
-- blob_chunks table or S3). touched_at is set by every delivery that is
-- about to reference the blob; the collector removes only blobs that no
-- message references and that nobody touched for a grace period.
CREATE TABLE blobs (
    key        text        PRIMARY KEY CHECK (key ~ '^[0-9a-f]{64}$'),
    size       bigint      NOT NULL CHECK (size > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    touched_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX blobs_touched_at ON blobs (touched_at);

-- The octets of blobs stored in PostgreSQL, in chunks of at most 256 KiB.
CREATE TABLE blob_chunks (
    key  text    NOT NULL,
    seq  integer NOT NULL,
    data bytea   NOT NULL,
    PRIMARY KEY (key, seq)
);

-- Messages. uid is the IMAP UID in its folder, assigned at delivery;
-- pop3_uidl the POP3 unique-id (RFC 1939 §7), unique in the mailbox;
-- size the exact wire size in octets. The message is prefix (the header
-- lines added for this recipient, in wire form) followed by the blob,
-- which every recipient of the message shares.
CREATE TABLE messages (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailbox_id    bigint      NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    folder_id     bigint      NOT NULL REFERENCES folders (id) ON DELETE CASCADE,
    uid           bigint      NOT NULL,
    pop3_uidl     text        NOT NULL CHECK (pop3_uidl ~ '^[!-~]{1,70}$'),
    size          bigint      NOT NULL CHECK (size > 0),
    internal_date timestamptz NOT NULL DEFAULT now(),
    flags         text[]      NOT NULL DEFAULT '{}',
    modseq        bigint      NOT NULL,
    prefix        bytea       NOT NULL DEFAULT '',
    blob_key      text        NOT NULL REFERENCES blobs (key),
    UNIQUE (folder_id, uid),
    UNIQUE (mailbox_id, pop3_uidl)
);
CREATE INDEX messages_blob_key ON messages (blob_key);

-- Every POP3 UIDL a mailbox ever had, so that none is given again after
-- its message is deleted (RFC 1939 §7: never reused), imported ones
-- included.
CREATE TABLE pop3_uidls (
    mailbox_id bigint NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
    uidl       text   NOT NULL,
    PRIMARY KEY (mailbox_id, uidl)
);

-- Maildrop locks (RFC 1939 §4) as leases: the holder renews expires_at;
-- an expired row may be taken over by anyone.
CREATE TABLE maildrop_locks (
    mailbox     text        PRIMARY KEY,
    token       text        NOT NULL,
    node_id     text        NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX maildrop_locks_node ON maildrop_locks (node_id);
