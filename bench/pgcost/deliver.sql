-- A delivery of a new message (its content not stored yet, 10 KiB) to an
-- existing mailbox, as postino sends it: the blob row with the content in
-- one statement, committed without waiting for the WAL flush (the
-- metadata's COMMIT flushes it); then the metadata transaction in two
-- pipelined round trips, whose COMMIT is durable (synchronous_commit on).
\set m random(1, :mailboxes)
\set k random(1, 1000000000000)
\startpipeline
SELECT set_config('synchronous_commit', 'off', true);
WITH b AS (INSERT INTO blobs (key, size) VALUES (encode(sha256(convert_to(:k || '.' || :client_id, 'UTF8')), 'hex'), length(decode(:payload, 'hex')))
	ON CONFLICT (key) DO UPDATE SET touched_at = now() RETURNING key)
	INSERT INTO blob_chunks (key, seq, data) SELECT key, 0, decode(:payload, 'hex') FROM b
	ON CONFLICT (key, seq) DO NOTHING;
\endpipeline
\startpipeline
BEGIN;
UPDATE blobs SET touched_at = now()
	WHERE key = encode(sha256(convert_to(:k || '.' || :client_id, 'UTF8')), 'hex') AND touched_at > now() - make_interval(secs => 3600);
UPDATE mailboxes SET uidl_next = uidl_next + 1 WHERE name = 'u' || :m || '@bench.test' RETURNING id, uidl_next - 1;
UPDATE folders SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1
	WHERE mailbox_id = (SELECT id FROM mailboxes WHERE name = 'u' || :m || '@bench.test') AND name = 'INBOX'
	RETURNING id, uidnext - 1, highestmodseq;
\endpipeline
\startpipeline
WITH u AS (INSERT INTO pop3_uidls (mailbox_id, uidl) VALUES (:m, 'K' || :k || '.' || :client_id) ON CONFLICT DO NOTHING RETURNING 1)
	INSERT INTO messages (mailbox_id, folder_id, uid, pop3_uidl, size, internal_date, modseq, prefix, blob_key)
	SELECT :m, f.id, f.uidnext - 1, 'K' || :k || '.' || :client_id, length(decode(:payload, 'hex')) + 40, now(), f.highestmodseq,
		convert_to('Delivered-To: u' || :m || '@bench.test' || chr(13) || chr(10), 'UTF8'), encode(sha256(convert_to(:k || '.' || :client_id, 'UTF8')), 'hex')
	FROM u, folders f WHERE f.mailbox_id = :m AND f.name = 'INBOX';
COMMIT;
\endpipeline
