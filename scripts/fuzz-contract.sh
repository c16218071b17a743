#!/usr/bin/env bash
# Usage: scripts/fuzz-contract.sh [--max-time SECONDS] [--seed N] [--out DIR]
#
# Fuzzes the v1 API against its own OpenAPI document (GET /v1/openapi.json) with
# schemathesis, on a live three-node cluster started from the release binary (BATON_BIN,
# else cargo's target dir; built if missing), requests spread over the three nodes:
#   - no 5xx but 503 (the documented NO_LEADER / OUTCOME_UNKNOWN / TOO_MANY_STREAMS / …),
#   - every status, content type and body as the document says;
# then, server-side, that the nodes agree: once their applied indexes are equal, their
# lock tables (GET /v1/locks?consistency=local, every page) are equal.
# The event streams are left out (a stream never ends: schemathesis would wait for it).
# Bounded: schemathesis gets --max-time (default 150 s) split over the nodes; the whole
# script takes about a minute more. Output (schemathesis reports, node logs) under DIR
# (default target/fuzz-contract). Needs curl, jq, python3 with venv.
set -euo pipefail
cd "$(dirname "$0")/.."

max_time=150
seed=$RANDOM
out=target/fuzz-contract
while (($#)); do
  case $1 in
    --max-time) max_time=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=scripts/lib/local_cluster.sh
source scripts/lib/local_cluster.sh
python=$(scripts/python-env.sh)
schemathesis=$(dirname "$python")/schemathesis
config=$PWD/scripts/fuzz-contract.toml

rm -rf "$out"
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'stop_all_nodes >/dev/null 2>&1 || true; cp "$work"/n*.log "$out"/ 2>/dev/null || true; rm -rf "$work"' EXIT

BIN=$(baton_release_bin)
[[ -x $BIN ]] || baton_build
local_cluster_init "$work" 3 "$BIN"
# Fast elections; a waiting acquire waits at most 2 s, so no request outlives
# schemathesis' timeout (a longer wait_ms is 400, as the document says).
local_cluster_raft_settings "heartbeat_interval_ms = 50"
local_cluster_raft_settings "election_timeout_min_ms = 400"
local_cluster_raft_settings "election_timeout_max_ms = 800"
printf '[lease]\nmax_wait_ms = 2000\n' >>"$CONFIG"
for id in 1 2 3; do start_node "$id"; done
wait_ready 60

echo "== schemathesis $("$schemathesis" --version | awk '{print $NF}') on three nodes, seed $seed, ${max_time}s"
status=0
per_node=$((max_time / 3))
for id in 1 2 3; do
  api=$(api_of "$id")
  # Run in the work dir: Hypothesis keeps its files in the current directory.
  (cd "$work" && "$schemathesis" --config-file "$config" run "http://$api/v1/openapi.json" \
    --url "http://$api" --max-time "$per_node" --seed "$seed" \
    --report junit --report-junit-path "$out/node$id.junit.xml") \
    >"$out/node$id.txt" 2>&1 || status=1
  tail -n 25 "$out/node$id.txt"
done

echo "== the nodes' lock tables"
# Applied indexes settle once nothing is proposed any more (sweeps of expired leases
# are entries too: wait until all three report the same index twice in a row).
tables_equal() {
  local id page cursor
  for id in 1 2 3; do
    : >"$work/table$id"
    cursor=""
    while :; do
      page=$(curl -sf "http://$(api_of "$id")/v1/locks?consistency=local&limit=1000${cursor:+&cursor=$cursor}") || return 1
      jq -e '.locks | type == "array"' <<<"$page" >/dev/null || return 1
      jq -c '.locks[] | del(.waiter_list)' <<<"$page" >>"$work/table$id"
      cursor=$(jq -r '.next_cursor // empty' <<<"$page")
      [[ -n $cursor ]] || break
    done
  done
  cmp -s "$work/table1" "$work/table2" && cmp -s "$work/table1" "$work/table3"
}
# A lock of our own, so that the tables compared are not empty.
curl -sf -X POST "http://$(api_of 1)/v1/locks/fuzz-contract-check/acquire" -H content-type:application/json \
  -d '{"owner":"fuzz-contract","ttl_ms":600000}' >/dev/null
applied() { curl -sf "http://$(api_of "$1")/v1/cluster" | jq -r '.applied_index'; }
deadline=$((SECONDS + 60))
agreed=0
while ((SECONDS < deadline)); do
  a=$(applied 1) b=$(applied 2) c=$(applied 3)
  if [[ $a == "$b" && $b == "$c" ]] && tables_equal && [[ -s $work/table1 ]] &&
    [[ $(applied 1) == "$a" && $(applied 3) == "$a" ]]; then
    agreed=1
    echo "equal at applied index $a: $(wc -l <"$work/table1") locks"
    break
  fi
  sleep 0.5
done
if ((!agreed)); then
  echo "the nodes' lock tables differ (or never settled):" >&2
  diff "$work/table1" "$work/table2" >&2 || true
  diff "$work/table1" "$work/table3" >&2 || true
  status=1
fi

for id in 1 2 3; do
  node_alive "$id" || { echo "node $id is gone; its log: $out/n$id.log" >&2; status=1; }
done
((status == 0)) && echo "contract fuzzing passed" || echo "contract fuzzing FAILED (reports in $out)" >&2
exit "$status"
