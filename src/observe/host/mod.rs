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
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

pub use crate::snapshot::{
    HiddenPid, HostFacts, HugePages, PersistenceEntry, PidSweep, PreloadFile, SysctlSetting,
};

// ---------------------------------------------------------------------------
// Limits and constants
// ---------------------------------------------------------------------------

const CONFIG_CAP: usize = 1 << 20;
const SELF_CAP: usize = 4 << 20;
const TEXT_CAP: usize = 300;
/// Directory levels below a scanned persistence directory.
const MAX_DEPTH: usize = 6;
/// The kernel's PID_MAX_LIMIT on 64-bit: used when pid_max cannot be read.
const PID_MAX_LIMIT: i32 = 4_194_304;
/// Brute-force worker threads at most.
const MAX_BRUTE_THREADS: usize = 8;

const GETDENTS: &str = "getdents64";
const READDIR: &str = "readdir";
const BRUTE: &str = "kill(0)/stat";

const SYSCTL_KEYS: &[&str] = &[
    "vm.nr_hugepages",
    "kernel.nmi_watchdog",
    "vm.nr_overcommit_hugepages",
];

mod persistence;
mod pids;
mod self_view;
mod tuning;

use crate::safefs::tree::*;
use persistence::*;
pub use pids::*;
use self_view::*;
use tuning::*;

/// Only the persistence entries and ld.so.preload under `root`: what a file
/// sweep needs to know which files are launched (no /proc, no pid probes).
pub fn observe_launchers(root: &Path) -> (HostFacts, Vec<(String, String)>) {
    let mut gaps = Unread::default();
    let root_tree = Tree::open(root, &mut gaps);
    let facts = HostFacts {
        ld_so_preload: read_ld_so_preload(&root_tree, &mut gaps),
        persistence: scan_persistence(&root_tree, &mut gaps),
        ..HostFacts::default()
    };
    (facts, gaps.0)
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
    let mut gaps = Unread::default();
    let mut facts = HostFacts::default();
    let root_tree = Tree::open(root, &mut gaps);
    let proc_tree = Tree::open(proc_root, &mut gaps);

    std::thread::scope(|scope| {
        let brute = scope.spawn(|| brute_force_sweep(proc_root, false, sweep));

        facts.ld_so_preload = read_ld_so_preload(&root_tree, &mut gaps);
        facts.hugepages = read_hugepages(&proc_tree, &mut gaps);
        let gig = |name: &str, gaps: &mut Unread| {
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
        let root_user = rustix::process::geteuid().is_root();
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

/// The facts of a mountinfo text (for the fuzz entries): mounts over
/// /proc/PID, hidepid=, what is mounted over `proc_root`.
pub(crate) fn mountinfo_facts(
    text: &str,
    proc_root: &str,
) -> (Vec<String>, Option<String>, Option<String>) {
    parse_mountinfo(text, proc_root)
}

/// The persistence entries of one file's bytes (for the fuzz entries):
/// `kind` "cron" reads a system crontab, "systemd" a unit, anything else a
/// shell script (rc.local).
pub(crate) fn persistence_entries(kind: &str, path: &str, data: &[u8]) -> Vec<PersistenceEntry> {
    let format = match kind {
        "cron" => Format::SystemCrontab,
        "systemd" => Format::Unit,
        _ => Format::Script,
    };
    let file = FileRead {
        data: data.to_vec(),
        truncated: false,
        immutable: false,
    };
    analyze_file(kind, format, path, &file)
}

#[cfg(test)]
mod tests;
