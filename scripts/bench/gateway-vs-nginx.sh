#!/usr/bin/env bash
# Benchmark: a node-facing read through Bootfleet's REST gateway versus the same text served as a
# static file by nginx, both on loopback, both hit by wrk with 64 concurrent connections.
#
# Usage: ./scripts/bench/gateway-vs-nginx.sh
#
# Environment (all optional):
#   BENCH_READ      what the gateway serves (default script):
#                   script   GET /api/mainscripts/:id, a stored script, with a node token
#                   template GET /api/machines/:id/files/kickstart, a profile's template rendered for
#                            one machine, with that machine's own token (as its installer fetches it;
#                            repeats are answered from the gateway's copy, and their fetches reach
#                            the machine's timeline as counted events)
#   BOOTFLEET_BIN   use this bootfleet binary instead of building target/release/bootfleet
#   BENCH_DURATION  length of each measured run (default 10s)
#   BENCH_RUNS      measured runs per target, the median is reported (default 3)
#   BENCH_CONNS     concurrent connections (default 64)
#   BENCH_THREADS   wrk threads (default 2)
#   BENCH_IDLE_WAIT seconds to wait, before each run, for other processes to leave the CPUs (default 600)
#
# Everything runs in a fresh temp dir (bootfleet data dir, nginx prefix) that is removed on exit;
# only the processes this script started are stopped. It installs nothing. Output: a markdown table
# (median and min–max of the runs), and a warning if other processes used the CPUs meanwhile.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
READ="${BENCH_READ:-script}"
case "$READ" in script|template) ;; *) echo "bench: BENCH_READ must be script or template, not '$READ'" >&2; exit 2 ;; esac
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

# shellcheck source=scripts/bench/bootfleet-up.sh
. "$ROOT/scripts/bench/bootfleet-up.sh"
bootfleet_bin

# --- temp dir and cleanup --------------------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/bootfleet-bench.XXXXXX")"
BF_PID=""
NGINX_PID=""
cleanup() {
    local status=$?
    bootfleet_stop
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
bootfleet_up

# JSON-encodes a file's text as a string, jq-free: backslash, quote, newline.
json_string() { printf '"%s"' "$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' "$1" | awk '{printf "%s\\n", $0}')"; }
admin_post() { # <path> <json body>: prints the response body, fails on a non-2xx answer
    curl -sS --fail-with-body -X POST "$BF_URL$1" \
        -H "Authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' -d "$2"
}
json_id() { sed -n 's/.*"id"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p'; }

if [ "$READ" = script ]; then
    created="$(admin_post /api/mainscripts "{\"text\":$(json_string "$SCRIPT_FILE")}")" \
        || die "creating the mainscript failed: $created"
    SCRIPT_ID="$(printf '%s' "$created" | json_id)"
    [ -n "$SCRIPT_ID" ] || die "no id in the create response: $created"
    # The node token, as a booting node would use it.
    NODE_TOKEN="$(BOOTFLEET_DATA_DIR="$BF_DATA" BOOTFLEET_LOG=warn "$BIN" token --role node --days 1)"
    TOKEN_KIND="node token"
    READ_PATH="/api/mainscripts/$SCRIPT_ID"
else
    # A profile whose kickstart uses the machine's fields, and whose iPXE script hands the
    # machine its own token (how a real node learns it).
    cat >"$TMP/kickstart.tmpl" <<'EOF'
# kickstart for {{ machine.name }} ({{ machine.mac }}) at {{ machine.site }}
lang en_US.UTF-8
keyboard us
network --bootproto=dhcp --hostname={{ machine.name }}
rootpw --lock
url --url={{ api }}/mirror/el9
%post
curl -fsS {{ files }}/post-install.sh | sh
%end
EOF
    printf '#!ipxe\nset machine-token {{ token }}\n' >"$TMP/ipxe.tmpl"
    admin_post /api/profiles "{\"name\":\"bench\",\"ipxeTemplate\":$(json_string "$TMP/ipxe.tmpl"),\"templates\":{\"kickstart\":$(json_string "$TMP/kickstart.tmpl")}}" \
        >/dev/null || die "creating the profile failed"
    created="$(admin_post /api/machines '{"mac":"52:54:00:be:00:01","name":"bench1","artifactId":"bench-site","profile":"bench","state":"install"}')" \
        || die "creating the machine failed: $created"
    MACHINE_ID="$(printf '%s' "$created" | json_id)"
    [ -n "$MACHINE_ID" ] || die "no id in the create response: $created"
    NODE_TOKEN="$(curl -sS --fail-with-body -H "Authorization: Bearer $ADMIN_TOKEN" "$BF_URL/api/machines/$MACHINE_ID/script" \
        | sed -n 's/^set machine-token //p')"
    [ -n "$NODE_TOKEN" ] || die "no machine token in the machine's script"
    TOKEN_KIND="the machine's own token"
    READ_PATH="/api/machines/$MACHINE_ID/files/kickstart"
    # What nginx serves: the text as the gateway rendered it for this machine.
    curl -sS --fail-with-body -H "Authorization: Bearer $NODE_TOKEN" -o "$SCRIPT_FILE" "$BF_URL$READ_PATH" \
        || die "the first rendered read failed"
fi
BF_TARGET="$BF_URL$READ_PATH"

# --- nginx serving the same bytes as a static file ------------------------------------------------
NGINX_PORT="$(free_port)"
mkdir -p "$TMP/nginx/logs" "$TMP/nginx/html$(dirname "$READ_PATH")"
cp "$SCRIPT_FILE" "$TMP/nginx/html$READ_PATH"
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
NGINX_TARGET="http://127.0.0.1:$NGINX_PORT$READ_PATH"
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
spread() { sort -g | awk -v f="$1" '{ v[NR] = $1 } END { printf f " (" f "–" f ")", v[int((NR + 1) / 2)], v[1], v[NR] }'; }

# --- a shared machine: wait until it is idle, and say how much CPU others used ---------------------
# A compile or test run next to the bench lowers both numbers a lot. So before each run the bench waits
# (up to BENCH_IDLE_WAIT seconds, default 600) for the CPUs to be idle, and afterwards computes the CPU
# used by processes it did not start: all busy CPU time (/proc/stat) minus that of bootfleet, its
# nats-server, nginx and its workers, and this shell's finished children (wrk, curl...). 1 tick = 1/100 s.
cpu_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }
our_ticks() { # must run in this shell (not in $(...)): `times` reports this shell's finished children
    local p t=0
    for p in "$BF_PID" "$NGINX_PID" $(pgrep -P "$BF_PID" || true) $(pgrep -P "$NGINX_PID" || true); do
        t=$(( t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0) ))
    done
    times >"$TMP/times"
    OUR_TICKS=$(( t + $(awk 'NR == 2 { split($1, u, "m"); split($2, s, "m"); printf "%d", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * 100 }' "$TMP/times") ))
}
wait_idle() {
    local b0 t0 b1 t1 waited=0
    while [ "$waited" -lt "${BENCH_IDLE_WAIT:-600}" ]; do
        read -r b0 t0 < <(cpu_ticks); sleep 2; read -r b1 t1 < <(cpu_ticks)
        # busy cores = busy ticks / all ticks * CPUs; idle enough below 0.15 cores
        awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) -v n="$(nproc)" 'BEGIN { exit !(b / t * n < 0.15) }' && return 0
        [ "$waited" -eq 0 ] && log "waiting for the machine to be idle (other processes are using the CPUs)"
        waited=$((waited + 2))
    done
    log "the machine did not become idle within ${BENCH_IDLE_WAIT:-600} s; measuring anyway"
}

declare -A RPS P99 OTHERS
for target in gateway nginx; do
    url="$BF_TARGET"; [ "$target" = nginx ] && url="$NGINX_TARGET"
    log "$target: warm-up (3s)"
    run_wrk "$target" "$url" 3s >/dev/null
    results=()
    for i in $(seq "$RUNS"); do
        wait_idle
        read -r b0 t0 < <(cpu_ticks); our_ticks; o0=$OUR_TICKS
        r="$(run_wrk "$target" "$url" "$DURATION")"
        read -r b1 t1 < <(cpu_ticks); our_ticks; o1=$OUR_TICKS
        others="$(awk -v b=$((b1 - b0 - (o1 - o0))) -v t=$((t1 - t0)) -v n="$(nproc)" \
            'BEGIN { c = b / t * n; printf "%.2f", c < 0 ? 0 : c }')"
        log "$target: run $i/$RUNS: $(awk '{ printf "%s req/s, p99 %s ms", $1, $2 }' <<<"$r"), other processes: $others cores"
        results+=("$r $others")
    done
    RPS[$target]="$(printf '%s\n' "${results[@]}" | awk '{ print $1 }' | spread '%.0f')"
    P99[$target]="$(printf '%s\n' "${results[@]}" | awk '{ print $2 }' | spread '%.2f')"
    OTHERS[$target]="$(printf '%s\n' "${results[@]}" | awk '{ print $3 }' | sort -g | tail -n 1)"
done

# --- result ----------------------------------------------------------------------------------------
echo
echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency; $RUNS runs each: median (min–max)."
echo "GET $(sed 's/[0-9a-f-]\{36\}/:id/' <<<"$READ_PATH"): $(wc -c <"$SCRIPT_FILE") bytes; $TOKEN_KIND in the Authorization header; wrk and the servers share $(nproc) CPUs."
echo
echo "| Target | Requests/s | p99 latency, ms | other processes' CPU during the runs, cores (max) |"
echo "|---|---:|---:|---:|"
echo "| bootfleet gateway | ${RPS[gateway]} | ${P99[gateway]} | ${OTHERS[gateway]} |"
echo "| nginx (static file) | ${RPS[nginx]} | ${P99[nginx]} | ${OTHERS[nginx]} |"
for target in gateway nginx; do
    if awk -v c="${OTHERS[$target]}" 'BEGIN { exit !(c >= 0.15) }'; then
        echo
        echo "WARNING: other processes used up to ${OTHERS[$target]} cores during the $target runs;"
        echo "these numbers are too low. Rerun on an otherwise idle machine."
    fi
done
