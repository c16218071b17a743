#!/usr/bin/env bash
# Run Baton under faults and check the recorded history.
#
# usage: scripts/chaos/run.sh --duration SECONDS --seed N --out DIR [--negative-control] [--loopback]
#
# Starts a fresh three-node cluster, runs the client workload (`baton chaos workload`:
# a main process and a pausable holder process) for SECONDS while injecting faults on a
# schedule drawn from SEED (faults may overlap), heals everything, compares the
# replicas' lock tables, and runs the checker (`baton chaos check DIR`).
#
# Faults, always: kill -9 of the leader, a follower or all nodes (then restart); SIGSTOP
# of the leader (zombie leader) and of the lock-holding client process past its TTL;
# a graceful rolling restart; a membership change (remove the leader or a follower
# through the API, then add it back: learner, catch up, voter); with libfaketime installed, a wall-clock step of +-30..300 s
# on one node (monotonic clock not faked). As root (and without --loopback) each node
# also runs in its own network namespace on a bridge (scripts/chaos/netns.sh) with its
# data dir on a small loop-mounted filesystem, adding: isolate the leader or a
# follower, a bridge (n1 and n2 cut, n3 sees both), one-way loss of the leader's input,
# 30 % packet loss, and disk full on one node. Without root, or with --loopback, the
# cluster runs on loopback with the process and clock faults only. Auth and TLS are on
# (mutual TLS between nodes; DIR/ca.pem, DIR/keys), as on a real network.
#
# Exit 0 only when the history is valid — or, with --negative-control (the fenced
# resource ignores tokens), only when the checker caught the violation.
# Output: DIR/history-*.jsonl, DIR/faults.jsonl, DIR/digests.jsonl (a digest of each
# replica's whole lock table, every page), DIR/table-n*.jsonl (those tables),
# DIR/results.json, DIR/n*.log, DIR/workload*.log, DIR/summary.txt.
set -euo pipefail

usage() { sed -n '2,27p' "$0"; exit 2; }
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
# shellcheck source=scripts/lib/nodes.sh
source scripts/lib/nodes.sh
# shellcheck source=scripts/chaos/netns.sh
source scripts/chaos/netns.sh
# shellcheck source=scripts/chaos/faults.sh
source scripts/chaos/faults.sh

FAKETIME_LIB=""
for lib in /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1 \
           /usr/local/lib/faketime/libfaketimeMT.so.1; do
  [[ -e $lib ]] && { FAKETIME_LIB=$lib; break; }
done
[[ -n "$FAKETIME_LIB" ]] || echo "note: libfaketime not found (apt install faketime): no clock steps"

baton_build
RELEASE_BIN=$(baton_release_bin)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
for id in 1 2 3; do mountpoint -q "$OUT/n$id" 2>/dev/null && umount "$OUT/n$id"; done
rm -rf "${OUT:?}"/*
# A private copy: a build finishing during the run must not swap the binary under it.
cp "$RELEASE_BIN" "$OUT/baton"
BIN="$OUT/baton"
RANDOM=$SEED

declare -A PID=() API=() RAFT_ADDR=() STOPPED=()
WORKLOAD_PID="" PAUSABLE_PID=""
cleanup() {
  set +e
  for p in "$WORKLOAD_PID" "$PAUSABLE_PID"; do
    [[ -n "$p" ]] && { kill -CONT "$p"; kill "$p"; } 2>/dev/null
  done
  for id in 1 2 3; do
    [[ -n "${PID[$id]:-}" ]] || continue
    kill -CONT "${PID[$id]}" 2>/dev/null; kill -KILL "${PID[$id]}" 2>/dev/null; wait "${PID[$id]}" 2>/dev/null
  done
  if [[ $MODE == netns ]]; then disks_down; netns_down; fi
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

if [[ $MODE == netns ]]; then netns_up; disks_up; fi
{
  for id in 1 2 3; do
    if [[ $MODE == netns ]]; then
      API[$id]="$(addr_of "$id"):7000"; RAFT="$(addr_of "$id"):7100"
    else
      free_port; API[$id]="127.0.0.1:$PORT"; free_port; RAFT="127.0.0.1:$PORT"
    fi
    RAFT_ADDR[$id]=$RAFT
    printf '[[nodes]]\nid = %s\napi = "%s"\nraft = "%s"\ndata_dir = "%s/n%s"\n\n' \
      "$id" "${API[$id]}" "$RAFT" "$OUT" "$id"
  done
  printf '[raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 200\nelection_timeout_max_ms = 400\nsweep_interval_ms = 100\nsnapshot_after_entries = 5000\ncatch_up_timeout_ms = 10000\nsecret = "chaos"\n\n'
  printf '[lease]\nmin_ttl_ms = 100\n\n[api]\nrequest_timeout_ms = 2000\nleader_wait_ms = 1000\n'
} >"$OUT/cluster.toml"

# Auth and TLS on, as a cluster on a network must run (a node on a non-loopback address
# refuses to start without them): a CA, one certificate for every node address (mutual
# TLS between nodes), and an admin key for the workload and the checks below.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=chaos CA" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -keyout "$OUT/ca.key" -out "$OUT/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=chaos node" \
  -keyout "$OUT/node.key" -out "$OUT/node.csr" 2>/dev/null
SANS="IP:127.0.0.1"; for id in 1 2 3; do SANS+=",IP:${API[$id]%:*}"; done
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$SANS" >"$OUT/node.ext"
openssl x509 -req -in "$OUT/node.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" -CAcreateserial \
  -days 2 -extfile "$OUT/node.ext" -out "$OUT/node.pem" 2>/dev/null
"$BIN" keys create chaos --allow 'admin=*' >"$OUT/key.out" 2>/dev/null
tail -n 1 "$OUT/key.out" >"$OUT/keys"
API_KEY=$(head -n 1 "$OUT/key.out")
rm -f "$OUT/key.out"
printf '\n[auth]\nenabled = true\nkeys_file = "%s/keys"\n' "$OUT" >>"$OUT/cluster.toml"
printf '\n[tls]\ncert_file = "%s/node.pem"\nkey_file = "%s/node.key"\nca_file = "%s/ca.pem"\nclient_auth = true\n' \
  "$OUT" "$OUT" "$OUT" >>"$OUT/cluster.toml"
NODE_SCHEME=https
NODE_CURL_TLS=(--cacert "$OUT/ca.pem")
CURL=(curl --cacert "$OUT/ca.pem" -H "Authorization: Bearer $API_KEY")
if [[ $MODE == netns ]]; then RESOURCE="127.0.0.1:7900"; else free_port; RESOURCE="127.0.0.1:$PORT"; fi

for id in 1 2 3; do echo "+0" >"$OUT/n$id.faketime"; start_node "$id"; done
wait_ready
note "cluster up ($MODE); workload for ${DURATION}s, seed $SEED, output $OUT"

NEG=(); ((NEGATIVE)) && NEG=(--negative-control)
EPOCH=$(now_ms)
printf '{"start_wall_ms":%s}\n' "$EPOCH" >"$OUT/workload.json"
WL=(chaos workload --endpoints "https://${API[1]},https://${API[2]},https://${API[3]}" --duration "$DURATION"
  --seed "$SEED" --out "$OUT" --resource "$RESOURCE" --epoch-ms "$EPOCH"
  --api-key "$API_KEY" --ca-file "$OUT/ca.pem")
# Started directly (not through a shell function) so that $! is the workload process
# itself, which pause_client stops.
IN_CLIENT=(); [[ $MODE == netns ]] && IN_CLIENT=(ip netns exec "$NS_CLIENT")
"${IN_CLIENT[@]}" "$BIN" "${WL[@]}" --role main "${NEG[@]}" >"$OUT/workload.log" 2>&1 &
WORKLOAD_PID=$!
sleep 0.3 # the main process serves the resource the pausable one writes to
"${IN_CLIENT[@]}" "$BIN" "${WL[@]}" --role pausable >"$OUT/workload-pausable.log" 2>&1 &
PAUSABLE_PID=$!

# The schedule: a new fault every 1-4 s. Lasting faults (network, clock, disk) end on
# their own timer, so they overlap with whatever comes next; at most one of each class
# is active at a time.
KINDS=(kill_leader kill_leader kill_leader kill_follower kill_follower kill_all
  pause_leader pause_leader pause_client pause_client rolling_restart membership membership)
[[ -n "$FAKETIME_LIB" ]] && KINDS+=(clock_step clock_step)
[[ $MODE == netns ]] && KINDS+=(isolate_leader isolate_leader isolate_follower isolate_follower
  bridge one_way_leader packet_loss disk_full)
NET_END=0 CLOCK_END=0 CLOCK_NODE=0 DISK_END=0 DISK_NODE=0
end_lasting() {
  local all=${1:-0}
  if ((NET_END && (all || SECONDS >= NET_END))); then network_end; NET_END=0; fi
  if ((CLOCK_END && (all || SECONDS >= CLOCK_END))); then clock_step_end "$CLOCK_NODE"; CLOCK_END=0; fi
  if ((DISK_END && (all || SECONDS >= DISK_END))); then disk_full_end "$DISK_NODE"; DISK_END=0; fi
}
end=$((SECONDS + DURATION - 3))
next_at=$((SECONDS + 1))
while (( SECONDS < end )); do
  sleep 0.2
  end_lasting
  # A node that stopped by itself outside a disk-full window is restarted (and named in
  # the output: fail-stop is by design, but worth a look in its log).
  for id in 1 2 3; do
    if ! node_alive "$id" && [[ -n "${PID[$id]:-}" ]] && ! ((DISK_END && DISK_NODE == id)); then
      note "n$id exited by itself (see n$id.log); restarting it"; start_node "$id"
    fi
  done
  (( SECONDS >= next_at )) || continue
  next_at=$((SECONDS + 1 + RANDOM % 4))
  L=$(leader || true); [[ -n "$L" ]] || L=$((1 + RANDOM % 3))
  F=$(( (L + RANDOM % 2) % 3 + 1 ))
  kind=${KINDS[RANDOM % ${#KINDS[@]}]}
  case $kind in
    kill_leader) f_kill_leader "$L" ;;
    kill_follower) f_kill_follower "$F" ;;
    kill_all) f_kill_all ;;
    pause_leader) f_pause_leader "$L" ;;
    pause_client) f_pause_client ;;
    rolling_restart) f_rolling_restart ;;
    membership) if ((RANDOM % 2)); then f_membership "$L"; else f_membership "$F"; fi ;;
    clock_step)
      ((CLOCK_END)) && continue
      CLOCK_NODE=$((1 + RANDOM % 3)); f_clock_step "$CLOCK_NODE"; CLOCK_END=$((SECONDS + 3 + RANDOM % 6)) ;;
    disk_full)
      ((DISK_END)) && continue
      DISK_NODE=$((1 + RANDOM % 3)); f_disk_full "$DISK_NODE"; DISK_END=$((SECONDS + 6 + RANDOM % 10)) ;;
    isolate_leader|isolate_follower|bridge|one_way_leader|packet_loss)
      ((NET_END)) && continue
      case $kind in
        isolate_leader) f_isolate "$L" isolate_leader ;;
        isolate_follower) f_isolate "$F" isolate_follower ;;
        bridge) f_bridge ;;
        one_way_leader) f_one_way "$L" ;;
        packet_loss) f_packet_loss "$L" ;;
      esac
      NET_END=$((SECONDS + 2 + RANDOM % 4)) ;;
  esac
done
wait "$WORKLOAD_PID" || true
WORKLOAD_PID=""
wait "$PAUSABLE_PID" || true
PAUSABLE_PID=""
end_lasting 1
for id in 1 2 3; do node_alive "$id" || start_node "$id"; done
members_restore
wait_ready

# Heal and compare: once every replica has applied the same index (and it stays put while
# we read), their lock tables must be equal. Leases of the workload end within seconds,
# after which the leader stops sweeping and the log stops growing.
applied() { client "${CURL[@]}" -fsS --max-time 2 "https://${API[$1]}/v1/cluster" | jq -r '.applied_index // empty'; }
# Node $1's whole lock table (every page of a local read), one lock per line.
table() {
  local cursor="" page
  while :; do
    page=$(client "${CURL[@]}" -fsS --max-time 5 -G "https://${API[$1]}/v1/locks" --data-urlencode consistency=local \
      --data-urlencode limit=1000 ${cursor:+--data-urlencode "cursor=$cursor"}) || return 1
    jq -c '.locks[]' <<<"$page"
    cursor=$(jq -r '.next_cursor // empty' <<<"$page")
    [[ -n "$cursor" ]] || return 0
  done
}
deadline=$((SECONDS + 60))
while :; do
  before="$(applied 1) $(applied 2) $(applied 3)"
  : >"$OUT/digests.jsonl"
  for id in 1 2 3; do
    if table "$id" >"$OUT/table-n$id.jsonl"; then
      digest=$(sha256sum <"$OUT/table-n$id.jsonl" | cut -c1-16)
    else
      # Distinct per node, so that unreadable tables never compare equal.
      digest="unreadable-n$id"
    fi
    index=$(applied "$id" || true)
    printf '{"node":%s,"applied_index":%s,"locks":%s,"digest":"%s"}\n' "$id" "${index:-null}" \
      "$(wc -l <"$OUT/table-n$id.jsonl")" "$digest" >>"$OUT/digests.jsonl"
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
