#!/usr/bin/env bash
# Benchmark a fresh local three-node Baton cluster: every mode x connection count.
#
# usage: scripts/bench.sh
#   Builds the release binary, starts three `baton server` nodes on free loopback ports
#   (own config and data dirs in a temp dir, stopped by PID on exit), runs
#   `baton bench --json` for each mode and connection count, and writes
#     target/bench/results.json   {"meta": {...}, "runs": [one `baton bench --json` object per run]}
#     target/bench/results.md     table: mode, conns, ops/s, p50, p99, p99.9, max, errors, client CPU %
#     target/bench/<mode>.svg     p50/p99 latency and throughput vs connections
#     target/bench/logs/          the nodes' logs of the last run
#
# Environment: BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_MODES ("uncontended cycle
# contended read"), BENCH_CONNS ("1 16 64 256"), BENCH_TARGET (leader), BENCH_OUT
# (target/bench), BENCH_RUN_TIMEOUT seconds per run (300), BATON_READY_TIMEOUT seconds
# (60), CARGO_TARGET_DIR (cargo's default), BENCH_BIN (a prebuilt `baton` to run instead of
# building this checkout: for A/B comparisons of two builds). Needs curl and python3.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
MODES=${BENCH_MODES:-uncontended cycle contended read}
CONNS=${BENCH_CONNS:-1 16 64 256}
TARGET=${BENCH_TARGET:-leader}
OUT=${BENCH_OUT:-target/bench}
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-300}
READY_TIMEOUT=${BATON_READY_TIMEOUT:-60}
NODES=3
# Where cargo puts the binary (honours CARGO_TARGET_DIR and .cargo/config.toml).
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-${CARGO_TARGET_DIR:-target}}
BIN=${BENCH_BIN:-"$TARGET_DIR/release/baton"}

for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "bench.sh needs $tool" >&2; exit 2; }
done

if [[ -z "${BENCH_BIN:-}" ]]; then
  echo "building $BIN ..."
  cargo build --release --quiet --bin baton
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-bench.XXXXXX")
PIDS=()

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    pid_alive "$pid" && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do pid_alive "$pid" || break; sleep 0.1; done
    pid_alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -d "$WORK" ]]; then
    mkdir -p "$OUT/logs"
    cp "$WORK"/n*.log "$OUT/logs/" 2>/dev/null || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports: bind port 0, note the port, close (the usual small race is fine
# for a local benchmark; a clash shows as a node that fails to start).
read -r -a PORTS <<<"$(python3 -c '
import socket
socks = [socket.socket() for _ in range(2 * '"$NODES"')]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
')"

CONFIG="$WORK/cluster.toml"
for id in $(seq 1 "$NODES"); do
  cat >>"$CONFIG" <<TOML
[[nodes]]
id = $id
api = "127.0.0.1:${PORTS[$((id - 1))]}"
raft = "127.0.0.1:${PORTS[$((id - 1 + NODES))]}"
data_dir = "$WORK/n$id"

TOML
done
# Everything else takes the defaults of the repository's cluster.toml.
printf '[raft]\nsecret = "baton-bench-%s"\n' "$RANDOM$RANDOM" >>"$CONFIG"

for id in $(seq 1 "$NODES"); do
  RUST_LOG=${RUST_LOG:-baton=info,openraft=error} \
    "$BIN" server --config "$CONFIG" --node "$id" >"$WORK/n$id.log" 2>&1 &
  PIDS+=($!)
done

deadline=$((SECONDS + READY_TIMEOUT))
for id in $(seq 1 "$NODES"); do
  api="127.0.0.1:${PORTS[$((id - 1))]}"
  until curl -fsS "http://$api/readyz" >/dev/null 2>&1; do
    if ! pid_alive "${PIDS[$((id - 1))]}"; then
      echo "n$id exited; last log lines:" >&2; tail -n 20 "$WORK/n$id.log" >&2; exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "n$id not ready after ${READY_TIMEOUT}s" >&2; tail -n 20 "$WORK/n$id.log" >&2; exit 1
    fi
    sleep 0.2
  done
done
echo "cluster ready (pids ${PIDS[*]}, config $CONFIG)"

rm -rf "$OUT/raw" "$OUT/logs"
rm -f "$OUT/results.json" "$OUT/results.md" "$OUT"/*.svg
mkdir -p "$OUT/raw"
runs=()
failed=()
for mode in $MODES; do
  for conns in $CONNS; do
    raw="$OUT/raw/$mode-$conns.json"
    echo "== $mode, $conns connections, $DURATION after $WARMUP warmup" >&2
    if timeout "$RUN_TIMEOUT" "$BIN" bench --config "$CONFIG" --mode "$mode" --conns "$conns" \
      --duration "$DURATION" --warmup "$WARMUP" --target "$TARGET" --json >"$raw" && [[ -s "$raw" ]]; then
      python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("   %.0f ops/s  p50 %.2fms  p99 %.2fms  errors %d  client cpu %s%%" % (r["ops_per_sec"], r["latency_us"]["p50"]/1e3, r["latency_us"]["p99"]/1e3, r["errors_total"], r["client"]["cpu_percent"]))' "$raw" >&2
      runs+=("$raw")
    else
      echo "   run failed (exit $?)" >&2
      # A run that reported zero successes still printed its JSON: keep it in the table.
      if [[ -s "$raw" ]] && python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$raw" 2>/dev/null; then
        runs+=("$raw")
      fi
      failed+=("$mode-$conns")
    fi
  done
done

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  printf '{"meta": {"date": "%s", "commit": "%s", "cores": %s, "duration": "%s", "warmup": "%s", "target": "%s", "failed": [' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$commit" "$(nproc)" "$DURATION" "$WARMUP" "$TARGET"
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
