#!/usr/bin/env bash
# Scale benchmark (issue 11, item 5): the cost of a whole-host scan and of an
# agent tick at 100, 1,000 and 10,000 processes and at one process with
# THREADS threads (20,000 by default: 100,000 needs kernel.pid_max above
# 100,000, and this script does not change the host's sysctls;
# benches/scale-vm.sh runs it in a VM of its own where they are raised).
# With MAPS or FDS set, also one process with that many mappings or open
# fds. Run as root from the repository after `cargo build --release`;
# everything runs in a fresh PID namespace, so minerwatch sees, reads and
# ptraces only what this script starts. Prints markdown for
# benches/RESULTS.md.
#   benches/scale.sh [THREADS...]
#   MAPS=100000 FDS=60000 benches/scale.sh 20000 100000
# PROCS lists the process counts (default "100 1000 10000").
# BIN and HOSTILE name a built minerwatch and hostile helper (the VM has no
# compiler).
set -euo pipefail
if [ -z "${MW_SCALE_BENCH_NS:-}" ]; then
    exec env MW_SCALE_BENCH_NS=1 unshare --pid --fork --mount-proc bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
THREADS=${*:-20000}
BIN=${BIN:-$PWD/target/release/minerwatch}
T=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T"' EXIT
if [ -n "${HOSTILE:-}" ]; then
    cp "$HOSTILE" "$T/hostile"
else
    cc -O2 -Wall -o "$T/hostile" tests/support/hostile.c -lpthread
fi
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
    local rc=0
    /usr/bin/time -f "%e %U %S %M" -o "$T/time" "$BIN" scan --window 1 --format json > "$T/scan.json" || rc=$?
    read -r wall user sys rss < <(tail -n 1 "$T/time")
    # The agent: 8 ticks of 1 s (the first with the host checks); the
    # median work per tick of ticks 3-8, from its heartbeats.
    rm -f "$T/events.ndjson"
    /usr/bin/time -f "%U %S %M" -o "$T/atime" "$BIN" agent --config "$T/mw.toml" --ticks 8 2>/dev/null
    read -r auser asys arss < <(tail -n 1 "$T/atime")
    local med
    med=$(grep -o '"tick_ms":[0-9]*' "$T/events.ndjson" | cut -d: -f2 | tail -n +3 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    awk -v l="$1" -v n="$n" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v rc="$rc" \
        -v au="$auser" -v as="$asys" -v ar="$arss" -v m="$med" 'BEGIN {
        printf "| %s | %d | %.2f s | %.2f s | %.0f MiB | %d | %s ms | %.2f s | %.0f MiB |\n",
            l, n, w - 1, u + s, r / 1024, rc, m, (au + as) / 8, ar / 1024 }'
}

echo "## scale: whole-host scan and agent tick (release build, $(nproc) CPUs, $(uname -r), PID namespace)"
echo
echo "| load | processes | scan beyond its 1 s window | scan CPU | scan peak RSS | scan exit | agent tick (window 1 s, median) | agent CPU per tick | agent peak RSS |"
echo "|---|---|---|---|---|---|---|---|---|"
for n in ${PROCS:-100 1000 10000}; do
    start procs "$n"; measure "$n idle processes"; stop
done
for n in $THREADS; do
    start threads "$n"; measure "one process, $n threads"; stop
done
if [ -n "${MAPS:-}" ]; then
    start maps "$MAPS"; measure "one process, $MAPS mappings"; stop
fi
if [ -n "${FDS:-}" ]; then
    start fds "$FDS"
    read -r _ _ opened < "$T/ready" || true
    measure "one process, ${opened:-?} open fds"; stop
fi
