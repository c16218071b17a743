#!/usr/bin/env bash
# Run Baton under faults and check the recorded history.
#
# usage: scripts/chaos/run.sh --duration SECONDS --seed N --out DIR [--negative-control] [--loopback]
#
# Starts a fresh three-node cluster (data dirs under DIR), runs the client workload
# (`baton chaos workload`) for SECONDS while injecting faults on a schedule drawn from
# SEED, heals everything, compares the replicas' lock tables, and runs the checker
# (`baton chaos check DIR`).
#
# As root (and without --loopback) each node runs in its own network namespace on a
# bridge (scripts/chaos/netns.sh) and the faults include partitions: isolate the leader
# or a follower, a bridge (n1 and n2 cut, n3 sees both), one-way loss of the leader's
# input, and 30 % packet loss. Always: kill -9 of the leader, a follower or all nodes
# (then restart) and SIGSTOP/SIGCONT of the leader. Without root, or with --loopback,
# only the process faults run, on loopback.
#
# Exit 0 only when the history is valid — or, with --negative-control (the fenced
# resource ignores tokens), only when the checker caught the violation.
#
# Not implemented yet: clock steps (libfaketime), disk full, client pauses.
# Output: DIR/history.jsonl, DIR/faults.jsonl, DIR/digests.jsonl, DIR/results.json,
# DIR/n*.log, DIR/summary.txt.
set -euo pipefail

usage() { sed -n '2,17p' "$0"; exit 2; }
DURATION=60 SEED=1 OUT="" NEGATIVE=0 LOOPBACK=0
while (($#)); do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --negative-control) NEGATIVE=1; shift ;;
    --loopback) LOOPBACK=1; shift ;;
    -h|--help) usage ;;
    *) echo "unknown argument $1" >&2; usage ;;
  esac
done
[[ -n "$OUT" ]] || usage
cd "$(dirname "$0")/../.."
MODE=netns
if ((LOOPBACK)); then
  MODE=loopback
elif [[ $(id -u) -ne 0 ]] || ! command -v iptables >/dev/null; then
  echo "note: not root or no iptables: running process faults only, on loopback"
  MODE=loopback
fi
# shellcheck source=scripts/chaos/netns.sh
source scripts/chaos/netns.sh

cargo build --release --quiet --bin baton
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN="$TARGET_DIR/release/baton"
rm -rf "$OUT"; mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RANDOM=$SEED

declare -A PID=() API=() STOPPED=()
WORKLOAD_PID=""
cleanup() {
  set +e
  [[ -n "$WORKLOAD_PID" ]] && kill "$WORKLOAD_PID" 2>/dev/null
  for id in 1 2 3; do
    [[ -n "${PID[$id]:-}" ]] || continue
    kill -CONT "${PID[$id]}" 2>/dev/null; kill -KILL "${PID[$id]}" 2>/dev/null; wait "${PID[$id]}" 2>/dev/null
  done
  [[ $MODE == netns ]] && netns_down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
next_port=$((20000 + (SEED % 500) * 20))
# Sets PORT to the next free loopback port (no subshell: it advances next_port).
free_port() {
  while ! port_free "$next_port"; do next_port=$((next_port + 1)); done
  PORT=$next_port; next_port=$((next_port + 1))
}

[[ $MODE == netns ]] && netns_up
{
  for id in 1 2 3; do
    if [[ $MODE == netns ]]; then
      API[$id]="$(addr_of "$id"):7000"; RAFT="$(addr_of "$id"):7100"
    else
      free_port; API[$id]="127.0.0.1:$PORT"; free_port; RAFT="127.0.0.1:$PORT"
    fi
    printf '[[nodes]]\nid = %s\napi = "%s"\nraft = "%s"\ndata_dir = "%s/n%s"\n\n' \
      "$id" "${API[$id]}" "$RAFT" "$OUT" "$id"
  done
  printf '[raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\nsweep_interval_ms = 100\nsnapshot_after_entries = 5000\nsecret = "chaos"\n\n'
  printf '[lease]\nmin_ttl_ms = 100\n\n[api]\nrequest_timeout_ms = 2000\nleader_wait_ms = 1000\n'
} >"$OUT/cluster.toml"

now_ms() { date +%s%3N; }
fault() { printf '{"at_wall_ms":%s,"kind":"%s","node":%s}\n' "$(now_ms)" "$1" "${2:-0}" >>"$OUT/faults.jsonl"; }

# curl (and the workload) from where the nodes can be reached.
client() { if [[ $MODE == netns ]]; then in_client "$@"; else "$@"; fi; }

start_node() {
  local id=$1
  if [[ $MODE == netns ]]; then
    ip netns exec "$(ns_of "$id")" "$BIN" server --config "$OUT/cluster.toml" --node "$id" >>"$OUT/n$id.log" 2>&1 &
  else
    "$BIN" server --config "$OUT/cluster.toml" --node "$id" >>"$OUT/n$id.log" 2>&1 &
  fi
  PID[$id]=$!
  STOPPED[$id]=0
}
kill_node() { kill -KILL "${PID[$1]}" 2>/dev/null || true; wait "${PID[$1]}" 2>/dev/null || true; PID[$1]=""; }
leader() {
  local id
  for id in 1 2 3; do
    [[ -n "${PID[$id]}" && "${STOPPED[$id]}" == 0 ]] || continue
    client curl -fsS --max-time 1 "http://${API[$id]}/v1/cluster" 2>/dev/null \
      | sed -n 's/.*"leader_id":\([0-9]*\).*/\1/p' && return
  done
}
wait_ready() {
  local deadline=$((SECONDS + 60)) id
  for id in 1 2 3; do
    until client curl -fsS --max-time 1 "http://${API[$id]}/readyz" >/dev/null 2>&1; do
      (( SECONDS < deadline )) || { echo "n$id not ready" >&2; return 1; }
      sleep 0.1
    done
  done
}

for id in 1 2 3; do start_node "$id"; done
wait_ready
echo "cluster up ($MODE); workload for ${DURATION}s, seed $SEED, output $OUT"

NEG=(); ((NEGATIVE)) && NEG=(--negative-control)
printf '{"start_wall_ms":%s}\n' "$(now_ms)" >"$OUT/workload.json"
client "$BIN" chaos workload --endpoints "${API[1]},${API[2]},${API[3]}" --duration "$DURATION" \
  --seed "$SEED" --out "$OUT" "${NEG[@]}" >"$OUT/workload.log" 2>&1 &
WORKLOAD_PID=$!

end=$((SECONDS + DURATION - 3))
while (( SECONDS < end )); do
  sleep "$((1 + RANDOM % 3)).$((RANDOM % 10))"
  (( SECONDS < end )) || break
  L=$(leader || true); [[ -n "$L" ]] || L=$((1 + RANDOM % 3))
  F=$(( (L + RANDOM % 2) % 3 + 1 ))
  kinds=5; [[ $MODE == netns ]] && kinds=10
  case $((RANDOM % kinds)) in
    0|1) fault kill_leader "$L"; kill_node "$L"; sleep "0.$((RANDOM % 9 + 1))"; start_node "$L" ;;
    2) fault kill_follower "$F"; kill_node "$F"; sleep "$((RANDOM % 2)).$((RANDOM % 10))"; start_node "$F" ;;
    3) fault kill_all 0; for id in 1 2 3; do kill_node "$id"; done; sleep 0.5; for id in 1 2 3; do start_node "$id"; done ;;
    4) fault pause_leader "$L"; kill -STOP "${PID[$L]}"; STOPPED[$L]=1
       sleep "$((RANDOM % 2 + 1)).$((RANDOM % 10))"; kill -CONT "${PID[$L]}"; STOPPED[$L]=0 ;;
    # A partition is recorded once its rules are in place, and its heal before the rules
    # go, so the recorded window is inside the real one.
    5) for p in 1 2 3; do [[ $p == "$L" ]] || cut_link "$L" "$p"; done; fault isolate_leader "$L" ;;
    6) for p in 1 2 3; do [[ $p == "$F" ]] || cut_link "$F" "$p"; done; fault isolate_follower "$F" ;;
    7) cut_link 1 2; fault bridge 3 ;;
    8) one_way_in "$L"; fault one_way_leader "$L" ;;
    9) lossy "$L" 0.3; fault packet_loss "$L" ;;
  esac
  if [[ $MODE == netns ]] && (( $(wc -l <"$OUT/faults.jsonl") > 0 )) \
      && tail -n1 "$OUT/faults.jsonl" | grep -qE 'isolate|bridge|one_way|packet_loss'; then
    sleep "$((2 + RANDOM % 3)).$((RANDOM % 10))"
    fault heal 0; heal_network
  fi
done
wait "$WORKLOAD_PID" || true
WORKLOAD_PID=""
[[ $MODE == netns ]] && heal_network
wait_ready

# Heal and compare: once every replica has applied the same index (and it stays put while
# we read), their lock tables must be equal. Leases of the workload end within seconds,
# after which the leader stops sweeping and the log stops growing.
applied() { client curl -fsS "http://${API[$1]}/v1/cluster" | sed -n 's/.*"applied_index":\([0-9]*\).*/\1/p'; }
deadline=$((SECONDS + 60))
while :; do
  before="$(applied 1) $(applied 2) $(applied 3)"
  : >"$OUT/digests.jsonl"
  for id in 1 2 3; do
    digest=$(client curl -fsS "http://${API[$id]}/v1/locks?consistency=local&limit=1000" | sha256sum | cut -c1-16)
    printf '{"node":%s,"applied_index":%s,"digest":"%s"}\n' "$id" "$(applied "$id")" "$digest" >>"$OUT/digests.jsonl"
  done
  after="$(applied 1) $(applied 2) $(applied 3)"
  read -r a b c <<<"$after"
  [[ "$before" == "$after" && "$a" == "$b" && "$b" == "$c" ]] && break
  (( SECONDS < deadline )) || { echo "replicas did not converge: $after" >&2; break; }
  sleep 0.5
done

set +e
"$BIN" chaos check "$OUT" | tee "$OUT/summary.txt"
verdict=${PIPESTATUS[0]}
set -e
if ((NEGATIVE)); then
  if [[ $verdict == 1 ]]; then echo "negative control caught"; exit 0; fi
  echo "negative control NOT caught" >&2; exit 1
fi
exit "$verdict"
