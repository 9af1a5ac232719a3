#!/usr/bin/env bash
# Benchmark: GET /api/mainscripts/:id through Bootfleet's REST gateway versus the same text served
# as a static file by nginx, both on loopback, both hit by wrk with 64 concurrent connections.
#
# Usage: ./scripts/bench/gateway-vs-nginx.sh
#
# Environment (all optional):
#   BOOTFLEET_BIN   use this bootfleet binary instead of building target/release/bootfleet
#   BENCH_DURATION  length of each measured run (default 10s)
#   BENCH_RUNS      measured runs per target, the median is reported (default 3)
#   BENCH_CONNS     concurrent connections (default 64)
#   BENCH_THREADS   wrk threads (default 2)
#
# Everything runs in a fresh temp dir (bootfleet data dir, nginx prefix) that is removed on exit;
# only the processes this script started are stopped. It installs nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION="${BENCH_DURATION:-10s}"
RUNS="${BENCH_RUNS:-3}"
CONNS="${BENCH_CONNS:-64}"
THREADS="${BENCH_THREADS:-2}"
NGINX="$(command -v nginx || true)"
if [ -z "$NGINX" ] && [ -x /usr/sbin/nginx ]; then NGINX=/usr/sbin/nginx; fi   # sbin may not be in PATH

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

# --- prerequisites: find them, never install them -------------------------------------------------
if ! command -v wrk >/dev/null || [ -z "$NGINX" ]; then
    log "wrk and nginx are needed; install them with: apt-get install wrk nginx-light"
    exit 1
fi
command -v curl >/dev/null || die "curl is needed; install it with: apt-get install curl"

if [ -n "${BOOTFLEET_BIN:-}" ]; then
    BIN="$BOOTFLEET_BIN"
else
    log "cargo build --release -p bootfleet (a no-op when up to date)"
    (cd "$ROOT" && cargo build --release -p bootfleet)
    BIN="$ROOT/target/release/bootfleet"
fi
[ -x "$BIN" ] || die "no bootfleet binary at $BIN"

# --- temp dir and cleanup --------------------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/bootfleet-bench.XXXXXX")"
BF_PID=""
NGINX_PID=""
cleanup() {
    local status=$?
    if [ -n "$BF_PID" ] && kill -0 "$BF_PID" 2>/dev/null; then
        kill -INT "$BF_PID" 2>/dev/null || true   # bootfleet stops its nats-server child itself
        for _ in $(seq 100); do kill -0 "$BF_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$BF_PID" 2>/dev/null; then
            log "bootfleet did not stop within 10 s of SIGINT; killing it"
            kill -KILL "$BF_PID" 2>/dev/null || true
        fi
    fi
    if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
        kill -QUIT "$NGINX_PID" 2>/dev/null || true   # graceful; its workers exit with it
        for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -TERM "$NGINX_PID" 2>/dev/null || true
    fi
    wait 2>/dev/null || true
    if [ "$status" -ne 0 ]; then
        for f in "$TMP"/bootfleet.stderr "$TMP"/nginx/logs/error.log; do
            [ -s "$f" ] && { log "--- tail of $f"; tail -n 20 "$f" >&2; }
        done
    fi
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A loopback port nobody listens on (bash's /dev/tcp connect fails => free).
free_port() {
    local p
    for _ in $(seq 100); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    die "no free loopback port found"
}

# --- the script text both servers serve (~300 bytes, a typical iPXE boot menu) --------------------
SCRIPT_FILE="$TMP/mainscript.ipxe"
cat >"$SCRIPT_FILE" <<'EOF'
#!ipxe
menu Boot ${hostname} (${net0/mac})
item debian  Debian 12 installer
item rescue  Rescue shell
item local   Local disk
choose --timeout 5000 --default local target && goto ${target}
:debian
chain ${base-url}/debian/boot.ipxe
:rescue
chain ${base-url}/rescue/boot.ipxe
:local
exit
EOF

# --- bootfleet up ---------------------------------------------------------------------------------
BF_DATA="$TMP/bootfleet-data"
NATS_PORT="$(free_port)"
log "starting bootfleet up (data dir $BF_DATA)"
BOOTFLEET_DATA_DIR="$BF_DATA" BOOTFLEET_LOG=warn \
    "$BIN" up --listen 127.0.0.1:0 --nats-port "$NATS_PORT" \
    >"$TMP/bootfleet.stdout" 2>"$TMP/bootfleet.stderr" &
BF_PID=$!
for _ in $(seq 600); do
    grep -q '^export BOOTFLEET_TOKEN=' "$TMP/bootfleet.stdout" 2>/dev/null && break
    kill -0 "$BF_PID" 2>/dev/null || die "bootfleet up exited during start"
    sleep 0.1
done
grep -q '^export BOOTFLEET_TOKEN=' "$TMP/bootfleet.stdout" || die "bootfleet up did not start within 60 s"
BF_URL="$(sed -n 's/^export BOOTFLEET_URL=//p' "$TMP/bootfleet.stdout")"
ADMIN_TOKEN="$(sed -n 's/^export BOOTFLEET_TOKEN=//p' "$TMP/bootfleet.stdout")"
log "bootfleet gateway at $BF_URL"

# Create the script (JSON-encode the text with jq-free escaping: backslash, quote, newline).
json_text="$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' "$SCRIPT_FILE" | awk '{printf "%s\\n", $0}')"
created="$(curl -sS --fail-with-body -X POST "$BF_URL/api/mainscripts" \
    -H "Authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \
    -d "{\"text\":\"$json_text\"}")" || die "creating the mainscript failed: $created"
SCRIPT_ID="$(printf '%s' "$created" | sed -n 's/.*"id"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')"
[ -n "$SCRIPT_ID" ] || die "no id in the create response: $created"

# The node token, as a booting node would use it.
NODE_TOKEN="$(BOOTFLEET_DATA_DIR="$BF_DATA" BOOTFLEET_LOG=warn "$BIN" token --role node --days 1)"
BF_TARGET="$BF_URL/api/mainscripts/$SCRIPT_ID"

# --- nginx serving the same bytes as a static file ------------------------------------------------
NGINX_PORT="$(free_port)"
mkdir -p "$TMP/nginx/logs" "$TMP/nginx/html/api/mainscripts"
cp "$SCRIPT_FILE" "$TMP/nginx/html/api/mainscripts/$SCRIPT_ID"
# When run as root, nginx's workers run as nobody: let them through the (0700) temp dir to html/.
chmod 711 "$TMP"
chmod -R a+rX "$TMP/nginx/html"
cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 2;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/nginx/tmp-body;
    proxy_temp_path $TMP/nginx/tmp-proxy;
    fastcgi_temp_path $TMP/nginx/tmp-fastcgi;
    uwsgi_temp_path $TMP/nginx/tmp-uwsgi;
    scgi_temp_path $TMP/nginx/tmp-scgi;
    types { }
    default_type "text/plain; charset=utf-8";
    # hyper (the gateway) never closes a keep-alive connection on its own; nor should nginx here.
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $TMP/nginx/html;
    }
}
EOF
log "starting nginx on 127.0.0.1:$NGINX_PORT"
"$NGINX" -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx" -e "$TMP/nginx/logs/error.log" 2>>"$TMP/nginx/logs/error.log" &
NGINX_PID=$!
NGINX_TARGET="http://127.0.0.1:$NGINX_PORT/api/mainscripts/$SCRIPT_ID"
for _ in $(seq 100); do
    curl -sf -o /dev/null "$NGINX_TARGET" && break
    kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited during start"
    sleep 0.1
done

# --- sanity: both answer 200 with exactly the same bytes ------------------------------------------
AUTH="Authorization: Bearer $NODE_TOKEN"
curl -sS --fail-with-body -H "$AUTH" -o "$TMP/from-gateway" "$BF_TARGET" || die "gateway GET failed"
curl -sS --fail-with-body -H "$AUTH" -o "$TMP/from-nginx" "$NGINX_TARGET" || die "nginx GET failed"
cmp -s "$TMP/from-gateway" "$SCRIPT_FILE" || die "the gateway does not return the script text verbatim"
cmp -s "$TMP/from-nginx" "$SCRIPT_FILE" || die "nginx does not return the script text verbatim"
log "both serve the same $(wc -c <"$SCRIPT_FILE")-byte script"

# --- wrk -------------------------------------------------------------------------------------------
# Prints "<req/s> <p99 in ms>" for one run; fails on non-2xx/3xx responses or socket errors.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { exit 1 }
    }'
}
run_wrk() { # <label> <url> <duration>
    local out
    out="$(wrk -t"$THREADS" -c"$CONNS" -d"$3" --latency -H "$AUTH" "$2")"
    printf '%s\n' "$out" >>"$TMP/wrk-$1.log"
    if grep -qE 'Non-2xx or 3xx responses|Socket errors' <<<"$out"; then
        printf '%s\n' "$out" >&2
        die "$1: wrk saw errors (see above)"
    fi
    local rps p99
    rps="$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")"
    p99="$(awk '$1 == "99%" { print $2 }' <<<"$out")"
    [ -n "$rps" ] && [ -n "$p99" ] || { printf '%s\n' "$out" >&2; die "$1: cannot parse wrk output"; }
    echo "$rps $(to_ms "$p99")"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

# Anything else using the CPU (a compile, a test run) distorts the numbers: say what the load was.
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load average before measuring: $LOAD_BEFORE"
declare -A RPS P99
for target in gateway nginx; do
    url="$BF_TARGET"; [ "$target" = nginx ] && url="$NGINX_TARGET"
    log "$target: warm-up (3s)"
    run_wrk "$target" "$url" 3s >/dev/null
    results=()
    for i in $(seq "$RUNS"); do
        r="$(run_wrk "$target" "$url" "$DURATION")"
        log "$target: run $i/$RUNS: $(awk '{ printf "%s req/s, p99 %s ms", $1, $2 }' <<<"$r")"
        results+=("$r")
    done
    RPS[$target]="$(printf '%s\n' "${results[@]}" | awk '{ print $1 }' | median)"
    P99[$target]="$(printf '%s\n' "${results[@]}" | awk '{ print $2 }' | median)"
done

# --- result ----------------------------------------------------------------------------------------
LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "load average before: $LOAD_BEFORE; after: $LOAD_AFTER (wrk and the servers share $(nproc) CPUs)"
echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency, $RUNS runs each, median; $(wc -c <"$SCRIPT_FILE")-byte script, node token in the Authorization header"
echo
echo "| Target | Requests/s (median of $RUNS) | p99 latency (median of $RUNS) |"
echo "|---|---:|---:|"
printf '| bootfleet gateway | %.0f | %.2f ms |\n' "${RPS[gateway]}" "${P99[gateway]}"
printf '| nginx (static file) | %.0f | %.2f ms |\n' "${RPS[nginx]}" "${P99[nginx]}"
