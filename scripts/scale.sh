#!/usr/bin/env bash
# Scale figures of a fresh local three-node Baton cluster holding N live locks.
#
# usage: scripts/scale.sh
#   Builds the release binary, starts three `baton server` nodes on free loopback ports
#   (own config and data dirs in a temp dir, stopped by PID on exit), loads at least
#   SCALE_LOCKS live locks with `baton bench --mode uncontended` (long TTL, so none
#   expires), keeps loading until the leader has built a snapshot holding at least that
#   many locks, and then measures:
#     - RSS (VmRSS) and peak RSS (VmHWM) of every node, data dir size (RocksDB, snapshots)
#     - snapshot size and build time (from the nodes' "built snapshot" log lines)
#     - restart of a follower after kill -9, and after SIGTERM (shutdown time too): time
#       until /readyz answers 200 and its applied index reached the leader's
#     - catch-up by snapshot of a lagging follower (stopped; more locks loaded until the
#       leader purged its log past the follower's last entry; started): time until it
#       installed the leader's snapshot ("installed snapshot" log line) and until it is
#       ready with the leader's applied index
#     - the same for a wiped follower, by the documented procedure: stop it,
#       POST /v1/cluster/nodes/ID/allow-rejoin, delete its data dir, start it under the
#       same id (gives up after SCALE_WIPED_TIMEOUT and records what it saw)
#   and writes
#     target/scale/results.json   every figure, machine-readable
#     target/scale/results.md     a small table
#     target/scale/raw/           the `baton bench --json` output of each load chunk
#     target/scale/logs/          the nodes' logs
#
# Environment: SCALE_LOCKS (1000000), SCALE_CONNS (64), SCALE_OUT (target/scale),
# SCALE_TTL (1h; lease of the loaded locks), SCALE_SNAPSHOT_AFTER (20000, the default of
# raft.snapshot_after_entries), SCALE_CHUNK_MAX seconds per load chunk (60),
# SCALE_LOAD_TIMEOUT seconds for the whole load (3600), SCALE_CATCHUP_TIMEOUT seconds
# for each restart / catch-up (900), SCALE_WIPED_TIMEOUT seconds for the wiped follower
# (900), BATON_READY_TIMEOUT seconds for the first start (60), SCALE_BIN (a prebuilt
# `baton` to run instead of building this checkout),
# CARGO_TARGET_DIR (cargo's default). Needs curl, jq and python3.
set -euo pipefail

cd "$(dirname "$0")/.."
LOCKS=${SCALE_LOCKS:-1000000}
CONNS=${SCALE_CONNS:-64}
OUT=${SCALE_OUT:-target/scale}
TTL=${SCALE_TTL:-1h}
SNAPSHOT_AFTER=${SCALE_SNAPSHOT_AFTER:-20000}
CHUNK_MAX=${SCALE_CHUNK_MAX:-60}
LOAD_TIMEOUT=${SCALE_LOAD_TIMEOUT:-3600}
CATCHUP_TIMEOUT=${SCALE_CATCHUP_TIMEOUT:-900}
WIPED_TIMEOUT=${SCALE_WIPED_TIMEOUT:-900}
READY_TIMEOUT=${BATON_READY_TIMEOUT:-60}
NODES=3
. scripts/lib/local_cluster.sh
BIN=${SCALE_BIN:-$(baton_bin)}

for tool in curl jq python3; do
  command -v "$tool" >/dev/null || { echo "scale.sh needs $tool" >&2; exit 2; }
done
[[ "$LOCKS" =~ ^[1-9][0-9]*$ ]] || { echo "SCALE_LOCKS must be a positive integer" >&2; exit 2; }

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

if [[ -z "${SCALE_BIN:-}" ]]; then
  log "building $BIN ..."
  cargo build --release --quiet --bin baton
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/baton-scale.XXXXXX")
FIGURES="$WORK/figures.txt"   # "dotted.key value" lines, turned into results.json at the end
: >"$FIGURES"

cleanup() {
  stop_all_nodes
  if [[ -d "$WORK" ]]; then
    mkdir -p "$OUT/logs"
    cp "$WORK"/n*.log "$OUT/logs/" 2>/dev/null || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

local_cluster_raft_settings "snapshot_after_entries = $SNAPSHOT_AFTER"
local_cluster_init "$WORK" "$NODES" "$BIN"

# Figures and small helpers.
record() { printf '%s %s\n' "$1" "$2" >>"$FIGURES"; }
now() { echo "$EPOCHREALTIME"; }
secs_since() { python3 -c 'import sys; print("%.3f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$1" "$(now)"; }
# `/v1/cluster` of node $1 (empty when it does not answer).
cluster() { curl -fsS --max-time 5 "http://$(api_of "$1")/v1/cluster" 2>/dev/null || true; }
# Field $2 (dotted path) of JSON $1; "null" when absent.
jget() { python3 -c '
import json, sys
try:
    v = json.loads(sys.argv[1])
    for k in sys.argv[2].split("."):
        v = v[k]
except Exception:
    v = None
print("null" if v is None else v)' "$1" "$2"; }
# Field $2 of JSON $1 as a number; -1 when absent or null (for arithmetic under set -u).
jnum() { local v; v=$(jget "$1" "$2"); [[ "$v" =~ ^[0-9]+$ ]] && echo "$v" || echo -1; }
proc_kb() { sed -n "s/^$2:[[:space:]]*\([0-9]*\) kB/\1/p" "/proc/$1/status" 2>/dev/null || echo 0; }
du_bytes() { if [[ -e "$1" ]]; then du -sb "$1" | cut -f1; else echo 0; fi; }
leader_id() {
  local id l
  for id in $(seq 1 "$NODES"); do
    [[ -n "${PID[$id]:-}" ]] || continue
    l=$(jget "$(cluster "$id")" leader_id)
    [[ "$l" != null ]] && { echo "$l"; return; }
  done
  echo null
}
# Records RSS, peak RSS and data dir sizes of node $1 under prefix $2.
record_node() {
  local id=$1 p=$2 c
  c=$(cluster "$id")
  record "$p.rss_kb" "$(proc_kb "${PID[$id]}" VmRSS)"
  record "$p.peak_rss_kb" "$(proc_kb "${PID[$id]}" VmHWM)"
  record "$p.db_bytes" "$(du_bytes "$WORK/n$id/db")"
  record "$p.snapshot_dir_bytes" "$(du_bytes "$WORK/n$id/snapshots")"
  record "$p.data_dir_bytes" "$(du_bytes "$WORK/n$id")"
  record "$p.locks_stored" "$(jget "$c" locks_stored)"
  record "$p.applied_index" "$(jget "$c" applied_index)"
  record "$p.snapshot_index" "$(jget "$c" snapshot_index)"
  record "$p.purged_index" "$(jget "$c" purged_index)"
}

for id in $(seq 1 "$NODES"); do start_node "$id"; done
wait_ready "$READY_TIMEOUT" || exit 1
LEADER=$(leader_id)
[[ "$LEADER" != null ]] || { log "no leader"; exit 1; }
log "cluster ready (pids ${PID[*]}, leader n$LEADER, config $CONFIG)"
for id in $(seq 1 "$NODES"); do record "nodes.n$id.empty_rss_kb" "$(proc_kb "${PID[$id]}" VmRSS)"; done

rm -rf "$OUT/raw" "$OUT/logs"
rm -f "$OUT/results.json" "$OUT/results.md"
mkdir -p "$OUT/raw"

# Runs one `baton bench --mode uncontended` chunk sized to add about $1 locks at the last
# measured rate (capped at CHUNK_MAX seconds); $2 names it in the progress line.
rate=0      # acquires per second of the last chunk
chunk=0     # chunks run
acquired=0  # acquires acknowledged by all chunks
errors=0    # errors of all chunks
load_chunk() {
  local want=$1 label=$2 dur_ms raw ops r e
  # Before the first chunk the rate is unknown: guess 20000/s (the bench figure of this
  # machine class) but run at most 5 s.
  dur_ms=$(python3 -c 'import math,sys
want, rate, cap = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]) * 1000
if rate <= 0:
    rate, cap = 20000.0, min(cap, 5000)
print(max(300, min(cap, math.ceil(want * 1000 / rate))))' "$want" "$rate" "$CHUNK_MAX")
  chunk=$((chunk + 1))
  raw="$OUT/raw/load-$chunk.json"
  log "  $label: chunk $chunk, ${dur_ms}ms for about $want locks"
  if ! timeout $((dur_ms / 1000 + 120)) "$BIN" bench --config "$CONFIG" --mode uncontended \
    --conns "$CONNS" --ttl "$TTL" --duration "${dur_ms}ms" --warmup 0s --target leader \
    --json >"$raw" || [[ ! -s "$raw" ]]; then
    log "    bench chunk $chunk failed"
    [[ -s "$raw" ]] || exit 1
  fi
  read -r ops r e < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["ops"], r["ops_per_sec"], r["errors_total"])' "$raw")
  log "    $ops acquires at $r/s, $e errors"
  acquired=$((acquired + ops))
  errors=$((errors + e))
  rate=$r
}

# --- Load ---------------------------------------------------------------------------
# `baton bench` runs for a time, not a count: load in chunks sized from the measured
# rate until the leader stores at least LOCKS locks; then every node builds a snapshot
# (POST /v1/cluster/snapshot; on its own a node snapshots only every
# max(snapshot_after_entries, 2 x stored keys) entries), so that the snapshot figures are
# of (at least) LOCKS locks.
log "loading $LOCKS live locks (uncontended acquires, ttl $TTL, $CONNS connections)"
load_start=$(now)
load_deadline=$((SECONDS + LOAD_TIMEOUT))
while :; do
  info=$(cluster "$LEADER")
  stored=$(jget "$info" locks_stored)
  [[ "$stored" != null ]] || { log "leader n$LEADER does not answer /v1/cluster"; exit 1; }
  ((stored >= LOCKS)) && break
  if ((SECONDS >= load_deadline)); then
    log "load not done after ${LOAD_TIMEOUT}s ($stored locks stored)"; exit 1
  fi
  load_chunk $((LOCKS - stored)) "load ($stored locks stored)"
  # The leader may have changed (it should not): follow it.
  l=$(leader_id)
  [[ "$l" != null ]] && LEADER=$l
done
idx_at_n=$(jget "$info" applied_index)
load_secs=$(secs_since "$load_start")
log "  $stored locks stored after ${load_secs}s (leader applied index $idx_at_n); snapshot on every node"
for id in $(seq 1 "$NODES"); do
  curl -fsS --max-time 120 -X POST "http://$(api_of "$id")/v1/cluster/snapshot" >/dev/null || { log "n$id refused a snapshot"; exit 1; }
done
load_total_secs=$(secs_since "$load_start")
# Let the followers apply everything and every node finish its snapshot.
target=$idx_at_n
deadline=$((SECONDS + CATCHUP_TIMEOUT))
for id in $(seq 1 "$NODES"); do
  until c=$(cluster "$id") && (($(jnum "$c" applied_index) >= target)) \
      && (($(jnum "$c" snapshot_index) >= idx_at_n)); do
    ((SECONDS < deadline)) || { log "n$id did not reach index $target with a snapshot at or after $idx_at_n"; break; }
    sleep 0.5
  done
done
stored=$(jget "$(cluster "$LEADER")" locks_stored)
log "loaded: $stored locks stored (target $LOCKS reached after ${load_secs}s), $chunk chunks, $acquired acquires, $errors errors"
record load.target_locks "$LOCKS"
record load.locks_stored "$stored"
record load.seconds "$load_secs"
record load.seconds_with_top_up "$load_total_secs"
record load.index_at_target "$idx_at_n"
record load.chunks "$chunk"
record load.acquires "$acquired"
record load.errors "$errors"
record load.conns "$CONNS"
record load.ttl "$TTL"
record load.leader "$LEADER"
record load.applied_index "$target"

sleep 2 # let RSS settle after the last snapshot build
for id in $(seq 1 "$NODES"); do record_node "$id" "nodes.n$id"; done
for id in $(seq 1 "$NODES"); do
  record "nodes.n$id.log_lines_after_load" "$(wc -l <"$WORK/n$id.log")"
  record "nodes.n$id.snapshot_file_bytes" "$(find "$WORK/n$id/snapshots" -name 'snapshot-*.bin' -printf '%s\n' 2>/dev/null | tail -n 1)"
done
log "after load:"
for id in $(seq 1 "$NODES"); do
  log "  n$id: RSS $(($(proc_kb "${PID[$id]}" VmRSS) / 1024)) MiB (peak $(($(proc_kb "${PID[$id]}" VmHWM) / 1024)) MiB), data dir $(($(du_bytes "$WORK/n$id") / 1048576)) MiB; newest snapshot: $(grep 'built snapshot' "$WORK/n$id.log" | tail -n 1 | sed 's/.*built snapshot //' || true)"
done

# --- Restarts of a follower ------------------------------------------------------------
FOLLOWER=""
for id in $(seq 1 "$NODES"); do [[ "$id" != "$LEADER" ]] && { FOLLOWER=$id; break; }; done
record follower "$FOLLOWER"
CLK_TCK=$(getconf CLK_TCK)
# User+system CPU ticks of process $1 so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# Waits up to $7 seconds until node $1 is ready, has applied index >= $2 and (when $3 is
# non-empty) has logged "installed snapshot" after line $4 of its log. Records under
# prefix $5, timed from $6 (epoch seconds). Returns 1 on timeout.
wait_caught_up() {
  local id=$1 want=$2 need_install=$3 from_line=$4 p=$5 t0=$6 limit=$7
  local first_ready="" installed="" applied="" deadline=$((SECONDS + limit))
  local lt0 ft0; lt0=$(cpu_ticks "${PID[$LEADER]}"); ft0=$(cpu_ticks "${PID[$id]}")
  while :; do
    if ! node_alive "$id"; then
      log "n$id exited; last log lines:"; tail -n 20 "$WORK/n$id.log" >&2; exit 1
    fi
    if ready "$id"; then
      [[ -n "$first_ready" ]] || first_ready=$(secs_since "$t0")
      if [[ -n "$need_install" && -z "$installed" ]] \
          && awk -v from="$from_line" 'NR > from && /installed snapshot/ {found = 1} END {exit !found}' "$WORK/n$id.log"; then
        installed=$(secs_since "$t0")
      fi
      applied=$(cluster "$id" | jq -r '.applied_index // empty' 2>/dev/null || true)
      if [[ -n "$applied" ]] && ((applied >= want)) && [[ -z "$need_install" || -n "$installed" ]]; then
        break
      fi
    fi
    if ((SECONDS >= deadline)); then
      local secs; secs=$(secs_since "$t0")
      record "$p.caught_up" false
      record "$p.gave_up_after_seconds" "$secs"
      record "$p.seconds_to_first_ready" "$first_ready"
      record "$p.applied_index_seen" "${applied:-null}"
      record "$p.wanted_applied_index" "$want"
      record "$p.log_from_line" "$from_line"
      record "$p.start_epoch" "$t0"
      # CPU burnt meanwhile, as % of one core.
      local isecs=${secs%.*}
      ((isecs > 0)) || isecs=1
      record "$p.leader_cpu_percent" "$((($(cpu_ticks "${PID[$LEADER]}") - lt0) * 100 / CLK_TCK / isecs))"
      record "$p.node_cpu_percent" "$((($(cpu_ticks "${PID[$id]}") - ft0) * 100 / CLK_TCK / isecs))"
      log "  n$id did NOT catch up within ${limit}s: applied index ${applied:-none} of $want, /readyz 200 after ${first_ready:-never}s"
      log "    n$id: $(cluster "$id" | jq -c 'del(.members)' 2>/dev/null || true)"
      log "    leader n$LEADER: $(cluster "$LEADER" | jq -c 'del(.members)' 2>/dev/null || true)"
      return 1
    fi
    sleep 0.05
  done
  local total; total=$(secs_since "$t0")
  record "$p.caught_up" true
  record "$p.seconds_to_first_ready" "$first_ready"
  record "$p.seconds_to_caught_up" "$total"
  [[ -z "$need_install" ]] || record "$p.seconds_to_snapshot_installed_seen" "$installed"
  record "$p.wanted_applied_index" "$want"
  record "$p.log_from_line" "$from_line"
  record "$p.start_epoch" "$t0"
  sleep 1
  record_node "$id" "$p.node"
  log "  n$id caught up to index $want in ${total}s (first /readyz 200 after ${first_ready}s), RSS $(($(proc_kb "${PID[$id]}" VmRSS) / 1024)) MiB"
}

# Restart node $1 after signal $2; records under $3.
restart_after() {
  local id=$1 sig=$2 name=$3
  local want; want=$(jget "$(cluster "$LEADER")" applied_index)
  log "restart of follower n$id after SIG$sig (leader applied index $want)"
  local t_stop; t_stop=$(now)
  stop_node "$id" "$sig"
  record "$name.stop_seconds" "$(secs_since "$t_stop")"
  local lines; lines=$(wc -l <"$WORK/n$id.log")
  local t0; t0=$(now)
  start_node "$id"
  wait_caught_up "$id" "$want" "" "$lines" "$name" "$t0" "$CATCHUP_TIMEOUT" || exit 1
}
restart_after "$FOLLOWER" KILL restart_kill9
restart_after "$FOLLOWER" TERM restart_sigterm

# --- Lagging follower: catch-up by snapshot -------------------------------------------
# Stop the follower, write while it is down until the leader has purged the log past the
# follower's last entry, start it: the leader must send its snapshot.
f_last=$(jget "$(cluster "$FOLLOWER")" last_log_index)
log "lagging follower n$FOLLOWER: stop (SIGTERM) at last log index $f_last, load until the leader purged past it, start"
t_stop=$(now)
stop_node "$FOLLOWER" TERM
record lagging.stop_seconds "$(secs_since "$t_stop")"
acquired_before=$acquired
# Writes past the follower's last entry by more than raft.keep_entries_after_snapshot
# (1000), then a snapshot on the leader, which purges its log behind it.
load_chunk 3000 "writes while n$FOLLOWER is down"
curl -fsS --max-time 120 -X POST "http://$(api_of "$LEADER")/v1/cluster/snapshot" >/dev/null || { log "leader refused a snapshot"; exit 1; }
deadline=$((SECONDS + CATCHUP_TIMEOUT))
until purged=$(jget "$(cluster "$LEADER")" purged_index) && [[ "$purged" != null ]] && ((purged > f_last)); do
  ((SECONDS < deadline)) || break
  sleep 0.5
done
info=$(cluster "$LEADER")
purged=$(jget "$info" purged_index)
record lagging.follower_last_log_index "$f_last"
record lagging.leader_purged_index "$purged"
record lagging.extra_acquires $((acquired - acquired_before))
record lagging.locks_stored "$(jget "$info" locks_stored)"
if [[ "$purged" == null ]] || ((purged <= f_last)); then
  log "  the leader did not purge past index $f_last (purged $purged): a snapshot is not needed; measuring anyway"
fi
want=$(jget "$info" applied_index)
lines=$(wc -l <"$WORK/n$FOLLOWER.log")
t0=$(now)
start_node "$FOLLOWER"
need=yes
[[ "$purged" != null ]] && ((purged > f_last)) || need=""
wait_caught_up "$FOLLOWER" "$want" "$need" "$lines" lagging "$t0" "$CATCHUP_TIMEOUT" || exit 1
record_node "$LEADER" "lagging.leader_after"

# --- Wiped follower ------------------------------------------------------------------
# The documented procedure for a node that lost its disk: stop it, tell the leader it
# may come back empty (Raft otherwise refuses a follower whose log went backwards),
# delete its data dir, start it under the same id; the leader sends its snapshot.
want=$(jget "$(cluster "$LEADER")" applied_index)
log "wiped follower n$FOLLOWER: stop (SIGTERM), allow-rejoin on the leader, delete $WORK/n$FOLLOWER, start (leader applied index $want)"
t_stop=$(now)
stop_node "$FOLLOWER" TERM
record wiped.stop_seconds "$(secs_since "$t_stop")"
curl -fsS --max-time 10 -X POST "http://$(api_of "$LEADER")/v1/cluster/nodes/$FOLLOWER/allow-rejoin" >/dev/null \
  || { log "allow-rejoin refused"; exit 1; }
rm -rf "${WORK:?}/n$FOLLOWER"
lines=$(wc -l <"$WORK/n$FOLLOWER.log")
t0=$(now)
start_node "$FOLLOWER"
if wait_caught_up "$FOLLOWER" "$want" yes "$lines" wiped "$t0" "$WIPED_TIMEOUT"; then
  record_node "$LEADER" "wiped.leader_after"
else
  record_node "$FOLLOWER" "wiped.node"
  # Do not leave it (and the leader) spinning.
  stop_node "$FOLLOWER" TERM
fi

# --- Report --------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
record meta.date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
record meta.commit "$commit"
record meta.cores "$(nproc)"
record meta.snapshot_after_entries "$SNAPSHOT_AFTER"
for id in $(seq 1 "$NODES"); do cp "$WORK/n$id.log" "$WORK/log-n$id.txt"; done
python3 - "$FIGURES" "$WORK" "$OUT" "$NODES" <<'PY'
import datetime, json, re, sys

figures, work, out, nodes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def value(s):
    if s in ("true", "false"):
        return s == "true"
    for conv in (int, float):
        try:
            return conv(s)
        except ValueError:
            pass
    return None if s in ("null", "") else s

res = {}
for line in open(figures):
    key, _, v = line.rstrip("\n").partition(" ")
    d = res
    *path, last = key.split(".")
    for k in path:
        d = d.setdefault(k, {})
    d[last] = value(v)

TS = re.compile(r"^(\S+Z)\s+INFO\b.*?(built snapshot|installed snapshot|state machine loaded|node started)(.*)$")
def events(nid, from_line=0, to_line=None):
    ev = []
    with open(f"{work}/log-n{nid}.txt", errors="replace") as f:
        for i, line in enumerate(f):
            if i < from_line or (to_line is not None and i >= to_line):
                continue
            m = TS.match(line)
            if not m:
                continue
            t = datetime.datetime.strptime(m.group(1)[:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
            t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
            fields = {k: value(v) for k, v in re.findall(r"(\w+)=(\S+)", m.group(3))}
            ev.append((t, m.group(2), fields))
    return ev

# Snapshots built during the load, per node.
snap = {}
for n in range(1, nodes + 1):
    upto = res["nodes"][f"n{n}"].get("log_lines_after_load")
    built = [f for _, what, f in events(n, 0, upto) if what == "built snapshot"]
    if built:
        last = built[-1]
        snap[f"n{n}"] = {
            "count_built": len(built),
            "total_build_ms": sum(b.get("elapsed_ms", 0) for b in built),
            "last": last,
            "max_build_ms": max(b.get("elapsed_ms", 0) for b in built),
        }
res["snapshots_built_during_load"] = snap

# Time from process start to its state machine loaded / snapshot installed, from the log.
phases = [ph for ph in ("restart_kill9", "restart_sigterm", "lagging", "wiped") if res.get(ph)]
for i, phase in enumerate(phases):
    p = res[phase]
    # Only this phase's lines: up to where the next phase's run of the node starts.
    upto = res[phases[i + 1]]["log_from_line"] if i + 1 < len(phases) else None
    ev = events(res["follower"], p["log_from_line"], upto)
    t0 = p["start_epoch"]
    for t, what, f in ev:
        if what == "state machine loaded" and "seconds_to_state_machine_loaded" not in p:
            p["seconds_to_state_machine_loaded"] = round(t - t0, 3)
            p["state_machine_loaded"] = f
        if what == "installed snapshot" and "snapshot_installed" not in p:
            p["seconds_to_snapshot_installed"] = round(t - t0, 3)
            p["snapshot_installed"] = f

json.dump(res, open(f"{out}/results.json", "w"), indent=2, sort_keys=True)

def mib(kb):
    return "%.0f" % (kb / 1024) if isinstance(kb, (int, float)) else "?"
def mb(b):
    return "%.1f" % (b / 1e6) if isinstance(b, (int, float)) else "?"
def s(x):
    return "%.2f" % x if isinstance(x, (int, float)) else "?"

L = res["load"]
m = res["meta"]
md = [
    "# Baton scale figures",
    "",
    f"- date: {m['date']}, commit: {m['commit']}, machine: {m['cores']} cores; three nodes and the loader on one host (loopback)",
    f"- load: {L['locks_stored']} live locks stored (target {L['target_locks']}, ttl {L['ttl']}, reached after {s(L['seconds'])} s; {s(L['seconds_with_top_up'])} s with a snapshot on every node) by {L['acquires']} uncontended acquires over {L['conns']} connections ({L['chunks']} bench chunks, {L['errors']} errors); raft.snapshot_after_entries = {m['snapshot_after_entries']}",
    f"- leader n{L['leader']}; restarted / wiped follower n{res['follower']}",
    "",
    "| node | role | RSS MiB | peak RSS MiB | RSS empty MiB | RocksDB MB | snapshot file MB | locks | snapshots built | last build ms | max build ms | all builds ms |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]
for n in range(1, nodes + 1):
    d = res["nodes"][f"n{n}"]
    sb = snap.get(f"n{n}", {})
    role = "leader" if n == L["leader"] else "follower"
    md.append(f"| n{n} | {role} | {mib(d['rss_kb'])} | {mib(d['peak_rss_kb'])} | {mib(d['empty_rss_kb'])} | {mb(d['db_bytes'])} | {mb(d.get('snapshot_file_bytes'))} | {d['locks_stored']} | {sb.get('count_built', 0)} | {sb.get('last', {}).get('elapsed_ms', '?')} | {sb.get('max_build_ms', '?')} | {sb.get('total_build_ms', '?')} |")
ls = snap.get(f"n{L['leader']}", {}).get("last", {})
if ls:
    # "keys" since the build stopped decoding the key states; "locks" before.
    keys = ls.get("keys", ls.get("locks"))
    per = ls["bytes"] / keys if keys else float("nan")
    md += ["", f"Leader's newest snapshot: index {ls.get('index')}, {keys} keys, {mb(ls.get('bytes'))} MB ({per:.0f} B/key), built in {ls.get('elapsed_ms')} ms."]
d = res["nodes"][f"n{L['leader']}"]
if isinstance(d.get("locks_stored"), int) and d["locks_stored"]:
    per_lock = (d["rss_kb"] - d["empty_rss_kb"]) * 1024 / d["locks_stored"]
    md.append(f"Leader RSS growth per stored lock: {per_lock:.0f} B.")
md += [
    "",
    "| follower event | stop s | state machine loaded s | snapshot installed s | first /readyz 200 s | caught up s | RSS after MiB |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
]
for phase, label in (("restart_kill9", "restart after kill -9"), ("restart_sigterm", "restart after SIGTERM"),
                     ("lagging", "lagging (log purged past it), catch-up"), ("wiped", "wiped data dir, catch-up")):
    p = res.get(phase)
    if not p:
        continue
    inst = s(p.get("seconds_to_snapshot_installed")) if phase in ("lagging", "wiped") else "–"
    if p.get("caught_up") is False:
        done = f"**not after {s(p.get('gave_up_after_seconds'))}** (applied {p.get('applied_index_seen') or 'none'} of {p.get('wanted_applied_index')})"
    else:
        done = s(p.get("seconds_to_caught_up"))
    md.append(f"| {label} | {s(p.get('stop_seconds'))} | {s(p.get('seconds_to_state_machine_loaded'))} | {inst} | {s(p.get('seconds_to_first_ready'))} | {done} | {mib(p.get('node', {}).get('rss_kb'))} |")
lg = res.get("lagging", {})
if lg:
    md += ["", f"Lagging follower: stopped at log index {lg.get('follower_last_log_index')}; {lg.get('extra_acquires')} more acquires while it was down; leader purged up to {lg.get('leader_purged_index')}; {lg.get('locks_stored')} locks stored then."]
    li = lg.get("snapshot_installed")
    if li:
        md.append(f"It installed snapshot index {li.get('index')}, {li.get('locks')} locks, {mb(li.get('bytes'))} MB in {li.get('elapsed_ms')} ms (decode, one RocksDB batch with sync, snapshot file).")
w = res.get("wiped", {})
if w.get("caught_up") is False:
    md += ["", f"**Wiped follower did not catch up** within {s(w.get('gave_up_after_seconds'))} s: applied index {w.get('applied_index_seen') or 'none'} (leader {w.get('wanted_applied_index')}), /readyz 200 after {s(w.get('seconds_to_first_ready'))} s regardless; CPU meanwhile: leader {w.get('leader_cpu_percent')} %, wiped node {w.get('node_cpu_percent')} % of a core."]
elif w.get("snapshot_installed"):
    wi = w["snapshot_installed"]
    md += ["", f"Wiped follower installed snapshot index {wi.get('index')}, {wi.get('locks')} locks, {mb(wi.get('bytes'))} MB in {wi.get('elapsed_ms')} ms."]
md += ["", "Times are seconds from starting the process; \"caught up\" = `/readyz` 200 and applied index >= the leader's when it was started (after a snapshot install where one is needed). RSS is VmRSS, peak RSS VmHWM.", ""]
open(f"{out}/results.md", "w").write("\n".join(md))
PY
cat "$OUT/results.json"
echo
cat "$OUT/results.md"
