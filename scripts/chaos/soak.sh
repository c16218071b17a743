#!/usr/bin/env bash
# Soak: chaos runs with consecutive seeds for HOURS, keeping only the failing runs.
#
# usage: scripts/chaos/soak.sh HOURS [--duration SECONDS] [--first-seed N] [--out DIR]
#
# Runs scripts/chaos/run.sh (default 600 s per run) with seeds N, N+1, ... until HOURS
# have passed (a run that has started is finished). A passing run's directory is removed
# to save space; a failing one is kept as DIR/seed-S. DIR/soak.log gets one line per run
# (seed, verdict, the summary's failover and checks line). Exit 0 when every run passed,
# 1 when any failed. Needs what run.sh needs (root for the network faults); set BATON_BIN
# to test a prebuilt binary.
set -euo pipefail

usage() { sed -n '2,12p' "$0"; exit 2; }
[[ $# -ge 1 ]] || usage
HOURS=$1; shift
DURATION=600 SEED=1 OUT=target/chaos/soak
while (($#)); do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --first-seed) SEED=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument $1" >&2; usage ;;
  esac
done
[[ $HOURS =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "HOURS must be a number, got $HOURS" >&2; exit 2; }
cd "$(dirname "$0")/../.."
mkdir -p "$OUT"
end=$(( $(date +%s) + $(awk -v h="$HOURS" 'BEGIN { printf "%d", h * 3600 }') ))
failed=0 runs=0
while (( $(date +%s) < end )); do
  dir="$OUT/seed-$SEED"
  runs=$((runs + 1))
  if scripts/chaos/run.sh --duration "$DURATION" --seed "$SEED" --out "$dir" >"$OUT/seed-$SEED.log" 2>&1; then
    verdict=pass
  else
    verdict=FAIL
    failed=$((failed + 1))
  fi
  summary=$(grep -h -e '^leader fault' -e 'passed, ' "$dir/summary.txt" 2>/dev/null | tr '\n' ' ' || true)
  echo "$(date -u +%FT%TZ) seed $SEED $verdict $summary" | tee -a "$OUT/soak.log"
  if [[ $verdict == pass ]]; then
    rm -rf "${dir:?}" "$OUT/seed-$SEED.log"
  fi
  SEED=$((SEED + 1))
done
echo "$runs runs, $failed failed (kept in $OUT)" | tee -a "$OUT/soak.log"
((failed == 0))
