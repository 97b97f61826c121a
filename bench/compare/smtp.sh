#!/usr/bin/env bash
# smtp.sh — postino's SMTP intake side by side with Postfix delivering to
# Maildir, on loopback.
#
# Run as root on Debian 12 from anywhere in the repository:
#
#     bench/compare/smtp.sh
#
# Both servers accept mail for 64 users u0..u63@bench.test on a loopback MX
# port and store it in Maildirs (postino: its own Maildir store; Postfix:
# smtpd -> cleanup -> queue -> qmgr -> virtual(8) into
# virtual_mailbox_base/bench.test/uN/Maildir/). Both are durable: postino
# fsyncs the message file and new/ before its 250; Postfix's cleanup fsyncs
# the queue file before its 250 and virtual(8) fsyncs the Maildir file.
#
# The same client (bench/smtpload: CONC senders, COUNT messages of SIZE
# octets each, one recipient per message, round-robin over the users)
# drives both. "Durably delivered messages/s" is measured the same way for
# both: messages accepted ÷ time from the start of the run until the last
# of them appeared in the Maildirs' new/ folders (for postino the file is
# there before the 250; for Postfix the queue has to drain).
#
# Runs alternate between the servers (ROUNDS x {postino, postfix}); the
# medians are compared. Results go to bench/results/smtp-DATE-HHMM.md (and
# .jsonl), are appended as a section to bench/RESULTS.md, and are printed.
#
# Knobs (environment): ROUNDS (3), CONC (100), COUNT (messages per sender,
# 100), SIZE (10240), PERCONN (messages per connection, 0: one connection
# per sender for the whole run), IN_FLOW_DELAY (Postfix's in_flow_delay;
# 0s here, because Postfix's default of 1s measured slower end to end on
# this test: 385 vs 630 messages/s), MAILBOXES (64: the messages go
# round-robin to u0..u(MAILBOXES-1); 1 sends them all into one mailbox),
# PF_LIMITS (off: Postfix's per-client anvil limits are lifted for CONC
# senders from one address; default: Postfix's defaults, 50 connections per
# client, no rate limits), TARGET (2: the postino ÷ Postfix ratio of
# durable messages/s the table checks), MILTER (none; rspamd: both servers
# pass every message through the same rspamd proxy worker as a milter,
# configured as in the tests: Debian's rules, no module that queries the
# network, X-Spam-Status added; RSPAMD_WORKERS proxy processes, 2; postino
# then logs at debug level and the report gives the p50 and p99 of the
# time its milter exchange takes per message),
# CHECKS (0; 1: both servers check every message's sender the same way
# against one local DNS server, NSD, serving the sender domain's SPF, DKIM
# and DMARC records and a DNS blocklist that does not list the client; the
# messages are one DKIM-signed message (bench/compare/dkimsign.py), sent
# from sender@sender.test. postino: [mailauth] with DMARC enforced,
# [antispam] dnsbl_sites, fcrdns and helo on, no trusted networks, dns.server
# = NSD; Postfix: rspamd as a milter with its spf, dkim, dmarc and rbl
# modules on the same NSD. With MILTER=rspamd postino passes the messages
# through that rspamd too. The report adds each postino check's time per
# stage, p50 and p99, from the postino_check_seconds histogram scraped from
# the admin listener before and after the measured runs),
# PERF=FILE records postino's CPU profile with perf(1) during the measured
# runs (perf report -i FILE),
# KEEP=1 keeps the temporary folder, RECORD=0 only prints the table
# (nothing written to bench/). BACKEND=postgres adds a third server: postino
# storing into PostgreSQL (a durable cluster started here: fsync and
# synchronous_commit on, message contents in the database); its 250 comes
# after the delivery's COMMIT, so its durable rate is its rate of 250s.
# The report then has a postino-PostgreSQL column, PostgreSQL's CPU per
# delivery and the statements it ran (pg_stat_statements).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

# The command as run, for the report: knobs set in the environment.
CMD="bench/compare/smtp.sh"
for v in ROUNDS CONC COUNT SIZE PERCONN IN_FLOW_DELAY MAILBOXES PF_LIMITS TARGET MILTER RSPAMD_WORKERS CHECKS BACKEND; do if [ -n "${!v:-}" ]; then CMD="$v=${!v} $CMD"; fi; done
ROUNDS=${ROUNDS:-3}
CONC=${CONC:-100}
COUNT=${COUNT:-100}
SIZE=${SIZE:-10240}
PERCONN=${PERCONN:-0}
IN_FLOW_DELAY=${IN_FLOW_DELAY:-0s}
MAILBOXES=${MAILBOXES:-64}
PF_LIMITS=${PF_LIMITS:-off}
TARGET=${TARGET:-2}
MILTER=${MILTER:-none}
BACKEND=${BACKEND:-maildir}
case $BACKEND in maildir | postgres) ;; *) echo "BACKEND: maildir or postgres" >&2; exit 1 ;; esac
RSPAMD_WORKERS=${RSPAMD_WORKERS:-2}
CHECKS=${CHECKS:-0}
case $CHECKS in 0 | 1) ;; *) echo "CHECKS: 0 or 1" >&2; exit 1 ;; esac
case $MILTER in none | rspamd) ;; *) echo "MILTER: none or rspamd" >&2; exit 1 ;; esac
NUSERS=64
[ "$MAILBOXES" -ge 1 ] && [ "$MAILBOXES" -le "$NUSERS" ] || { echo "MAILBOXES: 1 to $NUSERS" >&2; exit 1; }
case $PF_LIMITS in off | default) ;; *) echo "PF_LIMITS: off or default" >&2; exit 1 ;; esac
PASS='bench-Pa55word'
VUID=5000 # owner of Postfix's virtual mailboxes

REPO=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "run as root (Postfix's master must start as root)" >&2; exit 1; }

log() { printf '\n== %s\n' "$*" >&2; }
SCRIPT_START=$(date +%s)

# --- packages ----------------------------------------------------------------
need_pkgs=()
command -v postfix >/dev/null && command -v postmap >/dev/null || need_pkgs+=(postfix)
command -v jq >/dev/null || need_pkgs+=(jq)
{ [ "$MILTER" = none ] && [ "$CHECKS" = 0 ]; } || command -v rspamd >/dev/null || need_pkgs+=(rspamd)
[ "$CHECKS" = 0 ] || command -v nsd >/dev/null || need_pkgs+=(nsd)
[ "$CHECKS" = 0 ] || /usr/bin/python3 -c 'import dkim' 2>/dev/null || need_pkgs+=(python3-dkim)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	log "installing ${need_pkgs[*]}"
	apt-get update -q
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi
id -u postfix >/dev/null && getent group postdrop >/dev/null

# Not under a 0700 parent: Postfix's daemons (user postfix) and virtual(8)
# (uid $VUID) must reach their folders; unix socket paths must stay short.
T=$(mktemp -d /tmp/smtpcmp.XXXXXX)
chmod 755 "$T"
PIDS=()
PF_STARTED=0
cleanup() {
	if [ -n "${PG_DIR:-}" ]; then stop_pg; fi
	if [ "$PF_STARTED" = 1 ]; then postfix -c "$T/pf/conf" stop >/dev/null 2>&1 || true; fi
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	if [ "${KEEP:-0}" = 1 ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
}
trap cleanup EXIT
RES=$T/results.jsonl
: >"$RES"

# --- build -------------------------------------------------------------------
log "building postino and smtpload"
build_tools smtpload

PM=$(freeport) FM=$(freeport)

# --- DNS and the signed message (CHECKS=1) ------------------------------------
# One NSD serves everything both servers look up: the sender domain's SPF,
# DKIM key and DMARC policy, a DNS blocklist (only its RFC 5782 test entry
# 127.0.0.2 is listed) and the reverse zone of loopback.
SENDER=sender@load.test HELO=load.test LOAD_MSG=()
if [ "$CHECKS" = 1 ]; then
	NS=$T/nsd
	mkdir -p "$NS"
	NSP=$(freeport)
	SENDER=sender@sender.test HELO=mail.sender.test
	openssl genrsa -out "$NS/dkim.key" 2048 2>/dev/null
	DKIM_P=$(openssl rsa -in "$NS/dkim.key" -pubout -outform DER 2>/dev/null | base64 -w0)
	# TXT strings of at most 255 octets (RFC 1035 §3.3.14).
	DKIM_TXT=$(echo "v=DKIM1; k=rsa; p=$DKIM_P" | fold -w 250 | sed 's/.*/"&"/' | tr '\n' ' ')
	cat >"$NS/sender.test.zone" <<ZONE
\$ORIGIN sender.test.
\$TTL 3600
@ IN SOA ns.sender.test. hostmaster.sender.test. 1 3600 600 86400 300
@ IN NS ns.sender.test.
ns IN A 127.0.0.1
mail IN A 127.0.0.1
@ IN MX 10 mail.sender.test.
@ IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
bench._domainkey IN TXT ( $DKIM_TXT)
_dmarc IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"
ZONE
	cat >"$NS/bl.test.zone" <<ZONE
\$ORIGIN bl.test.
\$TTL 3600
@ IN SOA ns.sender.test. hostmaster.sender.test. 1 3600 600 86400 300
@ IN NS ns.sender.test.
2.0.0.127 IN A 127.0.0.2
2.0.0.127 IN TXT "test entry (RFC 5782 section 5)"
ZONE
	cat >"$NS/127.in-addr.arpa.zone" <<ZONE
\$ORIGIN 127.in-addr.arpa.
\$TTL 3600
@ IN SOA ns.sender.test. hostmaster.sender.test. 1 3600 600 86400 300
@ IN NS ns.sender.test.
1.0.0 IN PTR mail.sender.test.
ZONE
	cat >"$NS/nsd.conf" <<CONF
server:
	ip-address: 127.0.0.1
	port: $NSP
	username: ""
	chroot: ""
	zonesdir: "$NS"
	database: ""
	zonelistfile: "$NS/zone.list"
	xfrdfile: "$NS/xfrd.state"
	xfrdir: "$NS"
	pidfile: "$NS/nsd.pid"
	logfile: "$NS/nsd.log"
	server-count: 2
	verbosity: 1
	hide-version: yes
remote-control:
	control-enable: no
zone:
	name: "sender.test"
	zonefile: "$NS/sender.test.zone"
zone:
	name: "bl.test"
	zonefile: "$NS/bl.test.zone"
zone:
	name: "127.in-addr.arpa"
	zonefile: "$NS/127.in-addr.arpa.zone"
CONF
	nsd-checkconf "$NS/nsd.conf"
	nsd -d -c "$NS/nsd.conf" >"$NS/out" 2>&1 &
	PIDS+=("$!")
	wait_port "$NSP"
	log "NSD on 127.0.0.1:$NSP: sender.test (SPF, DKIM, DMARC p=reject), bl.test, 127.in-addr.arpa"
	# One message of SIZE octets, signed once; every message sent is it.
	/usr/bin/python3 "$REPO/bench/compare/dkimsign.py" --key "$NS/dkim.key" --domain sender.test --selector bench \
		--from "$SENDER" --to u0@bench.test --size "$SIZE" >"$T/signed.eml"
	LOAD_MSG=(-message "$T/signed.eml")
fi

# --- rspamd (MILTER=rspamd, or Postfix's checks with CHECKS=1) -----------------
POSTINO_MILTER="" PF_MILTER=""
if [ "$MILTER" = rspamd ] || [ "$CHECKS" = 1 ]; then
	RM=$(freeport) RDNS=$(freeport)
	RSPAMD_FILTERS=milter_headers RSPAMD_CHECKS="" RSPAMD_HEADERS='"x-spam-status"'
	if [ "$CHECKS" = 1 ]; then
		# The same checks as postino's, on the same DNS server: SPF,
		# DKIM (rspamd's C module, named in filters), DMARC and the
		# blocklist, which also applies to loopback clients.
		RDNS=$NSP
		RSPAMD_FILTERS=dkim,milter_headers
		RSPAMD_HEADERS='"x-spam-status", "x-spamd-result"'
		RSPAMD_CHECKS="# Debian's scores of the SPF, DKIM and DMARC symbols (unscored
# symbols are not reported).
group \"policies\" { .include \"\$CONFDIR/scores.d/policies_group.conf\" }
group \"bench_rbl\" { symbols { \"BENCH_LISTED\" { weight = 5.0; } } }
# The client is on loopback: the modules skip local clients unless told.
spf { check_local = true; }
dkim { check_local = true; }
dmarc { check_local = true; }
rbl {
	rbls {
		bench {
			rbl = \"bl.test\";
			ipv4 = true;
			ipv6 = false;
			received = false;
			from = true;
			exclude_private_ips = false;
			exclude_local = false;
			returncodes { BENCH_LISTED = \"127.0.0.2\"; }
		}
	}
}"
	fi
	R=$T/rspamd
	mkdir -p "$R"
	log "rspamd $(rspamd --version 2>/dev/null | awk '{print $NF}'): proxy worker as a milter on 127.0.0.1:$RM, $RSPAMD_WORKERS processes"
	cat >"$R/rspamd.conf" <<EOF
options {
	pidfile = "$R/rspamd.pid";
	filters = "$RSPAMD_FILTERS";
	dns { nameserver = ["127.0.0.1:$RDNS"]; $([ "$CHECKS" = 1 ] && echo "timeout = 2s; retransmits = 2;" || echo "timeout = 0.2s; retransmits = 1;") }
	local_addrs = [];
	check_local = $([ "$CHECKS" = 1 ] && echo true || echo false);
	hs_cache_dir = "$R";
	tempdir = "$R";
}
logging { type = "file"; filename = "$R/rspamd.log"; level = "warning"; }
actions { reject = 15; rewrite_subject = 8; add_header = 6; }
lua = "\$RULESDIR/rspamd.lua";
modules { path = "\$PLUGINSDIR"; }
milter_headers { use = [$RSPAMD_HEADERS]; skip_local = false; skip_authenticated = false; }
$RSPAMD_CHECKS
worker "rspamd_proxy" {
	bind_socket = "127.0.0.1:$RM";
	milter = yes;
	self_scan = yes;
	count = $RSPAMD_WORKERS;
	timeout = 120s;
	upstream "local" { default = yes; self_scan = yes; }
}
EOF
	rspamd -c "$R/rspamd.conf" -f -i -u root -g root --var DBDIR="$R" --var RUNDIR="$R" >"$R/out" 2>&1 &
	PIDS+=("$!")
	# rspamd compiles its tables first (10 to 30 s).
	for _ in $(seq 1200); do (exec 3<>"/dev/tcp/127.0.0.1/$RM") 2>/dev/null && break; sleep 0.05; done
	wait_port "$RM"
	if [ "$MILTER" = rspamd ]; then
		POSTINO_MILTER="[[milter]]
name = \"rspamd\"
address = \"127.0.0.1:$RM\"
timeout = \"2m\""
	fi
	PF_MILTER="smtpd_milters = inet:127.0.0.1:$RM
milter_default_action = tempfail
milter_protocol = 6"
fi

# --- postino -----------------------------------------------------------------
log "postino: $NUSERS users, MX on 127.0.0.1:$PM"
PDATA=$T/postino
mkdir -p "$PDATA"
for i in $(seq 0 $((NUSERS - 1))); do
	echo "$PASS" | "$POSTINO" user add "u$i@bench.test" --password-stdin --data "$PDATA" >/dev/null
done
POSTINO_CHECKS="[queue]
dns_server = \"127.0.0.1:9\" # nothing leaves the machine

[admin]
listen = \"\""
PA=""
if [ "$CHECKS" = 1 ]; then
	PA=$(freeport)
	POSTINO_CHECKS="[dns]
server = \"127.0.0.1:$NSP\"

[mailauth]
enabled = true
dmarc = true

[antispam]
dnsbl_sites = [\"bl.test\"]
fcrdns_score = 1
helo_score = 1

[admin]
listen = \"127.0.0.1:$PA\""
fi
cat >"$T/postino.toml" <<EOF
data_dir = "$PDATA"
hostname = "mx.postino.test"
log_level = "$([ "$MILTER" = none ] && echo info || echo debug)" # info: one line per delivery, like Postfix's log

[pop3]
listen = ""
listen_tls = ""

[smtp]
listen = "127.0.0.1:$PM"
submission = ""
submissions = ""
lmtp = ""
# The defaults (1000, 20) would refuse most of $CONC senders from one IP.
max_connections = 5000
max_connections_per_ip = 5000
# No trusted networks: the loopback client is judged.
trusted_networks = []

$POSTINO_CHECKS

$POSTINO_MILTER
EOF
"$POSTINO" config check "$T/postino.toml" >/dev/null
"$POSTINO" serve --config "$T/postino.toml" >"$T/postino.out" 2>>"$T/postino.log" &
POSTINO_PID=$!
PIDS+=("$POSTINO_PID")
wait_port "$PM"
P_NEW="$PDATA/mail/bench.test/*/Maildir/new"

SERVERS=(postino postfix)
if [ "$BACKEND" = postgres ]; then
	log "PostgreSQL 15 (durable: fsync, synchronous_commit on) and a postino storing into it"
	start_pg "$T/pg"
	GM=$(freeport)
	GDATA=$T/postino-pg
	mkdir -p "$GDATA"
	cp "$PDATA/users.passwd" "$GDATA/"
	sed -e "s|^data_dir = .*|data_dir = \"$GDATA\"|" -e "s|^listen = \"127.0.0.1:$PM\"|listen = \"127.0.0.1:$GM\"|" "$T/postino.toml" >"$T/postino-pg.toml"
	cat >>"$T/postino-pg.toml" <<EOF

[storage]
backend = "postgres"
postgres_dsn = "$PG_DSN"
EOF
	"$POSTINO" config check "$T/postino-pg.toml" >/dev/null
	# The users live in the database in this mode: copy them there.
	"$POSTINO" db migrate --config "$T/postino-pg.toml" >/dev/null
	"$POSTINO" db import --config "$T/postino-pg.toml" >/dev/null
	"$POSTINO" serve --config "$T/postino-pg.toml" >"$T/postino-pg.out" 2>>"$T/postino-pg.log" &
	PIDS+=("$!")
	wait_port "$GM"
	SERVERS=(postino postino-pg postfix)
fi

# --- Postfix -----------------------------------------------------------------
PF=$T/pf
PF_PROCS=$((CONC + 50 > 150 ? CONC + 50 : 150)) # default 100
PF_VCONC=$((CONC > 20 ? CONC : 20))             # default 20
log "Postfix $(postconf -d -h mail_version 2>/dev/null): virtual(8) to Maildir, smtpd on 127.0.0.1:$FM"
mkdir -p "$PF/conf" "$PF/queue" "$PF/data" "$PF/log" "$PF/mail/bench.test"
chown postfix:postfix "$PF/data"
chown "$VUID:$VUID" "$PF/mail/bench.test"
for i in $(seq 0 $((NUSERS - 1))); do echo "u$i@bench.test bench.test/u$i/Maildir/"; done >"$PF/conf/vmailbox"
cat >"$PF/conf/main.cf" <<EOF
# written by postino's bench/compare/smtp.sh
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
maillog_file = $PF/log/postfix.log
maillog_file_prefixes = $PF/log
myhostname = mx.postfix.test
mydomain = postfix.test
myorigin = postfix.test
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
default_transport = error:outbound mail is disabled in this benchmark
biff = no
smtpd_peername_lookup = no
smtpd_tls_security_level = none
smtp_tls_security_level = none

# Virtual mailboxes: one Maildir per user (the trailing slash means Maildir).
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $PF/mail
virtual_mailbox_maps = hash:$PF/conf/vmailbox
virtual_uid_maps = static:$VUID
virtual_gid_maps = static:$VUID
virtual_minimum_uid = $VUID

# Only loopback clients, no relaying.
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject

default_process_limit = $PF_PROCS
$PF_MILTER
EOF
if [ "$PF_LIMITS" = off ]; then
	cat >>"$PF/conf/main.cf" <<EOF
# Per-client limits lifted for $CONC concurrent senders from one address.
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_new_tls_session_rate_limit = 0
smtpd_client_auth_rate_limit = 0
smtpd_client_event_limit_exceptions = 127.0.0.0/8
EOF
fi
cat >>"$PF/conf/main.cf" <<EOF
# Parallel delivery into the Maildirs (recipient limit 1: one destination
# per recipient; the default concurrency per destination is 20).
virtual_destination_concurrency_limit = $PF_VCONC
initial_destination_concurrency = $PF_VCONC
# Flow control: cleanup waits up to this long for a token when mail comes in
# faster than qmgr takes it.
in_flow_delay = $IN_FLOW_DELAY
EOF
# Every chroot column is n: the daemons run in the queue folder.
# The master.cf the tests use too (tests/smtp, through testutil).
sed "s/^SMTPD_ADDRESS /127.0.0.1:$FM /" "$REPO/internal/testutil/postfix-master.cf" >"$PF/conf/master.cf"
postmap -c "$PF/conf" "hash:$PF/conf/vmailbox"
if postfix -c "$PF/conf" check 2>&1 | grep -i fatal; then exit 1; fi
postfix -c "$PF/conf" start >/dev/null 2>&1
PF_STARTED=1
wait_port "$FM"
F_NEW="$PF/mail/bench.test/*/Maildir/new"

pf_queue_files() {
	find "$PF/queue/maildrop" "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" -type f 2>/dev/null | wc -l
}
# settle: wait until Postfix's queue is empty, so that runs do not overlap.
# The Maildirs are not emptied (smtpload counts the files already there):
# on an ext4 without a journal, freed inodes are skipped by the allocator
# for a while (recently_deleted()), so mass deletion would slow the next
# run's file creation on both sides.
settle() {
	for _ in $(seq 600); do
		[ "$(pf_queue_files)" = 0 ] && break
		sleep 0.1
	done
	if [ "$(pf_queue_files)" != 0 ]; then
		echo "Postfix's queue did not drain:" >&2
		tail -20 "$PF/log/postfix.log" >&2
		exit 1
	fi
	sync
	sleep 1
}

# --- runs ----------------------------------------------------------------------
# run LABEL SERVER [smtpload flags...]: one run, its JSON result appended.
run() {
	local label=$1 server=$2 port dirs out
	shift 2
	case $server in
	postino) port=$PM dirs=$P_NEW ;;
	postino-pg) port=$GM dirs="" ;; # durable at its 250 (after COMMIT)
	postfix) port=$FM dirs=$F_NEW ;;
	esac
	local cpu0="" cpu1=""
	if [ "$server" = postino-pg ]; then cpu0=$(pg_cpu); fi
	out=$("$LOAD" -addr "127.0.0.1:$port" -users 'u%d@bench.test' -nusers "$MAILBOXES" -size "$SIZE" \
		-per-conn "$PERCONN" -maildirs "$dirs" -json -label "$label" -from "$SENDER" -helo "$HELO" "${LOAD_MSG[@]}" "$@")
	if [ "$server" = postino-pg ]; then cpu1=$(pg_cpu); fi
	out=$(echo "$out" | jq -c --arg s "$server" --arg la "$(cut -d' ' -f1 /proc/loadavg)" --arg c0 "$cpu0" --arg c1 "$cpu1" '. + {server: $s, loadavg: $la} +
		(if $c0 == "" then {} else {pg_cpu_s: (($c1|tonumber) - ($c0|tonumber)), durable_msgs_per_s: .msgs_per_s, durable: {seconds: .send_s, drain_s: 0}} end)')
	echo "$out" >>"$RES"
	echo "$out" | jq -r --arg s "$server" '"  \(.label) \($s): \(.messages) msgs, 250s at \(.msgs_per_s|floor)/s, durable \(.durable_msgs_per_s|floor)/s (last file at \(.durable.seconds*100|floor/100)s, drain \(.durable.drain_s*100|floor/100)s\(if .durable.timed_out then " TIMED OUT" else "" end)), p50 \(.p50_ms) p99 \(.p99_ms) ms, errors \(.errors) \(.error_kinds // [] | map("\(.count)x \(.text)") | join("; "))"' >&2
}

log "warm-up: one message per user on each server (Maildirs created, processes started)"
run warm postino -concurrency "$NUSERS" -count 1 >/dev/null 2>&1
run warm postfix -concurrency "$NUSERS" -count 1 >/dev/null 2>&1
if [ "$BACKEND" = postgres ]; then
	run warm postino-pg -concurrency "$NUSERS" -count 1 >/dev/null
	pg_psql postino -c 'SELECT pg_stat_statements_reset()' >/dev/null
fi
jq -e -s '[.[] | select(.label=="warm") | .errors] | add == 0' "$RES" >/dev/null || {
	echo "warm-up had errors:" >&2
	jq -c 'select(.label=="warm")' "$RES" >&2
	exit 1
}
settle

# scrape FILE: postino's check histograms (CHECKS=1).
scrape() { if [ "$CHECKS" = 1 ]; then curl -fsS "http://127.0.0.1:$PA/metrics" | grep '^postino_check_seconds_bucket' >"$1"; fi; }
scrape "$T/checks.before"
perf_pid=
if [ -n "${PERF:-}" ]; then
	perf record -F 499 -g -o "$PERF" -p "$POSTINO_PID" >/dev/null 2>&1 &
	perf_pid=$!
fi

log "intake: $ROUNDS rounds x {${SERVERS[*]}}, $CONC senders x $COUNT messages of $SIZE octets"
for r in $(seq "$ROUNDS"); do
	order=(postino postfix)
	[ $((r % 2)) = 0 ] && order=(postfix postino)
	if [ "$BACKEND" = postgres ]; then
		# Each server goes first, second and third in turn.
		order=("${SERVERS[@]:$((r % 3))}" "${SERVERS[@]:0:$((r % 3))}")
	fi
	for s in "${order[@]}"; do
		run intake "$s" -concurrency "$CONC" -count "$COUNT"
		settle
	done
done

scrape "$T/checks.after"
if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi

# What the checks found, as each server wrote it into the last message it
# delivered: both must have passed SPF, DKIM and DMARC.
VERIFIED=""
if [ "$CHECKS" = 1 ]; then
	# shellcheck disable=SC2086 # globs
	pm=$(find $P_NEW -type f -newer "$T/checks.before" -print -quit)
	# shellcheck disable=SC2086
	fm=$(find $F_NEW -type f -newer "$T/checks.before" -print -quit)
	par=$(awk '/^Authentication-Results:/ {p=1} p && /^[^ \t]/ && !/^Authentication-Results:/ {exit} p' "$pm" | tr -s ' \t\r\n' ' ')
	frs=$(awk '/^X-Spamd-Result:/ {p=1} p && /^[^ \t]/ && !/^X-Spamd-Result:/ {exit} p' "$fm" | tr -s ' \t\r\n' ' ')
	[[ $frs != *BENCH_LISTED* ]] || { echo "rspamd found the client listed: $frs" >&2; exit 1; }
	# Every measured message: how many carry all three passes.
	passes() { # dir-glob word...
		local files
		# shellcheck disable=SC2086 # globs
		files=$(find $1 -type f -newer "$T/checks.before")
		shift
		for w in "$@"; do files=$(echo "$files" | xargs -r grep -l -F -- "$w" || true); done
		echo "$files" | grep -c . || true
	}
	P_PASS=$(passes "$P_NEW" spf=pass dkim=pass dmarc=pass)
	F_PASS=$(passes "$F_NEW" 'R_SPF_ALLOW(' 'R_DKIM_ALLOW(' 'DMARC_POLICY_ALLOW(')
	if [ "$P_PASS" = 0 ] || [ "$F_PASS" = 0 ]; then
		echo "the checks did not pass: postino $P_PASS, Postfix $F_PASS messages; last ones: $par / $frs" >&2
		exit 1
	fi
	VERIFIED="postino: \`${par% }\`; rspamd (Postfix): $(grep -o 'R_SPF_ALLOW([^)]*)\|R_DKIM_ALLOW([^)]*)\|DMARC_POLICY_ALLOW([^)]*)' <<<"$frs" | tr '\n' ' ')"
fi

# Postfix's own log: every measured message sent by virtual(8), none deferred.
PF_SENT=$(grep -c 'postfix/virtual\[[0-9]*\]: .* status=sent' "$PF/log/postfix.log" || true)
PF_DEFERRED=$(grep -c 'status=deferred' "$PF/log/postfix.log" || true)

# --- report --------------------------------------------------------------------
med() { # server field -> median over the intake runs
	jq -s --arg s "$1" --arg f "$2" '
		[.[] | select(.label=="intake" and .server==$s) | (if $f=="drain_s" then .durable.drain_s else .[$f] end)] | sort |
		if length==0 then null else .[(length-1)/2|floor] end' "$RES"
}
fmt() { awk -v x="$1" 'BEGIN { if (x=="" || x=="null") print "-"; else if (x+0 >= 100) printf "%.0f", x; else printf "%.2f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a=="null"||b=="null"||b+0==0) print "-"; else printf "%.2f", a/b }'; }
met() { awk -v r="$1" -v op="$2" -v t="$3" 'BEGIN { if (r=="-") print "-"; else if ((op==">=" && r+0>=t) || (op=="<=" && r+0<=t)) print "yes"; else print "**no**" }'; }
rows=()
row() { # description field [target-op target | noratio]
	local p f r tgt="-" ok="-"
	p=$(med postino "$2")
	f=$(med postfix "$2")
	r=$(ratio "$p" "$f")
	if [ "${3:-}" = noratio ]; then
		r="-"
	elif [ -n "${3:-}" ]; then
		tgt="$3 $4"
		ok=$(met "$r" "$3" "$4")
	fi
	rows+=("| $1 | $(fmt "$p") | $(fmt "$f") | $r | $tgt | $ok |")
}
row "**durably delivered messages/s** (sent ÷ time until the last is in new/)" durable_msgs_per_s ">=" "$TARGET"
row "intake messages/s (250 after DATA ÷ send time)" msgs_per_s
row "p50 per-message latency, ms (MAIL .. 250 after DATA)" p50_ms
row "p99 per-message latency, ms" p99_ms
row "drain after the last 250, s (queue -> Maildir)" drain_s noratio
med_sum() { jq -s --arg s "$1" '[.[] | select(.label=="intake" and .server==$s) | .messages] | add' "$RES"; }
per_run=$(jq -r -s '[.[] | select(.label=="intake")] | map("\(.server) \(.durable_msgs_per_s|floor)/s (load \(.loadavg))") | join(", ")' "$RES")
errs=$(jq -s '[.[] | select(.label=="intake") | .errors] | add' "$RES")
msgs=$(jq -s '[.[] | select(.label=="intake") | .messages] | add' "$RES")

# check_quantiles BEFORE AFTER: a table row per check and stage with the
# number of calls, p50 and p99 (ms) of the histogram's increase.
check_quantiles() {
	awk '
	function key(line,   c, st) {
		match(line, /check="[^"]*"/); c = substr(line, RSTART + 7, RLENGTH - 8)
		match(line, /stage="[^"]*"/); st = substr(line, RSTART + 7, RLENGTH - 8)
		return c "|" st
	}
	function le(line) { match(line, /le="[^"]*"/); return substr(line, RSTART + 4, RLENGTH - 5) }
	FNR == NR { before[key($1) SUBSEP le($1)] = $2; next }
	{
		k = key($1); l = le($1)
		cum[k, l] = $2 - before[k SUBSEP l]
		if (!(k in seen)) { seen[k] = 1; keys[++nk] = k }
		bl[k, ++nb[k]] = l
	}
	function q(k, p,   total, i, prev, prevle, b, c) {
		total = cum[k, "+Inf"]
		if (total == 0) return "-"
		prev = 0; prevle = 0
		for (i = 1; i <= nb[k]; i++) {
			b = bl[k, i]; c = cum[k, b]
			if (c >= p * total) {
				if (b == "+Inf") return sprintf("> %.0f", prevle * 1000)
				if (i == 1) return sprintf("< %.1f", b * 1000) # below the first bound
				return sprintf("%.2f", (prevle + (b - prevle) * (p * total - prev) / (c - prev)) * 1000)
			}
			prev = c; prevle = b
		}
	}
	END {
		for (i = 1; i <= nk; i++) {
			k = keys[i]
			if (cum[k, "+Inf"] == 0) continue
			split(k, parts, "|")
			printf "| %s | %s | %d | %s | %s |\n", parts[1], parts[2], cum[k, "+Inf"], q(k, 0.5), q(k, 0.99)
		}
	}' "$1" "$2"
}

DATE=$(date -u +%Y-%m-%d)
if [ "${RECORD:-1}" = 0 ]; then
	OUT=$T/smtp.md
else
	mkdir -p "$REPO/bench/results"
	OUT=$REPO/bench/results/smtp-$DATE-$(date -u +%H%M).md
fi
{
	case $CHECKS/$MILTER in
	1/none) echo "## SMTP intake with the checks (SPF, DKIM, DMARC, DNSBL): postino's own vs Postfix + rspamd ($DATE)" ;;
	1/rspamd) echo "## SMTP intake with the checks and rspamd: postino's own + rspamd vs Postfix + rspamd ($DATE)" ;;
	*) echo "## SMTP intake: postino vs Postfix to Maildir ($DATE)" ;;
	esac
	echo
	echo "Command: \`$CMD\` (as root). Took $(($(date +%s) - SCRIPT_START)) s."
	echo "Host: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME"), $(df -T "$T" | awk 'NR==2 {print $2}') on $(df "$T" | awk 'NR==2 {print $1}');"
	echo "postino $BUILT_REV, $(go version | cut -d' ' -f3); Postfix $(postconf -d -h mail_version) (Debian package)."
	echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (shared machine; the client runs on the same cores)."
	echo
	echo "Client: bench/smtpload, $CONC concurrent senders x $COUNT messages of $SIZE octets, one recipient each (round-robin over"
	echo "u0..u$((MAILBOXES - 1))@bench.test), MAIL/RCPT/DATA pipelined, one connection per sender; $ROUNDS alternating rounds, medians shown."
	echo "Durable on both sides: postino fsyncs the message file and new/ before its 250; Postfix's cleanup fsyncs the queue file"
	echo "before its 250 and virtual(8) fsyncs the Maildir file. \"Durably delivered\" = accepted ÷ time from the start of the run"
	echo "until the last accepted message appeared in the Maildirs' new/ folders, measured the same way for both."
	echo "Postfix: smtpd -> cleanup -> qmgr -> virtual(8), default_process_limit $PF_PROCS, anvil limits $PF_LIMITS,"
	echo "virtual_destination_concurrency_limit $PF_VCONC, in_flow_delay $IN_FLOW_DELAY (default 1s: slower end to end here), other settings default."
	if [ "$MILTER" = rspamd ]; then
		# postino's own measure of each milter exchange (DATA to the
		# filter's last reply), over the measured runs and the warm-up.
		q=$(grep -o 'msg="milter: message filtered".* ms=[0-9.]*' "$T/postino.log" | sed 's/.* ms=//' | sort -n |
			awk '{a[NR]=$1} END {if (NR) printf "%d exchanges, p50 %.1f ms, p99 %.1f ms", NR, a[int(NR*0.5)+(NR*0.5>int(NR*0.5))], a[int(NR*0.99)+(NR*0.99>int(NR*0.99))]; else print "none logged"}')
		echo "postino's milter exchange per message (header, body, end of message and rspamd's scan): $q."
		echo "Checks: both pass every message through the same rspamd $(rspamd --version 2>/dev/null | awk '{print $NF}') (proxy worker, milter, self-scan, $RSPAMD_WORKERS processes;"
		echo "Debian's rules without network modules, X-Spam-Status added); postino: [[milter]], Postfix: smtpd_milters, both tempfail on failure."
	fi
	if [ "$CHECKS" = 1 ]; then
		echo "Checks: one NSD on 127.0.0.1 serves sender.test (SPF \`v=spf1 ip4:127.0.0.0/8 -all\`, a 2048-bit RSA DKIM key, DMARC p=reject),"
		echo "the blocklist bl.test (client not listed) and 127.in-addr.arpa. Every message is one DKIM-signed message (bench/compare/dkimsign.py,"
		echo "$(wc -c <"$T/signed.eml") octets) from sender@sender.test, EHLO mail.sender.test. postino: [mailauth] (SPF from MAIL FROM, DKIM, DMARC"
		echo "enforced), [antispam] dnsbl_sites = [\"bl.test\"], fcrdns and helo on (both skip loopback clients), no trusted networks, dns.server = NSD$([ "$MILTER" = rspamd ] && echo ", and rspamd as a milter")."
		echo "Postfix: rspamd $(rspamd --version 2>/dev/null | awk '{print $NF}') as a milter (proxy worker, self-scan, $RSPAMD_WORKERS processes) with its spf, dkim, dmarc and rbl (bl.test, private IPs"
		echo "not excluded) modules on the same NSD. A delivered message of each: $VERIFIED."
	fi
	echo
	echo "| metric | postino | Postfix | postino ÷ Postfix | target | met |"
	echo "|---|---:|---:|---:|---|---|"
	printf '%s\n' "${rows[@]}"
	echo
	echo "Every run (durable messages/s): $per_run."
	if [ "$CHECKS" = 1 ]; then
		echo
		echo "postino's time per check and stage over the measured runs (postino_check_seconds, scraped before and after; quantiles"
		echo "interpolated within the buckets as Prometheus's histogram_quantile; connect = Begin at EHLO, data = after the message is spooled):"
		echo
		echo "| check | stage | calls | p50 ms | p99 ms |"
		echo "|---|---|---:|---:|---:|"
		check_quantiles "$T/checks.before" "$T/checks.after"
		echo
	fi
	if [ "$CHECKS" = 1 ]; then
		echo "Measured messages with SPF, DKIM and DMARC all passed: postino $P_PASS of $(med_sum postino), Postfix+rspamd $F_PASS of $(med_sum postfix)."
		if [ "$P_PASS" != "$(med_sum postino)" ] || [ "$F_PASS" != "$(med_sum postfix)" ]; then
			echo "The others: a check's DNS query failed under load (rspamd has no DNS cache of its own; postino's resolver caches)."
		fi
	fi
	if [ "$BACKEND" = postgres ]; then
		echo
		echo "postino on PostgreSQL 15 (fsync = on, synchronous_commit = on, contents in the database; its 250 follows the COMMIT):"
		echo
		echo "| metric | postino PostgreSQL | postino Maildir | Postfix | PG ÷ Postfix | target | met |"
		echo "|---|---:|---:|---:|---:|---|---|"
		g=$(med postino-pg durable_msgs_per_s) p=$(med postino durable_msgs_per_s) f=$(med postfix durable_msgs_per_s)
		r=$(ratio "$g" "$f")
		echo "| durably delivered messages/s | $(fmt "$g") | $(fmt "$p") | $(fmt "$f") | $r | ≥ 1 | $(met "$r" ">=" 1) |"
		echo "| p50 ms (MAIL .. 250) | $(fmt "$(med postino-pg p50_ms)") | $(fmt "$(med postino p50_ms)") | $(fmt "$(med postfix p50_ms)") | - | - | - |"
		echo "| p99 ms | $(fmt "$(med postino-pg p99_ms)") | $(fmt "$(med postino p99_ms)") | $(fmt "$(med postfix p99_ms)") | - | - | - |"
		echo
		jq -s -r '[.[] | select(.label=="intake" and .server=="postino-pg")] | (map(.messages) | add) as $n | (map(.pg_cpu_s) | add) as $c |
			"PostgreSQL used \($c * 100 | round / 100) CPU s for \($n) deliveries = \($c * 1000000 / $n | round) µs per delivery = \($n / $c | round) deliveries per database core-second."' "$RES"
		echo
		echo "| calls | mean ms | total ms | statement |"
		echo "|---:|---:|---:|---|"
		pg_top_statements 12
		echo
	fi
	echo "Messages accepted in measured runs: $msgs; errors: $errs. Postfix's log: $PF_SENT deliveries by virtual(8) with status=sent"
	echo "(warm-up included), $PF_DEFERRED deferred."
} >"$OUT"
if [ "${RECORD:-1}" != 0 ]; then
	cp "$RES" "${OUT%.md}.jsonl"
	{
		echo
		cat "$OUT"
	} >>"$REPO/bench/RESULTS.md"
fi
echo
cat "$OUT"
