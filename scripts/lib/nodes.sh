# Starting, stopping and checking local `baton server` processes: the one library used by
# scripts/cluster.sh, scripts/lib/local_cluster.sh (bench.sh, scale.sh), scripts/install.sh
# and scripts/chaos/ (source it; it sets no shell options of its own).
#
#   baton_release_bin          where the release binary is: $BATON_BIN if set, else the
#                              target dir cargo uses (CARGO_TARGET_DIR, .cargo/config.toml)
#   baton_build                builds that binary, unless BATON_BIN names a prebuilt one
#   config_nodes CONFIG        one line per [[nodes]] entry: id, api, raft, data_dir (tabs)
#   proc_alive PID             whether PID exists and is not a zombie
#   node_running PID ID        whether PID is a live `baton server … --node ID` process
#   node_spawn BIN CONFIG ID LOG [PREFIX…]
#                              starts `PREFIX… BIN server --config CONFIG --node ID` in the
#                              background, output appended to LOG; sets NODE_PID
#   node_stop PID ID SIG [SECONDS]
#                              sends SIG (TERM, KILL), waits until the node is gone,
#                              SIGKILL after SECONDS (default 30); reaps it if it is our child
#   node_ready API [PREFIX…]   whether http://API/readyz answers 200 (PREFIX runs curl,
#                              e.g. `ip netns exec NS`)
#   node_wait_ready ID PID API LOG SECONDS [PREFIX…]
#                              waits until node_ready; fails with the log tail when the
#                              process is gone or SECONDS pass
#
# Why a PID alone is not enough: after `kill -9` the process of a node started by an
# earlier shell stays a zombie until its new parent reaps it (in a container whose init
# does not reap, for ever), so `kill -0 PID` succeeds for a dead node, and a PID file can
# name a PID that the system has given to another program since. node_running looks at
# the process itself: /proc/PID/stat not in state Z (zombie) or X (dead), and its command
# line `server … --node ID`.
#
# Why python3 for cluster.toml: TOML allows comments, any key order, inline tables and
# several quoting styles, which sed/awk patterns only handle for one layout of the file;
# python3's tomllib (3.11+, Debian bookworm's python3) parses all of it, and python3 is
# already needed by bench.sh and scale.sh. JSON is read with jq.

# The release binary this checkout builds (or $BATON_BIN).
baton_release_bin() {
  if [[ -n "${BATON_BIN:-}" ]]; then
    echo "$BATON_BIN"
    return
  fi
  local dir
  dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | jq -r '.target_directory // empty' 2>/dev/null || true)
  echo "${dir:-${CARGO_TARGET_DIR:-target}}/release/baton"
}

# Builds the release binary quietly, unless BATON_BIN names a prebuilt one.
baton_build() {
  if [[ -n "${BATON_BIN:-}" ]]; then
    [[ -x "$BATON_BIN" ]] || { echo "BATON_BIN=$BATON_BIN is not an executable file" >&2; return 1; }
    return 0
  fi
  cargo build --release --locked --quiet --bin baton
}

# Prints "id<TAB>api<TAB>raft<TAB>data_dir" for every [[nodes]] entry of $1, in file order.
config_nodes() {
  python3 - "$1" <<'PY'
import sys
try:
    import tomllib
except ImportError:
    sys.exit("reading cluster.toml needs python3 3.11 or later (tomllib)")
path = sys.argv[1]
try:
    with open(path, "rb") as f:
        config = tomllib.load(f)
except (OSError, tomllib.TOMLDecodeError) as e:
    sys.exit(f"cannot read {path}: {e}")
nodes = config.get("nodes")
if not isinstance(nodes, list) or not nodes:
    sys.exit(f"{path} has no [[nodes]] entries")
for n in nodes:
    try:
        print("\t".join(str(n[k]) for k in ("id", "api", "raft", "data_dir")))
    except KeyError as e:
        sys.exit(f"{path}: a [[nodes]] entry has no {e.args[0]}")
PY
}

# Whether PID $1 is a process that has not ended: it exists and is neither a zombie (Z)
# nor dead (X).
proc_alive() {
  local pid=$1 stat
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  read -r stat 2>/dev/null <"/proc/$pid/stat" || return 1
  # The state is the field after the command name in parentheses (which may hold spaces).
  stat=${stat##*) }
  [[ "${stat%% *}" != [ZX] ]]
}

# Whether PID $1 is a live (not zombie) process running `… server … --node $2`. Wrappers
# that exec the node (nohup, env, ip netns exec) pass its arguments on, so a node counts
# from the wrapper's exec on (node_spawn waits for that).
node_running() {
  local pid=$1 id=$2 arg
  proc_alive "$pid" || return 1
  local -a args=()
  mapfile -d '' -t args 2>/dev/null <"/proc/$pid/cmdline" || return 1
  local server=0 node=0 prev=""
  for arg in "${args[@]}"; do
    [[ "$arg" == server ]] && server=1
    [[ "$prev" == --node && "$arg" == "$id" || "$arg" == "--node=$id" ]] && node=1
    prev=$arg
  done
  ((server && node))
}

# How long node_spawn waits for the forked shell to exec the node (50 ms steps).
SPAWN_EXEC_POLLS=200

# Starts node $3 of config $2 with binary $1, output appended to log $4, behind the
# optional prefix command $5…; sets NODE_PID. Returns once the process runs the node's
# command line (until the fork execs, /proc shows this shell's), or has already ended.
node_spawn() {
  local bin=$1 config=$2 id=$3 log=$4 i
  shift 4
  "$@" "$bin" server --config "$config" --node "$id" >>"$log" 2>&1 &
  NODE_PID=$!
  for ((i = 0; i < SPAWN_EXEC_POLLS; i++)); do
    node_running "$NODE_PID" "$id" && return 0
    proc_alive "$NODE_PID" || return 0
    sleep 0.05
  done
}

# Stops node $2 (PID $1) with signal $3 and waits until it is gone; SIGKILL after $4
# seconds (default 30). Reaps it when it is a child of this shell.
node_stop() {
  local pid=$1 id=$2 sig=$3 secs=${4:-30}
  [[ -n "$pid" ]] || return 0
  if node_running "$pid" "$id"; then
    kill "-$sig" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + secs))
    while node_running "$pid" "$id"; do
      if ((SECONDS >= deadline)); then
        echo "n$id (pid $pid) still running ${secs}s after SIG$sig; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 3600))
      fi
      sleep 0.05
    done
  fi
  wait "$pid" 2>/dev/null || true
}

# A cluster with [tls]: NODE_SCHEME=https and NODE_CURL_TLS=(--cacert CA.pem) before
# calling node_ready / node_wait_ready.
NODE_SCHEME=${NODE_SCHEME:-http}
NODE_CURL_TLS=()

# Whether the node at API address $1 answers /readyz with 200; $2… prefixes curl.
node_ready() {
  local api=$1
  shift
  [[ "$("$@" curl "${NODE_CURL_TLS[@]}" -s -o /dev/null -w '%{http_code}' --max-time 2 \
    "$NODE_SCHEME://$api/readyz" 2>/dev/null)" == 200 ]]
}

# Waits until node $1 (PID $2, API $3, log $4) is ready; fails with the last log lines
# when its process is gone or $5 seconds pass. $6… prefixes curl.
node_wait_ready() {
  local id=$1 pid=$2 api=$3 log=$4 secs=$5
  local deadline=$((SECONDS + secs))
  shift 5
  until node_ready "$api" "$@"; do
    if ! node_running "$pid" "$id"; then
      echo "n$id exited; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "n$id not ready after ${secs}s; last lines of $log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.1
  done
}
