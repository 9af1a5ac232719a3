#!/usr/bin/env bash
# Benchmark: bootfleet-distributor versus dnsmasq as proxyDHCP + TFTP server, measured side by
# side by crates/testing/labbench inside a LAN made of network namespaces (created and removed by the
# bench; nothing touches the root namespace's interfaces). Each server runs alone in turn with
# the same files; simulated PXE clients (BIOS and x64 UEFI) live in their own namespace.
#
# Usage: sudo ./scripts/bench/distributor-vs-dnsmasq.sh [extra bootfleet-labbench flags]
#   e.g. ... --repeats 1 --storm 50         (see: target/release/bootfleet-labbench --help)
#
# Environment (optional):
#   LABBENCH_KEEP   keep the servers' logs and the served files in this directory
#
# Prints the machine, the date, the command and a markdown table (stdout); progress on stderr.
# Needs root, iproute2 and dnsmasq (apt-get install dnsmasq-base). It installs nothing and starts
# no process itself other than cargo and the bench (which stops the servers it started by pid).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces, udp/67 and udp/69)"
command -v ip >/dev/null || die "iproute2 is needed: apt-get install iproute2"
DNSMASQ="$(command -v dnsmasq || true)"
if [ -z "$DNSMASQ" ] && [ -x /usr/sbin/dnsmasq ]; then DNSMASQ=/usr/sbin/dnsmasq; fi
[ -n "$DNSMASQ" ] || die "dnsmasq is needed: apt-get install dnsmasq-base"

log "cargo build --release -p bootfleet-site-agent -p bootfleet-labbench (a no-op when up to date)"
(cd "$ROOT" && cargo build --release -p bootfleet-site-agent -p bootfleet-labbench >&2)
BENCH="$ROOT/target/release/bootfleet-labbench"

# 500 concurrent transfers need ~1000 descriptors on each side.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

ARGS=(--distributor-bin "$ROOT/target/release/bootfleet-distributor" --dnsmasq-bin "$DNSMASQ")
if [ -n "${LABBENCH_KEEP:-}" ]; then ARGS+=(--keep "$LABBENCH_KEEP"); fi
ARGS+=("$@")

CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "## Distributor vs dnsmasq (proxyDHCP + TFTP)"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: ${CPU:-unknown CPU}, $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, Linux $(uname -r)"
echo "- servers: bootfleet-distributor $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') (release), $("$DNSMASQ" --version | head -1 | awk '{print $1, $2, $3}')"
echo "- command: \`./scripts/bench/distributor-vs-dnsmasq.sh${*:+ $*}\`"
echo
"$BENCH" "${ARGS[@]}"
