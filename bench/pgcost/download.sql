-- A download session of a mailbox of small messages read from the
-- database (login, UIDL, LIST, RETR of each, QUIT), as on a node whose
-- content cache does not have them yet: lock and snapshot, the read-ahead
-- of the messages' prefixes and contents (one query while they fit in
-- 256 KiB), then the release with the record of the downloads.
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
SELECT m.id, m.prefix, c.data, c.key IS NOT NULL FROM messages m
	LEFT JOIN blob_chunks c ON c.key = m.blob_key AND c.seq = 0 AND m.id = ANY (ARRAY(SELECT id FROM messages WHERE mailbox_id = :m))
	WHERE m.id = ANY (ARRAY(SELECT id FROM messages WHERE mailbox_id = :m));
\startpipeline
SELECT set_config('synchronous_commit', 'off', true);
UPDATE messages SET downloaded_at = now()
	WHERE id = ANY (ARRAY(SELECT id FROM messages WHERE mailbox_id = :m)) AND downloaded_at IS NULL AND vaulted_at IS NULL;
DELETE FROM maildrop_locks WHERE mailbox = 'u' || :m || '@bench.test' AND token = 't' || :client_id;
\endpipeline
