#!/usr/bin/env bash
# Benchmark (not a test): faultline-agent next to prometheus-node-exporter on this host.
# Both are scraped once a second for 30 s with curl; the script reports CPU ticks (utime+stime from
# /proc/<pid>/stat) per scrape and peak RSS (VmHWM) of each. The agent also collects on its own 1 s
# timer, and that work is counted in its CPU too. Goal: a third of node_exporter's CPU per scrape,
# under 15 MB RSS.
#
# Usage: bench/agent-vs-node-exporter.sh [scrapes]   (run from the repository root; needs curl)
#        AGENT_BIN=/path/to/faultline-agent bench/agent-vs-node-exporter.sh   (measure that build instead)
set -euo pipefail

SCRAPES="${1:-30}"
NE_ADDR=127.0.0.1:19100
AGENT_ADDR=127.0.0.1:19430
PROGRESS_ADDR=127.0.0.1:19431
cd "$(dirname "$0")/.."

NE_BIN="$(command -v prometheus-node-exporter || true)"
if [[ -z "$NE_BIN" ]]; then
    echo "installing prometheus-node-exporter" >&2
    apt-get install -y prometheus-node-exporter >&2
    NE_BIN="$(command -v prometheus-node-exporter)"
fi
command -v curl >/dev/null || { echo "curl is required" >&2; exit 2; }

if [[ -z "${AGENT_BIN:-}" ]]; then # AGENT_BIN=path compares another build (an A/B run)
    cargo build --release -p faultline-agent >&2
    AGENT_BIN=target/release/faultline-agent
fi

WORK="$(mktemp -d)"
NE_PID=""
AGENT_PID=""
cleanup() {
    [[ -n "$NE_PID" ]] && kill "$NE_PID" 2>/dev/null || true
    [[ -n "$AGENT_PID" ]] && kill "$AGENT_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$NE_BIN" --web.listen-address="$NE_ADDR" >"$WORK/ne.log" 2>&1 &
NE_PID=$!
"$AGENT_BIN" --interval 1s --listen "$AGENT_ADDR" --progress-listen "$PROGRESS_ADDR" \
    --spool-dir "$WORK/spool" >"$WORK/agent.out" 2>"$WORK/agent.log" &
AGENT_PID=$!

# Wait for both to answer.
for _ in $(seq 1 100); do
    if curl -sf "http://$NE_ADDR/metrics" >/dev/null && curl -sf "http://$AGENT_ADDR/metrics" >/dev/null; then
        break
    fi
    sleep 0.1
done
sleep 2

ticks() { # utime + stime of a pid (fields 14 and 15; the comm field may hold spaces)
    local rest
    rest="$(sed 's/^.*) //' "/proc/$1/stat")"
    awk '{print $12 + $13}' <<<"$rest"
}
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
# Nanoseconds on CPU of all live threads (schedstat field 1): finer than ticks, but a thread that ends
# during the run takes its time with it (neither program starts threads per scrape).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%d", s}'; }

NE_T0=$(ticks "$NE_PID"); AG_T0=$(ticks "$AGENT_PID")
NE_N0=$(cpu_ns "$NE_PID"); AG_N0=$(cpu_ns "$AGENT_PID")
START=$(date +%s.%N)
for _ in $(seq 1 "$SCRAPES"); do
    curl -sf -o "$WORK/ne.txt" "http://$NE_ADDR/metrics"
    curl -sf -o "$WORK/agent.txt" "http://$AGENT_ADDR/metrics"
    sleep 1
done
END=$(date +%s.%N)
NE_T1=$(ticks "$NE_PID"); AG_T1=$(ticks "$AGENT_PID")
NE_N1=$(cpu_ns "$NE_PID"); AG_N1=$(cpu_ns "$AGENT_PID")
HZ=$(getconf CLK_TCK)

NE_SERIES=$(grep -vc '^#' "$WORK/ne.txt" || true)
AG_SERIES=$(grep -vc '^#' "$WORK/agent.txt" || true)
awk -v s="$SCRAPES" -v hz="$HZ" -v t0="$START" -v t1="$END" \
    -v ne0="$NE_T0" -v ne1="$NE_T1" -v ag0="$AG_T0" -v ag1="$AG_T1" \
    -v nen0="$NE_N0" -v nen1="$NE_N1" -v agn0="$AG_N0" -v agn1="$AG_N1" \
    -v nehwm="$(hwm_kb "$NE_PID")" -v aghwm="$(hwm_kb "$AGENT_PID")" \
    -v neser="$NE_SERIES" -v agser="$AG_SERIES" 'BEGIN {
    ne = ne1 - ne0; ag = ag1 - ag0; wall = t1 - t0
    nen = (nen1 - nen0) / 1e6; agn = (agn1 - agn0) / 1e6
    printf "%d scrapes over %.1f s (CLK_TCK=%d)\n", s, wall, hz
    printf "%-26s %10s %14s %14s %12s %10s\n", "", "CPU ticks", "ticks/scrape", "CPU ms/scrape", "peak RSS", "series"
    printf "%-26s %10d %14.3f %14.3f %9.1f MB %10d\n", "prometheus-node-exporter", ne, ne / s, nen / s, nehwm / 1024, neser
    printf "%-26s %10d %14.3f %14.3f %9.1f MB %10d\n", "faultline-agent", ag, ag / s, agn / s, aghwm / 1024, agser
    if (ne > 0) printf "agent CPU per scrape / node_exporter (ticks): %.2f\n", ag / ne
    if (nen > 0) printf "agent CPU per scrape / node_exporter (schedstat ns): %.2f\n", agn / nen
}'
