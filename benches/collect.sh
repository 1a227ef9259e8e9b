#!/usr/bin/env bash
# Evidence-bundle benchmark: `minerwatch collect` of a fast-mode librandomx
# worker (2080 MiB dataset + 256 MiB cache), and `contain --yes` (freeze +
# collect) of a second one: wall time, peak RSS and bundle size. The bundle
# must not hold the dataset: only regions a rule matched are copied. Run
# after `cargo build --release`, as root, with librandomx-dev installed.
# Prints markdown for benches/RESULTS.md.
#   benches/collect.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/target/release/minerwatch
T=$(mktemp -d)
W=
cleanup() { [ -n "$W" ] && kill -9 "$W" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
cc -O2 -o "$T/rxworker" tests/support/rxworker.c -lrandomx -lpthread -lssl -lcrypto
start_worker() {
    "$T/rxworker" --mode fast --seconds 300 > "$T/worker.out" 2>&1 &
    W=$!
    for _ in $(seq 1200); do grep -q hashing "$T/worker.out" && return 0; sleep 0.1; done
    echo "worker never hashed" >&2; exit 1
}
measure() { # label, command...: "wall maxrss_kib"
    /usr/bin/time -o "$T/time" -f "%e %M" "$@" > "$T/out" 2>&1 || { cat "$T/out" >&2; exit 1; }
    cat "$T/time"
}
echo "## evidence bundle of a fast-mode RandomX worker ($(nproc) CPUs)"
echo
echo "| command | wall s (incl. the --window 1 scan) | peak RSS MiB | worker RSS MiB | bundle MiB | members |"
echo "|---|---|---|---|---|---|"
for run in 1 2; do
    start_worker
    rss=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$W/status)
    read -r w m < <(measure "$BIN" collect --pid "$W" --out "$T/c$run.tar.gz" --window 1)
    n=$(tar tzf "$T/c$run.tar.gz" | wc -l)
    sz=$(du -m "$T/c$run.tar.gz" | cut -f1)
    echo "| collect --pid W --window 1 | $w | $((m / 1024)) | $rss | $sz | $n |"
    read -r w m < <(measure "$BIN" contain "$W" --yes --window 1 --out "$T/k$run.tar.gz")
    state=$(awk '{print $3}' /proc/$W/stat)
    sz=$(du -m "$T/k$run.tar.gz" | cut -f1)
    n=$(tar tzf "$T/k$run.tar.gz" | wc -l)
    echo "| contain W --yes --window 1 (freeze + collect; state after: $state) | $w | $((m / 1024)) | $rss | $sz | $n |"
    kill -9 "$W"; wait "$W" 2>/dev/null || true; W=
done
