#!/usr/bin/env bash
# Publishing, restore and bucket-read figures of BENCHMARKS.md ("Object storage"), on a local
# 3-node Garage cluster (tools/garage-cluster.sh) and release binaries:
#
#   cargo build --release --workspace
#   tools/bench-bucket.sh [ENTRIES]        # default 1000000; prints one JSON line per figure
#
# Scratch data goes under ${BENCH_DIR:-/tmp/btlog-bench-bucket}, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-1000000}
bin=${CARGO_TARGET_DIR:-target}/release
dir=${BENCH_DIR:-/tmp/btlog-bench-bucket}
rm -rf "$dir" && mkdir -p "$dir"
tools/garage-cluster.sh start "$dir/garage" >/dev/null
# shellcheck disable=SC1091
. "$dir/garage/env"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  tools/garage-cluster.sh stop "$dir/garage" || true
  rm -rf "$dir"
}
trap cleanup EXIT

metric() { curl -s "http://127.0.0.1:18080/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

# serve NAME [--publish URL]: a release server on fixed loopback ports, rate limits lifted.
serve() {
  local data="$dir/$1"; shift
  mkdir -p "$data"
  printf '[limits]\nrate_per_second = 1000000.0\nrate_burst = 1000000\n' >"$dir/config.toml"
  token=$("$bin/btlog" token --data "$data" --registry bench --allow '*')
  "$bin/btlog" serve --data "$data" --config "$dir/config.toml" --http 127.0.0.1:18080 \
    --grpc 127.0.0.1:18081 "$@" >"$data.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }
# CPU seconds (user + system) the server has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$server/stat"; }

# 1. Ingest over gRPC without and with publishing; lag sampled every 0.5 s while publishing.
serve plain
echo "{\"figure\":\"ingest, no publishing\",\"result\":$("$bin/btlog-load" ingest --grpc 127.0.0.1:18081 --token "$token" --entries "$n")}"
echo "{\"figure\":\"server CPU, no publishing\",\"cpu_s\":$(cpu)}"
stop
serve published --publish "$BTLOG_BUCKET/bench"
( while sleep 0.5; do echo "$(metric btlog_publish_lag_entries) $(metric btlog_publish_lag_seconds)"; done ) >"$dir/lag" &
sampler=$!
start=$(date +%s.%N)
echo "{\"figure\":\"ingest, publishing\",\"result\":$("$bin/btlog-load" ingest --grpc 127.0.0.1:18081 --token "$token" --entries "$n")}"
ingested=$(date +%s.%N)
until [ "$(metric btlog_publish_lag_entries)" = 0 ]; do sleep 0.1; done
done_at=$(date +%s.%N)
kill $sampler
echo "{\"figure\":\"server CPU, publishing\",\"cpu_s\":$(cpu)}"
awk -v s="$start" -v i="$ingested" -v d="$done_at" -v n="$n" -v o="$(metric btlog_publish_objects_total)" -v b="$(metric btlog_publish_bytes_total)" '
  { if ($1 > e) e = $1; if ($2 > t) t = $2 }
  END { printf "{\"figure\":\"publishing\",\"max_lag_entries\":%d,\"max_lag_seconds\":%.2f,\"drained_after_ingest_s\":%.2f,\"published_entries_per_s\":%.0f,\"objects\":%d,\"mib\":%.1f}\n", e, t, d - i, n / (d - s), o, b / 1048576 }' "$dir/lag"

# 2. Reads: the monitor catching up, and inclusion proofs, from the server and from the bucket.
web="$BTLOG_WEB_1/bench/"
for src in "http://127.0.0.1:18080" "$web"; do
  rm -rf "$dir/monitor"
  t0=$(date +%s.%N)
  "$bin/btlog-monitor" --log "$src" --vkey "$dir/published/log.vkey" --state "$dir/monitor" --once >/dev/null 2>&1
  t1=$(date +%s.%N)
  echo "{\"figure\":\"monitor catch-up\",\"from\":\"$src\",\"entries_per_s\":$(echo "$n / ($t1 - $t0)" | bc)}"
done
echo "{\"figure\":\"server /v1 proofs\",\"result\":$("$bin/btlog-load" read --http http://127.0.0.1:18080 --kind proofs --requests 50000)}"
echo "{\"figure\":\"server tile-built proofs\",\"result\":$("$bin/btlog-load" read --http http://127.0.0.1:18080 --kind tile-proofs --requests 20000)}"
echo "{\"figure\":\"bucket tile-built proofs\",\"result\":$("$bin/btlog-load" read --http "$web" --kind tile-proofs --requests 2000)}"
stop

# 3. Restore from the bucket alone.
t0=$(date +%s.%N)
"$bin/btlog" restore --from "$BTLOG_BUCKET/bench" --data "$dir/restored" --vkey "$dir/published/log.vkey" >/dev/null
t1=$(date +%s.%N)
echo "{\"figure\":\"restore\",\"entries\":$n,\"seconds\":$(echo "$t1 - $t0" | bc),\"entries_per_s\":$(echo "$n / ($t1 - $t0)" | bc)}"
