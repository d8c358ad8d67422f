#!/usr/bin/env bash
# Load test (not a unit test): 2,000 simulated agents in wire mode, one report per node per second for
# 60 s, against one release-build faultline-analyzer on loopback. The simulator (`faultline sim run
# --analyzer URL --speed 1`) writes the reports a real agent would send (8 GPUs, 8 NICs, host, jobs
# and ranks per node) and posts them over HTTP with the bearer token.
#
# Prints: reports sent and refused (goal: none refused), the analyzer's own p50/p99 ingest handling
# time and p99 report age at arrival (both from its /metrics histograms, so bucket resolution), the
# analyzer's CPU (utime+stime from /proc/<pid>/stat over the run, in cores), its peak RSS, and the
# simulator's own CPU (it shares the machine).
#
# Then a second phase against a fresh analyzer with the lean generator (tests/tests/load_agents.rs):
# the same reports pre-serialized, sent by 32 threads on an open-loop schedule, so that the numbers
# are the analyzer's even where the simulator cannot keep up; it adds client-side p50/p99 latency.
# LEAN=0 skips it.
#
# Bounded: NODES × DURATION_S reports, DURATION_S seconds of sending (plus start-up and a drain of at
# most a few seconds). Loopback only. Needs curl.
#
# Compiling: without BIN_DIR the script uses target/release's binaries when they are there and only
# builds (release, minutes on a small machine) when they are not; the lean phase builds the load
# test in release too. For a quick look, skip both:
#
#   BIN_DIR=target/release LEAN=0 NODES=200 DURATION_S=10 bench/load-2000-agents.sh
#
# Usage: bench/load-2000-agents.sh                      (from anywhere in the repository)
#        NODES=200 DURATION_S=10 LEAN=0 bench/load-2000-agents.sh   (a quick smaller run, no lean phase)
#        BIN_DIR=target/release bench/load-2000-agents.sh    (never build; use these binaries)
#        REBUILD=1 bench/load-2000-agents.sh                 (build even when binaries exist)
set -euo pipefail

NODES="${NODES:-2000}"
DURATION_S="${DURATION_S:-60}"
# Report interval: 1 s stresses ingest; INTERVAL_S=10 NODES=12500 is the 100,000-GPU cluster at the
# default interval.
INTERVAL_S="${INTERVAL_S:-1}"
TOKEN="load-test-token-$$"
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { echo "curl is required" >&2; exit 2; }

if [[ -z "${BIN_DIR:-}" ]]; then
    BIN_DIR=target/release
    if [[ "${REBUILD:-0}" == "1" || ! -x "$BIN_DIR/faultline-analyzer" || ! -x "$BIN_DIR/faultline" ]]; then
        echo "building release binaries (minutes; BIN_DIR=DIR uses existing ones, LEAN=0 skips the lean phase)" >&2
        cargo build --release -p faultline-analyzer -p faultline >&2
    else
        echo "using existing $BIN_DIR binaries (REBUILD=1 to build them first)" >&2
    fi
fi
ANALYZER="$BIN_DIR/faultline-analyzer"
CLI="$BIN_DIR/faultline"

WORK="$(mktemp -d)"
APID=""
cleanup() {
    [[ -n "$APID" ]] && kill "$APID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# 2,000 H100 nodes behind 64-node leaves, 16 jobs of 125 nodes each, one GPU lost halfway.
cat >"$WORK/load.toml" <<EOF
name = "load-${NODES}-agents"
seed = 7
duration_s = ${DURATION_S}
interval_s = ${INTERVAL_S}
noise = 1.0

[cluster]
fabric = "tor"
nodes = ${NODES}
nodes_per_leaf = 64
spines = 8
gpus_per_node = 8
nics_per_node = 8
gpu_model = "H100"
EOF
JOBS=16
PER_JOB=$((NODES / JOBS))
if ((PER_JOB >= 1)); then
    for j in $(seq 0 $((JOBS - 1))); do
        printf '\n[[job]]\nid = "train-%02d"\nnodes = %d\nstep_time_s = 2.0\n' "$j" "$PER_JOB" >>"$WORK/load.toml"
    done
fi
# Node names are zero-padded to the width of the largest index, at least 4 digits.
LAST=$((NODES > 1 ? NODES - 1 : 1))
WIDTH=$((${#LAST} > 4 ? ${#LAST} : 4))
printf '\n[[fault]]\nkind = "gpu_lost"\ntarget = "node-%0*d/gpu3"\nat_s = %d\n' "$WIDTH" 1 "$((DURATION_S / 2))" >>"$WORK/load.toml"

"$CLI" sim topology "$WORK/load.toml" --out "$WORK/topology.toml"

"$ANALYZER" --listen 127.0.0.1:0 --db "$WORK/faultline.db" --token "$TOKEN" --topology "$WORK/topology.toml" \
    >"$WORK/analyzer.out" 2>"$WORK/analyzer.err" &
APID=$!
for _ in $(seq 1 600); do
    grep -q '^listening on ' "$WORK/analyzer.out" 2>/dev/null && break
    kill -0 "$APID" 2>/dev/null || { cat "$WORK/analyzer.err" >&2; exit 1; }
    sleep 0.1
done
URL="$(sed -n 's/^listening on //p' "$WORK/analyzer.out" | head -1)"
[[ -n "$URL" ]] || { echo "the analyzer did not start" >&2; cat "$WORK/analyzer.err" >&2; exit 1; }

CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$APID/stat"; }
T0_TICKS="$(cpu_ticks)"
T0="$(date +%s.%N)"

echo "load: ${NODES} agents × 1 report per ${INTERVAL_S} s × ${DURATION_S} s → ${URL} (load average before: $(cut -d' ' -f1-3 /proc/loadavg))" >&2
/usr/bin/time -f '%U %S %e' -o "$WORK/sim.time" \
    "$CLI" sim run "$WORK/load.toml" --analyzer "$URL" --token "$TOKEN" --speed 1 --json "$WORK/run.json" \
    >"$WORK/sim.out" 2>"$WORK/sim.err" || { echo "sim run failed:" >&2; cat "$WORK/sim.err" >&2; exit 1; }

T1="$(date +%s.%N)"
T1_TICKS="$(cpu_ticks)"
PEAK_KB="$(awk '/^VmHWM:/ {print $2}' "/proc/$APID/status")"
curl -sf "$URL/metrics" >"$WORK/metrics.txt"

# q-quantile of a Prometheus histogram (cumulative buckets), linear inside the bucket.
quantile() { # name q
    awk -v name="$1" -v q="$2" '
        index($0, name "_bucket{le=\"") == 1 {
            le = $0; sub(/^[^"]*"/, "", le); sub(/".*/, "", le)
            n++; bound[n] = (le == "+Inf") ? 1e300 : le + 0; cum[n] = $NF + 0
        }
        END {
            if (n == 0 || cum[n] == 0) { print "n/a"; exit }
            target = q * cum[n]; prev_b = 0; prev_c = 0
            for (i = 1; i <= n; i++) {
                if (cum[i] >= target) {
                    if (bound[i] >= 1e300) { printf "> %g s (above the last bucket)\n", prev_b; exit }
                    frac = (cum[i] == prev_c) ? 1 : (target - prev_c) / (cum[i] - prev_c)
                    printf "%.2f ms\n", 1000 * (prev_b + frac * (bound[i] - prev_b)); exit
                }
                prev_b = bound[i]; prev_c = cum[i]
            }
        }' "$WORK/metrics.txt"
}
# Share of a histogram's observations at or under the bucket bound `le` (one of its bounds).
share() { # name le
    awk -v name="$1" -v le="$2" '
        index($0, name "_bucket{le=\"") == 1 {
            b = $0; sub(/^[^"]*"/, "", b); sub(/".*/, "", b)
            if (b == "+Inf") total = $NF + 0; else if (b + 0 == le + 0) at = $NF + 0
        }
        END { if (total > 0) printf "%.2f%%\n", 100 * at / total; else print "n/a" }' "$WORK/metrics.txt"
}
result() { awk -v r="$1" 'index($0, "faultline_ingest_reports_total{result=\"" r "\"}") == 1 {v = $NF} END {print v + 0}' "$WORK/metrics.txt"; }

SENT="$(sed -n 's/.*"reports": *\([0-9]*\).*/\1/p' "$WORK/run.json" | head -1)"
REJECTED="$(sed -n 's/.*"rejected": *\([0-9]*\).*/\1/p' "$WORK/run.json" | head -1)"
WALL="$(awk -v a="$T1" -v b="$T0" 'BEGIN { print a - b }')"
CPU_S="$(awk -v a="$T1_TICKS" -v b="$T0_TICKS" -v hz="$CLK_TCK" 'BEGIN { print (a - b) / hz }')"
CORES="$(awk -v c="$CPU_S" -v w="$WALL" 'BEGIN { print c / w }')"

echo
echo "== faultline load test: ${NODES} agents, ${INTERVAL_S} s interval, ${DURATION_S} s, wire mode over loopback =="
printf 'host                 %s CPUs, %s\n' "$(nproc)" "$(uname -r)"
printf 'reports sent         %s (about %s expected)\n' "${SENT:-?}" "$((NODES * DURATION_S / INTERVAL_S))"
printf 'encodings            %s; %s bytes of bodies\n' \
    "$(awk 'index($0, "faultline_ingest_encoding_reports_total{") == 1 {printf "%s ", $0}' "$WORK/metrics.txt" | sed 's/faultline_ingest_encoding_reports_total//g')" \
    "$(awk 'index($0, "faultline_ingest_bytes_total ") == 1 {print $NF}' "$WORK/metrics.txt")"
printf 'refused by analyzer  %s (sim count)\n' "${REJECTED:-?}"
printf 'analyzer results     accepted=%s duplicate=%s invalid=%s malformed=%s rate_limited=%s unauthorized=%s delta_base_mismatch=%s\n' \
    "$(result accepted)" "$(result duplicate)" "$(result invalid)" "$(result malformed)" "$(result rate_limited)" "$(result unauthorized)" "$(result delta_base_mismatch)"
printf 'ingest handling      p50 %s, p99 %s (analyzer histogram)\n' \
    "$(quantile faultline_ingest_duration_seconds 0.5)" "$(quantile faultline_ingest_duration_seconds 0.99)"
printf 'report age at ingest p50 %s, p99 %s (report timestamp to arrival)\n' \
    "$(quantile faultline_report_age_seconds 0.5)" "$(quantile faultline_report_age_seconds 0.99)"
printf 'report age <= 2 s    %s of reports (<= 1 s: %s)\n' \
    "$(share faultline_report_age_seconds 2)" "$(share faultline_report_age_seconds 1)"
printf 'engine tick          p50 %s, p99 %s\n' \
    "$(quantile faultline_engine_tick_duration_seconds 0.5)" "$(quantile faultline_engine_tick_duration_seconds 0.99)"
printf 'analyzer CPU         %.1f s over %.1f s wall = %.2f cores\n' "$CPU_S" "$WALL" "$CORES"
printf 'analyzer peak RSS    %s MiB\n' "$((PEAK_KB / 1024))"
printf 'slow ticks (> 0.5 s) %s\n' "$(grep -c 'slow tick' "$WORK/analyzer.err" || true)"
grep 'slow tick' "$WORK/analyzer.err" | head -5 | sed 's/^/                     /' || true
printf 'simulator CPU        %s\n' "$(awk '{printf "%.1f s user + %.1f s sys over %.1f s wall", $1, $2, $3}' "$WORK/sim.time")"
# The sender's own view: due time to the analyzer's answer (at 1x, virtual seconds are real ones),
# which tells a late sender from a slow analyzer.
lag() { sed -n "s/.*\"lag_virtual_s_$1\": *\([0-9.]*\).*/\1/p" "$WORK/run.json" | head -1; }
printf 'sender lag           p50 %s s, p99 %s s, max %s s (due to answered, the load generator'"'"'s view)\n' "$(lag p50)" "$(lag p99)" "$(lag max)"
printf 'incidents by class   %s (the scenario injects one gpu_lost)\n' \
    "$(curl -sf -H "Authorization: Bearer $TOKEN" "$URL/api/v1/incidents?status=all" | grep -o '"class":"[a-z_]*"' | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}' | tr -d '"' | sed 's/class://g')"

[[ "${LEAN:-1}" == "0" ]] && exit 0

# Phase 2: the lean generator against a fresh analyzer.
kill "$APID" 2>/dev/null || true
wait "$APID" 2>/dev/null || true
cargo test --release -p faultline-tests --test load_agents --no-run >&2
rm -f "$WORK/faultline.db"*
"$ANALYZER" --listen 127.0.0.1:0 --db "$WORK/faultline.db" --token "$TOKEN" --topology "$WORK/topology.toml" \
    >"$WORK/analyzer2.out" 2>"$WORK/analyzer2.err" &
APID=$!
for _ in $(seq 1 600); do
    grep -q '^listening on ' "$WORK/analyzer2.out" 2>/dev/null && break
    sleep 0.1
done
URL="$(sed -n 's/^listening on //p' "$WORK/analyzer2.out" | head -1)"
T0_TICKS="$(cpu_ticks)"
T0="$(date +%s.%N)"
FAULTLINE_LOAD_URL="$URL" FAULTLINE_LOAD_TOKEN="$TOKEN" NODES="$NODES" DURATION_S="$DURATION_S" \
    cargo test --release -p faultline-tests --test load_agents -- --ignored --nocapture >"$WORK/lean.out" 2>&1 \
    || { cat "$WORK/lean.out" >&2; exit 1; }
T1="$(date +%s.%N)"
T1_TICKS="$(cpu_ticks)"
PEAK_KB="$(awk '/^VmHWM:/ {print $2}' "/proc/$APID/status")"
curl -sf "$URL/metrics" >"$WORK/metrics.txt"
# The sending window (the generator first builds its templates while the analyzer idles).
WALL="$(sed -n 's/^LEAN wall_s \([0-9.]*\).*/\1/p' "$WORK/lean.out")"
CPU_S="$(awk -v a="$T1_TICKS" -v b="$T0_TICKS" -v hz="$CLK_TCK" 'BEGIN { print (a - b) / hz }')"
CORES="$(awk -v c="$CPU_S" -v w="$WALL" 'BEGIN { print c / w }')"
echo
echo "== lean generator: ${NODES} agents, 1 s interval, ${DURATION_S} s, 32 sender threads =="
sed -n 's/^LEAN //p' "$WORK/lean.out"
printf 'analyzer results     accepted=%s rate_limited=%s invalid=%s malformed=%s\n' \
    "$(result accepted)" "$(result rate_limited)" "$(result invalid)" "$(result malformed)"
printf 'ingest handling      p50 %s, p99 %s (analyzer histogram)\n' \
    "$(quantile faultline_ingest_duration_seconds 0.5)" "$(quantile faultline_ingest_duration_seconds 0.99)"
printf 'report age at ingest p99 %s\n' "$(quantile faultline_report_age_seconds 0.99)"
printf 'engine tick          p50 %s, p99 %s\n' \
    "$(quantile faultline_engine_tick_duration_seconds 0.5)" "$(quantile faultline_engine_tick_duration_seconds 0.99)"
printf 'analyzer CPU         %.1f s over the %.1f s of sending = %.2f cores\n' "$CPU_S" "$WALL" "$CORES"
printf 'analyzer peak RSS    %s MiB\n' "$((PEAK_KB / 1024))"
printf 'incidents by class   %s (frozen templates: job steps never advance, so a job_hang is expected)\n' \
    "$(curl -sf -H "Authorization: Bearer $TOKEN" "$URL/api/v1/incidents?status=all" | grep -o '"class":"[a-z_]*"' | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}' | tr -d '"' | sed 's/class://g')"
