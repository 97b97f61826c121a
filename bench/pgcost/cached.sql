-- A download session whose contents are in the node's cache: lock and
-- snapshot, the messages' prefixes (their per-recipient header lines),
-- then the release with the record of the downloads.
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
SELECT id, prefix, NULL::bytea, false FROM messages WHERE id = ANY (ARRAY(SELECT id FROM messages WHERE mailbox_id = :m));
\startpipeline
SELECT set_config('synchronous_commit', 'off', true);
UPDATE messages SET downloaded_at = now()
	WHERE id = ANY (ARRAY(SELECT id FROM messages WHERE mailbox_id = :m)) AND downloaded_at IS NULL AND vaulted_at IS NULL;
DELETE FROM maildrop_locks WHERE mailbox = 'u' || :m || '@bench.test' AND token = 't' || :client_id;
\endpipeline
