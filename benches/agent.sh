#!/usr/bin/env bash
# Agent benchmark: run as root from the repository, after `cargo build --release`
# and with librandomx-dev and libssl-dev installed. Everything runs inside a
# fresh PID namespace (unshare), so the agent sees, ptraces and reads only the
# processes this script starts. Prints markdown for benches/RESULTS.md.
#   benches/agent.sh [MINUTES]   (default 10)
set -euo pipefail
if [ -z "${MW_AGENT_BENCH_NS:-}" ]; then
    exec env MW_AGENT_BENCH_NS=1 unshare --pid --fork --mount-proc bash "$0" "$@"
fi
cd "$(dirname "$0")/.."
MIN=${1:-10}
BIN=$PWD/target/release/minerwatch
T=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$T" /dev/shm/.mw-bench-*' EXIT
cc -O2 -o "$T/rxworker" tests/support/rxworker.c -lrandomx -lpthread -lssl -lcrypto
hz=$(getconf CLK_TCK)
ticks_of() { awk '{print $14+$15}' /proc/$1/stat; }

start_agent() { # $1 config
    "$BIN" agent --config "$1" >/dev/null 2>"$T/agent.err" & echo $!
}
config() { # $1 events file, $2 heartbeat secs
    cat > "$T/mw.toml" <<C
[agent]
heartbeat_secs = $2
[[output]]
kind = "file"
path = "$1"
C
}
spawn_idle() { for i in $(seq "$1"); do sleep 100000 & echo $! >> "$T/idle.pids"; done; }
kill_idle() { xargs -r kill < "$T/idle.pids" 2>/dev/null || true; rm -f "$T/idle.pids"; }

echo "## agent (release build, default settings: tick 5 s, deep checks every 300 s, host checks every 300 s)"
echo
# 1. Mean CPU and RSS over MIN minutes, 150 idle processes.
spawn_idle 150
config "$T/ev1.ndjson" 60
A=$(start_agent "$T/mw.toml")
sleep 15   # start-up: rules compile, first ticks
c0=$(ticks_of $A); t0=$(date +%s.%N)
sleep $((MIN * 60))
c1=$(ticks_of $A); t1=$(date +%s.%N)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$A/status); rss=$(awk '/VmRSS/ {print $2}' /proc/$A/status)
kill -TERM $A; while kill -0 $A 2>/dev/null; do sleep 0.05; done
awk -v c0=$c0 -v c1=$c1 -v t0=$t0 -v t1=$t1 -v hz=$hz -v hwm=$hwm -v rss=$rss -v n=$(( $(ls /proc | grep -c '^[0-9]') )) -v m=$MIN 'BEGIN {
  printf "- mean CPU over %d min with %d processes: %.2f %% of one core (target <= 0.5 %%); RSS %.1f MiB, peak %.1f MiB (target <= 40 MiB)\n", m, n, (c1-c0)/hz/(t1-t0)*100, rss/1024, hwm/1024 }'
kill_idle

# 2. Time from a disguised worker's first hash to its alert.
config "$T/ev2.ndjson" 3600
A=$(start_agent "$T/mw.toml")
sleep 12
lat=()
for run in 1 2 3 4 5; do
    d=/dev/shm/.mw-bench-$run; mkdir -p $d; cp "$T/rxworker" $d/kdevtmpfsi
    (exec -a '[kworker/0:1]' $d/kdevtmpfsi --mode light --seconds 60 > "$T/w$run.out") & W=$!
    until grep -q hashing "$T/w$run.out" 2>/dev/null; do sleep 0.02; done
    h=$(date +%s%N); rm -rf $d
    until grep -q "\"pid\":$W" "$T/ev2.ndjson" 2>/dev/null; do sleep 0.05; done
    lat+=($(( ($(date +%s%N) - h) / 1000000 )))
    kill -9 $W; wait $W 2>/dev/null || true
    sleep 6
done
kill -TERM $A; while kill -0 $A 2>/dev/null; do sleep 0.05; done
sorted=$(printf '%s\n' "${lat[@]}" | sort -n | tr '\n' ' ')
echo "- first hash to alert, 5 runs of a worker run from /dev/shm as [kworker/0:1] (ms, sorted): $sorted(goal <= 10000)"

# 3. Tick cost against the number of idle processes (tick_ms from heartbeats).
for n in 100 1000 5000; do
    spawn_idle $n
    config "$T/ev3-$n.ndjson" 5
    A=$(start_agent "$T/mw.toml")
    sleep 40
    kill -TERM $A; while kill -0 $A 2>/dev/null; do sleep 0.05; done
    awk -F'"tick_ms":' 'NF>1 {split($2,a,","); print a[1]}' "$T/ev3-$n.ndjson" | tail -n +2 | sort -n |
        awk -v n=$n '{v[NR]=$1} END {printf "- %d idle processes: tick %d ms median (of a 5000 ms window), %d ms max, %d heartbeats\n", n, v[int((NR+1)/2)], v[NR], NR}'
    kill_idle
done
