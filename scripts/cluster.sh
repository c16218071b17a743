#!/usr/bin/env bash
# Start, stop and inspect the local three-node Baton cluster described in cluster.toml.
#
# usage: scripts/cluster.sh start|stop|status|logs|restart
#   start    build the release binary, start every node of cluster.toml in the
#            background, wait until a leader is elected and all nodes are ready
#   stop     stop the nodes started by `start` (SIGTERM by PID, SIGKILL after 10 s)
#   status   show each node's /v1/cluster view
#   logs     follow the node logs, prefixed n1..n3
#
# Environment: BATON_CONFIG (default cluster.toml), CARGO_TARGET_DIR (cargo's default),
# BATON_READY_TIMEOUT seconds (default 60).
set -euo pipefail

cd "$(dirname "$0")/.."
CONFIG=${BATON_CONFIG:-cluster.toml}
# Where cargo puts the binary (honours CARGO_TARGET_DIR and .cargo/config.toml).
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
TARGET_DIR=${TARGET_DIR:-${CARGO_TARGET_DIR:-target}}
BIN="$TARGET_DIR/release/baton"
RUN_DIR=target/cluster
READY_TIMEOUT=${BATON_READY_TIMEOUT:-60}

# Node ids and API addresses, read from the config file.
node_ids() { sed -n 's/^id *= *\([0-9][0-9]*\).*/\1/p' "$CONFIG"; }
node_api() { awk -v id="$1" '/^id *=/ {cur=$3} /^api *=/ && cur==id {gsub(/"/,"",$3); print $3}' "$CONFIG"; }

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

start() {
  echo "building $BIN ..."
  cargo build --release --quiet --bin baton
  mkdir -p "$RUN_DIR"
  for id in $(node_ids); do
    local pidfile="$RUN_DIR/n$id.pid"
    if [[ -f "$pidfile" ]] && pid_alive "$(cat "$pidfile")"; then
      echo "n$id already running (pid $(cat "$pidfile"))"
      continue
    fi
    nohup "$BIN" server --config "$CONFIG" --node "$id" >>"$RUN_DIR/n$id.log" 2>&1 &
    echo $! >"$pidfile"
    echo "started n$id (pid $!, api $(node_api "$id"), log $RUN_DIR/n$id.log)"
  done
  wait_ready
}

wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT))
  for id in $(node_ids); do
    local api; api=$(node_api "$id")
    until curl -fsS "http://$api/readyz" >/dev/null 2>&1; do
      if ! pid_alive "$(cat "$RUN_DIR/n$id.pid" 2>/dev/null)"; then
        echo "n$id exited; last log lines:" >&2; tail -n 20 "$RUN_DIR/n$id.log" >&2; exit 1
      fi
      if (( SECONDS >= deadline )); then
        echo "n$id not ready after ${READY_TIMEOUT}s; see $RUN_DIR/n$id.log" >&2; exit 1
      fi
      sleep 0.2
    done
  done
  local first; first=$(node_api "$(node_ids | head -n1)")
  local leader; leader=$(curl -fsS "http://$first/v1/cluster" | sed -n 's/.*"leader_id":\([0-9]*\).*/\1/p')
  echo "cluster ready: leader is n$leader ($(node_api "$leader"))"
  cat <<MSG

Take a lock (any node will do; followers forward to the leader):
  curl -s -X POST http://$first/v1/locks/deploy/acquire -H 'content-type: application/json' -d '{"owner":"me","ttl_ms":30000}'
Release it with the token from the answer:
  curl -s -X POST http://$first/v1/locks/deploy/release -H 'content-type: application/json' -d '{"token":TOKEN}'
Stop the cluster:  scripts/cluster.sh stop
MSG
}

stop() {
  for id in $(node_ids); do
    local pidfile="$RUN_DIR/n$id.pid"
    [[ -f "$pidfile" ]] || continue
    local pid; pid=$(cat "$pidfile")
    if pid_alive "$pid"; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do pid_alive "$pid" || break; sleep 0.1; done
      pid_alive "$pid" && kill -KILL "$pid"
      echo "stopped n$id (pid $pid)"
    fi
    rm -f "$pidfile"
  done
}

status() {
  for id in $(node_ids); do
    local api; api=$(node_api "$id")
    printf 'n%s %s: ' "$id" "$api"
    curl -fsS "http://$api/v1/cluster" 2>/dev/null || printf 'down'
    echo
  done
}

logs() {
  local pids=()
  for id in $(node_ids); do
    touch "$RUN_DIR/n$id.log"
    tail -n 20 -F "$RUN_DIR/n$id.log" | sed -u "s/^/n$id | /" &
    pids+=($!)
  done
  trap 'kill "${pids[@]}" 2>/dev/null' EXIT INT TERM
  wait
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) status ;;
  logs) logs ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
