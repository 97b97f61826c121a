-- A delivery of a new message (its content not stored yet) to an existing
-- mailbox, as postino sends it: the blob row and whether its content is
-- stored; the content (one chunk); then the metadata transaction in two
-- pipelined round trips. Every COMMIT is durable (synchronous_commit on).
\set m random(1, :mailboxes)
\set k random(1, 1000000000000)
INSERT INTO blobs (key, size) VALUES (encode(sha256(convert_to(:k || '.' || :client_id, 'UTF8')), 'hex'), length(decode(:payload, 'hex')))
	ON CONFLICT (key) DO UPDATE SET touched_at = now()
	RETURNING EXISTS (SELECT 1 FROM blob_chunks WHERE key = encode(sha256(convert_to(:k || '.' || :client_id, 'UTF8')), 'hex') AND seq = 0);
INSERT INTO blob_chunks (key, seq, data) VALUES (encode(sha256(convert_to(:k || '.' || :client_id, 'UTF8')), 'hex'), 0, decode(:payload, 'hex'))
	ON CONFLICT (key, seq) DO NOTHING;
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
