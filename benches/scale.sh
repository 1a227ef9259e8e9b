#!/usr/bin/env bash
# Scale benchmark (issue 11, item 5): the cost of a whole-host scan and of an
# agent tick at 100, 1,000 and 10,000 processes and at one process with
# THREADS threads (20,000 by default: 100,000 needs kernel.pid_max above
# 100,000, and this script does not change the host's sysctls). Run as root
# from the repository after `cargo build --release`; everything runs in a
# fresh PID namespace, so minerwatch sees, reads and ptraces only what this
# script starts. Prints markdown for benches/RESULTS.md.
#   benches/scale.sh [THREADS]
set -euo pipefail
if [ -z "${MW_SCALE_BENCH_NS:-}" ]; then
    exec env MW_SCALE_BENCH_NS=1 unshare --pid --fork --mount-proc bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
THREADS=${1:-20000}
BIN=$PWD/target/release/minerwatch
T=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
cc -O2 -Wall -o "$T/hostile" tests/support/hostile.c -lpthread
cat > "$T/mw.toml" <<C
[agent]
tick_secs = 1.0
heartbeat_secs = 1
cpu_budget_percent = 100
[[output]]
kind = "file"
path = "$T/events.ndjson"
C

start() { # mode N: start the hostile helper and wait until it is ready
    "$T/hostile" "$1" "$2" > "$T/ready" & H=$!
    until grep -q ready "$T/ready" 2>/dev/null; do sleep 0.05; done
}
stop() { # the helper and every child it forked, by pid
    kill $(cat "/proc/$H/task/$H/children") "$H" 2>/dev/null || true
    wait "$H" 2>/dev/null || true
    while [ "$(ls /proc | grep -c '^[0-9]')" -gt 10 ]; do sleep 0.1; done
}
measure() { # label
    local n; n=$(ls /proc | grep -c '^[0-9]')
    # A whole-host scan, 1 s window: wall, CPU, peak RSS.
    /usr/bin/time -f "%e %U %S %M" -o "$T/time" "$BIN" scan --window 1 --format json > "$T/scan.json" || true
    read -r wall user sys rss < "$T/time"
    # The agent: 8 ticks of 1 s (the first with the host checks); the
    # median work per tick of ticks 3-8, from its heartbeats.
    rm -f "$T/events.ndjson"
    /usr/bin/time -f "%U %S %M" -o "$T/atime" "$BIN" agent --config "$T/mw.toml" --ticks 8 2>/dev/null
    read -r auser asys arss < "$T/atime"
    local med
    med=$(grep -o '"tick_ms":[0-9]*' "$T/events.ndjson" | cut -d: -f2 | tail -n +3 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    awk -v l="$1" -v n="$n" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" \
        -v au="$auser" -v as="$asys" -v ar="$arss" -v m="$med" 'BEGIN {
        printf "| %s | %d | %.2f s | %.2f s | %.0f MiB | %s ms | %.2f s | %.0f MiB |\n",
            l, n, w - 1, u + s, r / 1024, m, (au + as) / 8, ar / 1024 }'
}

echo "## scale: whole-host scan and agent tick (release build, $(nproc) CPUs, $(uname -r), PID namespace)"
echo
echo "| load | processes | scan beyond its 1 s window | scan CPU | scan peak RSS | agent tick (window 1 s, median) | agent CPU per tick | agent peak RSS |"
echo "|---|---|---|---|---|---|---|---|"
for n in 100 1000 10000; do
    start procs "$n"; measure "$n idle processes"; stop
done
start threads "$THREADS"; measure "one process, $THREADS threads"; stop
