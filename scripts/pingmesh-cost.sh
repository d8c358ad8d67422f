#!/usr/bin/env bash
# Measures what the agent's fabric probes cost one node: agent CPU time with [probe] on and off over
# the same span, and the packets and bytes its fabric interface sends and receives. Three network
# namespaces on one bridge, each running a real faultline-agent (no analyzer: static peers, so the
# numbers are the probes' alone). Needs root, ip, and target/debug or target/release binaries.
#
#   sudo scripts/pingmesh-cost.sh [seconds] [rate_pps] [target/debug/faultline-agent]
set -euo pipefail
SECS=${1:-60}
RATE=${2:-10}
AGENT=${3:-target/debug/faultline-agent}
ID=flc$$
N=3
TMP=$(mktemp -d)
cleanup() {
  for p in "$TMP"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  for i in $(seq 0 $((N - 1))); do ip netns del "${ID}n$i" 2>/dev/null || true; done
  ip netns del "${ID}f" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

ip netns add "${ID}f"
ip -n "${ID}f" link add br0 type bridge
ip -n "${ID}f" link set br0 up
for i in $(seq 0 $((N - 1))); do
  ip netns add "${ID}n$i"
  ip -n "${ID}n$i" link set lo up
  ip link add "${ID}p$i" type veth peer name fab0 netns "${ID}n$i"
  ip link set "${ID}p$i" netns "${ID}f"
  ip -n "${ID}f" link set "${ID}p$i" master br0 up
  ip -n "${ID}n$i" addr add "10.78.0.$((10 + i))/24" dev fab0
  ip -n "${ID}n$i" link set fab0 up
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
counter() { ip netns exec "$1" cat "/sys/class/net/fab0/statistics/$2"; }

run() { # $1 = true|false
  for i in $(seq 0 $((N - 1))); do
    peers=""
    for j in $(seq 0 $((N - 1))); do
      [ "$i" = "$j" ] || peers="$peers{ node = \"n$j\", addr = \"10.78.0.$((10 + j))\" },"
    done
    mkdir -p "$TMP/n$i"
    cat > "$TMP/n$i/agent.toml" <<TOML
node_name = "n$i"
interval = "10s"
listen = "127.0.0.1:0"
progress_listen = "127.0.0.1:0"
no_gpu = true
kmsg = "/nonexistent/kmsg"
spool_dir = "$TMP/n$i"

[nics]
fabric_include = ["fab0"]

[probe]
enabled = $1
rate_pps = $RATE
peers = [${peers%,}]
TOML
    ip netns exec "${ID}n$i" "$AGENT" --config "$TMP/n$i/agent.toml" >/dev/null 2>&1 &
    echo $! > "$TMP/n$i.pid"
  done
  sleep 15 # first report binds the responders; let start-up costs pass
  local pid0 t0 tx0 txb0 rx0 rxb0
  pid0=$(cat "$TMP/n0.pid")
  t0=$(ticks "$pid0"); tx0=$(counter "${ID}n0" tx_packets); txb0=$(counter "${ID}n0" tx_bytes)
  rx0=$(counter "${ID}n0" rx_packets); rxb0=$(counter "${ID}n0" rx_bytes)
  sleep "$SECS"
  local t1 tx1 txb1 rx1 rxb1 hz
  t1=$(ticks "$pid0"); tx1=$(counter "${ID}n0" tx_packets); txb1=$(counter "${ID}n0" tx_bytes)
  rx1=$(counter "${ID}n0" rx_packets); rxb1=$(counter "${ID}n0" rx_bytes)
  hz=$(getconf CLK_TCK)
  awk -v on="$1" -v s="$SECS" -v dt=$((t1 - t0)) -v hz="$hz" -v tx=$((tx1 - tx0)) -v txb=$((txb1 - txb0)) \
      -v rx=$((rx1 - rx0)) -v rxb=$((rxb1 - rxb0)) 'BEGIN {
    printf "probes=%-5s cpu=%.3f%% of a core (%d ticks in %ds)  tx=%.1f pkt/s %.0f B/s  rx=%.1f pkt/s %.0f B/s\n",
      on, 100 * dt / hz / s, dt, s, tx / s, txb / s, rx / s, rxb / s }'
  for p in "$TMP"/*.pid; do kill "$(cat "$p")" 2>/dev/null || true; rm -f "$p"; done
  sleep 2
}

echo "agent $AGENT, $N nodes, ${SECS}s, rate_pps=$RATE, report interval 10s"
run false
run true
