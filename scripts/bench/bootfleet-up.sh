# Sourced by the gateway benchmarks: find or build the bootfleet binary, start `bootfleet up` in
# a data dir of the caller's temp dir on loopback, and stop it. The caller defines log and die.

# Sets BIN: $BOOTFLEET_BIN, or target/release/bootfleet built if needed.
bootfleet_bin() {
    if [ -n "${BOOTFLEET_BIN:-}" ]; then
        BIN="$BOOTFLEET_BIN"
    else
        log "cargo build --release -p bootfleet (a no-op when up to date)"
        (cd "$ROOT" && cargo build --release -p bootfleet)
        BIN="$ROOT/target/release/bootfleet"
    fi
    [ -x "$BIN" ] || die "no bootfleet binary at $BIN"
}

# A loopback port nobody listens on (bash's /dev/tcp connect fails => free).
free_port() {
    local p
    for _ in $(seq 100); do
        p=$(( 20000 + RANDOM % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    die "no free loopback port found"
}

# Starts `bootfleet up` with its data in $TMP/bootfleet-data; sets BF_PID, BF_DATA, BF_URL and
# ADMIN_TOKEN. Its output goes to $TMP/bootfleet.stdout and .stderr.
bootfleet_up() {
    BF_DATA="$TMP/bootfleet-data"
    local nats_port
    nats_port="$(free_port)"
    log "starting bootfleet up (data dir $BF_DATA)"
    BOOTFLEET_DATA_DIR="$BF_DATA" BOOTFLEET_LOG=warn \
        "$BIN" up --listen 127.0.0.1:0 --nats-port "$nats_port" \
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
}

# Stops the bootfleet this script started (SIGINT; it stops its nats-server child itself).
bootfleet_stop() {
    if [ -n "${BF_PID:-}" ] && kill -0 "$BF_PID" 2>/dev/null; then
        kill -INT "$BF_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$BF_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$BF_PID" 2>/dev/null; then
            log "bootfleet did not stop within 10 s of SIGINT; killing it"
            kill -KILL "$BF_PID" 2>/dev/null || true
        fi
    fi
}
