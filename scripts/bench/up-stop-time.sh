#!/usr/bin/env bash
# How long `bootfleet up` takes to stop on SIGTERM, idle (every service and builder running,
# no job). Usage: scripts/bench/up-stop-time.sh [runs] (default 5); builds the debug binary.
# Everything listens on 127.0.0.1 ports picked here; the scratch directory is removed.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
cargo build --locked --quiet -p bootfleet --bin bootfleet
bin=$PWD/target/debug/bootfleet
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
for run in $(seq "$runs"); do
  scratch=$(mktemp -d /tmp/bootfleet-stop.XXXXXX)
  BOOTFLEET_DATA_DIR=$scratch BOOTFLEET_LISTEN=127.0.0.1:$(free_port) BOOTFLEET_NATS_PORT=$(free_port) \
    BOOTFLEET_GRPC_LISTEN=127.0.0.1:$(free_port) "$bin" up > "$scratch/up.log" 2>&1 &
  pid=$!
  for _ in $(seq 240); do grep -q '^export BOOTFLEET_TOKEN=' "$scratch/up.log" && break; sleep 0.25; done
  sleep 1
  start=$(date +%s%N)
  kill -TERM "$pid"
  for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.02; done
  end=$(date +%s%N)
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "run $run: stopped in $(( (end - start) / 1000000 )) ms"
  rm -rf "$scratch"
done
