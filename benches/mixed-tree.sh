#!/usr/bin/env bash
# Sweep benchmark on a 10 GiB tree of mixed files, built here: /usr linked
# in (ELF programs and libraries, jars, compressed man pages, text; hard
# links when on the same filesystem, else copies), 72 files of 64 MiB of
# random bytes, 512 log-like text files of 1 MiB, 50,000 small files of
# 2 KiB in 500 directories, and a planted miner config so that both engines
# have a match to find. Every file is at most 64 MiB, so both engines read
# every byte (minerwatch's --max-file-size and yara's -z are both 64 MiB).
# Then benches/sweep.sh on it. Run after `cargo build --release`, with yara
# installed; needs about 5 GiB of free disk (10 GiB when /usr is on
# another filesystem) and removes the tree at the end.
#   benches/mixed-tree.sh [DIR [THREADS]]   (default a new directory under /var/tmp, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:-/var/tmp}
THREADS=${2:-2}
T=$(mktemp -d "$BASE/minerwatch-mixed.XXXXXX")
trap 'rm -rf "$T"' EXIT
if ! cp -al /usr "$T/usr" 2>/dev/null; then
    rm -rf "$T/usr"
    cp -a /usr "$T/usr"
fi
mkdir -p "$T/random" "$T/logs" "$T/small"
for i in $(seq -w 1 72); do head -c 64M /dev/urandom > "$T/random/blob$i.bin"; done
python3 - "$T" <<'EOF'
import os, random, sys
t = sys.argv[1]
rnd = random.Random(7)
words = "GET POST /api/v1/items /static/app.js 200 404 500 user session cache miss hit worker".split()
for i in range(512):
    lines, size = [], 0
    while size < 1 << 20:
        line = "2026-12-02T%02d:%02d:%02d.%03dZ host%d %s %s %d ms\n" % (
            rnd.randrange(24), rnd.randrange(60), rnd.randrange(60), rnd.randrange(1000),
            rnd.randrange(50), rnd.choice(words), rnd.choice(words), rnd.randrange(2000))
        lines.append(line)
        size += len(line)
    with open(os.path.join(t, "logs", "app%03d.log" % i), "w") as f:
        f.write("".join(lines))
for d in range(500):
    p = os.path.join(t, "small", "d%03d" % d)
    os.mkdir(p)
    for i in range(100):
        with open(os.path.join(p, "f%03d.txt" % i), "wb") as f:
            f.write(rnd.randbytes(2048))
EOF
mkdir -p "$T/home/.cache/.x"
cat > "$T/home/.cache/.x/config.json" <<'EOF'
{"autosave": true, "donate-level": 1, "cpu": {"enabled": true},
 "randomx": {"init": -1, "mode": "auto"},
 "pools": [{"url": "127.0.0.1:3333", "user": "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SRAfqYmqT1KqLPx1C8FXnBUR46R9L3D9Ld29D", "pass": "x"}]}
EOF
echo "mixed tree: $(find "$T" -type f | wc -l) files, $(du -sm --apparent-size "$T" | cut -f1) MiB"
echo
benches/sweep.sh "$T" "$THREADS" "$T/logs"
