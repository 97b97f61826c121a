#!/usr/bin/env bash
# pop3.sh — postino's POP3 server side by side with Dovecot, on loopback.
#
# Run as root on Debian 12 from anywhere in the repository:
#
#     bench/compare/pop3.sh
#
# Both servers read the SAME user database (a Dovecot passwd-file with
# {SHA512-CRYPT} hashes) and the SAME Maildir files, and are driven by the
# same client (bench/pop3load, built on postino's pop3 client) with the same
# settings. Runs alternate between the servers (ROUNDS x {postino, dovecot});
# the medians are compared. Results go to bench/results/pop3-DATE.md and
# bench/RESULTS.md, and are printed.
#
# Knobs (environment): DUR (seconds per run, 10), ROUNDS (3), ROUNDS_TLS (2),
# CONC (client
# sessions in parallel, 16), IDLE (idle sessions, 1000), BIG ("1000 10000
# 100000", sizes of the large mailboxes for login+STAT), KEEP=1 keeps the
# temporary folder. TUNED_ONLY=1 runs only the downloads against the tuned
# Dovecot, plain and implicit TLS (phase 4b), prints the medians and leaves
# bench/RESULTS.md alone; PERF=FILE records postino's CPU profile with perf(1)
# during those downloads (perf report -i FILE). BACKEND=postgres runs
# downloads and polls against three servers in turn: postino on Maildir,
# postino on PostgreSQL (a durable cluster started here: fsync and
# synchronous_commit on; the same messages imported by postino db import)
# and the tuned Dovecot, measures PostgreSQL's CPU per session and writes
# bench/results/pop3-pg-DATE-HHMM.md (see bench/CLUSTER.md).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

DUR=${DUR:-10}
ROUNDS=${ROUNDS:-3}
ROUNDS_TLS=${ROUNDS_TLS:-2}
CONC=${CONC:-16}
IDLE=${IDLE:-1000}
BIG=${BIG:-"1000 10000 100000"}
TUNED_ONLY=${TUNED_ONLY:-0}
BACKEND=${BACKEND:-maildir}
case $BACKEND in maildir | postgres) ;; *) echo "BACKEND: maildir or postgres" >&2; exit 1 ;; esac
if [ "$TUNED_ONLY" = 1 ] || [ "$BACKEND" = postgres ]; then BIG="" IDLE=64; fi
NUSERS=64
PASS='bench-Pa55word'
VUID=5000 # uid/gid of the virtual mail user (Dovecot refuses root)

REPO=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root (Dovecot must start as root)" >&2; exit 1; }

log() { printf '\n== %s\n' "$*" >&2; }

# --- packages ----------------------------------------------------------------
need_pkgs=()
command -v dovecot >/dev/null && [ -x /usr/lib/dovecot/pop3 ] || need_pkgs+=(dovecot-core dovecot-pop3d)
command -v jq >/dev/null || need_pkgs+=(jq)
command -v openssl >/dev/null || need_pkgs+=(openssl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	log "installing ${need_pkgs[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi
id -u dovecot >/dev/null && id -u dovenull >/dev/null

T=$(mktemp -d /tmp/pop3cmp.XXXXXX)
chmod 755 "$T"
PIDS=()
cleanup() {
	if [ -n "${PG_DIR:-}" ]; then stop_pg; fi
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
RES=$T/results.jsonl
: >"$RES"

# --- build -------------------------------------------------------------------
log "building postino and pop3load"
build_tools pop3load

PP=$(freeport) PPS=$(freeport) DP=$(freeport) DPS=$(freeport)

# --- users: one Dovecot passwd-file read by both servers ------------------------
log "user database ($IDLE users, SHA512-CRYPT by doveadm pw)"
DATA=$T/data
mkdir -p "$DATA/mail/bench.test"
chmod 755 "$DATA" "$DATA/mail" "$DATA/mail/bench.test"
USERS=$T/users.passwd
hashes=()
for i in $(seq 0 $((NUSERS - 1))); do hashes+=("$(doveadm pw -s SHA512-CRYPT -p "$PASS")"); done
{
	# The idle users beyond the first 64 reuse their hashes (doveadm pw
	# takes ~25 ms a call); every user still has a working password.
	for i in $(seq 0 $((IDLE > NUSERS ? IDLE - 1 : NUSERS - 1))); do
		echo "u$i@bench.test:${hashes[$((i % NUSERS))]}:$VUID:$VUID::::"
	done
	for n in $BIG; do echo "b$n@bench.test:${hashes[0]}:$VUID:$VUID::::"; done
} >"$USERS"
chmod 644 "$USERS"

postino_conf() { # file users-file cache_ttl
	cat >"$1" <<EOF
data_dir = "$DATA"
hostname = "localhost"
log_level = "info" # the default; Dovecot logs every login at info too

[pop3]
listen = "127.0.0.1:$PP"
listen_tls = "127.0.0.1:$PPS"
max_connections = 20000
max_connections_per_ip = 20000

[users]
file = "$2"
cache_ttl = "$3"

[smtp]
listen = ""
submission = ""
submissions = ""
lmtp = ""
EOF
	"$POSTINO" config check "$1" >/dev/null
}
postino_conf "$T/postino-nocache.toml" "$USERS" 0s
postino_conf "$T/postino-cache.toml" "$USERS" 60s

POSTINO_PID=
start_postino() { # config
	"$POSTINO" serve --config "$1" >"$T/postino.out" 2>>"$T/postino.log" &
	POSTINO_PID=$!
	PIDS+=("$POSTINO_PID")
	wait_port "$PP"
	wait_port "$PPS"
}
stop_postino() {
	kill "$POSTINO_PID"
	wait "$POSTINO_PID" 2>/dev/null || true
	POSTINO_PID=
}

# First start generates postino's self-signed certificate; Dovecot uses the
# same files.
start_postino "$T/postino-nocache.toml"
stop_postino
CERT=$DATA/tls/cert.pem KEY=$DATA/tls/key.pem
[ -s "$CERT" ] && [ -s "$KEY" ]

# --- corpus: 64 mailboxes x 20 messages, delivered by postino -------------------
log "corpus: $NUSERS mailboxes x 20 messages (10 x 4 KB, 8 x 50 KB, 2 x 500 KB)"
gen_msg() { # size id
	awk -v n="$1" -v id="$2" 'BEGIN {
		printf "From: Bench Sender <sender@bench.test>\nTo: bench@bench.test\nSubject: benchmark message %d\nMessage-ID: <bench.%d@bench.test>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\n", id, id
		s = 200; l = 0
		while (s < n) {
			line = (l % 8 == 0 ? "." : "") "line " l " of a benchmark message body, lorem ipsum dolor sit amet, consectetur"
			print line; s += length(line) + 1; l++
		}
	}'
}
rcpts=()
for i in $(seq 0 $((NUSERS - 1))); do rcpts+=("u$i@bench.test"); done
id=0
for spec in 10:4096 8:51200 2:512000; do
	for _ in $(seq "${spec%%:*}"); do
		id=$((id + 1))
		gen_msg "${spec#*:}" "$id" | "$POSTINO" deliver --config "$T/postino-nocache.toml" --from sender@bench.test "${rcpts[@]}"
	done
done
for i in $(seq "$NUSERS" $((IDLE - 1))); do mkdir -p "$DATA/mail/bench.test/u$i/Maildir/"{new,cur,tmp}; done
for n in $BIG; do
	log "filling a mailbox of $n messages"
	"$LOAD" -mode fill -dir "$DATA/mail/bench.test/b$n/Maildir" -count "$n" -size 1500
	echo "b$n@bench.test" >"$T/big$n.users"
done
chown -R "$VUID:$VUID" "$DATA/mail/bench.test"

# --- Dovecot -------------------------------------------------------------------
dovecot_conf() { # file auth_cache_size [tuned]
	local login_tune="" pop3_tune=""
	if [ "${3:-}" = tuned ]; then
		# "High-performance mode": login processes serve many
		# connections, and pop3 processes are reused (all users share
		# one uid, which reuse requires).
		login_tune=$'  service_count = 0\n  process_min_avail = 2'
		pop3_tune=$'  service_count = 0\n  process_min_avail = 4'
	fi
	mkdir -p "$T/dovecot/run" "$T/dovecot/state"
	cat >"$1" <<EOF
instance_name = pop3bench
base_dir = $T/dovecot/run
state_dir = $T/dovecot/state
log_path = $T/dovecot/dovecot.log
info_log_path = $T/dovecot/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <$CERT
ssl_key = <$KEY
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
mail_privileged_group = mail
first_valid_uid = $VUID
last_valid_uid = $VUID
mail_location = maildir:$DATA/mail/%d/%n/Maildir
pop3_uidl_format = %08Xu%08Xv
auth_cache_size = $2
auth_cache_ttl = 1 hour
default_process_limit = $((IDLE + 200))
default_client_limit = $((4 * IDLE + 1000))
default_vsz_limit = 1G
passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT $USERS
}
userdb {
  driver = passwd-file
  args = $USERS
}
protocol pop3 {
  mail_max_userip_connections = $((IDLE + 100))
}
service pop3-login {
$login_tune
  chroot =
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DP
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $DPS
    ssl = yes
  }
}
service pop3 {
$pop3_tune
  process_limit = $((IDLE + 200))
}
EOF
}
dovecot_conf "$T/dovecot-nocache.conf" 0
dovecot_conf "$T/dovecot-cache.conf" 10M
dovecot_conf "$T/dovecot-tuned.conf" 10M tuned

DOVECOT_PID=
start_dovecot() { # config
	dovecot -F -c "$1" &
	DOVECOT_PID=$!
	PIDS+=("$DOVECOT_PID")
	wait_port "$DP"
	wait_port "$DPS"
}
stop_dovecot() {
	kill "$DOVECOT_PID"
	wait "$DOVECOT_PID" 2>/dev/null || true
	DOVECOT_PID=
	sleep 0.5
}

# --- runs ----------------------------------------------------------------------
# run LABEL SERVER [pop3load flags...]: one run, its JSON result appended.
run() {
	local label=$1 server=$2 port
	shift 2
	local tport
	case $server in
	postino) port=$PP tport=$PPS ;;
	postino-pg) port=$GP tport=$GPS ;;
	dovecot) port=$DP tport=$DPS ;;
	esac
	local args=(-addr "127.0.0.1:$port" -password "$PASS" -insecure -json -label "$label")
	local a
	for a in "$@"; do
		if [ "$a" = "-transport=tls" ]; then args[1]=127.0.0.1:$tport; fi
	done
	local out cpu0="" cpu1=""
	if [ "$server" = postino-pg ]; then cpu0=$(pg_cpu); fi
	out=$("$LOAD" "${args[@]}" "$@")
	if [ "$server" = postino-pg ]; then cpu1=$(pg_cpu); fi
	# pg_cpu_s: CPU seconds PostgreSQL spent during the run.
	echo "$out" | jq -c --arg s "$server" --arg c0 "$cpu0" --arg c1 "$cpu1" '. + {server: $s} +
		(if $c0 == "" then {} else {pg_cpu_s: (($c1|tonumber) - ($c0|tonumber))} end)' >>"$RES"
	echo "$out" | jq -r --arg s "$server" '"  \(.label) \($s): \(.sessions) sessions \(.sessions_per_s|floor)/s \(.mb_per_s*10|floor/10) MB/s p50 \(.p50_ms) p99 \(.p99_ms) ms errors \(.errors) \(.error_kinds // [] | map(.text) | join("; "))"' >&2
}
warm() { # server: every mailbox once (Dovecot moves new/ to cur/ and builds its indexes)
	local port=$DP
	case $1 in postino) port=$PP ;; postino-pg) port=$GP ;; esac
	"$LOAD" -addr "127.0.0.1:$port" -password "$PASS" \
		-mode poll -users 'u%d@bench.test' -nusers "$NUSERS" -concurrency "$NUSERS" -sessions "$NUSERS" -timeout 300s >/dev/null
}

load_rounds() { # label-suffix mode [flags] — ROUNDS x {postino, dovecot}, alternating who goes first
	local suffix=$1 mode=$2
	shift 2
	for r in $(seq "${NROUNDS:-$ROUNDS}"); do
		local order=(postino dovecot)
		[ $((r % 2)) = 0 ] && order=(dovecot postino)
		if [ "$BACKEND" = postgres ]; then
			# Each server goes first, second and third in turn.
			order=(postino postino-pg dovecot)
			order=("${order[@]:$((r % 3))}" "${order[@]:0:$((r % 3))}")
		fi
		for s in "${order[@]}"; do
			run "$mode$suffix" "$s" -mode "$mode" -users 'u%d@bench.test' -nusers "$NUSERS" \
				-concurrency "$CONC" -duration "${DUR}s" "$@"
		done
	done
}

if [ "$BACKEND" = postgres ]; then
	log "PostgreSQL 15 (durable: fsync, synchronous_commit on) and postino on it"
	start_pg "$T/pg"
	GP=$(freeport) GPS=$(freeport)
	mkdir -p "$T/pgnode"
	cat >"$T/postino-pg.toml" <<EOF
data_dir = "$T/pgnode"
hostname = "localhost"
log_level = "info"

[pop3]
listen = "127.0.0.1:$GP"
listen_tls = "127.0.0.1:$GPS"
max_connections = 20000
max_connections_per_ip = 20000

[users]
file = "$USERS"
cache_ttl = "60s"

[smtp]
listen = ""
submission = ""
submissions = ""
lmtp = ""

[storage]
backend = "postgres"
postgres_dsn = "$PG_DSN"
EOF
	# The import reads the Maildirs of $DATA: the same messages.
	sed -e "s|^data_dir = .*|data_dir = \"$DATA\"|" "$T/postino-pg.toml" >"$T/postino-pg-import.toml"
	"$POSTINO" config check "$T/postino-pg.toml" >/dev/null
	"$POSTINO" db migrate --config "$T/postino-pg.toml" >/dev/null
	"$POSTINO" db import --config "$T/postino-pg-import.toml" "${rcpts[@]}" >/dev/null
	"$POSTINO" serve --config "$T/postino-pg.toml" >"$T/postino-pg.out" 2>>"$T/postino-pg.log" &
	PIDS+=("$!")
	wait_port "$GP"
	start_postino "$T/postino-cache.toml"
	start_dovecot "$T/dovecot-tuned.conf"
	warm postino
	warm postino-pg
	warm dovecot
	pg_psql postino -c 'SELECT pg_stat_statements_reset()' >/dev/null
	load_rounds "-pg" download
	load_rounds "-pg" poll
	stop_postino
	stop_dovecot
	med3() { jq -s --arg l "$1" --arg s "$2" --arg f "$3" '[.[] | select(.label==$l and .server==$s) | .[$f]] | sort | if length==0 then null else .[(length-1)/2|floor] end' "$RES"; }
	DATE=$(date -u +%Y-%m-%d)
	mkdir -p "$REPO/bench/results"
	OUT=$REPO/bench/results/pop3-pg-$DATE-$(date -u +%H%M).md
	{
		echo "# POP3: postino on PostgreSQL, postino on Maildir, tuned Dovecot ($DATE)"
		echo
		echo "Command: \`BACKEND=postgres bench/compare/pop3.sh\` (as root; DUR=$DUR ROUNDS=$ROUNDS CONC=$CONC)."
		echo "Host: $(nproc) cores, $(uname -r); postino $BUILT_REV; $("$PGBIN/postgres" --version); Dovecot $(dovecot --version | cut -d' ' -f1) (Debian)."
		echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (shared machine: the client, the servers and PostgreSQL share the cores)."
		echo "PostgreSQL: fsync = on, synchronous_commit = on, shared_buffers = 256MB, loopback TCP; blobs in PostgreSQL."
		echo "Corpus: $NUSERS mailboxes x 20 messages (10 x 4 KB, 8 x 50 KB, 2 x 500 KB), delivered by postino to Maildir and imported"
		echo "by postino db import. Medians of $ROUNDS rounds x ${DUR}s, c=$CONC; postino users.cache_ttl 60s; Dovecot tuned (auth cache, reused processes)."
		echo
		echo "| metric | postino PostgreSQL | postino Maildir | Dovecot tuned | PG ÷ Dovecot | target | met |"
		echo "|---|---:|---:|---:|---:|---|---|"
		for spec in "download sessions/s:download-pg:sessions_per_s:2" "download MB/s:download-pg:mb_per_s:" "download p99 ms:download-pg:p99_ms:" \
			"poll sessions/s:poll-pg:sessions_per_s:3" "poll p99 ms:poll-pg:p99_ms:"; do
			IFS=: read -r name l f tgt <<<"$spec"
			g=$(med3 "$l" postino-pg "$f") m=$(med3 "$l" postino "$f") d=$(med3 "$l" dovecot "$f")
			r=$(awk -v a="$g" -v b="$d" 'BEGIN { if (a=="null"||b=="null"||b+0==0) print "-"; else printf "%.2f", a/b }')
			ok="-"
			if [ -n "$tgt" ]; then
				ok=$(awk -v r="$r" -v t="$tgt" 'BEGIN { print (r != "-" && r+0 >= t) ? "yes" : "**no**" }')
				tgt="≥ $tgt"
			else
				tgt="-"
			fi
			f1() { awk -v x="$1" 'BEGIN { if (x=="" || x=="null") print "-"; else if (x+0 >= 100) printf "%.0f", x; else printf "%.1f", x }'; }
			echo "| $name | $(f1 "$g") | $(f1 "$m") | $(f1 "$d") | $r | $tgt | $ok |"
		done
		echo
		for l in download-pg poll-pg; do
			jq -s -r --arg l "$l" '[.[] | select(.label==$l and .server=="postino-pg")] |
				(map(.sessions) | add) as $n | (map(.pg_cpu_s) | add) as $c |
				"\($l): PostgreSQL used \($c * 100 | round / 100) CPU s for \($n) sessions = \($c * 1000000 / $n | round) µs per session = \($n / $c | round) sessions per database core-second."' "$RES"
		done
		echo
		echo "Statements PostgreSQL ran during the measured runs (pg_stat_statements; execution time inside the server only):"
		echo
		echo "| calls | mean ms | total ms | statement |"
		echo "|---:|---:|---:|---|"
		pg_top_statements 12
		echo
		echo "Errors over all measured runs: $(jq -s '[.[] | .errors] | add' "$RES")."
	} >"$OUT"
	cp "$RES" "${OUT%.md}.jsonl"
	echo
	cat "$OUT"
	exit 0
fi

if [ "$TUNED_ONLY" = 1 ]; then
	log "downloads only: postino (cache on) vs Dovecot tuned, plain and implicit TLS"
	start_postino "$T/postino-cache.toml"
	start_dovecot "$T/dovecot-tuned.conf"
	warm postino
	warm dovecot
	perf_pid=
	if [ -n "${PERF:-}" ]; then
		perf record -F 499 -g -o "$PERF" -p "$POSTINO_PID" >/dev/null 2>&1 &
		perf_pid=$!
	fi
	load_rounds "-tuned" download
	load_rounds "-tuned-tls" download -transport=tls
	if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
	stop_postino
	stop_dovecot
	for l in download-tuned download-tuned-tls; do
		for f in sessions_per_s mb_per_s p99_ms; do
			p=$(jq -s --arg l "$l" --arg s postino --arg f "$f" '[.[] | select(.label==$l and .server==$s) | .[$f]] | sort | .[(length-1)/2|floor]' "$RES")
			d=$(jq -s --arg l "$l" --arg s dovecot --arg f "$f" '[.[] | select(.label==$l and .server==$s) | .[$f]] | sort | .[(length-1)/2|floor]' "$RES")
			echo "$l $f: postino $p dovecot $d ratio $(awk -v a="$p" -v b="$d" 'BEGIN { printf "%.2f", a/b }')"
		done
	done
	echo "errors: $(jq -s '[.[] | .errors] | add' "$RES")"
	echo "postino $BUILT_REV; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	exit 0
fi

log "phase 1: caches off (postino users.cache_ttl = 0s, Dovecot auth_cache_size = 0)"
start_postino "$T/postino-nocache.toml"
start_dovecot "$T/dovecot-nocache.conf"
warm postino
warm dovecot
load_rounds "" download
load_rounds "" poll
NROUNDS=$ROUNDS_TLS load_rounds "-tls" download -transport=tls
NROUNDS=$ROUNDS_TLS load_rounds "-tls" poll -transport=tls

log "phase 2: login + STAT on large mailboxes (warm, concurrency 1)"
for n in $BIG; do
	for s in postino dovecot; do
		# Cold first session: Dovecot moves new/ to cur/ and indexes.
		t0=$(date +%s%N)
		"$LOAD" -addr "127.0.0.1:$([ "$s" = postino ] && echo "$PP" || echo "$DP")" -password "$PASS" \
			-mode stat -users "$T/big$n.users" -concurrency 1 -sessions 1 -timeout 600s >/dev/null
		echo "  cold first login+STAT $s $n: $((($(date +%s%N) - t0) / 1000000)) ms" >&2
	done
	# Warm means steady state: postino keeps the snapshot of a large
	# mailbox only when new/ and cur/ had been quiet for 2 s when it was
	# listed (racy-timestamp rule), and Dovecot's cold session has just
	# renamed every file into cur/. Wait, then one more session each.
	sleep 2.5
	for s in postino dovecot; do
		"$LOAD" -addr "127.0.0.1:$([ "$s" = postino ] && echo "$PP" || echo "$DP")" -password "$PASS" \
			-mode stat -users "$T/big$n.users" -concurrency 1 -sessions 1 -timeout 600s >/dev/null
	done
	for r in $(seq "$ROUNDS"); do
		for s in postino dovecot; do
			run "stat-$n" "$s" -mode stat -users "$T/big$n.users" -concurrency 1 -sessions 5 -timeout 300s
		done
	done
done
stop_postino
stop_dovecot

log "phase 3: idle sessions ($IDLE), fresh servers, memory of all their processes"
for tr in plain tls; do
	for s in postino dovecot; do
		if [ "$s" = postino ]; then start_postino "$T/postino-nocache.toml"; pid=$POSTINO_PID; else start_dovecot "$T/dovecot-nocache.conf"; pid=$DOVECOT_PID; fi
		# A few sessions first, so one-time start-up costs are not counted.
		run "warm-idle" "$s" -mode poll -users 'u%d@bench.test' -nusers 8 -concurrency 8 -sessions 16 >/dev/null 2>&1
		sleep 1
		run "idle-$tr" "$s" -mode idle -transport="$tr" -users 'u%d@bench.test' -nusers "$IDLE" -sessions "$IDLE" -concurrency 16 -pids "$pid" -timeout 120s
		jq -r --arg l "idle-$tr" --arg s "$s" 'select(.label==$l and .server==$s) | .idle | "  \($s) \($l): \(.open) sessions, procs \(.procs_before)->\(.procs_after), PSS \(.pss_before_kb)->\(.pss_after_kb) KB = \(.pss_per_session_kb|floor) KB/session (RSS \(.rss_per_session_kb|floor))"' "$RES" | tail -1 >&2
		if [ "$s" = postino ]; then stop_postino; else stop_dovecot; fi
	done
done

log "phase 4: caches on (postino users.cache_ttl = 60s, Dovecot auth_cache_size = 10M)"
start_postino "$T/postino-cache.toml"
start_dovecot "$T/dovecot-cache.conf"
warm postino
warm dovecot
load_rounds "-cache" poll
stop_dovecot

log "phase 4b: Dovecot tuned (auth cache + high-performance login and reused pop3 processes) vs postino defaults (cache on)"
start_dovecot "$T/dovecot-tuned.conf"
warm dovecot
load_rounds "-tuned" download
load_rounds "-tuned" poll
stop_postino
stop_dovecot

log "phase 5: postino with its own {ARGON2ID} hashes (postino user add)"
ARGON=$T/users-argon.passwd
postino_conf "$T/postino-argon-nocache.toml" "$ARGON" 0s
postino_conf "$T/postino-argon-cache.toml" "$ARGON" 60s
for i in $(seq 0 $((NUSERS - 1))); do
	echo "$PASS" | "$POSTINO" user add --config "$T/postino-argon-cache.toml" --password-stdin "u$i@bench.test" >/dev/null
done
for v in nocache cache; do
	start_postino "$T/postino-argon-$v.toml"
	warm postino
	for r in $(seq "$ROUNDS"); do
		run "poll-argon2-$v" postino -mode poll -users 'u%d@bench.test' -nusers "$NUSERS" -concurrency "$CONC" -duration "${DUR}s"
	done
	stop_postino
done

# --- report --------------------------------------------------------------------
med() { # label server field -> median over runs
	jq -s --arg l "$1" --arg s "$2" --arg f "$3" '
		[.[] | select(.label==$l and .server==$s) | (if $f|startswith("idle.") then .idle[$f[5:]] else .[$f] end)] | sort |
		if length==0 then null else .[(length-1)/2|floor] end' "$RES"
}
fmt() { # number -> 1 decimal or "-"
	awk -v x="$1" 'BEGIN { if (x=="" || x=="null") print "-"; else if (x+0 >= 100) printf "%.0f", x; else printf "%.2f", x }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a=="null"||b=="null"||b+0==0) print "-"; else printf "%.2f", a/b }'; }
met() { # ratio op target
	awk -v r="$1" -v op="$2" -v t="$3" 'BEGIN { if (r=="-") print "-"; else if ((op==">=" && r+0>=t) || (op=="<=" && r+0<=t)) print "yes"; else print "**no**" }'
}
rows=()
row() { # description label field target-op target
	local p d r
	p=$(med "$2" postino "$3")
	d=$(med "$2" dovecot "$3")
	r=$(ratio "$p" "$d")
	local tgt="-" ok="-"
	if [ -n "${4:-}" ]; then tgt="$4 $5"; ok=$(met "$r" "$4" "$5"); fi
	rows+=("| $1 | $(fmt "$p") | $(fmt "$d") | $r | $tgt | $ok |")
}
row "download sessions/s (plain, c=$CONC, 20 msgs / 1.4 MB each)" download sessions_per_s ">=" 3
row "download MB/s (plain)" download mb_per_s
row "download p99 session latency, ms (plain)" download p99_ms "<=" 0.33
row "download sessions/s (implicit TLS)" download-tls sessions_per_s ">=" 3
row "download p99 ms (implicit TLS)" download-tls p99_ms "<=" 0.33
row "poll sessions/s (plain, SHA512-CRYPT, caches off)" poll sessions_per_s ">=" 3
row "poll p99 session latency, ms (plain, caches off)" poll p99_ms "<=" 0.33
row "poll sessions/s (implicit TLS, caches off)" poll-tls sessions_per_s ">=" 3
row "poll p99 ms (implicit TLS, caches off)" poll-tls p99_ms "<=" 0.33
row "poll sessions/s (caches on: cache_ttl 60s / auth_cache_size 10M)" poll-cache sessions_per_s ">=" 3
row "poll p99 ms (caches on)" poll-cache p99_ms "<=" 0.33
row "download sessions/s vs TUNED Dovecot (both caches on)" download-tuned sessions_per_s ">=" 3
row "download p99 ms vs tuned Dovecot" download-tuned p99_ms "<=" 0.33
row "poll sessions/s vs TUNED Dovecot" poll-tuned sessions_per_s ">=" 3
row "poll p99 ms vs tuned Dovecot" poll-tuned p99_ms "<=" 0.33
row "idle memory per authenticated session, KB PSS (plain, $IDLE sessions, all processes)" idle-plain idle.pss_per_session_kb "<=" 0.1
row "idle memory per session, KB RSS sum (plain)" idle-plain idle.rss_per_session_kb
row "idle memory per session, KB PSS (implicit TLS)" idle-tls idle.pss_per_session_kb "<=" 0.1
for n in $BIG; do
	row "login+STAT, $n-message mailbox, p50 ms warm" "stat-$n" p50_ms
done
stat_growth=""
for n in $BIG; do stat_growth+=" $n: $(fmt "$(med "stat-$n" postino p50_ms)") ms /"; done
pa0=$(med poll-argon2-nocache postino sessions_per_s)
pa1=$(med poll-argon2-cache postino sessions_per_s)
pa0p=$(med poll-argon2-nocache postino p99_ms)
pa1p=$(med poll-argon2-cache postino p99_ms)
last_big=${BIG##* }
big_ms=$(med "stat-$last_big" postino p50_ms)
errs=$(jq -s '[.[] | select(.label != "warm-idle") | .errors] | add' "$RES")

DATE=$(date -u +%Y-%m-%d)
mkdir -p "$REPO/bench/results"
OUT=$REPO/bench/results/pop3-$DATE-$(date -u +%H%M).md
{
	echo "# POP3: postino vs Dovecot ($DATE)"
	echo
	echo "Host: $(nproc) cores, $(uname -r), $(dovecot --version | cut -d' ' -f1) (Debian), postino $BUILT_REV, $(go version | cut -d' ' -f3).
Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared; expect noise of ±30% between rounds — see the .jsonl for every run)."
	echo "Client: bench/pop3load (postino's pop3 client) on the same machine; $ROUNDS alternating rounds x ${DUR}s per server;"
	echo "medians shown. Same users file ($IDLE users, {SHA512-CRYPT}), same Maildir files, loopback."
	echo
	echo "| metric | postino | Dovecot | postino ÷ Dovecot | target | met |"
	echo "|---|---:|---:|---:|---|---|"
	printf '%s\n' "${rows[@]}"
	echo
	echo "login+STAT growth (postino, p50 warm):$stat_growth; target ≤ 50 ms at 100k: $(awk -v x="$big_ms" 'BEGIN{print (x!="null" && x+0<=50) ? "yes" : "**no**"}')."
	echo
	echo "postino with its own {ARGON2ID} hashes ($(head -1 "$ARGON" | cut -d'$' -f4)), poll, plain, c=$CONC:"
	echo "users.cache_ttl = 0s: $(fmt "$pa0") sessions/s (p99 $(fmt "$pa0p") ms); cache_ttl = 60s: $(fmt "$pa1") sessions/s (p99 $(fmt "$pa1p") ms)."
	echo
	echo "Errors over all measured runs: $errs."
} >"$OUT"
cp "$RES" "${OUT%.md}.jsonl"
cp "$OUT" "$REPO/bench/RESULTS.md"
echo
cat "$OUT"
