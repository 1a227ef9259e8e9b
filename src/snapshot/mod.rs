//! The observed facts of one host: the boundary between observe and judge.
//!
//! A [`HostSnapshot`] is plain data. `observe` fills it from a live system,
//! `--save` writes it as JSON, `analyze` reads it back, and the judge turns it
//! into a report without any further I/O. Fields may be added, never renamed:
//! a snapshot saved by an older minerwatch must still load. Every fact type
//! observe produces lives here, each field with where it comes from: this
//! is the only vocabulary observe and judge share.

mod host;
mod memscan;
mod rounding;
mod sweep;

use serde::{Deserialize, Serialize};

pub use host::{
    HiddenPid, HostFacts, HugePages, PersistenceEntry, PidSweep, PreloadFile, SysctlSetting,
};
pub use memscan::{MemoryMatch, MemoryScan};
pub use rounding::{FpuFacts, RAN_NS, ThreadFpu};
pub use sweep::{FileMeta, SweepFacts, SweepSkip, SweptFile};

const MIB: u64 = 1024 * 1024;
/// A RandomX dataset (2080 MiB), alone or merged by the kernel with the
/// 256 MiB cache next to it: the sizes [`MemoryFacts::large_anon`] regions
/// are told apart by.
pub const RANDOMX_DATASET: std::ops::RangeInclusive<u64> = (2080 * MIB)..=(2080 * MIB + 272 * MIB);
/// A RandomX cache (256 MiB), alone or with a little neighbouring memory.
pub const RANDOMX_CACHE: std::ops::RangeInclusive<u64> = (256 * MIB)..=(264 * MIB);

/// Whether a mapping has a RandomX dataset's or cache's size.
pub fn randomx_sized(size: u64) -> bool {
    RANDOMX_DATASET.contains(&size) || RANDOMX_CACHE.contains(&size)
}

/// The value of the `schema` field of every saved snapshot.
pub const SNAPSHOT_SCHEMA: &str = "minerwatch-snapshot/1";

/// Everything observed on one host in one scan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// Always [`SNAPSHOT_SCHEMA`].
    pub schema: String,
    /// The host the snapshot was taken on.
    pub host: HostInfo,
    /// When observation started (RFC 3339, UTC).
    pub started_at: String,
    /// Length of the CPU sampling window in seconds.
    pub window_secs: f64,
    /// Host-wide CPU ticks over the window, from /proc/stat.
    pub host_cpu: HostCpu,
    /// The processes in scope, in pid order.
    pub processes: Vec<ProcessFacts>,
    /// Every distinct file scanned with the rules (executables and libraries).
    pub binaries: Vec<BinaryFacts>,
    /// The rules the binaries were scanned with.
    pub rules: RulesInfo,
    /// The pids the scan was limited to (`--pid`), empty for the whole host.
    #[serde(default)]
    pub scope: Vec<i32>,
    /// A `--pid` scan without `--host-checks`: only the host-wide checks
    /// that concern its scope count (the pid brute force asks about the
    /// scoped pids only; the judge reports those hidden, mounts over them,
    /// ld.so.preload and persistence entries that launch a process in scope,
    /// not the host's leftovers, other hidden pids or hidden CPU).
    #[serde(default)]
    pub scoped_host_checks: bool,
    /// What could not be observed.
    pub coverage: Coverage,
    /// Host state outside any one process: hidden pids, preloads, leftovers,
    /// persistence.
    #[serde(default)]
    pub host_facts: HostFacts,
    /// Libraries named by ld.so.preload or preloaded into minerwatch, scanned
    /// with the rules: (path, binary id).
    #[serde(default)]
    pub preload_binaries: Vec<PreloadBinary>,
    /// Files on disk, when a sweep ran (`minerwatch sweep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepFacts>,
}

/// A preloaded library and its scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreloadBinary {
    /// The library as named (ld.so.preload entry, or a mapping of minerwatch itself).
    pub path: String,
    /// Id into [`HostSnapshot::binaries`], when it could be read.
    pub binary: Option<String>,
}

/// Identity of the host.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostInfo {
    /// `$MINERWATCH_HOSTNAME`, else `<root>/etc/hostname`, else the kernel's name (uname).
    pub hostname: String,
    /// The kernel release (uname -r).
    pub kernel: String,
    /// Online CPUs, from `sysinfo`.
    pub cpus: usize,
    /// Boot time, RFC 3339 UTC.
    pub boot_time: String,
    /// Kernel clock ticks per second (`getconf CLK_TCK`).
    pub clock_ticks: u64,
}

/// Host-wide CPU time over the sampling window, in clock ticks summed over all CPUs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct HostCpu {
    /// Busy ticks (everything but idle and iowait).
    pub busy_ticks: u64,
    /// All ticks, busy or not.
    pub total_ticks: u64,
    /// Ticks that tasks run in: user, nice and system (busy less irq, softirq
    /// and steal, which no process is charged for).
    #[serde(default)]
    pub task_ticks: u64,
    /// Ticks minerwatch itself used over the window.
    #[serde(default)]
    pub self_ticks: u64,
}

/// One process as observed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessFacts {
    /// Its pid, from the raw getdents64 listing of /proc (or the host checks' brute force).
    pub pid: i32,
    /// Start time in clock ticks after boot: with `pid`, identifies the process.
    pub start_time: u64,
    /// Parent pid, `/proc/PID/stat` field 4.
    pub ppid: i32,
    /// Parents from the nearest up to pid 1.
    pub ancestry: Vec<Ancestor>,
    /// Real uid, the first `Uid:` of `/proc/PID/status`.
    pub uid: u32,
    /// Its user name, from `/etc/passwd`.
    pub user: Option<String>,
    /// `comm`: the kernel's 15-byte name, settable by the process itself.
    pub comm: String,
    /// `/proc/PID/cmdline`, split at NULs (one string with spaces when the process rewrote it).
    pub cmdline: Vec<String>,
    /// Target of /proc/PID/exe, as the kernel prints it (may end in ` (deleted)`
    /// or start with `/memfd:`); `None` for kernel threads or when unreadable.
    pub exe: Option<String>,
    /// Target of `/proc/PID/cwd`.
    pub cwd: Option<String>,
    /// Container id parsed from /proc/PID/cgroup.
    pub container: Option<String>,
    /// Nice value, `/proc/PID/stat` field 19.
    pub nice: i64,
    /// Threads, `/proc/PID/stat` field 20.
    pub threads: u64,
    /// PF_KTHREAD is set: a real kernel thread.
    pub kernel_thread: bool,
    /// CPU use over the window.
    pub cpu: CpuFacts,
    /// Memory layout; `None` when maps could not be read.
    pub memory: Option<MemoryFacts>,
    /// Established TCP connections.
    pub connections: Vec<Connection>,
    /// Id (see [`BinaryFacts::id`]) of the scanned executable.
    pub exe_binary: Option<String>,
    /// Ids of scanned file-backed executable mappings other than the exe.
    #[serde(default)]
    pub library_binaries: Vec<String>,
    /// Miner configuration files found for this process.
    pub configs: Vec<MinerConfig>,
    /// FPU rounding-mode samples of its busy threads; `None` when not sampled.
    #[serde(default)]
    pub fpu: Option<FpuFacts>,
    /// yara-x scan of the process's memory; `None` when not scanned.
    #[serde(default)]
    pub memory_scan: Option<MemoryScan>,
}

/// A parent in the ancestry chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    /// Its pid.
    pub pid: i32,
    /// Its `comm`.
    pub name: String,
}

/// CPU use of a process over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CpuFacts {
    /// Percent of one core (200 = two cores fully busy).
    pub percent: f64,
    /// utime+stime ticks spent during the window.
    pub ticks: u64,
    /// cutime+cstime gained during the window: children that exited and were
    /// reaped, whose time /proc/stat counted while they ran.
    #[serde(default)]
    pub children_ticks: u64,
    /// Per-thread use, busiest first; threads that used no CPU are left out.
    pub threads: Vec<ThreadCpu>,
    /// Percent of a core in each of the agent's recent ticks, oldest first
    /// (empty for a one-shot scan).
    #[serde(default)]
    pub history: Vec<f64>,
    /// False when the process started during the window (its figure covers less time).
    #[serde(default = "default_true")]
    pub whole_window: bool,
}

fn default_true() -> bool {
    true
}

/// CPU use of one thread over the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThreadCpu {
    /// Thread id (`/proc/PID/task/TID`).
    pub tid: i32,
    /// The thread's `comm`.
    pub name: String,
    /// Percent of one core over the window, from the thread's utime+stime.
    pub percent: f64,
}

/// Memory layout summary from maps, smaps and status.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MemoryFacts {
    /// VmRSS in KiB (excludes hugetlb pages).
    pub rss_kib: u64,
    /// HugetlbPages in KiB.
    pub hugetlb_kib: u64,
    /// AnonHugePages (transparent huge pages) in KiB.
    pub anon_huge_kib: u64,
    /// Total size of anonymous mappings in KiB (including hugetlb ones).
    pub anon_total_kib: u64,
    /// Anonymous mappings of 64 MiB or more, largest first.
    pub large_anon: Vec<Region>,
    /// Anonymous mappings that are executable (JIT code), including rwx ones.
    pub exec_anon: Vec<Region>,
    /// File-backed executable mappings whose file is deleted or in memory (memfd).
    #[serde(default)]
    pub exec_deleted_files: Vec<Region>,
}

/// One mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    /// Start address, hex with 0x.
    pub start: String,
    /// Size in bytes (end - start in `/proc/PID/maps`).
    pub size: u64,
    /// Permissions as in maps, e.g. `rwxp`.
    pub perms: String,
    /// Backing path or pseudo-path (`/anon_hugepage (deleted)`), if any.
    pub path: Option<String>,
}

/// An established TCP connection (`/proc/PID/net/tcp{,6}`, matched to the
/// process through the socket inodes in `/proc/PID/fd`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// Local end, `ip:port`.
    pub local: String,
    /// Remote address (IPv4-mapped IPv6 shown as IPv4).
    pub remote_ip: String,
    /// Remote port.
    pub remote_port: u16,
    /// For a connection to a loopback address: the local process holding
    /// the other end, when it could be found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<LocalPeer>,
}

/// The local process at the other end of a loopback connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPeer {
    /// Its pid, found by the socket inode in its `/proc/PID/fd`.
    pub pid: i32,
    /// Its `comm`.
    pub comm: String,
    /// Target of its /proc/PID/exe, when readable.
    pub exe: Option<String>,
}

/// A file scanned with the rules, once per run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BinaryFacts {
    /// `dev:inode:size:mtime`, the identity of the file's content.
    pub id: String,
    /// The path it was first seen under.
    pub path: String,
    /// Size in bytes (`fstat`).
    pub size: u64,
    /// SHA-256 of the bytes read (hex); of the whole file unless `truncated`.
    pub sha256: Option<String>,
    /// True when the file was larger than the per-file read cap.
    pub truncated: bool,
    /// The rules that matched the bytes read.
    pub matches: Vec<RuleMatch>,
    /// Why it could not be scanned, if it could not.
    pub error: Option<String>,
}

/// One matching rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatch {
    /// The rule's name.
    pub rule: String,
    /// Its namespace: one per rule file.
    pub namespace: String,
    /// `category` metadata: randomx, xmrig, miner, stratum; `user` for user rules without one.
    pub category: String,
    /// The rule's `description` metadata.
    pub description: Option<String>,
    /// True for rules from `--rules`, false for the embedded ones.
    pub user: bool,
}

/// A miner configuration file (XMRig-style JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MinerConfig {
    /// Where it was found (beside the executable, in the cwd, `~/.xmrig.json`, `~/.config/xmrig.json`).
    pub path: String,
    /// Its `pools[]`.
    pub pools: Vec<PoolEntry>,
    /// Its `"donate-level"`.
    pub donate_level: Option<i64>,
    /// It has a `"randomx"` section.
    pub has_randomx_section: bool,
    /// It has a `"cpu"` section.
    pub has_cpu_section: bool,
    /// Set when the file exists but is not valid JSON.
    pub parse_error: Option<String>,
}

/// One `pools[]` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolEntry {
    /// `pools[].url`.
    pub url: Option<String>,
    /// `pools[].user` (a wallet, often with `.worker`).
    pub user: Option<String>,
}

/// Which rules were in force.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RulesInfo {
    /// Embedded rules compiled.
    pub embedded: usize,
    /// Rules from `--rules` (or `agent.rules_dir`) compiled.
    pub user: usize,
    /// SHA-256 over all rule sources, to tell rule sets apart.
    pub hash: String,
}

/// What the scan could not see.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Coverage {
    /// Processes in scope at the start.
    pub processes: usize,
    /// Processes (or files of processes) we were refused.
    pub inaccessible: usize,
    /// Processes that exited during the scan.
    pub vanished: usize,
    /// Each failure, with what failed.
    pub errors: Vec<CoverageError>,
}

/// One recorded failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverageError {
    /// The process concerned, if one was.
    pub pid: Option<i32>,
    /// What was being read, e.g. `maps`, `exe scan`, `net/tcp`.
    pub what: String,
    /// The error, as the system gave it.
    pub error: String,
}
