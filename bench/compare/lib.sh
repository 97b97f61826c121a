# lib.sh — shared by the comparison scripts (sourced, not run).

# freeport prints a free loopback TCP port not handed out before.
freeport() {
	local p
	while :; do
		p=$((20000 + RANDOM % 12000))
		if ! ss -Htln "sport = :$p" | grep -q . && [[ " ${USED_PORTS:-} " != *" $p "* ]]; then
			USED_PORTS="${USED_PORTS:-} $p"
			echo "$p"
			return
		fi
	done
}

# wait_port waits until something accepts on 127.0.0.1:PORT.
wait_port() { # port
	for _ in $(seq 300); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "nothing listens on $1" >&2
	return 1
}

# build_tools LOADER builds postino and bench/LOADER into $T/bin and sets
# POSTINO, LOAD and BUILT_REV (the revision measured: the one built now).
build_tools() { # loader
	mkdir -p "$T/bin"
	(cd "$REPO" && go build -o "$T/bin/postino" ./cmd/postino && go build -o "$T/bin/$1" "./bench/$1")
	BUILT_REV="$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO" && git diff --quiet HEAD -- cmd internal pop3 2>/dev/null || echo '+dirty') built $(date -u +%H:%MZ)"
	POSTINO=$T/bin/postino
	LOAD=$T/bin/$1
}

# --- PostgreSQL (BACKEND=postgres) --------------------------------------------
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
# pg_as runs a PostgreSQL program as postgres when we are root (initdb
# refuses root).
pg_as() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# start_pg DIR starts a PostgreSQL cluster in DIR on a free loopback port,
# DURABLE (fsync = on, synchronous_commit = on, full_page_writes = on: a
# commit is on disk before postino answers), with pg_stat_statements; it
# creates the database postino and sets PG_DSN, PG_PORT and PG_DIR.
start_pg() { # dir
	PG_DIR=$1
	PG_PORT=$(freeport)
	mkdir -p "$PG_DIR"
	if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_DIR"; fi
	pg_as "$PGBIN/initdb" -D "$PG_DIR/data" -A trust -U postgres >"$PG_DIR/initdb.out"
	cat >>"$PG_DIR/data/postgresql.conf" <<PGEOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_DIR'
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 300
shared_buffers = 256MB
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
PGEOF
	pg_as "$PGBIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start >/dev/null
	pg_psql postgres -c 'CREATE DATABASE postino'
	pg_psql postino -c 'CREATE EXTENSION pg_stat_statements'
	PG_DSN="postgres://postgres@127.0.0.1:$PG_PORT/postino?sslmode=disable"
}
stop_pg() { pg_as "$PGBIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true; }
pg_psql() { # database psql-args...
	local db=$1
	shift
	"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$db" "$@"
}

# pg_cpu prints the CPU seconds PostgreSQL used so far: the postmaster's
# and its live backends', plus those of the backends that ended (counted
# in the postmaster's children times).
pg_cpu() {
	local pm tck
	pm=$(head -1 "$PG_DIR/data/postmaster.pid")
	tck=$(getconf CLK_TCK)
	{
		awk '{print $14 + $15 + $16 + $17}' "/proc/$pm/stat"
		for c in $(pgrep -P "$pm"); do awk '{print $14 + $15}' "/proc/$c/stat" 2>/dev/null || true; done
	} | awk -v t="$tck" '{s += $1} END {printf "%.2f", s / t}'
}

# pg_top_statements prints the statements PostgreSQL ran, most time first
# (pg_stat_statements: calls, mean and total execution time).
pg_top_statements() { # limit
	pg_psql postino -A -t -F ' | ' -c "SELECT calls, round(mean_exec_time::numeric, 3) AS mean_ms,
		round(total_exec_time::numeric, 0) AS total_ms, regexp_replace(left(query, 110), '\s+', ' ', 'g') AS query
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'postino')
		ORDER BY total_exec_time DESC LIMIT ${1:-15}" | sed 's/^/| /; s/$/ |/'
}
