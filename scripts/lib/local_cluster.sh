# A throwaway local Baton cluster for measurement scripts (bench.sh, scale.sh): nodes on
# free loopback ports, their config and data dirs under one work dir, stopped by PID.
#
# Source it, then call, in order:
#   BIN=$(baton_bin)                   where cargo puts the release binary
#   local_cluster_init WORK NODES BIN  pick ports, write WORK/cluster.toml (call
#                                      local_cluster_raft_settings first to add [raft] keys),
#                                      copy BIN to WORK/baton and point BIN there
#   start_node ID ... / wait_ready TIMEOUT / stop_node ID TERM|KILL / stop_all_nodes
# It defines CONFIG, PORTS and PID (node id -> pid of its current process); api_of ID
# gives a node's API address, node_alive ID whether its process runs. Logs go to
# WORK/nID.log (appended, so restarts keep the earlier lines). Starting, stopping and
# liveness come from scripts/lib/nodes.sh. Needs python3 (free ports) and curl (readiness).

# shellcheck source=scripts/lib/nodes.sh
source "$(dirname "${BASH_SOURCE[0]}")/nodes.sh"

# Where cargo builds the release binary (honours CARGO_TARGET_DIR and .cargo/config.toml).
baton_bin() { BATON_BIN="" baton_release_bin; }

declare -A PID=()
RAFT_SETTINGS=""

# Extra lines for the [raft] section of the generated config (e.g. "snapshot_after_entries = 5").
local_cluster_raft_settings() { RAFT_SETTINGS+="$*"$'\n'; }

local_cluster_init() {
  LC_WORK=$1
  LC_NODES=$2
  # A private copy: the target dir may be shared (CI, other scripts) and its release/baton
  # replaced by another build while this runs.
  cp "$3" "$LC_WORK/baton"
  LC_BIN="$LC_WORK/baton"
  BIN=$LC_BIN
  # Free loopback ports: bind port 0, note the port, close (the usual small race is fine
  # for a local measurement; a clash shows as a node that fails to start).
  read -r -a PORTS <<<"$(python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(2 * int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
' "$LC_NODES")"
  CONFIG="$LC_WORK/cluster.toml"
  : >"$CONFIG"
  local id
  for id in $(seq 1 "$LC_NODES"); do
    cat >>"$CONFIG" <<TOML
[[nodes]]
id = $id
api = "$(api_of "$id")"
raft = "127.0.0.1:${PORTS[$((id - 1 + LC_NODES))]}"
data_dir = "$LC_WORK/n$id"

TOML
  done
  # Everything else takes the defaults of the repository's cluster.toml.
  printf '[raft]\nsecret = "baton-local-%s"\n%s' "$RANDOM$RANDOM" "$RAFT_SETTINGS" >>"$CONFIG"
}

api_of() { echo "127.0.0.1:${PORTS[$(($1 - 1))]}"; }

start_node() {
  local id=$1
  RUST_LOG=${RUST_LOG:-baton=info,openraft=error} \
    node_spawn "$LC_BIN" "$CONFIG" "$id" "$LC_WORK/n$id.log"
  PID[$id]=$NODE_PID
}

# Whether node $1's process runs (see node_running in nodes.sh).
node_alive() { node_running "${PID[$1]:-}" "$1"; }

# Whether node $1 answers /readyz with 200.
ready() { node_ready "$(api_of "$1")"; }

# Waits until every node is ready; fails with the log tail of a node that exited or is
# not ready within $1 seconds.
wait_ready() {
  local deadline=$((SECONDS + $1)) id
  for id in $(seq 1 "$LC_NODES"); do
    node_wait_ready "$id" "${PID[$id]:-}" "$(api_of "$id")" "$LC_WORK/n$id.log" \
      $((deadline > SECONDS ? deadline - SECONDS : 0)) || return 1
  done
}

# Stops node $1 with signal $2 (TERM or KILL) and reaps it; escalates to KILL after 30 s.
stop_node() {
  node_stop "${PID[$1]:-}" "$1" "$2" 30
  PID[$1]=""
}

# Sends SIGTERM to every node at once, then reaps them one by one.
stop_all_nodes() {
  local id
  for id in "${!PID[@]}"; do
    node_alive "$id" && kill -TERM "${PID[$id]}" 2>/dev/null || true
  done
  for id in "${!PID[@]}"; do stop_node "$id" TERM; done
}
