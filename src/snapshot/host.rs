//! Host-wide facts outside any one process: hidden pids, mounts over
//! `/proc/PID`, preloads, leftover miner tuning and persistence, as
//! `observe::host` reads them (SIGNALS.md §5, §7).

use serde::{Deserialize, Serialize};

/// What the host shows outside any one process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostFacts {
    /// Pids (thread-group leaders) that exist but some listing did not show,
    /// confirmed by a second look (still alive, still missing).
    pub hidden_pids: Vec<HiddenPid>,
    /// Mounts over `/proc/<pid>` or anything below it (bind-mount hiding), from
    /// /proc/self/mountinfo and PID 1's /proc/1/mountinfo: the mount point.
    pub proc_pid_mounts: Vec<String>,
    /// The hidepid= option of the /proc mount, if set.
    pub hidepid: Option<String>,
    /// Executable file mappings in minerwatch itself (/proc/self/maps) that
    /// were preloaded or are not a dependency we expect. A mapping is listed
    /// when it is named in our own `LD_PRELOAD` or in `<root>/etc/ld.so.preload`
    /// (same path or same file name), or when it is not one of the libraries a
    /// Rust program linked against glibc loads: glibc's own objects (libc,
    /// libm, ld-linux, libpthread, libdl, librt, libresolv, libnss_*, gconv
    /// modules…), libgcc_s and a few common NSS dependencies (libz, libcap,
    /// libsystemd, libselinux, …), each from a system library directory
    /// (`/lib`, `/usr/lib`, `/lib64`, `/usr/lib64`, their `<triplet>-linux-gnu`
    /// subdirectory). Our own executable is excluded. A library loaded from
    /// `/usr/local/lib`, `/etc`, `/tmp` or a `memfd:` is therefore listed.
    pub self_preloaded: Vec<String>,
    /// `<root>/etc/ld.so.preload`, when it exists (also when it is a symlink,
    /// which is not followed).
    pub ld_so_preload: Option<PreloadFile>,
    /// Huge page pool from `<proc_root>/meminfo`.
    pub hugepages: HugePages,
    /// /sys/module/msr/parameters/allow_writes (under root), when the msr
    /// module is loaded.
    pub msr_allow_writes: Option<String>,
    /// /proc/sys/kernel/nmi_watchdog (under proc_root).
    pub nmi_watchdog: Option<String>,
    /// Miner-tuning sysctl settings (vm.nr_hugepages, kernel.nmi_watchdog,
    /// vm.nr_overcommit_hugepages) in `<root>/etc/sysctl.conf` and
    /// `<root>/{etc,run,usr/lib,lib}/sysctl.d/*.conf`.
    pub sysctl: Vec<SysctlSetting>,
    /// Every command of the persistence files (cron, systemd, rc.local), and
    /// the files without one: the judge picks those that launch a miner.
    pub persistence: Vec<PersistenceEntry>,
    /// What the pid brute force probed.
    pub pid_sweep: PidSweep,
}

/// What one brute-force sweep probed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PidSweep {
    /// Inclusive pid ranges probed.
    pub ranges: Vec<(i32, i32)>,
    /// Single pids probed besides (found hidden before).
    pub pids: Vec<i32>,
    /// `<proc_root>/sys/kernel/pid_max` (4194304 when unreadable).
    pub pid_max: i32,
    /// The last allocated pid (`/proc/loadavg`) read before probing.
    pub last_pid: Option<i32>,
    /// Where the next rolling slice starts.
    pub next_slice: i32,
    /// A scan's sweep saw a listed pid above `last_pid`: the allocator has
    /// wrapped around pid_max, so every pid up to pid_max was probed.
    pub wrapped: bool,
}

impl PidSweep {
    /// Whether the brute force asked about `pid`.
    pub fn probed(&self, pid: i32) -> bool {
        self.ranges.iter().any(|&(a, b)| (a..=b).contains(&pid)) || self.pids.contains(&pid)
    }

    /// Pids probed in all.
    pub fn count(&self) -> u64 {
        self.ranges
            .iter()
            .map(|&(a, b)| u64::try_from(i64::from(b) - i64::from(a) + 1).unwrap_or(0))
            .sum::<u64>()
            + self.pids.len() as u64
    }
}

/// A process that exists but some listing did not show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HiddenPid {
    /// The pid, a thread-group leader.
    pub pid: i32,
    /// Listings that saw it: "getdents64", "readdir", "kill(0)/stat".
    pub seen_by: Vec<String>,
    /// Listings that missed it.
    pub missing_from: Vec<String>,
}

/// The loader's global preload list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreloadFile {
    /// Where the file is (`<root>/etc/ld.so.preload`).
    pub path: String,
    /// Libraries listed (whitespace- or colon-separated, as ld.so reads it).
    pub entries: Vec<String>,
    /// chattr +i.
    pub immutable: bool,
    /// When the file is a symlink (not followed, so `entries` is empty): its target.
    pub symlink_target: Option<String>,
}

/// The huge page pool, from `HugePages_*` and `Hugepagesize` in meminfo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HugePages {
    /// `HugePages_Total:` of `<proc_root>/meminfo`.
    pub nr_hugepages: u64,
    /// `HugePages_Free:`.
    pub free: u64,
    /// `HugePages_Rsvd:`.
    pub reserved: u64,
    /// `HugePages_Surp:`.
    pub surplus: u64,
    /// `Hugepagesize:` in KiB.
    pub size_kib: u64,
    /// 1 GiB pages (`--randomx-1gb-pages`), from
    /// `<root>/sys/kernel/mm/hugepages/hugepages-1048576kB/{nr,free}_hugepages`;
    /// 0 when the size is not supported.
    pub nr_1g: u64,
    /// Free 1 GiB pages, from the same directory.
    pub free_1g: u64,
}

/// One miner-tuning sysctl line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SysctlSetting {
    /// The sysctl file, under `--root`.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// The key, e.g. `vm.nr_hugepages`.
    pub key: String,
    /// The value set.
    pub value: String,
}

/// A command a persistence file runs (a cron line, a systemd `ExecStart*=`
/// line, a line of rc.local or of a cron script), or the file itself (line
/// 0: a file with no command, a compiled program where a script belongs, a
/// symlink that was not followed). Recorded whole, from cron tables
/// (`/etc/crontab`, `/etc/cron.d`, `/var/spool/cron`), cron script
/// directories, systemd unit directories (system, user, `~/.config`) and
/// rc.local under `--root`: the judge decides which launch a miner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PersistenceEntry {
    /// "cron" | "systemd" | "rc.local"
    pub kind: String,
    /// The file, as a path on the host (`--root` prefixed).
    pub path: String,
    /// 1-based; 0 when the entry is about the file as a whole.
    pub line: u32,
    /// The line as written (continued lines joined), capped at 300
    /// characters, control characters shown as U+FFFD.
    pub text: String,
    /// Its command: a cron line without its time (and user) fields, the
    /// value of an `ExecStart*=`, a script line as it is. Capped likewise.
    pub command: String,
    /// The programs the command runs, in order: the first word of each
    /// simple command after wrappers (nohup, sudo, nice, env…), the script
    /// given to a shell or interpreter, the inner command of `sh -c`. Best
    /// effort, not a shell parser.
    pub programs: Vec<String>,
    /// A cron `@reboot` line.
    pub at_reboot: bool,
    /// The file is immutable (chattr +i, FS_IMMUTABLE_FL).
    pub immutable: bool,
    /// The file is a compiled program (ELF) where a script is expected.
    pub compiled: bool,
    /// A symlink that was not followed (it points outside the trees read):
    /// its target, resolved lexically as a host path.
    pub symlink_to: Option<String>,
}

impl PersistenceEntry {
    /// The program it launches first, if parsed.
    pub fn program(&self) -> Option<&str> {
        self.programs.first().map(String::as_str)
    }
}
