#!/usr/bin/env bash
# Benchmark local three-node Baton clusters: every mode x connection count.
#
# usage: scripts/bench.sh
#   Builds the release binary and, for each mode and connection count, starts a fresh
#   cluster of three `baton server` nodes on free loopback ports (own config and empty
#   data dirs in a temp dir, stopped by PID after the run), so that no run measures what
#   an earlier one left behind (expiring locks, a longer log, snapshots); runs
#   `baton bench --json` against it, and writes
#     target/bench/results.json   {"meta": {...}, "runs": [one `baton bench --json` object per run]}
#     target/bench/results.md     table: mode, conns, ops/s, p50, p99, p99.9, max, errors, client CPU %
#     target/bench/<mode>.svg     p50/p99 latency and throughput vs connections
#     target/bench/logs/<mode>-<conns>/  the nodes' logs of each run
#
# Environment: BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_MODES ("uncontended cycle
# contended read"; also "queue": every connection waits in one key's queue, so
# BENCH_CONNS above api.max_waiters_per_key (1000) needs BATON_API_MAX_WAITERS_PER_KEY,
# which the nodes read from the environment; "watch": every connection is an event stream
# while one writer changes BENCH_KEYS (1) keys BENCH_RATE (20) times a second, so
# BENCH_CONNS above 3 x api.max_event_streams (1024 per node) needs
# BATON_API_MAX_EVENT_STREAMS; "connect": a reconnect storm of BENCH_CONNS clients, one
# read each), BENCH_CONNS ("1 16 64 256"), BENCH_TARGET (leader; all for watch and
# connect, whose connections are spread over the nodes), BENCH_TTL (30s,
# the lease of every acquire), BENCH_OUT
# (target/bench), BENCH_RUN_TIMEOUT seconds per run (300), BATON_READY_TIMEOUT seconds
# (60), CARGO_TARGET_DIR (cargo's default), BENCH_BIN (a prebuilt `baton` to run instead of
# building this checkout: for A/B comparisons of two builds). Needs curl and python3.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
MODES=${BENCH_MODES:-uncontended cycle contended read}
CONNS=${BENCH_CONNS:-1 16 64 256}
TARGET=${BENCH_TARGET:-}
KEYS=${BENCH_KEYS:-1}
RATE=${BENCH_RATE:-20}
TTL=${BENCH_TTL:-30s}
OUT=${BENCH_OUT:-target/bench}
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-300}
READY_TIMEOUT=${BATON_READY_TIMEOUT:-60}
NODES=3
. scripts/lib/local_cluster.sh
BIN=${BENCH_BIN:-$(baton_bin)}

# Thousands of connections need more descriptors than a shell's default soft limit (the
# nodes and `baton bench` raise their own too; runs say the limit in client.open_files_limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The target of mode $1: BENCH_TARGET, else all nodes for the crowds, the leader otherwise.
target_for() {
  if [[ -n "$TARGET" ]]; then echo "$TARGET"
  elif [[ $1 == watch || $1 == connect ]]; then echo all
  else echo leader
  fi
}

for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "bench.sh needs $tool" >&2; exit 2; }
done

if [[ -z "${BENCH_BIN:-}" ]]; then
  echo "building $BIN ..."
  cargo build --release --quiet --bin baton
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-bench.XXXXXX")

RUN_NAME=""   # mode-conns of the run whose cluster is up

# Stops the cluster of the current run and keeps its logs under $OUT/logs/<run>/.
end_run() {
  stop_all_nodes
  if [[ -n "$RUN_NAME" ]]; then
    mkdir -p "$OUT/logs/$RUN_NAME"
    cp "$WORK"/n*.log "$OUT/logs/$RUN_NAME/" 2>/dev/null || true
    RUN_NAME=""
  fi
}

cleanup() {
  end_run
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

local_cluster_init "$WORK" "$NODES" "$BIN"
rm -rf "$OUT/raw" "$OUT/logs"
rm -f "$OUT/results.json" "$OUT/results.md" "$OUT"/*.svg
mkdir -p "$OUT/raw"

# A fresh cluster (empty data dirs, new logs) for run $1.
start_run() {
  rm -rf "$WORK"/n[0-9]*
  RUN_NAME=$1
  local id
  for id in $(seq 1 "$NODES"); do start_node "$id"; done
  wait_ready "$READY_TIMEOUT" || exit 1
}
runs=()
failed=()
for mode in $MODES; do
  for conns in $CONNS; do
    raw="$OUT/raw/$mode-$conns.json"
    start_run "$mode-$conns"
    echo "== $mode, $conns connections, $DURATION after $WARMUP warmup (fresh cluster, pids ${PID[*]})" >&2
    if timeout "$RUN_TIMEOUT" "$BIN" bench --config "$CONFIG" --mode "$mode" --conns "$conns" \
      --duration "$DURATION" --warmup "$WARMUP" --target "$(target_for "$mode")" --ttl "$TTL" \
      --keys "$KEYS" --rate "$RATE" --json >"$raw" && [[ -s "$raw" ]]; then
      python3 scripts/bench_plot.py --line "$raw" >&2
      runs+=("$raw")
    else
      echo "   run failed (exit $?)" >&2
      # A run that reported zero successes still printed its JSON: keep it in the table.
      if [[ -s "$raw" ]] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$raw" 2>/dev/null; then
        runs+=("$raw")
      fi
      failed+=("$mode-$conns")
    fi
    end_run
  done
done

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  printf '{"meta": {"date": "%s", "commit": "%s", "cores": %s, "duration": "%s", "warmup": "%s", "target": "%s", "failed": [' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$commit" "$(nproc)" "$DURATION" "$WARMUP" "${TARGET:-leader; all for watch, connect}"
  sep=""
  for f in "${failed[@]}"; do printf '%s"%s"' "$sep" "$f"; sep=", "; done
  printf ']},\n "runs": [\n'
  sep=""
  for f in "${runs[@]}"; do printf '%s  %s' "$sep" "$(cat "$f")"; sep=$',\n'; done
  printf '\n]}\n'
} >"$OUT/results.json"
python3 scripts/bench_plot.py "$OUT"
cat "$OUT/results.md"

if ((${#failed[@]})); then
  echo "failed runs: ${failed[*]}" >&2
  exit 1
fi
