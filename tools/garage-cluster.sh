#!/usr/bin/env bash
# A 3-node Garage cluster on loopback, replication factor 3, for btlog's bucket tests, demos
# and benchmarks (README "Publishing to object storage").
#
#   tools/garage-cluster.sh start DIR         start 3 nodes in DIR, lay them out, create a key,
#                                             the bucket `btlog` (website on, global alias
#                                             `localhost` so http://localhost:<web port>/
#                                             serves it) and write DIR/env
#   tools/garage-cluster.sh stop-node DIR N   stop node N (1..3)
#   tools/garage-cluster.sh start-node DIR N  start node N again
#   tools/garage-cluster.sh stop DIR          stop every node
#
# DIR/env holds AWS_ENDPOINT_URL (node 1's S3 API), AWS_REGION, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, BTLOG_BUCKET (s3://btlog) and BTLOG_WEB_1..3 (each node's website
# endpoint for the bucket). Ports: BASE (default 3900, or $GARAGE_PORT_BASE) + 10·N + 0..3.
# The garage binary: $GARAGE, or garage on PATH, or ~/.cache/btlog-tools/bin/garage (where
# .ci/run installs it with `cargo install garage --locked --version 2.5.0`).
set -euo pipefail

cmd=${1:?usage: garage-cluster.sh start|stop|stop-node|start-node DIR [N]}
dir=${2:?usage: garage-cluster.sh $cmd DIR [N]}
# The base chosen at start is kept in DIR, so later commands address the same ports. Keep it
# below the kernel's ephemeral range: a restarted node must be able to bind its ports again.
base=${GARAGE_PORT_BASE:-$(cat "$dir/port-base" 2>/dev/null || echo 3900)}
garage=${GARAGE:-$(command -v garage || echo "$HOME/.cache/btlog-tools/bin/garage")}
[ -x "$garage" ] || { echo "garage-cluster: no garage binary at $garage (run .ci/run, or cargo install garage --locked --version 2.5.0)" >&2; exit 2; }

port() { echo $((base + 10 * $1 + $2)); }   # node, 0 rpc 1 s3 2 web 3 admin
g() { "$garage" -c "$dir/node$1/garage.toml" "${@:2}"; }

start_node() {
  local n=$1
  "$garage" -c "$dir/node$n/garage.toml" server >"$dir/node$n/log" 2>&1 &
  echo $! >"$dir/node$n/pid"
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$(port "$n" 0)") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "garage-cluster: node $n did not start; see $dir/node$n/log" >&2
  exit 1
}

stop_node() {
  local pidfile="$dir/node$1/pid"
  [ -f "$pidfile" ] || return 0
  kill "$(cat "$pidfile")" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidfile"
}

case $cmd in
start)
  mkdir -p "$dir"
  echo "$base" >"$dir/port-base"
  secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  for n in 1 2 3; do
    mkdir -p "$dir/node$n"
    cat >"$dir/node$n/garage.toml" <<EOF
metadata_dir = "$dir/node$n/meta"
data_dir = "$dir/node$n/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$(port "$n" 0)"
rpc_public_addr = "127.0.0.1:$(port "$n" 0)"
rpc_secret = "$secret"
bootstrap_peers = []

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$(port "$n" 1)"
root_domain = ".s3.garage.localhost"

[s3_web]
bind_addr = "127.0.0.1:$(port "$n" 2)"
root_domain = ".web.garage.localhost"
index = "index.html"
EOF
    chmod 600 "$dir/node$n/garage.toml"
    start_node "$n"
  done
  ids=()
  for n in 1 2 3; do ids+=("$(g "$n" node id -q)"); done
  for n in 2 3; do g 1 node connect "${ids[$((n - 1))]}" >/dev/null; done
  # A restarted node finds the others through its bootstrap peers (the peer list Garage keeps
  # itself is written only from time to time).
  peers=$(printf '"%s", ' "${ids[@]}")
  for n in 1 2 3; do
    sed -i "s|^bootstrap_peers = .*|bootstrap_peers = [${peers%, }]|" "$dir/node$n/garage.toml"
  done
  for n in 1 2 3; do g 1 layout assign -z dc1 -c 1G "${ids[$((n - 1))]%%@*}" >/dev/null; done
  g 1 layout apply --version 1 >/dev/null
  # Wait until the layout is live: a bucket can be created once every node has it.
  for _ in $(seq 100); do g 1 bucket create btlog >/dev/null 2>&1 && break; sleep 0.2; done
  key=$(g 1 key create btlog-key)
  key_id=$(echo "$key" | awk '/Key ID/ {print $NF}')
  key_secret=$(echo "$key" | awk '/Secret key/ {print $NF}')
  g 1 bucket allow --read --write --owner btlog --key btlog-key >/dev/null
  g 1 bucket website --allow btlog >/dev/null
  g 1 bucket alias btlog localhost >/dev/null
  cat >"$dir/env" <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$(port 1 1)
export AWS_REGION=garage
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$key_secret
export BTLOG_BUCKET=s3://btlog
export BTLOG_WEB_1=http://localhost:$(port 1 2)
export BTLOG_WEB_2=http://localhost:$(port 2 2)
export BTLOG_WEB_3=http://localhost:$(port 3 2)
EOF
  echo "garage-cluster: 3 nodes up in $dir; source $dir/env"
  ;;
stop) for n in 1 2 3; do stop_node "$n"; done ;;
stop-node) stop_node "${3:?node}" ;;
start-node) start_node "${3:?node}" ;;
*) echo "garage-cluster: unknown command $cmd" >&2; exit 2 ;;
esac
