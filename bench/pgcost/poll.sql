-- A poll session (login, UIDL, QUIT) as postino sends it: the maildrop
-- lock with the snapshot in one pipelined round trip, then the release.
-- Both commit without waiting for the WAL flush (synchronous_commit off
-- for those transactions: the lease rows need no durability).
\set m random(1, :mailboxes)
\startpipeline
SELECT set_config('synchronous_commit', 'off', true);
INSERT INTO maildrop_locks (mailbox, token, node_id, expires_at)
	VALUES ('u' || :m || '@bench.test', 't' || :client_id, 'pgcost', now() + make_interval(secs => 30))
	ON CONFLICT (mailbox) DO UPDATE SET token = excluded.token, node_id = excluded.node_id,
		acquired_at = now(), expires_at = excluded.expires_at
	WHERE maildrop_locks.expires_at <= now()
	RETURNING token;
SELECT m.id, m.pop3_uidl, m.size, m.blob_key, length(m.prefix) > 0, m.internal_date FROM messages m
	JOIN folders f ON f.id = m.folder_id AND f.name = 'INBOX'
	JOIN mailboxes b ON b.id = m.mailbox_id AND b.name = 'u' || :m || '@bench.test'
	WHERE m.vaulted_at IS NULL
	ORDER BY m.uid;
\endpipeline
\startpipeline
SELECT set_config('synchronous_commit', 'off', true);
DELETE FROM maildrop_locks WHERE mailbox = 'u' || :m || '@bench.test' AND token = 't' || :client_id;
\endpipeline
