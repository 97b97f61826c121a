#!/usr/bin/env bash
# run.sh — what postino's PostgreSQL sessions cost the database: pgbench
# replays the statements of a poll session, a download session from the
# node's content cache, one from the database, and a delivery (poll.sql,
# cached.sql, download.sql, deliver.sql: the same statements and
# round trips as internal/store/pgstore) against a durable PostgreSQL
# (fsync, synchronous_commit on) started here, and measures the database's
# CPU time per session. Results: sessions/s at the given client counts, the
# latency per session, and sessions per database core-second — the figure
# bench/CLUSTER.md projects capacity from.
#
# Run from anywhere in the repository (as root or as a user that may run
# initdb):
#
#     flock /tmp/postino-bench.lock bench/pgcost/run.sh
#
# Knobs: DUR (seconds per run, 10), CLIENTS ("1 8"), MAILBOXES (500: each
# with 20 messages of 10 KiB of random octets, 100 MB of blobs), KEEP=1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../compare/lib.sh
source "$REPO/bench/compare/lib.sh"
DUR=${DUR:-10}
CLIENTS=${CLIENTS:-"1 8"}
MAILBOXES=${MAILBOXES:-500}

T=$(mktemp -d /tmp/pgcost.XXXXXX)
chmod 755 "$T"
cleanup() {
	if [ -n "${PG_DIR:-}" ]; then stop_pg; fi
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT

start_pg "$T/pg"
for f in "$REPO"/internal/store/pgstore/migrations/0*.sql; do pg_psql postino -f "$f" >/dev/null; done
echo "seeding $MAILBOXES mailboxes x 20 messages of 10 KiB" >&2
pg_psql postino <<SQL
INSERT INTO mailboxes (name, uidl_next) SELECT 'u' || i || '@bench.test', 21 FROM generate_series(1, $MAILBOXES) i ORDER BY i;
INSERT INTO folders (mailbox_id, name, uidvalidity, uidnext, highestmodseq) SELECT id, 'INBOX', 1, 21, 21 FROM mailboxes ORDER BY id;
CREATE TEMP TABLE seed AS SELECT mb, n, encode(sha256(convert_to(mb || '/' || n, 'UTF8')), 'hex') AS key,
	(SELECT decode(string_agg(md5(random()::text || mb || n || g), ''), 'hex') FROM generate_series(1, 640) g) AS data
	FROM generate_series(1, $MAILBOXES) mb, generate_series(1, 20) n;
INSERT INTO blobs (key, size) SELECT key, length(data) FROM seed;
INSERT INTO blob_chunks (key, seq, data) SELECT key, 0, data FROM seed;
INSERT INTO messages (mailbox_id, folder_id, uid, pop3_uidl, size, modseq, prefix, blob_key)
	SELECT mb, mb, n, 'P' || mb || '.' || n, length(data) + 40, n, convert_to('Delivered-To: u' || mb || '@bench.test' || chr(13) || chr(10), 'UTF8'), key FROM seed ORDER BY mb, n;
INSERT INTO pop3_uidls (mailbox_id, uidl) SELECT mb, 'P' || mb || '.' || n FROM seed;
VACUUM ANALYZE;
SQL
PAYLOAD=$(head -c 10240 /dev/urandom | od -An -v -tx1 | tr -d ' \n')

echo "| session | clients | sessions/s | latency ms | round trips | PostgreSQL CPU µs per session | sessions per DB core-second |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for script in poll cached download deliver; do
	case $script in poll) rt=2 ;; cached | download | deliver) rt=3 ;; esac
	for c in $CLIENTS; do
		# Backends that ended are counted once the postmaster has reaped
		# them: let the previous run's go before each reading.
		sleep 2
		c0=$(pg_cpu)
		out=$("$PGBIN/pgbench" -n -M prepared -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "$c" -j "$((c < 2 ? c : 2))" -T "$DUR" -r \
			-D mailboxes="$MAILBOXES" -D payload="$PAYLOAD" -f "$HERE/$script.sql" postino 2>&1)
		sleep 2
		c1=$(pg_cpu)
		echo "$out" >"$T/$script-$c.out"
		n=$(echo "$out" | awk '/number of transactions actually processed/ {split($NF, a, "/"); print a[1]}')
		tps=$(echo "$out" | awk '/^tps = / {print $3}')
		lat=$(echo "$out" | awk '/^latency average/ {print $4}')
		failed=$(echo "$out" | awk '/number of failed transactions/ {print $5}')
		awk -v s="$script" -v c="$c" -v n="$n" -v tps="$tps" -v lat="$lat" -v rt="$rt" -v c0="$c0" -v c1="$c1" -v f="$failed" 'BEGIN {
			cpu = c1 - c0
			printf "| %s | %d | %.0f | %.2f | %d | %.0f | %.0f |%s\n", s, c, tps, lat, rt, cpu * 1e6 / n, n / cpu, (f + 0 > 0 ? " " f " failed" : "")
		}'
	done
done
echo
echo "Per-statement latency, 8 clients (pgbench -r, ms):"
for script in poll cached download deliver; do
	f=$T/$script-${CLIENTS##* }.out
	echo
	echo "$script:"
	echo '```'
	sed -n '/statement latencies in milliseconds/,$p' "$f" | tail -n +2 | cut -c1-120
	echo '```'
done
echo
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), fsync = on, synchronous_commit = on, shared_buffers = 256MB, loopback TCP;"
echo "$(nproc) cores shared with pgbench (and anything else running); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
