#!/usr/bin/env bash
# The scale points this host's sysctls forbid (issue 11: 100,000 threads,
# 100,000 mappings, 60,000 open fds), measured in a guest of our own:
# Debian's kernel booted with an initramfs that holds only minerwatch, the
# hostile helper, bash, GNU time, util-linux's unshare and busybox. Inside,
# pid_max, threads-max, max_map_count and RLIMIT_NOFILE are raised (the
# guest's, never the host's) and benches/scale.sh runs as it does on a host:
# in a PID namespace, every row a whole-namespace scan and 8 agent ticks.
# Nothing of the host is visible to the guest: no shared filesystem, no
# network. Prints the markdown table scale.sh prints.
#
# The guest runs under qemu's software emulation (TCG) by default: slower
# than the host by a large factor, so compare rows within one run, not with
# the host's table. ACCEL=kvm uses KVM where it works (on this benchmark's
# machine, a Firecracker VM, nested KVM hangs the guest's kernel at boot).
#
# Needs root, qemu-system-x86, busybox-static and cpio (installed when
# missing), and Debian's kernel package (downloaded, not installed, into
# target/scale-vm/). Run from the repository:
#   benches/scale-vm.sh [THREADS [MAPS [FDS]]]     # 100000 100000 60000
# It also runs scale.sh's host rows (PROCS, and 20,000 threads) in the
# guest, so each guest row can be set against a host row of the same load.
# GUEST_MEM (default 8G) and GUEST_CPUS (default 2) size the guest; PROCS
# is passed to scale.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-100000}
MAPS=${2:-100000}
FDS=${3:-60000}
MEM=${GUEST_MEM:-8G}
CPUS=${GUEST_CPUS:-2}
PROCS=${PROCS:-100 1000 10000}
die() { echo "scale-vm: $*" >&2; exit 2; }
ACCEL=${ACCEL:-tcg}
[ "$(id -u)" = 0 ] || die "run as root (it installs packages and raises limits in the guest)"
case $ACCEL in
    tcg) accel=(-accel tcg,thread=multi -cpu max) ;;
    kvm) [ -c /dev/kvm ] || die "/dev/kvm is missing: use ACCEL=tcg"
         accel=(-enable-kvm -cpu host,-arch-capabilities) ;;
    *) die "ACCEL is tcg or kvm, not '$ACCEL'" ;;
esac
for v in "$THREADS" "$MAPS" "$FDS"; do
    case $v in '' | *[!0-9]*) die "THREADS, MAPS and FDS are whole numbers, not '$v'" ;; esac
done
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v cpio >/dev/null || [ ! -x /bin/busybox ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-system-x86 busybox-static cpio >/dev/null
fi
W=$PWD/target/scale-vm
mkdir -p "$W"
kernel=$(ls "$W"/boot/vmlinuz-* 2>/dev/null | head -n 1 || true)
if [ -z "$kernel" ]; then
    pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -n 1)
    [ -n "$pkg" ] || die "no Debian kernel package found (apt-cache depends linux-image-amd64)"
    (cd "$W" && apt-get download "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
    dpkg-deb -x "$W"/"$pkg"_*.deb "$W"
    kernel=$(ls "$W"/boot/vmlinuz-* | head -n 1)
fi

cargo build --release --locked -q
S=$(mktemp -d)
trap 'rm -rf "$S"' EXIT
cc -O2 -Wall -o "$S/hostile.bin" tests/support/hostile.c -lpthread

# The libraries a binary loads, at the same paths in the guest.
libs() {
    local f
    for f in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*'); do
        mkdir -p "$S/root$(dirname "$f")"
        cp -L "$f" "$S/root$f"
    done
}
mkdir -p "$S/root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,bench,etc}
cp /bin/busybox "$S/root/bin/busybox"
for b in /usr/bin/bash /usr/bin/time /usr/bin/unshare; do cp "$b" "$S/root$b"; libs "$b"; done
cp target/release/minerwatch "$S/root/bench/minerwatch"
libs target/release/minerwatch
cp "$S/hostile.bin" "$S/root/bench/hostile"
libs "$S/hostile.bin"
cp benches/scale.sh "$S/root/bench/scale.sh"
echo 'root:x:0:0:root:/:/usr/bin/bash' > "$S/root/etc/passwd"
cat > "$S/root/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/bin:/bin:/usr/sbin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
ln -s /proc/self/fd /dev/fd
mount -t tmpfs tmp /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
# The guest's limits, raised for the scale points (the host's are untouched).
echo 4194304 > /proc/sys/kernel/pid_max
echo 4000000 > /proc/sys/kernel/threads-max
echo 4000000 > /proc/sys/vm/max_map_count
ulimit -Hn 1048576; ulimit -n 1048576
echo "== guest: $ACCEL, \$(uname -r), \$(nproc) CPUs, \$(awk '/MemTotal/ {printf "%.0f GiB", \$2/1048576}' /proc/meminfo)"
echo "== scale-begin"
cd /bench && BIN=/bench/minerwatch HOSTILE=/bench/hostile MAPS=$MAPS FDS=$FDS PROCS="$PROCS" bash /bench/scale.sh 20000 $THREADS
echo "== scale-end rc=\$?"
poweroff -f
EOF
chmod +x "$S/root/init"
(cd "$S/root" && find . | cpio -o -H newc --quiet | gzip -1) > "$S/initrd.gz"

# The guest's console is this script's output; its exit ends qemu.
timeout 7200 qemu-system-x86_64 "${accel[@]}" -smp "$CPUS" -m "$MEM" \
    -kernel "$kernel" -initrd "$S/initrd.gz" \
    -append "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3" \
    -display none -no-reboot -nic none -monitor none -serial stdio </dev/null |
    sed -u 's/\r//g' | tee "$S/console.log" |
    sed -n '/^== guest:/p; /^== scale-begin/,/^== scale-end/{/^== scale-/!p}'
grep -q '^== scale-end rc=0' "$S/console.log" || {
    echo "scale-vm: the guest run failed; its console:" >&2
    tail -n 40 "$S/console.log" >&2
    exit 1
}
