#!/usr/bin/env bash
# Benchmark: concurrent writes through the REST gateway, POST /api/mainscripts (a new ~30-byte
# script each), on `bootfleet up`'s embedded default (SQLite), hit by wrk on loopback.
#
# Usage: ./scripts/bench/gateway-writes.sh
#
# Environment (all optional):
#   BOOTFLEET_BIN   use this bootfleet binary instead of building target/release/bootfleet
#   BENCH_DURATION  length of each run (default 5s)
#   BENCH_CONNS     the connection counts to run, one run each (default "1 8 64")
#
# Everything runs in a fresh temp dir that is removed on exit; only the processes this script
# started are stopped. It installs nothing (wrk: apt-get install wrk). Output: a markdown table.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION="${BENCH_DURATION:-5s}"
CONNS="${BENCH_CONNS:-1 8 64}"

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

command -v wrk >/dev/null || die "wrk is needed; install it with: apt-get install wrk"
# shellcheck source=scripts/bench/bootfleet-up.sh
. "$ROOT/scripts/bench/bootfleet-up.sh"
bootfleet_bin

TMP="$(mktemp -d "${TMPDIR:-/tmp}/bootfleet-bench.XXXXXX")"
BF_PID=""
cleanup() {
    local status=$?
    bootfleet_stop
    wait 2>/dev/null || true
    [ "$status" -ne 0 ] && [ -s "$TMP/bootfleet.stderr" ] && tail -n 20 "$TMP/bootfleet.stderr" >&2
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bootfleet_up

cat >"$TMP/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body   = '{"text":"#!ipxe\\necho hello\\n"}'
wrk.headers["Content-Type"] = "application/json"
EOF

echo "| connections | creates/s | p50, ms | p99, ms |"
echo "|---:|---:|---:|---:|"
for c in $CONNS; do
    out="$(wrk -t1 -c"$c" -d"$DURATION" --latency -s "$TMP/post.lua" \
        -H "Authorization: Bearer $ADMIN_TOKEN" "$BF_URL/api/mainscripts")"
    if grep -qE 'Non-2xx or 3xx responses|Socket errors' <<<"$out"; then
        printf '%s\n' "$out" >&2
        die "$c connections: wrk saw errors (see above)"
    fi
    awk -v c="$c" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
        /^Requests\/sec:/ { rps = $2 } $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
        END { printf "| %d | %.0f | %.2f | %.2f |\n", c, rps, p50, p99 }' <<<"$out"
done
