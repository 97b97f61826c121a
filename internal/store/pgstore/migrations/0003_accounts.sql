-- postino schema version 3: accounts shared by every node. Users (the
-- passwd-file's entries), and the change counter that tells each node
-- when to re-read them. See the package documentation of
-- internal/store/pgstore. Depends only on version 1.

-- One row per user: the canonical address, the {SCHEME}hash password
-- (the schemes of the passwd-file) and the fields after it
-- (uid:gid:gecos:home:shell:extra_fields, among them userdb_quota_rule,
-- userdb_junk and userdb_pop3_expire), NULL when there are none.
CREATE TABLE users (
    address    text        PRIMARY KEY CHECK (address <> '' AND position(':' IN address) = 0),
    password   text        NOT NULL CHECK (password <> '' AND position(':' IN password) = 0),
    extra      text[],
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A single row whose counter grows with every change of users, so that
-- a node re-reads the table only when it changed.
CREATE TABLE users_version (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    version bigint  NOT NULL
);
INSERT INTO users_version (id, version) VALUES (true, 1);
