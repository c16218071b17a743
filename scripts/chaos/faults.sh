# Node control and fault injection for the chaos suite; sourced by run.sh.
#
# Expects from run.sh: MODE (netns|loopback), OUT, BIN, API[id], PID[id], STOPPED[id],
# PAUSABLE_PID, FAKETIME_LIB (empty when libfaketime is missing), netns.sh and
# scripts/lib/nodes.sh (starting, stopping and liveness of the nodes).
#
# Every fault is recorded in $OUT/faults.jsonl as {"at_wall_ms","kind","node"} once it
# is in place; a lasting fault records "<kind>_end" (or "heal" for the network) just
# before it is undone, so the recorded window is always inside the real one.

now_ms() { date +%s%3N; }
fault() { printf '{"at_wall_ms":%s,"kind":"%s","node":%s}\n' "$(now_ms)" "$1" "${2:-0}" >>"$OUT/faults.jsonl"; }
note() { echo "[chaos $(date +%T)] $*"; }

# curl (and the workload) from where the nodes can be reached.
# curl with the run's credentials (run.sh sets them: the CA and the API key).
CURL=(curl)
client() { if [[ $MODE == netns ]]; then in_client "$@"; else "$@"; fi; }

node_alive() { node_running "${PID[$1]:-}" "$1"; }

start_node() {
  local id=$1 prefix=()
  node_alive "$id" && return 0
  # Reap a node that stopped by itself (fail-stop exits non-zero).
  if [[ -n "${PID[$id]:-}" ]]; then wait "${PID[$id]}" 2>/dev/null || true; fi
  [[ $MODE == netns ]] && prefix=(ip netns exec "$(ns_of "$id")")
  # libfaketime (when present) on every node, with the monotonic clock left alone: the
  # clock_step fault rewrites nN.faketime to move that node's wall clock.
  if [[ -n "$FAKETIME_LIB" ]]; then
    prefix+=(env LD_PRELOAD="$FAKETIME_LIB" FAKETIME_TIMESTAMP_FILE="$OUT/n$id.faketime"
      FAKETIME_CACHE_DURATION=1 FAKETIME_DONT_FAKE_MONOTONIC=1)
  fi
  node_spawn "$BIN" "$OUT/cluster.toml" "$id" "$OUT/n$id.log" "${prefix[@]}"
  PID[$id]=$NODE_PID
  STOPPED[$id]=0
}

kill_node() {
  [[ -n "${PID[$1]:-}" ]] || return 0
  kill -CONT "${PID[$1]}" 2>/dev/null || true
  node_stop "${PID[$1]}" "$1" KILL
  PID[$1]=""
}

# SIGTERM, then SIGKILL if it has not stopped within 15 s.
term_node() {
  node_alive "$1" || { kill_node "$1"; return 0; }
  node_stop "${PID[$1]}" "$1" TERM 15
  PID[$1]=""
}

leader() {
  local id l
  for id in 1 2 3; do
    node_alive "$id" && [[ "${STOPPED[$id]}" == 0 ]] || continue
    l=$(client "${CURL[@]}" -fsS --max-time 1 "$NODE_SCHEME://${API[$id]}/v1/cluster" 2>/dev/null \
      | jq -r '.leader_id // empty' 2>/dev/null || true)
    [[ -n "$l" ]] && { echo "$l"; return; }
  done
}

ready() { node_ready "${API[$1]}" client; }

# Waits until the given nodes (default all) answer /readyz; 1 after 60 s.
wait_ready() {
  local deadline=$((SECONDS + 60)) id ids=("$@")
  ((${#ids[@]})) || ids=(1 2 3)
  for id in "${ids[@]}"; do
    until ready "$id"; do
      (( SECONDS < deadline )) || { note "n$id not ready" >&2; return 1; }
      sleep 0.1
    done
  done
}

# --- process faults (synchronous: they end before returning) ---

f_kill_leader() { fault kill_leader "$1"; kill_node "$1"; sleep "0.$((RANDOM % 9 + 1))"; start_node "$1"; }
f_kill_follower() { fault kill_follower "$1"; kill_node "$1"; sleep "$((RANDOM % 2)).$((RANDOM % 10))"; start_node "$1"; }
f_kill_all() {
  local id
  fault kill_all 0
  for id in 1 2 3; do kill_node "$id"; done
  sleep 0.5
  for id in 1 2 3; do start_node "$id"; done
}
f_pause_leader() {
  node_alive "$1" || return 0
  kill -STOP "${PID[$1]}"; STOPPED[$1]=1; fault pause_leader "$1"
  sleep "$((RANDOM % 2 + 1)).$((RANDOM % 10))"
  fault pause_leader_end "$1"; kill -CONT "${PID[$1]}"; STOPPED[$1]=0
}
# The pausable holder stops for longer than its 1 s lease, then wakes and writes.
f_pause_client() {
  [[ -n "$PAUSABLE_PID" ]] && kill -0 "$PAUSABLE_PID" 2>/dev/null || return 0
  kill -STOP "$PAUSABLE_PID"; fault pause_client 0
  sleep "$((RANDOM % 2 + 1)).$((RANDOM % 10))"
  fault pause_client_end 0; kill -CONT "$PAUSABLE_PID"
}
# Graceful: SIGTERM each node in turn, restart it, wait until it is ready again.
f_rolling_restart() {
  local id
  fault rolling_restart 0
  for id in 1 2 3; do
    term_node "$id"; start_node "$id"
    wait_ready "$id" || true
  done
  fault rolling_restart_end 0
}

# --- membership changes (an operator's, under load) ---

# One request to the membership endpoints through a live node (a follower relays it to
# the leader), the next one when it answers 503 (a node just removed knows no leader);
# prints "STATUS CODE" (CODE: the problem's, or "-").
member_call() {
  local method=$1 path=$2 body=${3:-} id out got="000 -" args=()
  [[ -n "$body" ]] && args=(-H 'content-type: application/json' -d "$body")
  for id in 1 2 3; do
    node_alive "$id" && [[ "${STOPPED[$id]}" == 0 ]] || continue
    out=$(client "${CURL[@]}" -sS --max-time 30 -X "$method" "${args[@]}" -w '\n%{http_code}' \
      "$NODE_SCHEME://${API[$id]}$path" 2>/dev/null) || continue
    got="$(tail -n 1 <<<"$out") $(head -n -1 <<<"$out" | jq -r '.code // "-"' 2>/dev/null || echo -)"
    [[ $got == 503* ]] || break
  done
  echo "$got"
}

# The voter ids the leader reports, space-separated (a removed node's view is stale).
member_voters() {
  local id
  for id in 1 2 3; do
    node_alive "$id" && [[ "${STOPPED[$id]}" == 0 ]] || continue
    client "${CURL[@]}" -fsS --max-time 2 "$NODE_SCHEME://${API[$id]}/v1/cluster" 2>/dev/null \
      | jq -r 'select(.state == "leader") | [.members[] | select(.voter) | .id] | join(" ")' 2>/dev/null \
      | grep . && return 0
  done
}

# Adds node N (back) until it votes, for at most 40 s; other lasting faults keep ending
# on their timers meanwhile. Refusals are expected under faults (no leader, a change
# under way, a node that cannot catch up while cut off): retried.
member_add() {
  local n=$1 deadline=$((SECONDS + 40)) got
  fault member_add "$n"
  while (( SECONDS < deadline )); do
    got=$(member_call POST /v1/cluster/nodes "{\"id\":$n,\"api\":\"${API[$n]}\",\"raft\":\"${RAFT_ADDR[$n]}\"}")
    [[ $got == 200* ]] && return 0
    end_lasting
    sleep 0.5
  done
  note "n$n not added back within 40 s: $got"
}

# Removes node N (the leader or a follower), then adds it back with its data intact — the
# same log under the same id, so not an id reuse (openraft's rule is about empty logs).
# A refusal of the removal (MEMBERSHIP_UNSAFE while another node is down, a change under
# way) is part of the test: the add then changes nothing.
f_membership() {
  local n=$1 got
  fault member_remove "$n"
  got=$(member_call DELETE "/v1/cluster/nodes/$n")
  note "remove n$n: $got"
  sleep "0.$((RANDOM % 9 + 1))"
  member_add "$n"
}

# Before the final checks: every node is a voter again (each add retried for 40 s).
members_restore() {
  local id voters
  for id in 1 2 3; do
    voters=$(member_voters || true)
    [[ " $voters " == *" $id "* ]] || member_add "$id"
  done
}

# --- lasting faults: started here, undone by the matching *_end function ---

# Steps node N's wall clock by +-30..300 s (libfaketime; the monotonic clock is not faked).
f_clock_step() {
  local secs=$((30 + RANDOM % 271)) sign
  ((RANDOM % 2)) && sign=+ || sign=-
  echo "$sign$secs" >"$OUT/n$1.faketime"
  sleep 1.1 # libfaketime re-reads the file every second
  fault clock_step "$1"
  note "n$1 wall clock ${sign}${secs}s"
}
clock_step_end() { fault clock_step_end "$1"; echo "+0" >"$OUT/n$1.faketime"; }

# Fills node N's data filesystem; the node must stop (fail-stop) or keep refusing writes,
# never acknowledge one it could not persist.
f_disk_full() {
  local dir="$OUT/n$1" avail
  avail=$(df --output=avail -B1 "$dir" | tail -1)
  fallocate -l "$avail" "$dir/filler" 2>/dev/null || true
  dd if=/dev/zero of="$dir/filler2" bs=4k 2>/dev/null || true
  fault disk_full "$1"
}
disk_full_end() {
  fault disk_full_end "$1"
  rm -f "$OUT/n$1/filler" "$OUT/n$1/filler2"
  if ! node_alive "$1"; then
    note "n$1 stopped on the full disk; restarting it"
    start_node "$1"
  fi
}

# Network faults (netns mode): recorded once the rules are in place.
f_isolate() { local n=$1 p; for p in 1 2 3; do [[ $p == "$n" ]] || cut_link "$n" "$p"; done; fault "$2" "$n"; }
f_bridge() { cut_link 1 2; fault bridge 3; }
f_one_way() { one_way_in "$1"; fault one_way_leader "$1"; }
f_packet_loss() { lossy "$1" 0.3; fault packet_loss "$1"; }
network_end() { fault heal 0; heal_network; }

# Small loop-mounted filesystems for the data dirs (netns mode).
DISK_MB=256
disks_up() {
  local id
  for id in 1 2 3; do
    truncate -s "${DISK_MB}M" "$OUT/n$id.img"
    mkfs.ext4 -q -F -m 0 "$OUT/n$id.img"
    mkdir -p "$OUT/n$id"
    mount -o loop "$OUT/n$id.img" "$OUT/n$id"
  done
}
disks_down() {
  local id
  for id in 1 2 3; do
    mountpoint -q "$OUT/n$id" 2>/dev/null && umount "$OUT/n$id"
    rm -f "$OUT/n$id.img"
  done
}
