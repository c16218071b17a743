#!/usr/bin/env bash
# Start, stop and inspect the local Baton cluster described in cluster.toml.
#
# usage: scripts/cluster.sh start [N] | stop [N] | restart [N] | status | logs
#   start [N]    build the release binary, start every node of cluster.toml (or node N)
#                that is not running, in the background, and wait until it is ready
#   stop [N]     stop every node (or node N): SIGTERM by PID, SIGKILL after 10 s
#   restart [N]  stop, then start
#   status       a table: node, API address, up/down, role, term, applied index, and how
#                many entries it lags behind the leader's applied index
#   logs         follow the node logs, lines prefixed n1 | …
#
# PID files and logs (appended across restarts) are in target/cluster/. A node counts as
# running only if its PID is a live `baton server … --node N` process (see
# scripts/lib/nodes.sh), so `start` works right after a `kill -9` of the nodes.
# Environment: BATON_CONFIG (default cluster.toml), BATON_BIN (a prebuilt binary instead
# of building this checkout), CARGO_TARGET_DIR (cargo's default), BATON_READY_TIMEOUT
# seconds (default 60). Needs python3 (3.11+), curl and jq.
set -euo pipefail

cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/nodes.sh
source scripts/lib/nodes.sh

usage() { sed -n '2,18p' "$0"; exit 2; }

CONFIG=${BATON_CONFIG:-cluster.toml}
RUN_DIR=target/cluster
READY_TIMEOUT=${BATON_READY_TIMEOUT:-60}
STOP_TIMEOUT=10

for tool in python3 curl jq; do
  command -v "$tool" >/dev/null || { echo "scripts/cluster.sh needs $tool" >&2; exit 2; }
done

declare -A API=()
IDS=()
nodes=$(config_nodes "$CONFIG") || exit 2
while IFS=$'\t' read -r id api _raft _dir; do
  IDS+=("$id")
  API[$id]=$api
done <<<"$nodes"

# The node ids a command acts on: all, or the one named by $1 (which must exist).
selected() {
  if [[ -z "${1:-}" ]]; then
    echo "${IDS[@]}"
  elif [[ -n "${API[$1]:-}" ]]; then
    echo "$1"
  else
    echo "no node $1 in $CONFIG (nodes: ${IDS[*]})" >&2
    exit 2
  fi
}

pid_of() { cat "$RUN_DIR/n$1.pid" 2>/dev/null || true; }

start() {
  local ids id pid
  ids=$(selected "${1:-}")
  local bin
  bin=$(baton_release_bin)
  [[ -n "${BATON_BIN:-}" ]] || echo "building $bin ..."
  baton_build
  mkdir -p "$RUN_DIR"
  for id in $ids; do
    pid=$(pid_of "$id")
    if node_running "$pid" "$id"; then
      echo "n$id already running (pid $pid)"
      continue
    fi
    # nohup: the node outlives this script and the terminal it was started from.
    node_spawn "$bin" "$CONFIG" "$id" "$RUN_DIR/n$id.log" nohup
    echo "$NODE_PID" >"$RUN_DIR/n$id.pid"
    echo "started n$id (pid $NODE_PID, api ${API[$id]}, log $RUN_DIR/n$id.log)"
  done
  for id in $ids; do
    node_wait_ready "$id" "$(pid_of "$id")" "${API[$id]}" "$RUN_DIR/n$id.log" "$READY_TIMEOUT" || exit 1
  done
  local leader
  leader=$(curl -fsS --max-time 2 "http://${API[${ids%% *}]}/v1/cluster" | jq -r '.leader_id // empty' || true)
  if [[ -n "$leader" ]]; then
    echo "ready: n${ids// /, n}; the leader is n$leader (${API[$leader]:-?})"
  else
    echo "ready: n${ids// /, n}"
  fi
}

stop() {
  local ids id pid
  ids=$(selected "${1:-}")
  for id in $ids; do
    pid=$(pid_of "$id")
    if node_running "$pid" "$id"; then
      node_stop "$pid" "$id" TERM "$STOP_TIMEOUT"
      echo "stopped n$id (pid $pid)"
    fi
    rm -f "$RUN_DIR/n$id.pid"
  done
}

status() {
  local id answer leader="" leader_applied="" quorum notes=()
  declare -A row=()
  for id in "${IDS[@]}"; do
    answer=$(curl -fsS --max-time 2 "http://${API[$id]}/v1/cluster" 2>/dev/null || true)
    if [[ -z "$answer" ]]; then
      row[$id]="down"
      continue
    fi
    # up, role, term, applied index, leader id ("-" when the node knows none).
    row[$id]=$(jq -r '["up", (.role // .state), .term, (.applied_index // "-"), (.leader_id // "-")] | map(tostring) | join(" ")' <<<"$answer")
    # A node that reports its quorum (`quorum.ok`) and has none says why.
    quorum=$(jq -r 'if .quorum.ok == false then .quorum.detail // "no quorum" else empty end' <<<"$answer")
    [[ -z "$quorum" ]] || notes+=("n$id: $quorum")
    if [[ $(jq -r '.role // .state' <<<"$answer") == leader ]]; then
      leader=$id
      leader_applied=$(jq -r '.applied_index // empty' <<<"$answer")
    fi
  done
  printf '%-5s %-21s %-5s %-10s %6s %9s %6s\n' node api state role term applied lag
  local up role term applied _known lag
  for id in "${IDS[@]}"; do
    read -r up role term applied _known <<<"${row[$id]}"
    if [[ "$up" == down ]]; then
      printf '%-5s %-21s %-5s %-10s %6s %9s %6s\n' "n$id" "${API[$id]}" down - - - -
      continue
    fi
    lag=-
    if [[ -n "$leader_applied" && "$applied" =~ ^[0-9]+$ ]]; then lag=$((leader_applied - applied)); fi
    printf '%-5s %-21s %-5s %-10s %6s %9s %6s\n' "n$id" "${API[$id]}" up "$role" "$term" "$applied" "$lag"
  done
  local note
  for note in "${notes[@]}"; do echo "$note"; done
  [[ -n "$leader" ]] || echo "no node reports itself leader: no quorum, or an election is running" >&2
}

logs() {
  local pids=() id
  mkdir -p "$RUN_DIR"
  for id in "${IDS[@]}"; do
    touch "$RUN_DIR/n$id.log"
    tail -n 20 -F "$RUN_DIR/n$id.log" | sed -u "s/^/n$id | /" &
    pids+=($!)
  done
  trap 'kill "${pids[@]}" 2>/dev/null' EXIT INT TERM
  wait
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  restart) stop "${2:-}"; start "${2:-}" ;;
  status) status ;;
  logs) logs ;;
  *) usage ;;
esac
