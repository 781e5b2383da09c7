#!/usr/bin/env bash
# The scale series of BENCHMARKS.md ("Scale"), from an empty log, on release binaries:
#
#   cargo build --release --workspace
#   tools/scale.sh [ENTRIES] [READ_AT] [OUT]   # defaults: 30000000, 1000000,10000000,30000000,
#                                              # docs/scale
#
# A release server on fixed loopback ports with the rate limits lifted, then `btlog-load
# scale`, then `btlog-load plot`. Scratch data goes under ${SCALE_DIR:-/tmp/btlog-scale}, removed
# at the end unless KEEP=1 (its RocksDB LOG holds the compaction statistics).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-30000000}
read_at=${2:-1000000,10000000,30000000}
out=${3:-docs/scale}
bin=${CARGO_TARGET_DIR:-target}/release
dir=${SCALE_DIR:-/tmp/btlog-scale}
rm -rf "$dir" && mkdir -p "$dir/data" "$out"
printf '[limits]\nrate_per_second = 1000000.0\nrate_burst = 1000000\n' >"$dir/config.toml"
token=$("$bin/btlog" token --data "$dir/data" --registry npm --allow '*')
"$bin/btlog" serve --data "$dir/data" --config "$dir/config.toml" --http 127.0.0.1:18090 \
  --grpc 127.0.0.1:18091 >"$dir/server.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
}
trap cleanup EXIT
up=""
for _ in $(seq 100); do curl -sf http://127.0.0.1:18090/healthz >/dev/null && up=1 && break; sleep 0.1; done
[ -n "$up" ] || { echo "the server did not start; see $dir/server.log" >&2; KEEP=1; exit 1; }
"$bin/btlog-load" scale --grpc 127.0.0.1:18091 --http http://127.0.0.1:18090 --token "$token" \
  --pid "$server" --data "$dir/data" --scratch "$dir/mon" --entries "$n" --read-at "$read_at" \
  --out "$out"
"$bin/btlog-load" plot --dir "$out"
