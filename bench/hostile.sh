#!/usr/bin/env bash
# The red-team battery of issue 17: every hostile or careless input the issue names, against a
# release analyzer and agent on loopback. Prints one row per case: case, expected, got, PASS/FAIL.
#
#   cargo build --release -p faultline-analyzer -p faultline-agent -p faultline
#   bench/hostile.sh            # exit 0 when every case passes
#
# Cases that need root (a tmpfs to fill) are reported as SKIP without it. Needs curl and python3.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
AN=$BIN/faultline-analyzer
AG=$BIN/faultline-agent
CLI=$BIN/faultline
for b in "$AN" "$AG" "$CLI"; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release -p faultline-analyzer -p faultline-agent -p faultline" >&2; exit 2; }
done
W=$(mktemp -d /tmp/faultline-hostile.XXXXXX)
TOKEN=hostile-bench-token-0123456789
PIDS=()
MOUNTS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for m in "${MOUNTS[@]}"; do umount -l "$m" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT
FAILS=0
ROWS=()
row() { # case expected got verdict
  ROWS+=("$(printf '| %-44s | %-40s | %-48s | %-4s |' "$1" "$2" "$3" "$4")")
  [ "$4" = FAIL ] && FAILS=$((FAILS + 1))
  printf '%-44s %-4s %s\n' "$1" "$4" "$3" >&2
}
check() { # case expected got [pattern]: PASS when got matches pattern (default: equals expected)
  local pat=${4:-$2}
  if [[ "$3" == $pat ]]; then row "$1" "$2" "$3" PASS; else row "$1" "$2" "$3" FAIL; fi
}
check_ge() { # case min got: PASS when got is a number >= min
  if [[ "$3" =~ ^[0-9]+$ ]] && [ "$3" -ge "$2" ]; then row "$1" ">= $2" "$3" PASS; else row "$1" ">= $2" "$3" FAIL; fi
}
check_lt() { # case max got: PASS when got is a number < max
  if [[ "$3" =~ ^-?[0-9]+$ ]] && [ "$3" -lt "$2" ]; then row "$1" "< $2" "$3" PASS; else row "$1" "< $2" "$3" FAIL; fi
}
# Cases that read without bound before issue 17 run under `ulimit -v 4000000` (4 GB of address
# space): the old binaries then fail instead of taking the machine's memory.
now_ms() { python3 -c 'import time; print(int(time.time()*1000))'; }

# Starts an analyzer in directory $1 with extra args; sets URL and APID.
start_analyzer() {
  local dir=$1; shift
  mkdir -p "$dir"
  if [ -n "${NOFILE:-}" ]; then
    (ulimit -n "$NOFILE"; exec "$AN" --listen 127.0.0.1:0 --db "$dir/faultline.db" "$@") >"$dir/out" 2>"$dir/err" &
  else
    "$AN" --listen 127.0.0.1:0 --db "$dir/faultline.db" "$@" >"$dir/out" 2>"$dir/err" &
  fi
  APID=$!; PIDS+=("$APID")
  for _ in $(seq 1 100); do
    URL=$(sed -n 's/^listening on //p' "$dir/out" | head -1)
    [ -n "$URL" ] && return 0
    sleep 0.1
  done
  echo "analyzer in $dir did not start: $(cat "$dir/err")" >&2; return 1
}
# Starts an agent: node spool analyzer-url token [extra...]; sets AGPID, AGURL.
start_agent() {
  local node=$1 spool=$2 url=$3 token=$4; shift 4
  mkdir -p "$spool"
  "$AG" --node-name "$node" --interval 200ms --no-gpu --kmsg "${KMSG:-/nonexistent/kmsg}" --listen 127.0.0.1:0 \
    --progress-listen 127.0.0.1:0 --analyzer "$url" --token "$token" --spool-dir "$spool" "$@" \
    >"$spool.out" 2>"$spool.err" &
  AGPID=$!; PIDS+=("$AGPID")
  for _ in $(seq 1 100); do
    AGURL=$(sed -n 's/^listening on //p' "$spool.out" | head -1)
    [ -n "$AGURL" ] && return 0
    sleep 0.1
  done
}
# A report of node $1, seq $2, GPU $3 lost (or none), timestamp $4 (default now), events JSON $5.
report() {
  python3 - "$@" <<'EOF'
import json, sys, time
node, seq = sys.argv[1], int(sys.argv[2])
lost = sys.argv[3] if len(sys.argv) > 3 else ""
ts = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[4] else int(time.time() * 1000)
events = json.loads(sys.argv[5]) if len(sys.argv) > 5 else []
gpus = []
for i in range(2):
    l = str(i) == lost
    gpus.append({"index": i, "uuid": f"GPU-{i}", "name": "H100", "state": "lost" if l else "ok",
                 "temp_c": None if l else 60.0, "power_w": None if l else 600.0, "util_gpu_pct": None if l else 97.0})
print(json.dumps({"schema_version": 1, "node": node, "agent_version": "bench", "seq": seq, "timestamp_ms": ts,
                  "interval_ms": 1000, "gpus": gpus, "events": events}))
EOF
}
post() { # url body-file -> http status
  curl -s -o "$W/last" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    --data-binary @"$2" "$1/api/v1/reports"
}
wait_until() { # seconds command...
  local n=$(( $1 * 10 )); shift
  for _ in $(seq 1 "$n"); do "$@" && return 0; sleep 0.1; done
  return 1
}
open_root() { curl -s -H "Authorization: Bearer $TOKEN" "$1/api/v1/incidents?status=open" | grep -q "\"root\":\"$2\""; }
spooled() { ls "$1/reports" 2>/dev/null | grep -c '\.json$'; }
can_mount() { mkdir -p "$W/mnt-probe" && mount -t tmpfs -o size=1m tmpfs "$W/mnt-probe" 2>/dev/null && umount "$W/mnt-probe"; }

echo "analyzer: $($AN --version)  agent: $($AG --version)" >&2

# ---------------------------------------------------------------- analyzer
start_analyzer "$W/a1" --token "$TOKEN" || exit 2
A1=$URL
ev() { echo "[{\"ts_ms\": $(now_ms), \"class\": \"xid\", \"xid\": 79, \"component\": \"$1\", \"message\": \"m\"}]"; }
report n-1 1 0 "" "$(ev 'gpu0/../../x')" >"$W/r"; check "1 event component gpu0/../../x" 422 "$(post "$A1" "$W/r")"
report 'job:evil' 1 >"$W/r"; check "1 node named job:evil" 422 "$(post "$A1" "$W/r")"
report 'switch:leaf' 1 >"$W/r"; check "1 node named switch:leaf" 422 "$(post "$A1" "$W/r")"
report $'node\u202e1' 1 >"$W/r"; check "smaller: bidi override in a node name" 422 "$(post "$A1" "$W/r")"
check "1 incident list after those" 200 "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$A1/api/v1/incidents?status=all")"

report n-fut 1 "" $(( $(now_ms) + 3600000 )) >"$W/r"; post "$A1" "$W/r" >/dev/null
for s in 2 3 4 5; do sleep 0.6; report n-fut $s 1 >"$W/r"; post "$A1" "$W/r" >/dev/null; done
if wait_until 30 open_root "$A1" n-fut/gpu1; then got="incident opened"; else got="no incident"; fi
check "2 report 1 h ahead, then GPU lost" "incident opened" "$got"
sk=$(curl -s -H "Authorization: Bearer $TOKEN" "$A1/api/v1/nodes" | python3 -c 'import json,sys; print([n for n in json.load(sys.stdin) if n["node"]=="n-fut"][0]["clock_skewed"])')
check "2 clock_skewed after that report" True "$sk"
report n-onset 1 0 "" '[{"ts_ms": 9223372036854775807, "class": "xid", "xid": 79, "component": "gpu0", "message": "m"}]' >"$W/r"
post "$A1" "$W/r" >/dev/null
wait_until 30 open_root "$A1" n-onset/gpu0
onset=$(curl -s -H "Authorization: Bearer $TOKEN" "$A1/api/v1/incidents?status=open" | python3 -c 'import json,sys,time; i=[i for i in json.load(sys.stdin) if i["root"]=="n-onset/gpu0"]; print("sane" if i and i[0]["onset_s"] < time.time()+3600 else "far future")')
check "smaller: event at year 292278994" "sane onset" "$onset onset"

report n-2 1 0 "" "$(ev gpu9999)" >"$W/r"; check "3 event naming gpu9999" 422 "$(post "$A1" "$W/r")"
report n-2 1 0 "" '[]' | python3 -c 'import json,sys,time; r=json.load(sys.stdin); r["events"]=[{"ts_ms": int(time.time()*1000), "class": "nic_link_down", "component": "nic:" + "x" * (1 << 20), "message": "m"}]; print(json.dumps(r))' >"$W/r"
check "3 1 MB NIC name in an event" 422 "$(post "$A1" "$W/r")"

printf '[limits]\nmax_nodes = 100\nheader_timeout = "2s"\n' >"$W/limits.toml"
# An analyzer without [limits] (before issue 17) refuses the config: run it without, to show how it fares.
# 256 open files, as a small default limit would give: 300 slow sockets are more than that.
NOFILE=256 start_analyzer "$W/a2" --token "$TOKEN" --config "$W/limits.toml" || NOFILE=256 start_analyzer "$W/a2b" --token "$TOKEN" || exit 2
A2=$URL
rss0=$(awk '/VmRSS/{print $2}' /proc/$APID/status)
codes=$(python3 - "$A2" "$TOKEN" <<'EOF2'
import http.client, json, sys, time, collections
host = sys.argv[1].split("//")[1]; token = sys.argv[2]
c = http.client.HTTPConnection(host, timeout=30); seen = collections.Counter()
for i in range(3000):
    body = json.dumps({"schema_version": 1, "node": f"inv-{i}", "agent_version": "x", "seq": 1,
                       "timestamp_ms": int(time.time() * 1000), "interval_ms": 1000,
                       "gpus": [{"index": g, "uuid": f"G{g}", "name": "H100", "state": "ok"} for g in range(8)]})
    c.request("POST", "/api/v1/reports", body, {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    r = c.getresponse(); r.read(); seen[r.status] += 1
print(" ".join(f"{n}×{s}" for s, n in sorted(seen.items())))
EOF2
)
rss1=$(awk '/VmRSS/{print $2}' /proc/$APID/status)
check "3 3000 invented nodes, max_nodes=100" "100×200 2900×403" "$codes"
check_lt "3 RSS growth for those 3000 posts (KB)" 100000 "$((rss1 - rss0))"

python3 - "$A2" >"$W/slow" <<'EOF' &
import socket, sys, time
host, port = sys.argv[1].split("//")[1].split(":")
socks = []
for _ in range(300):
    s = socket.create_connection((host, int(port)))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    socks.append(s)
open_ = set(socks)
closed = 0
deadline = time.time() + 30
import select
while open_ and time.time() < deadline:
    r, _, _ = select.select(list(open_), [], [], 1)
    for s in r:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            open_.discard(s); closed += 1
print(f"{closed}/300 closed")
EOF
SLOW=$!
sleep 1
hz=$(curl -s -m 10 "$A2/healthz"); check "4 /healthz, 300 half-sent headers, 256 fds" ok "${hz:-timeout}"
wait $SLOW; check "4 half-sent header sockets cut by the server" "300/300 closed" "$(cat "$W/slow")"

if can_mount; then
  mkdir -p "$W/a3"; mount -t tmpfs -o size=8m tmpfs "$W/a3" && MOUNTS+=("$W/a3")
  start_analyzer "$W/a3" --token "$TOKEN" || exit 2
  A3=$URL
  report n-d 1 >"$W/r"; post "$A3" "$W/r" >/dev/null; sleep 2
  head -c 100000000 /dev/zero >"$W/a3/filler" 2>/dev/null
  report n-d 2 1 "" "$(ev gpu1)" >"$W/r"; post "$A3" "$W/r" >/dev/null
  wait_until 30 sh -c "curl -s '$A3/metrics' | grep -q '^faultline_store_write_errors_total [1-9]'"
  if open_root "$A3" n-d/gpu1; then got="incident listed"; else got="[]"; fi
  check "5 store disk full: GET /incidents" "incident listed" "$got"
  check "5 store disk full: /healthz status" 503 "$(curl -s -o /dev/null -w '%{http_code}' "$A3/healthz")"
  "$CLI" --analyzer "$A3" --token "$TOKEN" incidents >/dev/null 2>&1; check "5 store disk full: faultline incidents exit" 3 "$?"
  rm -f "$W/a3/filler"
else
  row "5 store disk full" "incident listed, 503, exit 3" "needs root (tmpfs)" SKIP
fi

start_analyzer "$W/a4" --token "$TOKEN" || exit 2
A4=$URL
report n-w 1 >"$W/r"; post "$A4" "$W/r" >/dev/null
report n-w 2 1 "" "$(ev gpu1)" >"$W/r"; post "$A4" "$W/r" >/dev/null
wait_until 30 open_root "$A4" n-w/gpu1
"$AN" --db "$W/a4/faultline.db" backup "$W/backup.db" >/dev/null 2>&1; check "6 faultline-analyzer backup" 0 "$?"
kill -9 "$APID"; sleep 0.2
rm -f "$W/a4/faultline.db-wal" "$W/a4/faultline.db-shm"
timeout 20 "$AN" --listen 127.0.0.1:0 --db "$W/a4/faultline.db" >/dev/null 2>&1; check "6 start with the WAL deleted: exit" 2 "$?"
: >"$W/a4/faultline.db"
timeout 20 "$AN" --listen 127.0.0.1:0 --db "$W/a4/faultline.db" >/dev/null 2>&1; check "6 start with the db truncated: exit" 2 "$?"
"$AN" --listen 127.0.0.1:0 --db "$W/backup.db" --token "$TOKEN" >"$W/b.out" 2>/dev/null & PIDS+=("$!")
wait_until 20 grep -q listening "$W/b.out"; BU=$(sed -n 's/^listening on //p' "$W/b.out")
if open_root "$BU" n-w/gpu1; then got="incident restored"; else got="missing"; fi
check "6 analyzer started on the backup" "incident restored" "$got"

s=$(curl -s -o "$W/ff" -w '%{http_code} %{content_type}' -H "Authorization: Bearer $TOKEN" "$A1/api/v1/incidents/%FF")
check "smaller: %FF in an id" "400 application/json" "$s"
report n-u 1 >"$W/r"; python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["from_the_future"]=1; json.dump(r, open(sys.argv[1],"w"))' "$W/r"
check "smaller: unknown JSON field (accepted, documented)" 200 "$(post "$A1" "$W/r")"
if grep -q $'\x1b\[' "$W/a1/err"; then got="colours"; else got="plain"; fi
check "smaller: ANSI colours in redirected analyzer log" plain "$got"
timeout 10 "$AN" --listen 127.0.0.1:0 --db "$W/weak.db" --token x >/dev/null 2>"$W/weak.err" & PIDS+=("$!")
wait_until 5 grep -q "WEAK TOKEN" "$W/weak.err"; if grep -q "WEAK TOKEN" "$W/weak.err"; then got=warned; else got=silent; fi
check "smaller: 1-character token" warned "$got"

/usr/bin/time -f '%M' -o "$W/zero.rss" timeout 20 bash -c 'ulimit -v 4000000; exec "$0" "$@"' "$AN" --listen 127.0.0.1:0 --db "$W/z.db" --token-file /dev/zero >/dev/null 2>"$W/zero.err"
code=$?; check "12 --token-file /dev/zero: exit" 2 "$code"
check_lt "12 --token-file /dev/zero: peak RSS (KB)" 100000 "$(tail -1 "$W/zero.rss" 2>/dev/null)"

python3 - >"$W/fake.port" <<'EOF' &
import socket, threading
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(16)
print(l.getsockname()[1], flush=True)
def serve(c):
    c.recv(4096)
    try:
        c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n[")
        chunk = b"1," * 65536
        while True: c.sendall(chunk)
    except OSError: pass
while True:
    c, _ = l.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
PIDS+=("$!"); wait_until 5 test -s "$W/fake.port"; FP=$(head -1 "$W/fake.port")
timeout 60 bash -c 'ulimit -v 4000000; exec "$0" "$@"' "$CLI" --analyzer "http://127.0.0.1:$FP" incidents >/dev/null 2>"$W/cli.err"; code=$?
if grep -q "larger than" "$W/cli.err"; then got="exit $code, refused"; else got="exit $code: $(head -c 60 "$W/cli.err")"; fi
check "12 CLI against an endless answer" "exit 2, refused" "$got"
python3 - >"$W/ssh.port" <<'EOF' &
import socket
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(16)
print(l.getsockname()[1], flush=True)
while True:
    c, _ = l.accept(); c.recv(4096); c.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"); c.close()
EOF
PIDS+=("$!"); wait_until 5 test -s "$W/ssh.port"; SP=$(head -1 "$W/ssh.port")
"$CLI" --analyzer "http://127.0.0.1:$SP" status >/dev/null 2>"$W/cli2.err"
if grep -q "Is faultline-analyzer running" "$W/cli2.err"; then got="is it running?"; else got="names the protocol"; fi
check "smaller: CLI header parse error message" "names the protocol" "$got"

# ---------------------------------------------------------------- agent
start_analyzer "$W/b1" --token "$TOKEN" || exit 2
B1=$URL
start_agent held "$W/s7" "$B1" wrong-token-0123456789abcdef
wait_until 20 sh -c "[ \$(ls '$W/s7/reports' 2>/dev/null | grep -c json) -ge 5 ]"
check_ge "7 agent on 401: reports kept in spool" 5 "$(spooled "$W/s7")"
kill -9 "$AGPID"
start_agent held "$W/s7" "$B1/api/v1/reports" "$TOKEN"; n0=$(spooled "$W/s7"); sleep 2
check "7 agent on 404 (URL with path): spool grows" "grows" "$( [ "$(spooled "$W/s7")" -gt "$n0" ] && echo grows || echo dropped)"
kill -9 "$AGPID"
start_agent held "$W/s7" "$B1" "$TOKEN"
wait_until 60 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' '$B1/api/v1/nodes' | python3 -c 'import json,sys; n=[n for n in json.load(sys.stdin) if n[\"node\"]==\"held\"]; sys.exit(0 if n and n[0][\"reports\"]>=n[0][\"last_seq\"]>=10 and n[0][\"seqs_missing\"]==0 else 1)'"
m=$(curl -s -H "Authorization: Bearer $TOKEN" "$B1/api/v1/nodes" | python3 -c 'import json,sys; n=[n for n in json.load(sys.stdin) if n["node"]=="held"][0]; print(n["seqs_missing"], "missing of", n["last_seq"])')
check "7 token fixed: held reports delivered" "0 missing" "$m" "0 missing*"
kill -9 "$AGPID"

python3 - >"$W/hang.port" <<'EOF' &
import socket, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(16)
print(l.getsockname()[1], flush=True)
held = []
while True:
    c, _ = l.accept(); c.recv(1 << 20); held.append(c)
EOF
PIDS+=("$!"); wait_until 5 test -s "$W/hang.port"; HP=$(head -1 "$W/hang.port")
start_agent slow "$W/s8" "http://127.0.0.1:$HP" "$TOKEN"; sleep 2
kill -9 "$AGPID"
check_ge "8 kill -9 during a slow push: reports on disk" 5 "$(spooled "$W/s8")"
start_agent slow "$W/s8" "$B1" "$TOKEN"
wait_until 60 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' '$B1/api/v1/nodes' | grep -q '\"node\":\"slow\"'"
m=$(curl -s -H "Authorization: Bearer $TOKEN" "$B1/api/v1/nodes" | python3 -c 'import json,sys; n=[n for n in json.load(sys.stdin) if n["node"]=="slow"][0]; print(n["last_seq"] - n["reports"] if n["reports"] < n["last_seq"] else 0, "seqs_missing")')
check "8 after restart" "0 seqs_missing" "$m"
kill -9 "$AGPID"

mkdir -p "$W/sys/class/hwmon/hwmon0"; echo nct6775 >"$W/sys/class/hwmon/hwmon0/name"
echo 2000000 >"$W/sys/class/hwmon/hwmon0/fan1_input"; echo 1200 >"$W/sys/class/hwmon/hwmon0/fan2_input"
head -c 268435456 /dev/zero | tr '\0' x >"$W/sys/class/hwmon/hwmon0/fan2_label"
start_agent sensor "$W/s9" "$B1" "$TOKEN" --sysfs-root "$W/sys"
if wait_until 30 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' '$B1/api/v1/nodes' | grep -q '\"node\":\"sensor\"'"; then got=accepted; else got=refused; fi
check "9 fan at 2,000,000 rpm: report" accepted "$got"
check_lt "12 256 MB sysfs label: agent peak RSS (KB)" 100000 "$(awk '/VmHWM/{print $2}' /proc/$AGPID/status)"
kill -9 "$AGPID"; rm -f "$W/sys/class/hwmon/hwmon0/fan2_label"

if can_mount; then
  mkdir -p "$W/s10"; mount -t tmpfs -o size=1m tmpfs "$W/s10" && MOUNTS+=("$W/s10")
  head -c 10000000 /dev/zero >"$W/s10/filler" 2>/dev/null
  start_agent fulldisk "$W/s10" "$B1" "$TOKEN"
  if wait_until 30 sh -c "curl -s -H 'Authorization: Bearer $TOKEN' '$B1/api/v1/nodes' | grep -q '\"node\":\"fulldisk\"'"; then got="running, reports arrive"; else got="did not start: $(tail -c 80 "$W/s10.err")"; fi
  check "10 agent start on a full disk" "running, reports arrive" "$got"
  kill -9 "$AGPID"
else
  row "10 agent start on a full disk" "running, reports arrive" "needs root (tmpfs)" SKIP
fi

mkdir -p "$W/proc"; for f in stat meminfo loadavg; do cp /proc/$f "$W/proc/$f"; done; mkfifo "$W/proc/uptime"
start_agent fifo "$W/s11" "$B1" "$TOKEN" --procfs-root "$W/proc"
# The first cycle waits out the deadline of each collector that reads the FIFO (host and jobs,
# 3 s each); later cycles skip them at once.
sleep 10
n=$(curl -s -H "Authorization: Bearer $TOKEN" "$B1/api/v1/nodes" | python3 -c 'import json,sys; n=[n for n in json.load(sys.stdin) if n["node"]=="fifo"]; print(n[0]["reports"] if n else 0)')
check_ge "11 FIFO at proc/uptime: reports in 10 s" 15 "$n"
hz=$(curl -s "$AGURL/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
check "11 agent /healthz meanwhile" ok "$hz"
kill -9 "$AGPID"

# A character device that reads as end of file at once (what a kernel log source gone away gives).
KMSG=/dev/null start_agent kmsg "$W/s12" "$B1" "$TOKEN"; sleep 1
if grep -q "error=Success" "$W/s12.err"; then got="error=Success"; else got="$(grep -o 'end of file' "$W/s12.err" | head -1)"; fi
check "smaller: kmsg at end of file" "end of file" "$got"
kill -9 "$AGPID"

echo
echo "| case | expected | got | verdict |"
echo "|---|---|---|---|"
for r in "${ROWS[@]}"; do echo "$r"; done
echo
echo "$FAILS failing case(s)"
[ "$FAILS" -eq 0 ]
