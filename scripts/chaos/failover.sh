#!/usr/bin/env bash
# A user's first failover test, measured: kill -9 the leader, time the first successful
# write through a follower.
#
# usage: scripts/chaos/failover.sh [--config cluster.toml] [--rounds N] [--out DIR]
#
# Starts three nodes on free loopback ports with the [raft], [lease] and [api] sections of
# CONFIG (default: the shipped cluster.toml; its [[nodes]] are replaced), then N times
# (default 10): waits for a leader, kills it with SIGKILL, sends `acquire` to one follower
# every 20 ms (each request with a 1 s client timeout, as a script with retries would)
# until one succeeds, records the time from the kill, releases, restarts the killed node
# and waits until it is ready. Prints each sample and `p50 MS max MS (N samples)`.
# Set BATON_BIN to measure a prebuilt binary.
set -euo pipefail

usage() { sed -n '2,13p' "$0"; exit 2; }
CONFIG=cluster.toml ROUNDS=10 OUT=""
while (($#)); do
  case "$1" in
    --config) CONFIG=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument $1" >&2; usage ;;
  esac
done
CONFIG=$(realpath "$CONFIG")
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/lib/nodes.sh
source scripts/lib/nodes.sh
baton_build
BIN=$(baton_release_bin)
[[ -n "$OUT" ]] || OUT=$(mktemp -d)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "${OUT:?}"/n1 "${OUT:?}"/n2 "${OUT:?}"/n3

declare -A PID=() API=()
cleanup() {
  for id in 1 2 3; do
    [[ -n "${PID[$id]:-}" ]] && node_stop "${PID[$id]}" "$id" KILL 5 2>/dev/null
  done
  return 0
}
trap cleanup EXIT

python3 - "$CONFIG" "$OUT" >"$OUT/cluster.toml" <<'EOF'
import socket, sys, tomllib
src, out = sys.argv[1], sys.argv[2]
with open(src, "rb") as f:
    config = tomllib.load(f)
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
for i in (1, 2, 3):
    print(f'[[nodes]]\nid = {i}\napi = "127.0.0.1:{free_port()}"\nraft = "127.0.0.1:{free_port()}"\ndata_dir = "{out}/n{i}"\n')
def value(v):
    return f'"{v}"' if isinstance(v, str) else str(v).lower()
for section in ("raft", "lease", "api"):
    print(f"[{section}]")
    for k, v in config.get(section, {}).items():
        print(f"{k} = {value(v)}")
    print()
EOF

start() {
  node_spawn "$BIN" "$OUT/cluster.toml" "$1" "$OUT/n$1.log"
  PID[$1]=$NODE_PID
}
while IFS=$'\t' read -r id api _raft _dir; do API[$id]=$api; done < <(config_nodes "$OUT/cluster.toml")
for id in 1 2 3; do start "$id"; done
for id in 1 2 3; do node_wait_ready "$id" "${PID[$id]}" "${API[$id]}" "$OUT/n$id.log" 60; done

now_ms() { date +%s%3N; }
leader() {
  local id
  for id in 1 2 3; do
    [[ $(curl -fsS --max-time 1 "http://${API[$id]}/v1/cluster" 2>/dev/null | jq -r '.state // empty') == leader ]] && { echo "$id"; return 0; }
  done
  return 1
}
write() { # node
  curl -fsS --max-time 1 -X POST -H 'content-type: application/json' \
    -d '{"owner":"failover-probe","ttl_ms":1000}' "http://${API[$1]}/v1/locks/failover-probe/acquire" 2>/dev/null
}
samples=()
for round in $(seq 1 "$ROUNDS"); do
  deadline=$((SECONDS + 30))
  until L=$(leader) && write "$L" >/dev/null; do
    ((SECONDS < deadline)) || { echo "no leader within 30 s" >&2; exit 1; }
    sleep 0.1
  done
  F=$((L % 3 + 1))
  sleep 0.5 # a steady cluster: heartbeats flowing, the probe's own lock expired or held
  t0=$(now_ms)
  kill -KILL "${PID[$L]}"; echo "$(date -u +%T.%3N) killed n$L" >>"$OUT/kills.log"
  until answer=$(write "$F"); do sleep 0.02; done
  ms=$(($(now_ms) - t0))
  samples+=("$ms")
  token=$(jq -r .token <<<"$answer")
  curl -fsS --max-time 2 -X POST -H 'content-type: application/json' -d "{\"token\":$token}" \
    "http://${API[$F]}/v1/locks/failover-probe/release" >/dev/null 2>&1 || true
  echo "round $round: killed n$L, first write through n$F after $ms ms"
  node_stop "${PID[$L]}" "$L" KILL 5 || true
  start "$L"
  node_wait_ready "$L" "${PID[$L]}" "${API[$L]}" "$OUT/n$L.log" 60
done
sorted=$(printf '%s\n' "${samples[@]}" | sort -n)
n=${#samples[@]}
echo "p50 $(sed -n "$(((n + 1) / 2))p" <<<"$sorted") ms max $(tail -1 <<<"$sorted") ms ($n samples): $(tr '\n' ' ' <<<"$sorted")"
