-- postino schema version 2: the outbound queue, worked by every node. See
-- the package documentation of internal/queue (PGStore).

-- One row per queued message: its octets are a blob (stored once, shared
-- with mailbox copies of the same octets); the blob collector leaves
-- blobs a queued message references alone.
CREATE TABLE queue_messages (
    id         text        PRIMARY KEY,
    blob_key   text        NOT NULL REFERENCES blobs (key),
    size       bigint      NOT NULL CHECK (size > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_messages_blob_key ON queue_messages (blob_key);

-- One row per (message, destination domain): the unit of delivery. entry
-- holds the whole entry (sender, DSN parameters, recipients with their
-- status and last reply, attempts); next_attempt and domain repeat parts
-- of it for queries. A claim is a lease: a random token, the node holding
-- it and an expiry in the database's clock, renewed while the delivery
-- runs; an expired lease may be taken over by any node.
CREATE TABLE queue_entries (
    id           text        PRIMARY KEY,
    message_id   text        NOT NULL REFERENCES queue_messages (id),
    domain       text        NOT NULL,
    next_attempt timestamptz NOT NULL,
    entry        jsonb       NOT NULL,
    lease_token  text,
    lease_node   text,
    lease_until  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_entries_message_id ON queue_entries (message_id);
CREATE INDEX queue_entries_next_attempt ON queue_entries (next_attempt);

-- Each recipient of each entry, with its status (pending, sent, failed)
-- and last reply: a view of the entries, for monitoring in SQL.
CREATE VIEW queue_recipients AS
SELECT e.id AS entry_id, e.message_id, r.n AS position,
       r.rcpt ->> 'addr' AS address, r.rcpt ->> 'status' AS status,
       r.rcpt ->> 'reply' AS last_reply, (r.rcpt ->> 'updated')::timestamptz AS updated_at
FROM queue_entries e, jsonb_array_elements(e.entry -> 'rcpts') WITH ORDINALITY AS r (rcpt, n);
