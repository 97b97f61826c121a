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

-- Failed logins counted by every node (internal/authguard): one row per
-- remote address ('ip:192.0.2.1', IPv6 by its /64 'ip:2001:db8::/64') or
-- account ('user:alice@example.com'), with the failures of the window
-- that started at window_start, and for an address the end of its
-- block. Rows older than the window and not blocked are swept.
CREATE TABLE login_failures (
    key           text        PRIMARY KEY CHECK (key ~ '^(ip|user):' AND octet_length(key) <= 600),
    failures      integer     NOT NULL CHECK (failures > 0),
    window_start  timestamptz NOT NULL,
    blocked_until timestamptz
);
CREATE INDEX login_failures_window_start ON login_failures (window_start);

-- Aliases (internal/aliases): the key is "local@domain", or "@domain"
-- for a domain's catch-all (one target); targets in their order. The
-- whole table is checked (loops, depth) before a change is committed.
CREATE TABLE aliases (
    key        text        PRIMARY KEY CHECK (key <> '' AND position(':' IN key) = 0),
    targets    text[]      NOT NULL CHECK (cardinality(targets) > 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The change counter of aliases, as users_version is of users.
CREATE TABLE aliases_version (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    version bigint  NOT NULL
);
INSERT INTO aliases_version (id, version) VALUES (true, 1);

-- DKIM signing keys (internal/dkim), so that every node signs with the
-- same keys: PKCS#8 PEM, the selector naming the DNS record
-- <selector>._domainkey.<domain>. dkim_version counts the changes.
CREATE TABLE dkim_keys (
    domain      text        NOT NULL CHECK (domain = lower(domain) AND domain <> ''),
    selector    text        NOT NULL CHECK (selector <> ''),
    private_key text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, selector)
);

CREATE TABLE dkim_version (
    id      boolean PRIMARY KEY DEFAULT true CHECK (id),
    version bigint  NOT NULL
);
INSERT INTO dkim_version (id, version) VALUES (true, 1);

-- The ACME cache (internal/acmecert, autocert's keys: the account key,
-- each name's certificate and key, challenge tokens), shared so that a
-- certificate one node obtained is served by all and a challenge token
-- is answered by whichever node the CA reaches. An advisory lock per
-- name lets one node order it at a time.
CREATE TABLE acme_cache (
    key        text        PRIMARY KEY CHECK (key <> ''),
    data       bytea       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
