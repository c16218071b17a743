# Network-namespace topology for the chaos suite; sourced by run.sh (needs root).
#
# One hub namespace holds a bridge; each node (btc<id>-n1..3) and the client namespace
# (btc<id>-cl) hang off it by a veth pair. Every address lives inside these namespaces
# (10.77.0.0/24), and everything is removed by netns_down (run.sh's cleanup trap).
# Partitions are iptables DROP rules inside the node namespaces.

# Names carry the run's id (default: the script's PID) so that two runs on one machine
# do not touch each other's namespaces or veth pairs. Addresses may repeat: each run has
# its own bridge.
# tests/deploy.rs reuses this with its own id and addresses (NETNS_PREFIX,
# NETNS_HOST_BASE: node N is PREFIX.(BASE+N)), so it can run beside a chaos run.
NS_ID=${CHAOS_NS_ID:-$$}
NS_HUB=btc$NS_ID-hub
NS_CLIENT=btc$NS_ID-cl
NET_PREFIX=${NETNS_PREFIX:-10.77.0}
HOST_BASE=${NETNS_HOST_BASE:-0}
CLIENT_ADDR=$NET_PREFIX.100

ns_of() { echo "btc$NS_ID-n$1"; }
addr_of() { echo "$NET_PREFIX.$((HOST_BASE + $1))"; }

netns_up() {
  netns_down
  ip netns add "$NS_HUB"
  ip netns exec "$NS_HUB" ip link add br0 type bridge
  ip netns exec "$NS_HUB" ip link set br0 up
  local name addr
  for name in 1 2 3 cl; do
    if [[ $name == cl ]]; then ns=$NS_CLIENT; addr=$CLIENT_ADDR; else ns=$(ns_of "$name"); addr=$(addr_of "$name"); fi
    ip netns add "$ns"
    ip netns exec "$ns" ip link set lo up
    # veth names live in the root namespace until moved: unique per run, at most 15 chars.
    ip link add "bv$NS_ID-$name" type veth peer name "bp$NS_ID-$name"
    ip link set "bv$NS_ID-$name" netns "$NS_HUB"
    ip link set "bp$NS_ID-$name" netns "$ns"
    ip netns exec "$NS_HUB" ip link set "bv$NS_ID-$name" master br0 up
    ip netns exec "$ns" ip link set "bp$NS_ID-$name" name eth0
    ip netns exec "$ns" ip addr add "$addr/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
  done
}

netns_down() {
  local ns
  for ns in "$NS_CLIENT" "$(ns_of 1)" "$(ns_of 2)" "$(ns_of 3)" "$NS_HUB"; do
    ip netns del "$ns" 2>/dev/null || true
  done
}

# Runs a command in the client namespace.
in_client() { ip netns exec "$NS_CLIENT" "$@"; }

# iptables in node N's namespace.
ipt() { local n=$1; shift; ip netns exec "$(ns_of "$n")" iptables -w "$@"; }

# Drop all traffic between node A and node B (both directions, on both sides).
cut_link() {
  ipt "$1" -A INPUT -s "$(addr_of "$2")" -j DROP; ipt "$1" -A OUTPUT -d "$(addr_of "$2")" -j DROP
  ipt "$2" -A INPUT -s "$(addr_of "$1")" -j DROP; ipt "$2" -A OUTPUT -d "$(addr_of "$1")" -j DROP
}

# Node N hears nothing from its peers but can still send to them.
one_way_in() {
  local n=$1 p
  for p in 1 2 3; do [[ $p == "$n" ]] || ipt "$n" -A INPUT -s "$(addr_of "$p")" -j DROP; done
}

# Node N drops a fraction of all incoming packets.
lossy() { ipt "$1" -A INPUT -m statistic --mode random --probability "$2" -j DROP; }

heal_network() {
  local n
  for n in 1 2 3; do ipt "$n" -F; done
}
