#!/usr/bin/env bash
# One side of an ingest pair (BENCHMARKS.md, "Twelfth pass"): a fresh release server on a kept
# store, 12 s to settle (filters built beside it at open), 200k entries of warm-up, then 1M
# over gRPC; prints the log size after, the rate, CPU for the 1M (process, writer thread, filter builder thread, in
# centiseconds), peak RSS and identity filter MiB. Alternate two builds on one store:
#
#   KEEP=1 SCALE_DIR=/tmp/s tools/scale.sh 30000000 0 /tmp/out   # makes the store
#   tools/ingest-pair.sh /tmp/s A/release before; tools/ingest-pair.sh /tmp/s B/release after
set -euo pipefail
store=$1 bin=$2 label=$3
token=$("$bin/btlog" token --data "$store/data" --registry npm --allow '*')
"$bin/btlog" serve --data "$store/data" --config "$store/config.toml" --http 127.0.0.1:18190 \
  --grpc 127.0.0.1:18191 >"$store/server-pair.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -sf http://127.0.0.1:18190/healthz >/dev/null && break; sleep 0.2; done
sleep 12
"$bin/btlog-load" ingest --grpc 127.0.0.1:18191 --token "$token" --entries 200000 >/dev/null
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
thread_cpu() {
  for t in /proc/$pid/task/*; do grep -q "$1" "$t/comm" && awk '{print $14 + $15}' "$t/stat"; done |
    awk '{s += $1} END {print s + 0}'
}
p0=$(cpu) w0=$(thread_cpu sequencer) f0=$(thread_cpu btlog-filters)
rate=$("$bin/btlog-load" ingest --grpc 127.0.0.1:18191 --token "$token" --entries 1000000 \
  --batch 1000 --concurrency 8 | tail -1 | grep -o '"per_s":[0-9]*' | cut -d: -f2)
p1=$(cpu) w1=$(thread_cpu sequencer) f1=$(thread_cpu btlog-filters)
metrics=$(curl -s http://127.0.0.1:18190/metrics)
filters=$(grep 'kind="identity_filters"' <<<"$metrics" | awk '{print int($2 / 1048576)}')
size=$(awk '/^btlog_tree_size/ {print $2}' <<<"$metrics")
hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$pid/status")
echo "$label size=$size rate=$rate proc_cpu=$((p1 - p0))cs writer=$((w1 - w0))cs builder=$((f1 - f0))cs hwm=$hwm idf=$filters"
