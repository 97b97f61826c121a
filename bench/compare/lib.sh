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
