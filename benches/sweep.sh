#!/usr/bin/env bash
# Sweep benchmark: `minerwatch sweep` against Debian's `yara -r` with the
# same rule text (rules/yara/*.yar) and the same number of threads, on one
# tree, in one run (ratios are what to compare on a shared machine); then
# the CPU share of `--cpu-limit 25`. Run after `cargo build --release`, with
# yara installed. Prints markdown for benches/RESULTS.md.
#   benches/sweep.sh [TREE [THREADS [LIMIT_TREE]]]   (default /usr 2 /usr/share)
set -euo pipefail
cd "$(dirname "$0")/.."
TREE=${1:-/usr}
THREADS=${2:-2}
LIMIT_TREE=${3:-/usr/share}
BIN=$PWD/target/release/minerwatch
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cat rules/yara/*.yar > "$T/all.yar"
measure() { # label, command...: prints "label wall user sys maxrss_kib"
    local label=$1; shift
    /usr/bin/time -o "$T/time" -f "%e %U %S %M" "$@" > "$T/out" 2>/dev/null || true
    # time prepends "Command exited with non-zero status N" when it is not 0.
    echo "$label $(tail -n 1 "$T/time")"
}
# Warm the page cache so that both read from memory.
find "$TREE" -xdev -type f -print0 2>/dev/null | xargs -0 cat > /dev/null 2>&1 || true
files=$(find "$TREE" -xdev -type f 2>/dev/null | wc -l)
size=$(du -sxm "$TREE" 2>/dev/null | cut -f1)
echo "## sweep: $TREE ($files files, $size MiB), $THREADS threads"
echo
echo "| engine | run | wall s | CPU s | peak RSS MiB |"
echo "|---|---|---|---|---|"
for run in 1 2; do
    read -r _ w u s m < <(measure mw "$BIN" sweep "$TREE" --threads "$THREADS" --format json)
    echo "| minerwatch sweep (yara-x, + SHA-256 and config parsing) | $run | $w | $(awk "BEGIN{print $u + $s}") | $((m / 1024)) |"
    echo "mw $w" >> "$T/walls"
    read -r _ w u s m < <(measure yara yara -r -N -z 67108864 -p "$THREADS" "$T/all.yar" "$TREE")
    echo "| yara $(yara --version) -r -N -p $THREADS | $run | $w | $(awk "BEGIN{print $u + $s}") | $((m / 1024)) |"
    echo "yara $w" >> "$T/walls"
done
best() { grep "^$1 " "$T/walls" | cut -d' ' -f2 | sort -n | head -1; }
mw=$(best mw); ya=$(best yara)
echo
echo "best of 2: minerwatch $mw s, yara $ya s: minerwatch takes $(awk "BEGIN{printf \"%.2f\", $mw / $ya}")× yara's time"
echo
read -r _ w u s m < <(measure limit "$BIN" sweep "$LIMIT_TREE" --threads "$THREADS" --cpu-limit 25 --format json)
cpu=$(awk "BEGIN{print $u + $s}")
echo "--cpu-limit 25 on $LIMIT_TREE: $cpu s of CPU over $w s: $(awk "BEGIN{printf \"%.1f\", 100 * $cpu / $w}") % of one core (peak RSS $((m / 1024)) MiB)"
