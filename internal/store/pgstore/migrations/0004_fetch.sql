-- postino schema version 4: the state of `postino fetch` shared by every
-- node (fetch.state = "postgres"). See the package documentation of
-- internal/fetch ("State in PostgreSQL"). Depends on version 1 only.

-- One row per fetch account (its configured name): the snapshot of its
-- state, the JSON document `postino fetch` keeps in NAME.state otherwise
-- (remote UIDL → first seen, delivered, pending intent, DELE sent,
-- expunged).
CREATE TABLE fetch_accounts (
    account    text        PRIMARY KEY CHECK (account <> ''),
    snapshot   jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The records written since the snapshot (intent, done, abandon, dele,
-- expunged), in order: what NAME.journal holds otherwise. Each is
-- committed before the step it announces starts; the snapshot folds them
-- in and deletes them.
CREATE TABLE fetch_journal (
    seq     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account text        NOT NULL,
    entry   jsonb       NOT NULL,
    at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fetch_journal_account ON fetch_journal (account, seq);

-- One lease per account being fetched: only its holder (token) fetches
-- the account and writes its state; it renews expires_at while fetching,
-- and an expired lease (a dead node's) may be taken over by anyone.
CREATE TABLE fetch_leases (
    account     text        PRIMARY KEY,
    token       text        NOT NULL,
    node_id     text        NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- Retention (pop3.expire) and the deleted-mail vault (pop3.vault_days),
-- as the Maildir store keeps them: downloaded_at is when a POP3 session
-- that ended with QUIT first sent the whole message; vaulted_at, when
-- set, is when a commit moved the message into the vault (POP3 and the
-- quota no longer see it; `postino vault restore` clears it, and the
-- sweep deletes it pop3.vault_days later).
ALTER TABLE messages ADD COLUMN downloaded_at timestamptz, ADD COLUMN vaulted_at timestamptz;
CREATE INDEX messages_vaulted ON messages (mailbox_id, vaulted_at) WHERE vaulted_at IS NOT NULL;
