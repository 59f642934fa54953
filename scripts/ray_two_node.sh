#!/usr/bin/env bash
# Build shards on a two-node Ray cluster started on this machine: a head node and a second node joining it,
# one CPU each, then `posetalk-data build --ray-address` with two workers (spread: one per node).
# Usage: scripts/ray_two_node.sh INPUT_DIR OUT_DIR        (stops both nodes at the end)
set -euo pipefail
input=${1:?usage: $0 INPUT_DIR OUT_DIR}; out=${2:?usage: $0 INPUT_DIR OUT_DIR}
bin=$(dirname "$0")/../.venv/bin
port=${RAY_PORT:-6390}
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
trap '"$bin/ray" stop --force >/dev/null 2>&1 || true' EXIT
"$bin/ray" start --head --port "$port" --num-cpus 1 --include-dashboard false --disable-usage-stats >/dev/null
"$bin/ray" start --address "127.0.0.1:$port" --num-cpus 1 --disable-usage-stats >/dev/null
for _ in $(seq 30); do   # the second node takes a moment to register
  [ "$("$bin/ray" status --address "127.0.0.1:$port" | grep -c ' node_')" -ge 2 ] && break; sleep 1
done
"$bin/ray" status --address "127.0.0.1:$port" | sed -n '/Active:/,/Pending:/p'
"$bin/posetalk-data" build --src folder --input "$input" --out "$out" --ray-address "127.0.0.1:$port" --workers 2
