//! Hidden processes: the raw getdents64 listing of /proc, glibc's readdir
//! (what a hooked `ps` sees), and the kill(0)/getpgid brute force over
//! the pid range, compared and confirmed.

use super::*;
use rustix::io::Errno;
use rustix::process::{self, Pid};

// ---------------------------------------------------------------------------
// Public data
// ---------------------------------------------------------------------------

/// Which pids the brute force asks about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Sweep {
    /// Every pid that can exist (a scan): 1 up to the namespace's last
    /// allocated pid, or to pid_max once the allocator has wrapped.
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
    /// Only these pids (a `--pid` scan: is a process in scope hidden from
    /// the listings?).
    Pids(Vec<i32>),
}

/// The ranges a sweep probes and where the next slice starts. Pure.
/// `top`: the highest pid that can exist now (the last allocated one, when
/// the allocator has not wrapped around pid_max), `None` when unknown.
pub(super) fn plan_sweep(
    sweep: &Sweep,
    pid_max: i32,
    now_last: Option<i32>,
    top: Option<i32>,
) -> (Vec<(i32, i32)>, i32) {
    let pid_max = pid_max.max(1);
    let Sweep::Rolling {
        last_pid,
        cursor,
        slices,
        ..
    } = sweep
    else {
        return (vec![(1, top.map_or(pid_max, |t| t.clamp(1, pid_max)))], 1);
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

/// The highest pid that can exist, from the highest listed pid (listed
/// before) and the allocator's last pid (read after): that last pid, unless
/// a listed pid lies above it, which only a wrap around pid_max allows.
/// `None`: unknown, or wrapped (every pid up to pid_max may exist). Pure.
pub(super) fn highest_possible_pid(listed_top: Option<i32>, last_pid: Option<i32>) -> Option<i32> {
    match (listed_top, last_pid) {
        (Some(listed), Some(last)) if listed <= last => Some(last),
        _ => None,
    }
}

/// The last pid the kernel allocated in our pid namespace: the fifth field
/// of `/proc/loadavg` ("0.07 0.15 1.08 1/88 29261").
pub(super) fn last_allocated_pid(proc_fd: Option<&OwnedFd>) -> Option<i32> {
    let text = read_value_at(proc_fd?, "loadavg")?;
    text.split_whitespace().nth(4)?.parse().ok()
}

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
/// for a 5 s window, so it is not done. For any other `proc_root` (another
/// namespace's /proc, a fixture) only `stat` can answer and is used alone.
pub fn brute_force_pids(proc_root: &Path) -> Vec<i32> {
    brute_force_sweep(proc_root, false, &Sweep::Full).0
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
    // A scan asks only about pids that can exist: none was handed out above
    // the allocator's last pid unless it wrapped around pid_max, which a
    // listed pid above it shows (listed first, so none is newer than the
    // last pid read after). /proc/loadavg tells the allocator of *our*
    // namespace: of no use for a procfs of another one.
    // One raw listing serves this and the thread classification below.
    let listing = list_pids_raw(proc_root).ok();
    let listed_top = (probe != Probe::Stat && *sweep == Sweep::Full)
        .then(|| listing.as_ref().map(|l| l.last().copied().unwrap_or(0)))
        .flatten();
    let last_pid = if probe == Probe::Stat {
        None
    } else {
        last_allocated_pid(proc_fd.as_ref())
    };
    let top = highest_possible_pid(listed_top, last_pid);
    let (ranges, next_slice) = match sweep {
        Sweep::Pids(_) => (Vec::new(), 1),
        _ => plan_sweep(sweep, pid_max, last_pid, top),
    };
    let mut swept = PidSweep {
        ranges,
        pids: Vec::new(),
        pid_max,
        last_pid,
        next_slice,
        wrapped: top.is_none() && listed_top.zip(last_pid).is_some(),
    };
    let mut found = Vec::new();
    for &(a, b) in &swept.ranges {
        found.extend(scan_pid_range(proc_fd.as_ref(), probe, a, b));
    }
    if let Sweep::Rolling { also, .. } | Sweep::Pids(also) = sweep {
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
    // The probes answer for thread ids too. A listed pid is a thread-group
    // leader (/proc lists only those); a thread of a listed process is
    // known from its task directory; only what is left has its status
    // read (one read per thread made a host check of a process with
    // 20,000 threads take seconds). A process born during the sweep is
    // not in the listing and has its status read.
    let listed: BTreeSet<i32> = listing.into_iter().flatten().collect();
    let threads = proc_fd
        .as_ref()
        .filter(|_| found.iter().any(|p| !listed.contains(p)))
        .map(|fd| threads_of(fd, &listed))
        .unwrap_or_default();
    let found = found
        .into_iter()
        .filter(|&pid| {
            listed.contains(&pid)
                || (!threads.contains(&pid)
                    && proc_fd
                        .as_ref()
                        .and_then(|fd| thread_group_leader(fd, pid))
                        .unwrap_or(true))
        })
        .collect();
    (found, swept)
}

/// The thread ids (other than the leader's) of the processes `pids`, from
/// their task directories.
fn threads_of(proc_fd: &OwnedFd, pids: &BTreeSet<i32>) -> std::collections::HashSet<i32> {
    let mut out = std::collections::HashSet::new();
    for &pid in pids {
        let Ok(task) = open_at(
            proc_fd,
            format!("{pid}/task").as_bytes(),
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
        ) else {
            continue;
        };
        if let Ok((entries, _)) = getdents(&task, usize::MAX) {
            out.extend(
                entries
                    .iter()
                    .filter_map(|e| parse_pid(&e.name))
                    .filter(|&tid| tid != pid),
            );
        }
    }
    out
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

// ---------------------------------------------------------------------------
// Hidden processes
// ---------------------------------------------------------------------------

/// Re-checks candidates: a pid is reported only if it is still alive, still a
/// thread-group leader, and still missing from a fresh listing.
pub(super) fn confirm_hidden(
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
pub(super) enum Probe {
    /// kill(0), then getpgid: our own pid namespace.
    Syscalls,
    /// The syscalls, then stat(<proc>/pid).
    SyscallsThenStat,
    /// stat(<proc>/pid) only: a procfs of another namespace, or a fixture.
    Stat,
}

impl Probe {
    pub(super) fn for_proc(proc_fd: Option<&OwnedFd>, stat_sweep: bool) -> Probe {
        match proc_fd {
            None => Probe::Syscalls,
            Some(fd) if !proc_is_ours(fd) => Probe::Stat,
            Some(_) if stat_sweep => Probe::SyscallsThenStat,
            Some(_) => Probe::Syscalls,
        }
    }
}

/// Existing ids in `first..=last` (threads included).
pub(super) fn scan_pid_range(
    proc_fd: Option<&OwnedFd>,
    probe: Probe,
    first: i32,
    last: i32,
) -> Vec<i32> {
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
pub(super) fn pid_exists(proc_fd: Option<&OwnedFd>, probe: Probe, pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    if probe != Probe::Stat {
        // rustix makes these syscalls itself (no libc in between that an
        // LD_PRELOAD rootkit could hook): EPERM answers too.
        let answered = |r: Result<(), Errno>| matches!(r, Ok(()) | Err(Errno::PERM));
        let Some(p) = Pid::from_raw(pid) else {
            return false;
        };
        if answered(process::test_kill_process(p)) || answered(process::getpgid(Some(p)).map(drop))
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
    std::ffi::CStr::from_bytes_with_nul(&name[..=len]).is_ok_and(|name| {
        rustix::fs::statat(fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()
    })
}

/// Writes `pid` in decimal followed by NUL; returns the digit count.
pub(super) fn format_pid(pid: i32, buf: &mut [u8; 16]) -> usize {
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
pub(super) fn proc_is_ours(proc_fd: &OwnedFd) -> bool {
    read_link_at(proc_fd, b"self").is_ok_and(|t| t.trim() == std::process::id().to_string())
}

/// `Tgid == pid` from `<proc>/<pid>/status`; None when unreadable.
pub(super) fn thread_group_leader(proc_fd: &OwnedFd, pid: i32) -> Option<bool> {
    let status = read_value_at(proc_fd, &format!("{pid}/status"))?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))?
        .trim()
        .parse::<i32>()
        .ok()?;
    Some(tgid == pid)
}

pub(super) fn parse_pid(name: &[u8]) -> Option<i32> {
    if name.is_empty() || name.len() > 10 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name)
        .ok()?
        .parse::<i32>()
        .ok()
        .filter(|&p| p > 0)
}
