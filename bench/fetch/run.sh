#!/bin/sh
# Time to download a 1,000-message mailbox with postino fetch, mpop and
# fetchmail from the same postino server on loopback (implicit TLS, leave
# on server, a fresh UIDL state for every run), and print the ratios.
#
# Usage: bench/fetch/run.sh [MESSAGES] [RUNS]     (defaults 1000 and 3)
#
# Each client writes to its natural local destination: postino fetch to a
# Maildir and to an mbox (both fsync'd per message), mpop to a Maildir and
# to an mbox, fetchmail to a BSMTP file (its cheapest local sink, no MDA
# fork per message). Reported: the median wall-clock time of RUNS runs.
set -eu
N=${1:-1000}
RUNS=${2:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=$(mktemp -d /tmp/postino-fetch-bench.XXXXXX)
SERVER_PID=
cleanup() {
	[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cd "$ROOT"
go build -o "$W/postino" ./cmd/postino
P=$W/postino
PORT=$(free_port)
cat > "$W/postino.toml" <<CONF
data_dir = "$W/data"
[pop3]
listen = ""
listen_tls = "127.0.0.1:$PORT"
[smtp]
listen = ""
submission = ""
submissions = ""
CONF
"$P" serve --config "$W/postino.toml" > "$W/serve.log" 2>&1 &
SERVER_PID=$!
for i in $(seq 50); do grep -q fingerprint "$W/serve.log" 2>/dev/null && break; sleep 0.1; done
FP=$(sed -n 's/.*fingerprint \([0-9A-F:]*\).*/\1/p' "$W/serve.log")
CERT=$W/data/tls/cert.pem
USER=bench@example.test
PASS=bench-password
echo "$PASS" | "$P" user add "$USER" --password-stdin --data "$W/data" > /dev/null

# N messages of 1 to 40 KiB (mean about 10 KiB), with realistic headers.
echo "filling the mailbox with $N messages..." >&2
i=1
while [ "$i" -le "$N" ]; do
	size=$(( (i * 7919 % 40) + 1 ))
	{
		printf 'Received: from mx.example.net by mail.example.test; Mon, 1 Jan 2024 00:00:00 +0000\n'
		printf 'From: Sender %d <sender%d@example.net>\nTo: %s\nSubject: benchmark message %d\n' "$i" "$i" "$USER" "$i"
		printf 'Message-ID: <%d.bench@example.net>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n\n' "$i"
		head -c $((size * 1024)) /dev/zero | tr '\0' 'x' | fold -w 76
		printf '\n'
	} | "$P" deliver --data "$W/data" "$USER"
	i=$((i + 1))
done
TOTAL=$(du -sk "$W/data/mail" | cut -f1)
echo "mailbox: $N messages, ${TOTAL} KiB on disk" >&2

# time_cmd NAME SETUP CMD...: runs SETUP then CMD RUNS times, prints the
# median seconds.
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timeit() {
	name=$1; setup=$2; shift 2
	for r in $(seq "$RUNS"); do
		sh -c "$setup"
		# Write back what filling the mailbox and the previous run left
		# dirty, so that no client pays for another's writes.
		sync
		t0=$(date +%s.%N)
		"$@" > "$W/$name.out" 2>&1 || { code=$?; [ "$code" -le 1 ] || { echo "$name failed ($code):" >&2; cat "$W/$name.out" >&2; exit 1; }; }
		t1=$(date +%s.%N)
		echo "$t1 - $t0" | bc | awk '{printf "%.2f\n", $1}'
	done | median
}

# postino fetch
T_PM=$(timeit postino-maildir "rm -rf $W/pf $W/pmd" "$P" fetch --server "127.0.0.1:$PORT" --fingerprint "$FP" \
	--user "$USER" --password-command "echo $PASS" --to "maildir:$W/pmd" --state-dir "$W/pf" --quiet)
COUNT=$(ls "$W/pmd/new" | wc -l)
[ "$COUNT" -eq "$N" ] || { echo "postino fetch delivered $COUNT messages, want $N" >&2; exit 1; }
T_PB=$(timeit postino-mbox "rm -rf $W/pf $W/pmbox" "$P" fetch --server "127.0.0.1:$PORT" --fingerprint "$FP" \
	--user "$USER" --password-command "echo $PASS" --to "mbox:$W/pmbox" --state-dir "$W/pf" --quiet)

# mpop
T_MM=-; T_MB=-
if command -v mpop > /dev/null; then
	mpoprc() {
		cat > "$W/mpoprc" <<RC
account bench
host localhost
port $PORT
tls on
tls_starttls off
tls_trust_file $CERT
user $USER
password $PASS
auth user
keep on
uidls_file $W/mpop-uidls
delivery $1
RC
		chmod 600 "$W/mpoprc"
	}
	mpoprc "maildir $W/mmd"
	T_MM=$(timeit mpop-maildir "rm -rf $W/mmd $W/mpop-uidls; mkdir -p $W/mmd/new $W/mmd/cur $W/mmd/tmp" mpop -q -C "$W/mpoprc" bench)
	COUNT=$(ls "$W/mmd/new" | wc -l)
	[ "$COUNT" -eq "$N" ] || { echo "mpop delivered $COUNT messages, want $N" >&2; exit 1; }
	mpoprc "mbox $W/mmbox"
	T_MB=$(timeit mpop-mbox "rm -f $W/mmbox $W/mpop-uidls" mpop -q -C "$W/mpoprc" bench)
fi

# fetchmail
T_FM=-
if command -v fetchmail > /dev/null; then
	mkdir -p "$W/fmhome"
	cat > "$W/fetchmailrc" <<RC
set no syslog
set no bouncemail
poll localhost protocol pop3 port $PORT uidl
  user "$USER" there with password "$PASS" is "bench" here
  ssl sslproto "tls1.2+" sslcertck sslcertfile "$CERT"
  keep
RC
	chmod 600 "$W/fetchmailrc"
	T_FM=$(timeit fetchmail "rm -f $W/fmhome/.fetchids $W/fm.bsmtp" env HOME="$W/fmhome" fetchmail --nodetach --silent \
		--fetchmailrc "$W/fetchmailrc" --idfile "$W/fmhome/.fetchids" --pidfile "$W/fmhome/.pid" --bsmtp "$W/fm.bsmtp")
	COUNT=$(grep -c '^MAIL FROM' "$W/fm.bsmtp" || true)
	[ "$COUNT" -eq "$N" ] || { echo "fetchmail delivered $COUNT messages, want $N" >&2; exit 1; }
fi

ratio() { [ "$2" = - ] && echo - || echo "$2 $1" | awk '{printf "%.2f", $1 / $2}'; }
echo
echo "$N messages, ${TOTAL} KiB, implicit TLS on loopback, median of $RUNS runs ($(nproc) CPUs)"
printf '| %-32s | %8s | %-22s |\n' client seconds "time / postino maildir"
printf '|%s|%s|%s|\n' "----------------------------------" "----------" "------------------------"
printf '| %-32s | %8s | %-22s |\n' "postino fetch → Maildir (fsync)" "$T_PM" 1.00
printf '| %-32s | %8s | %-22s |\n' "postino fetch → mbox (fsync)" "$T_PB" "$(ratio "$T_PM" "$T_PB")"
printf '| %-32s | %8s | %-22s |\n' "mpop → Maildir" "$T_MM" "$(ratio "$T_PM" "$T_MM")"
printf '| %-32s | %8s | %-22s |\n' "mpop → mbox" "$T_MB" "$(ratio "$T_PM" "$T_MB")"
printf '| %-32s | %8s | %-22s |\n' "fetchmail → BSMTP file" "$T_FM" "$(ratio "$T_PM" "$T_FM")"
