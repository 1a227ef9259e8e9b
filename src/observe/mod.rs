//! Observe: every Linux read minerwatch makes, gathered into one [`HostSnapshot`].
//!
//! The scan takes a CPU sample of every process in scope, reads identity,
//! memory layout, sockets, binaries and configs while the window runs, takes
//! the second sample, then scans the libraries of the processes that turned
//! out busy or RandomX-shaped. Every failure (a process that exits, a file we
//! are refused) lands in the snapshot's coverage; none stops the scan.
//!
//! Limits: processes that start during the window are not observed; CPU is an
//! average over one window (the agent keeps history); only TCP connections in
//! the ESTABLISHED state are listed.

pub mod candidates;
pub mod files;
#[cfg(test)]
mod fixtures;
pub mod fpu;
pub mod host;
pub mod memory;
pub mod memscan;
pub mod miner_config;
mod net;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use procfs::ProcError;
use procfs::process::{FDTarget, MemoryMap, Process, Stat};
use regex::Regex;

use crate::signatures::{FileContext, FileScanner, Signatures};
use crate::snapshot::*;
use files::FileKey;

/// The flag in `stat` that marks a kernel thread.
const PF_KTHREAD: u32 = 0x0020_0000;
/// Ancestry chains are cut at this length (a loop would be a kernel bug).
const MAX_ANCESTRY: usize = 64;

/// How to observe.
#[derive(Debug, Clone)]
pub struct Options {
    /// CPU sampling window.
    pub window: Duration,
    /// Limit to these pids and their descendants; empty for all.
    pub pids: Vec<i32>,
    /// Where procfs is mounted (`/proc`, or the host's /proc inside a container).
    pub proc_root: PathBuf,
    /// The filesystem root host checks read /etc, /var and /sys from.
    pub root: PathBuf,
    /// Scan the memory of candidate processes with the rules.
    pub memory: bool,
    /// Sample the FPU rounding mode of candidate processes with ptrace.
    pub ptrace: bool,
    /// Budget of one process's memory scan.
    pub memory_budget: memscan::Budget,
    /// Run the host-wide checks (listings and brute force, leftovers,
    /// persistence); the agent runs them every few minutes only.
    pub host_checks: bool,
    /// How long a candidate's rounding-mode and memory results stay valid
    /// in a [`Cache`].
    pub recheck: Duration,
    /// 0: the pid brute force of the host checks probes every pid (a scan).
    /// N: it probes the pids allocated since the previous host checks of
    /// this [`Cache`] and one N-th of the whole range (the agent).
    pub pid_sweep_slices: u32,
    /// Set to end the sampling window early (SIGTERM in the agent).
    pub stop: Option<&'static std::sync::atomic::AtomicBool>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            window: Duration::from_secs(5),
            pids: Vec::new(),
            proc_root: PathBuf::from("/proc"),
            root: PathBuf::from("/"),
            memory: true,
            ptrace: true,
            memory_budget: memscan::Budget::default(),
            host_checks: true,
            recheck: Duration::from_secs(300),
            pid_sweep_slices: 0,
            stop: None,
        }
    }
}

/// Failures that stop a scan before it starts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObserveError {
    /// /proc cannot be listed.
    #[error("cannot list processes in {path}: {source}; minerwatch needs procfs mounted there")]
    ProcList { path: PathBuf, source: ProcError },
    /// A `--pid` that names no running process.
    #[error("--pid {0}: no such process; check it with `ps -p {0}` (it may have exited)")]
    NoSuchPid(i32),
}

/// Records what could not be observed.
#[derive(Default)]
struct Gaps {
    errors: Vec<CoverageError>,
    inaccessible: BTreeSet<i32>,
    vanished: BTreeSet<i32>,
}

impl Gaps {
    fn record(&mut self, pid: Option<i32>, what: &str, error: &ProcError) {
        if let Some(pid) = pid {
            match error {
                ProcError::PermissionDenied(_) => {
                    self.inaccessible.insert(pid);
                }
                ProcError::NotFound(_) => {
                    self.vanished.insert(pid);
                }
                _ => {}
            }
        }
        self.note(pid, what, error.to_string());
    }

    fn note(&mut self, pid: Option<i32>, what: &str, error: String) {
        tracing::debug!(?pid, what, %error, "coverage gap");
        self.errors.push(CoverageError {
            pid,
            what: what.to_string(),
            error,
        });
    }

    fn io(&mut self, pid: i32, what: &str, error: &std::io::Error) {
        match error.kind() {
            std::io::ErrorKind::PermissionDenied => {
                self.inaccessible.insert(pid);
            }
            std::io::ErrorKind::NotFound => {}
            _ => {}
        }
        self.note(Some(pid), what, error.to_string());
    }
}

/// A user from /etc/passwd.
#[derive(Debug, Clone)]
struct User {
    name: String,
    home: String,
}

fn read_users() -> HashMap<u32, User> {
    let mut users = HashMap::new();
    let Ok((bytes, _)) = files::read_regular(Path::new("/etc/passwd"), 8 * 1024 * 1024, true)
    else {
        return users;
    };
    for line in String::from_utf8_lossy(&bytes).lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 7
            && let Ok(uid) = f[2].parse::<u32>()
        {
            users.entry(uid).or_insert(User {
                name: f[0].to_string(),
                home: f[5].to_string(),
            });
        }
    }
    users
}

/// Host-wide (busy, total, task) ticks from the first line of /proc/stat.
fn host_ticks(proc_root: &Path) -> Option<(u64, u64, u64)> {
    let (bytes, _) = files::read_regular(&proc_root.join("stat"), 1024 * 1024, true).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let task = get(0) + get(1) + get(2);
    let busy = task + get(5) + get(6) + get(7);
    let total = busy + get(3) + get(4);
    Some((busy, total, task))
}

/// Our own utime+stime in ticks.
fn self_ticks(proc_root: &Path) -> u64 {
    Process::new_with_root(proc_root.join("self"))
        .and_then(|p| p.stat())
        .map(|s| s.utime + s.stime)
        .unwrap_or(0)
}

/// A container id: 64 hex digits.
fn container_re() -> Option<&'static Regex> {
    static RE: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new("[0-9a-f]{64}").ok()).as_ref()
}

/// Container id (64 hex digits) from /proc/PID/cgroup paths.
fn container_id(paths: &[String], re: &Regex) -> Option<String> {
    paths
        .iter()
        .find_map(|p| re.find(p).map(|m| m.as_str().to_string()))
}

/// One process being observed.
struct Tracked {
    process: Process,
    start_ticks: u64,
    ticks0: u64,
    children0: u64,
    threads0: HashMap<i32, u64>,
    facts: ProcessFacts,
    exec_files: Vec<memory::ExecFile>,
    exe_key: Option<FileKey>,
    socket_inodes: Vec<u64>,
    /// Network namespace (`identifier:device`), read when it has sockets.
    net_ns: Option<String>,
    zombie: bool,
    /// Observed since the first sample (false: started during the window).
    whole_window: bool,
    /// Its [`fingerprint`] at the first sample.
    fingerprint: Fingerprint,
    /// When its details were read; `None`: not yet (or reused, see `Known`).
    read_at: Option<Instant>,
    /// Per-thread ticks at the end of the window; `None` when no thread ran
    /// (they are `threads0`).
    threads1: Option<HashMap<i32, u64>>,
}

/// Fields of `stat` that move whenever a process runs or its memory changes:
/// CPU ticks, page faults, sizes, threads.
type Fingerprint = [u64; 7];

fn fingerprint(s: &Stat) -> Fingerprint {
    [
        s.utime,
        s.stime,
        s.minflt,
        s.majflt,
        s.vsize,
        s.rss,
        u64::try_from(s.num_threads).unwrap_or(0),
    ]
}

/// What the agent remembers of a process from the previous tick, so that an
/// idle process costs two `stat` reads a tick: its details (identity, memory
/// layout, sockets, binary, configs) while its [`Fingerprint`] holds, and its
/// per-thread ticks while its CPU ticks do not move.
struct Known {
    fingerprint: Fingerprint,
    read_at: Instant,
    details: Details,
    /// utime+stime and per-thread ticks at the end of the last window.
    ticks: u64,
    threads: HashMap<i32, u64>,
}

/// Everything [`DetailReader::read`] reads.
struct Details {
    uid: u32,
    user: Option<String>,
    cmdline: Vec<String>,
    exe: Option<String>,
    cwd: Option<String>,
    container: Option<String>,
    memory: Option<MemoryFacts>,
    exe_binary: Option<String>,
    configs: Vec<MinerConfig>,
    exec_files: Vec<memory::ExecFile>,
    exe_key: Option<FileKey>,
    socket_inodes: Vec<u64>,
    net_ns: Option<String>,
}

impl Details {
    fn of(t: &Tracked) -> Self {
        let f = &t.facts;
        Details {
            uid: f.uid,
            user: f.user.clone(),
            cmdline: f.cmdline.clone(),
            exe: f.exe.clone(),
            cwd: f.cwd.clone(),
            container: f.container.clone(),
            memory: f.memory.clone(),
            exe_binary: f.exe_binary.clone(),
            configs: f.configs.clone(),
            exec_files: t.exec_files.clone(),
            exe_key: t.exe_key,
            socket_inodes: t.socket_inodes.clone(),
            net_ns: t.net_ns.clone(),
        }
    }

    fn restore(&self, t: &mut Tracked) {
        let f = &mut t.facts;
        f.uid = self.uid;
        f.user.clone_from(&self.user);
        f.cmdline.clone_from(&self.cmdline);
        f.exe.clone_from(&self.exe);
        f.cwd.clone_from(&self.cwd);
        f.container.clone_from(&self.container);
        f.memory.clone_from(&self.memory);
        f.exe_binary.clone_from(&self.exe_binary);
        f.configs.clone_from(&self.configs);
        t.exec_files.clone_from(&self.exec_files);
        t.exe_key = self.exe_key;
        t.socket_inodes.clone_from(&self.socket_inodes);
        t.net_ns.clone_from(&self.net_ns);
    }
}

/// How long remembered details of an idle process are trusted: 30 to 60 s,
/// spread by pid so that the re-reads do not all fall on one tick.
fn refresh_after(pid: i32) -> Duration {
    Duration::from_secs(30 + u64::from(pid.unsigned_abs() % 31))
}

/// Starts tracking a process: its identity and first CPU sample. A process
/// first seen after the window began counts its CPU from its start.
fn track(
    p: Process,
    stat: &Stat,
    whole_window: bool,
    known: Option<&Known>,
    gaps: &mut Gaps,
) -> Tracked {
    let pid = p.pid;
    let threads0 =
        if let Some(k) = known.filter(|k| whole_window && k.ticks == stat.utime + stat.stime) {
            // No thread has run since the last window ended.
            k.threads.clone()
        } else if whole_window {
            match thread_ticks(&p) {
                Ok(t) => t
                    .into_iter()
                    .map(|(tid, (ticks, _))| (tid, ticks))
                    .collect(),
                Err(e) => {
                    gaps.record(Some(pid), "task list", &e);
                    HashMap::new()
                }
            }
        } else {
            HashMap::new()
        };
    let facts = ProcessFacts {
        pid,
        start_time: stat.starttime,
        ppid: stat.ppid,
        comm: stat.comm.clone(),
        nice: stat.nice,
        threads: u64::try_from(stat.num_threads).unwrap_or(0),
        kernel_thread: stat.flags & PF_KTHREAD != 0,
        ..ProcessFacts::default()
    };
    Tracked {
        process: p,
        start_ticks: stat.starttime,
        ticks0: if whole_window {
            stat.utime + stat.stime
        } else {
            0
        },
        children0: if whole_window {
            u64::try_from(stat.cutime + stat.cstime).unwrap_or(0)
        } else {
            0
        },
        threads1: None,
        threads0,
        facts,
        exec_files: Vec::new(),
        exe_key: None,
        socket_inodes: Vec::new(),
        net_ns: None,
        zombie: stat.state == 'Z' || stat.state == 'X',
        whole_window,
        fingerprint: fingerprint(stat),
        read_at: None,
    }
}

fn thread_ticks(p: &Process) -> Result<HashMap<i32, (u64, String)>, ProcError> {
    let mut out = HashMap::new();
    for task in p.tasks()?.flatten() {
        if let Ok(s) = task.stat() {
            out.insert(task.tid, (s.utime + s.stime, s.comm));
        }
    }
    Ok(out)
}

/// The scan's cache of scanned files, keyed by content identity.
struct BinaryCache<'r, 'c> {
    sigs: &'r Signatures,
    /// Made on the first file to scan: an unchanged host needs none.
    scanner: Option<FileScanner<'r>>,
    /// Every file scanned so far, this run or (for the agent) earlier ones.
    known: &'c mut HashMap<FileKey, BinaryFacts>,
    /// The files this run referred to, in order.
    used: Vec<FileKey>,
    buf: Vec<u8>,
}

impl<'r, 'c> BinaryCache<'r, 'c> {
    fn new(sigs: &'r Signatures, known: &'c mut HashMap<FileKey, BinaryFacts>) -> Self {
        BinaryCache {
            sigs,
            scanner: None,
            known,
            used: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// The files this run referred to.
    fn binaries(&self) -> Vec<BinaryFacts> {
        self.used
            .iter()
            .filter_map(|k| self.known.get(k).cloned())
            .collect()
    }

    /// Whether any of the files `ids` matched a rule of `category`.
    fn has_category<'a>(&self, mut ids: impl Iterator<Item = &'a String>, category: &str) -> bool {
        ids.any(|id| {
            self.known
                .values()
                .any(|b| &b.id == id && b.matches.iter().any(|m| m.category == category))
        })
    }

    /// Records that this run refers to a file scanned on an earlier run.
    fn touch(&mut self, key: FileKey) {
        if self.known.contains_key(&key) && !self.used.contains(&key) {
            self.used.push(key);
        }
    }

    /// Scans an opened file once per content identity and returns its id.
    fn scan(&mut self, mut file: std::fs::File, key: FileKey, path: &str, owner: &str) -> String {
        if !self.used.contains(&key) {
            self.used.push(key);
        }
        if let Some(b) = self.known.get(&key) {
            return b.id.clone();
        }
        let id = key.to_string();
        let mut facts = BinaryFacts {
            id: id.clone(),
            path: path.to_string(),
            size: key.size,
            ..BinaryFacts::default()
        };
        match files::read_capped(&mut file, files::MAX_BINARY_BYTES, &mut self.buf) {
            Err(e) => facts.error = Some(format!("read: {e}")),
            Ok(truncated) => {
                use sha2::{Digest, Sha256};
                facts.truncated = truncated;
                facts.sha256 = Some(
                    Sha256::digest(&self.buf)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                );
                let scanner = self.scanner.get_or_insert_with(|| self.sigs.scanner());
                match scanner.scan(&self.buf, &FileContext { path, owner }) {
                    Ok(m) => facts.matches = m,
                    Err(e) => facts.error = Some(format!("scan: {e}")),
                }
            }
        }
        self.known.insert(key, facts);
        // Give back the memory of a large file at once.
        if self.buf.capacity() > 8 * 1024 * 1024 {
            self.buf = Vec::new();
        }
        id
    }
}

/// What the agent carries from one scan to the next, so that an unchanged
/// host costs little: every binary scanned (by content identity), and the
/// expensive checks of each candidate (by pid and start time).
#[derive(Default)]
pub struct Cache {
    binaries: HashMap<FileKey, BinaryFacts>,
    checked: HashMap<(i32, u64), RecentChecks>,
    known: HashMap<(i32, u64), Known>,
    /// The last host checks' pid sweep and the pids they found hidden.
    sweep: Option<(host::PidSweep, Vec<i32>)>,
}

/// The expensive checks of one process the agent ran lately, each reused
/// while it is recent and the process's memory keeps the shape it had.
#[derive(Default)]
struct RecentChecks {
    rounding: Option<Checked<fpu::FpuFacts>>,
    memory: Option<Checked<memscan::MemoryScan>>,
}

/// One check's result, when it ran, and the memory shape it saw.
struct Checked<T> {
    at: Instant,
    shape: candidates::Shape,
    facts: T,
}

impl<T: Clone> Checked<T> {
    fn now(shape: candidates::Shape, facts: T) -> Self {
        Checked {
            at: Instant::now(),
            shape,
            facts,
        }
    }

    /// The result, while younger than `ttl` and the shape is unchanged.
    fn reuse(&self, shape: candidates::Shape, ttl: Duration) -> Option<T> {
        (self.shape == shape && self.at.elapsed() < ttl).then(|| self.facts.clone())
    }
}

/// Rounding-mode samples that showed no flips (a look-alike cleared, or
/// threads not seen running) are taken again after this long at most: a
/// miner sampled while it still set up its cache is not cleared for the
/// whole recheck interval.
const RECHECK_UNFLIPPED: Duration = Duration::from_secs(60);

impl Cache {
    /// Binaries remembered.
    pub fn binaries(&self) -> usize {
        self.binaries.len()
    }
}

/// Observes the host once.
pub fn observe(opts: &Options, sigs: &Signatures) -> Result<HostSnapshot, ObserveError> {
    observe_with(opts, sigs, &mut Cache::default())
}

/// Observes the host, reusing and refreshing `cache`.
pub fn observe_with(
    opts: &Options,
    sigs: &Signatures,
    store: &mut Cache,
) -> Result<HostSnapshot, ObserveError> {
    let started_at = jiff::Timestamp::now().to_string();
    let clock_ticks = procfs::ticks_per_second().max(1);
    let mut gaps = Gaps::default();
    let users = read_users();
    let cid_re = container_re();

    // 1. The whole process table: scope and ancestry need every parent.
    // Host checks (listings, brute force, leftovers) run beside the window.
    let sweep = match (&store.sweep, opts.pid_sweep_slices) {
        (_, 0) => host::Sweep::Full,
        (None, slices) => host::Sweep::Rolling {
            last_pid: None,
            cursor: 1,
            slices,
            also: Vec::new(),
        },
        (Some((last, hidden)), slices) => host::Sweep::Rolling {
            last_pid: last.last_pid,
            cursor: last.next_slice,
            slices,
            also: hidden.clone(),
        },
    };
    let host_job = opts.host_checks.then(|| {
        let (root, proc_root) = (opts.root.clone(), opts.proc_root.clone());
        std::thread::spawn(move || host::observe_host_with(&root, &proc_root, &sweep))
    });
    // The raw getdents64 listing: an LD_PRELOAD rootkit hooks readdir.
    let listed = host::list_pids_raw(&opts.proc_root).map_err(|source| ObserveError::ProcList {
        path: opts.proc_root.clone(),
        source: ProcError::Io(source, Some(opts.proc_root.clone())),
    })?;
    let mut table: HashMap<i32, Stat> = HashMap::new();
    let mut handles: HashMap<i32, Process> = HashMap::new();
    for pid in listed {
        let Ok(p) = Process::new_with_root(opts.proc_root.join(pid.to_string())) else {
            continue;
        };
        match p.stat() {
            Ok(stat) => {
                table.insert(pid, stat);
                handles.insert(pid, p);
            }
            Err(e) if p.is_alive() => gaps.record(Some(pid), "stat", &e),
            Err(_) => {}
        }
    }
    let scope: HashSet<i32> = if opts.pids.is_empty() {
        table.keys().copied().collect()
    } else {
        for pid in &opts.pids {
            if !table.contains_key(pid) {
                if !process_exists(*pid) {
                    return Err(ObserveError::NoSuchPid(*pid));
                }
                // It runs, but its /proc entry cannot be read (a mount over
                // /proc/PID, hidepid): the scan goes on and says so.
                gaps.inaccessible.insert(*pid);
                gaps.note(
                    Some(*pid),
                    "stat",
                    "the process runs but its /proc entry cannot be read".into(),
                );
            }
        }
        descendants(&table, &opts.pids)
    };
    // Never judge ourselves: our CPU is the scan's, our memory holds the rules.
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    let mut pids: Vec<i32> = scope.iter().copied().filter(|p| *p != me).collect();
    pids.sort_unstable();
    let in_scope = pids.len();

    // 2. First CPU sample.
    let host0 = host_ticks(&opts.proc_root);
    let self0 = self_ticks(&opts.proc_root);
    let t0 = Instant::now();
    let mut tracked: Vec<Tracked> = Vec::with_capacity(pids.len());
    for pid in &pids {
        let (Some(p), Some(stat)) = (handles.remove(pid), table.get(pid)) else {
            continue;
        };
        let known = store.known.get(&(*pid, stat.starttime));
        tracked.push(track(p, stat, true, known, &mut gaps));
    }
    drop(handles);

    tracing::info!(processes = tracked.len(), "first CPU sample taken");

    // 3. Details, while the window runs.
    let mut cache = BinaryCache::new(sigs, &mut store.binaries);
    let mut reader = DetailReader {
        users: &users,
        cid_re,
        proc_root: &opts.proc_root,
        configs: HashMap::new(),
    };
    let mut reused = 0usize;
    for t in &mut tracked {
        let pid = t.facts.pid;
        // Idle since its details were read (the agent): reuse them.
        if let Some(k) = store
            .known
            .get(&(pid, t.start_ticks))
            .filter(|k| k.fingerprint == t.fingerprint && k.read_at.elapsed() < refresh_after(pid))
        {
            k.details.restore(t);
            if let Some(key) = t.exe_key {
                cache.touch(key);
            }
            reused += 1;
            continue;
        }
        reader.read(t, &mut cache, &mut gaps);
        t.read_at = Some(Instant::now());
    }

    tracing::info!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        binaries = cache.used.len(),
        reused,
        "details read"
    );

    // 4. Second CPU sample at the end of the window.
    while let Some(rest) = opts.window.checked_sub(t0.elapsed()) {
        if opts
            .stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
        {
            break;
        }
        std::thread::sleep(rest.min(Duration::from_millis(100)));
    }
    // Processes that started during the window (a build's next compiler, a
    // miner restarted by cron) are observed too, for the part they ran.
    // ...and those only the host checks found: hidden from listings.
    let (host_facts, host_gaps) = match host_job.map(|j| j.join()) {
        None => (host::HostFacts::default(), Vec::new()),
        Some(Ok(r)) => r,
        Some(Err(_)) => (
            host::HostFacts::default(),
            vec![("host checks".to_string(), "panicked".to_string())],
        ),
    };
    for (what, error) in host_gaps {
        gaps.note(None, &what, error);
    }
    if opts.host_checks {
        store.sweep = Some((
            host_facts.pid_sweep.clone(),
            host_facts.hidden_pids.iter().map(|h| h.pid).collect(),
        ));
    }
    if let Ok(listed) = host::list_pids_raw(&opts.proc_root) {
        let extra = host_facts.hidden_pids.iter().map(|h| h.pid);
        let all = listed
            .into_iter()
            .chain(extra)
            .collect::<BTreeSet<i32>>()
            .into_iter()
            .filter_map(|pid| Process::new_with_root(opts.proc_root.join(pid.to_string())).ok());
        let mut fresh: Vec<(Process, Stat)> = Vec::new();
        for p in all {
            let known = table.get(&p.pid).is_some_and(|s| {
                tracked
                    .iter()
                    .any(|t| t.facts.pid == p.pid && t.start_ticks == s.starttime)
            });
            if p.pid == me || known {
                continue;
            }
            if let Ok(stat) = p.stat() {
                table.insert(p.pid, stat.clone());
                fresh.push((p, stat));
            }
        }
        let scope_now = if opts.pids.is_empty() {
            None
        } else {
            Some(descendants(&table, &opts.pids))
        };
        for (p, stat) in fresh {
            if scope_now.as_ref().is_some_and(|s| !s.contains(&p.pid))
                || gaps.vanished.contains(&p.pid)
            {
                continue;
            }
            let mut t = track(p, &stat, false, None, &mut gaps);
            t.read_at = Some(Instant::now());
            reader.read(&mut t, &mut cache, &mut gaps);
            tracked.push(t);
        }
    }
    let in_scope = tracked.len().max(in_scope);
    let host1 = host_ticks(&opts.proc_root);
    let self1 = self_ticks(&opts.proc_root);
    let elapsed = t0.elapsed().as_secs_f64().max(0.001);
    let per_tick = 100.0 / (clock_ticks as f64 * elapsed);
    let mut alive = Vec::with_capacity(tracked.len());
    for mut t in tracked {
        let pid = t.facts.pid;
        match t.process.stat() {
            Ok(s) if s.starttime == t.start_ticks => {
                let ticks = (s.utime + s.stime).saturating_sub(t.ticks0);
                t.facts.cpu.ticks = ticks;
                t.facts.cpu.children_ticks = u64::try_from(s.cutime + s.cstime)
                    .unwrap_or(0)
                    .saturating_sub(t.children0);
                t.facts.cpu.percent = ticks as f64 * per_tick;
                t.facts.cpu.whole_window = t.whole_window;
                t.facts.threads = u64::try_from(s.num_threads).unwrap_or(t.facts.threads);
                // No tick spent: no thread ran, nothing to read per thread.
                let idle = ticks == 0 && t.whole_window;
                if let Some(threads1) = (!idle).then(|| thread_ticks(&t.process).ok()).flatten() {
                    t.threads1 = Some(threads1.iter().map(|(tid, (n, _))| (*tid, *n)).collect());
                    let mut threads: Vec<ThreadCpu> = threads1
                        .into_iter()
                        .filter_map(|(tid, (ticks1, name))| {
                            let d =
                                ticks1.saturating_sub(t.threads0.get(&tid).copied().unwrap_or(0));
                            (d > 0).then(|| ThreadCpu {
                                tid,
                                name,
                                percent: (d as f64 * per_tick * 10.0).round() / 10.0,
                            })
                        })
                        .collect();
                    threads.sort_by(|a, b| b.percent.total_cmp(&a.percent).then(a.tid.cmp(&b.tid)));
                    threads.truncate(32);
                    t.facts.cpu.threads = threads;
                }
                alive.push(t);
            }
            Ok(_) => {
                gaps.vanished.insert(pid);
                gaps.note(
                    Some(pid),
                    "cpu sample",
                    "the pid was reused by a new process during the window".into(),
                );
            }
            Err(e) => {
                gaps.record(Some(pid), "cpu sample", &e);
                gaps.vanished.insert(pid);
            }
        }
    }

    // 5. Sockets, libraries of candidates, ancestry.
    net::connections(&mut alive, &opts.proc_root, &mut gaps);
    let me_exe = files::open_regular(&opts.proc_root.join("self").join("exe"), false)
        .ok()
        .map(|(_, k)| (k.dev, k.ino));
    let mut memory_left = MAX_MEMORY_PER_SCAN;
    for t in &mut alive {
        if candidates::library_candidate(&t.facts) {
            scan_libraries(t, &users, &mut cache, &opts.proc_root, &mut gaps);
        }
        // Checked recently (the agent) and the same shape since: reuse, do
        // not stop or read it again. A process that gains JIT code or
        // RandomX-sized memory (a miner past its set-up) is checked anew.
        let key = (t.facts.pid, t.start_ticks);
        let shape = candidates::shape(&t.facts);
        let recent = store.checked.get(&key);
        let rounding = recent.and_then(|c| c.rounding.as_ref()).and_then(|c| {
            let flipped = c.facts.modes.len() >= 2;
            let ttl = if flipped {
                opts.recheck
            } else {
                opts.recheck.min(RECHECK_UNFLIPPED)
            };
            c.reuse(shape, ttl)
        });
        let memory = recent
            .and_then(|c| c.memory.as_ref())
            .and_then(|c| c.reuse(shape, opts.recheck));
        let (rounding_reused, memory_reused) = (rounding.is_some(), memory.is_some());
        t.facts.fpu = rounding;
        t.facts.memory_scan = memory;
        // Only a process that used some CPU can be a candidate: look up its
        // binaries' matches for those alone.
        let randomx_code = t.facts.cpu.percent >= candidates::SHAPED_PROCESS_PERCENT && {
            let ids = t.facts.exe_binary.iter().chain(&t.facts.library_binaries);
            cache.has_category(ids, "randomx")
        };
        let plan = (opts.ptrace && !rounding_reused)
            .then(|| candidates::fpu_plan(&t.facts, !opts.pids.is_empty(), randomx_code))
            .flatten();
        if let Some(plan) = plan {
            let how = match plan.pace {
                candidates::Pace::Busy => fpu::SampleOptions::default(),
                candidates::Pace::LowDuty => fpu::SampleOptions::low_duty(),
            };
            let facts = fpu::sample(&opts.proc_root, t.facts.pid, &plan.tids, &how);
            if let Some(why) = &facts.refused {
                gaps.inaccessible.insert(t.facts.pid);
                gaps.note(Some(t.facts.pid), "ptrace (FPU sampling)", why.clone());
            }
            store.checked.entry(key).or_default().rounding =
                Some(Checked::now(shape, facts.clone()));
            t.facts.fpu = Some(facts);
        }
        // Another minerwatch holds our compiled rules in memory: not a miner.
        let is_minerwatch = me_exe.is_some() && t.exe_key.map(|k| (k.dev, k.ino)) == me_exe;
        if opts.memory
            && !memory_reused
            && memory_left > 0
            && !is_minerwatch
            && candidates::memory_candidate(&t.facts)
        {
            let budget = memscan::Budget {
                per_process: opts.memory_budget.per_process.min(memory_left),
                ..opts.memory_budget
            };
            match t.process.maps() {
                Ok(maps) => {
                    let maps: Vec<MemoryMap> = maps.into_iter().collect();
                    match memscan::scan(
                        &opts.proc_root,
                        t.facts.pid,
                        t.facts.exe.as_deref(),
                        &maps,
                        sigs.rules(),
                        &budget,
                    ) {
                        Ok(scan) => {
                            memory_left = memory_left.saturating_sub(scan.bytes_scanned);
                            store.checked.entry(key).or_default().memory =
                                Some(Checked::now(shape, scan.clone()));
                            t.facts.memory_scan = Some(scan);
                        }
                        Err(e) => gaps.io(t.facts.pid, "memory scan", &e),
                    }
                }
                Err(e) => gaps.record(Some(t.facts.pid), "maps (memory scan)", &e),
            }
        }
    }
    let alive_keys: HashSet<(i32, u64)> =
        alive.iter().map(|t| (t.facts.pid, t.start_ticks)).collect();
    store.checked.retain(|k, _| alive_keys.contains(k));
    let mut known = HashMap::with_capacity(alive.len());
    for t in &mut alive {
        let key = (t.facts.pid, t.start_ticks);
        let (read_at, details) = match (t.read_at, store.known.remove(&key)) {
            (Some(at), _) => (at, Details::of(t)),
            // Reused this tick: the remembered details are still right but
            // for the network namespace, read now if it was not before.
            (None, Some(mut k)) => {
                k.details.net_ns.clone_from(&t.net_ns);
                (k.read_at, k.details)
            }
            (None, None) => continue,
        };
        let threads = t
            .threads1
            .take()
            .unwrap_or_else(|| std::mem::take(&mut t.threads0));
        known.insert(
            key,
            Known {
                fingerprint: t.fingerprint,
                read_at,
                details,
                ticks: t.ticks0 + t.facts.cpu.ticks,
                threads,
            },
        );
    }
    store.known = known;
    let parents: HashMap<i32, (i32, String)> = table
        .iter()
        .map(|(pid, s)| (*pid, (s.ppid, s.comm.clone())))
        .collect();
    for t in &mut alive {
        t.facts.ancestry = ancestry(t.facts.ppid, &parents);
    }

    tracing::info!(
        after_window_ms = t0.elapsed().saturating_sub(opts.window).as_millis() as u64,
        binaries = cache.used.len(),
        "observation done"
    );
    let host_cpu = match (host0, host1) {
        (Some((b0, t0, k0)), Some((b1, t1, k1))) => HostCpu {
            busy_ticks: b1.saturating_sub(b0),
            total_ticks: t1.saturating_sub(t0),
            task_ticks: k1.saturating_sub(k0),
            self_ticks: self1.saturating_sub(self0),
        },
        _ => {
            gaps.note(
                None,
                "/proc/stat",
                "host CPU ticks could not be read".into(),
            );
            HostCpu::default()
        }
    };
    let processes: Vec<ProcessFacts> = alive
        .into_iter()
        .filter(|t| !gaps.vanished.contains(&t.facts.pid))
        .map(|mut t| {
            t.facts.hidden = host_facts
                .hidden_pids
                .iter()
                .find(|h| h.pid == t.facts.pid)
                .cloned();
            t.facts
        })
        .collect();
    // Preloaded libraries, scanned with the rules like any binary.
    let mut preload_paths: Vec<(String, PathBuf)> = Vec::new();
    if let Some(f) = &host_facts.ld_so_preload {
        for e in &f.entries {
            preload_paths.push((e.clone(), opts.root.join(e.trim_start_matches('/'))));
        }
    }
    for lib in &host_facts.self_preloaded {
        if !preload_paths.iter().any(|(p, _)| p == lib) {
            // Mapped into us: read it through our own view of the filesystem.
            preload_paths.push((lib.clone(), PathBuf::from(lib)));
        }
    }
    let mut preload_binaries = Vec::new();
    for (path, full) in preload_paths {
        let binary = match files::open_regular(&full, true) {
            Ok((file, key)) => Some(cache.scan(file, key, &path, "")),
            Err(e) => {
                gaps.note(None, &format!("preloaded library {path}"), e.to_string());
                None
            }
        };
        preload_binaries.push(PreloadBinary { path, binary });
    }
    let mut scope_pids = opts.pids.clone();
    scope_pids.sort_unstable();
    Ok(HostSnapshot {
        schema: SNAPSHOT_SCHEMA.to_string(),
        host: host_info(clock_ticks, &opts.root),
        started_at,
        window_secs: (elapsed * 100.0).round() / 100.0,
        host_cpu,
        processes,
        binaries: cache.binaries(),
        rules: sigs.info().clone(),
        scope: scope_pids,
        coverage: Coverage {
            processes: in_scope,
            inaccessible: gaps.inaccessible.len(),
            vanished: gaps.vanished.len(),
            errors: gaps.errors,
        },
        host_facts,
        preload_binaries,
    })
}

/// Whether `pid` names a running process (kill(pid, 0); EPERM means it does).
fn process_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn descendants(table: &HashMap<i32, Stat>, roots: &[i32]) -> HashSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, s) in table {
        children.entry(s.ppid).or_default().push(*pid);
    }
    let mut out: HashSet<i32> = HashSet::new();
    let mut stack: Vec<i32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if out.insert(pid)
            && let Some(c) = children.get(&pid)
        {
            stack.extend(c);
        }
    }
    out
}

fn ancestry(mut ppid: i32, parents: &HashMap<i32, (i32, String)>) -> Vec<Ancestor> {
    let mut out = Vec::new();
    while ppid > 0 && out.len() < MAX_ANCESTRY {
        let Some((next, name)) = parents.get(&ppid) else {
            break;
        };
        out.push(Ancestor {
            pid: ppid,
            name: name.clone(),
        });
        ppid = *next;
    }
    out
}

/// The name events and reports carry for this host: `$MINERWATCH_HOSTNAME`
/// when set (a Kubernetes DaemonSet passes the node's name), the first line
/// of `<root>/etc/hostname` when the host's filesystem is mounted elsewhere
/// (`--root`: we run in a container and our own name is the pod's), else
/// ours.
pub fn host_name(root: &Path) -> String {
    if let Some(n) = std::env::var_os("MINERWATCH_HOSTNAME").filter(|n| !n.is_empty()) {
        return n.to_string_lossy().into_owned();
    }
    if root != Path::new("/")
        && let Ok((bytes, _)) = files::read_regular(&root.join("etc/hostname"), 256, true)
        && let Some(name) = String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
    {
        return name.to_string();
    }
    sysinfo::System::host_name().unwrap_or_default()
}

fn host_info(clock_ticks: u64, root: &Path) -> HostInfo {
    let boot = sysinfo::System::boot_time().unwrap_or(0);
    let boot_time = i64::try_from(boot)
        .ok()
        .and_then(|b| jiff::Timestamp::from_second(b).ok())
        .map(|t| t.to_string())
        .unwrap_or_default();
    HostInfo {
        hostname: host_name(root),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        boot_time,
        clock_ticks,
    }
}

/// Memory read by all memory scans of one run together.
const MAX_MEMORY_PER_SCAN: u64 = 512 * 1024 * 1024;

/// What reading a process's details needs besides the process: who the
/// users are, where procfs is, and the configs already looked for this run.
struct DetailReader<'a> {
    users: &'a HashMap<u32, User>,
    cid_re: Option<&'a Regex>,
    proc_root: &'a Path,
    /// (root dev, root ino, path) → the XMRig-style config found there.
    configs: HashMap<(u64, u64, String), Option<MinerConfig>>,
}

impl DetailReader<'_> {
    /// Identity, memory layout, sockets, binary and configs of one process.
    fn read(&mut self, t: &mut Tracked, cache: &mut BinaryCache<'_, '_>, gaps: &mut Gaps) {
        let pid = t.facts.pid;
        let p = &t.process;
        match p.uid() {
            Ok(uid) => {
                t.facts.uid = uid;
                t.facts.user = self.users.get(&uid).map(|u| u.name.clone());
            }
            Err(e) => gaps.record(Some(pid), "uid", &e),
        }
        match p.cmdline() {
            Ok(c) => t.facts.cmdline = c,
            Err(e) => {
                gaps.record(Some(pid), "cmdline", &e);
                if !p.is_alive() {
                    return;
                }
            }
        }
        if t.facts.kernel_thread || t.zombie {
            return;
        }
        match p.exe() {
            Ok(e) => t.facts.exe = Some(e.to_string_lossy().into_owned()),
            Err(ProcError::NotFound(_)) if p.is_alive() => {}
            Err(e) => gaps.record(Some(pid), "exe link", &e),
        }
        match p.cwd() {
            Ok(c) => t.facts.cwd = Some(c.to_string_lossy().into_owned()),
            Err(ProcError::NotFound(_)) if p.is_alive() => {}
            Err(e) => gaps.record(Some(pid), "cwd", &e),
        }
        if let (Some(re), Ok(groups)) = (self.cid_re, p.cgroups()) {
            let paths: Vec<String> = groups.0.iter().map(|g| g.pathname.clone()).collect();
            t.facts.container = container_id(&paths, re);
        }
        let (rss, huge) = match p.status() {
            Ok(s) => (s.vmrss.unwrap_or(0), s.hugetlbpages.unwrap_or(0)),
            Err(e) => {
                gaps.record(Some(pid), "status", &e);
                (0, 0)
            }
        };
        match p.maps() {
            Ok(maps) => {
                let maps: Vec<MemoryMap> = maps.into_iter().collect();
                let mut facts = memory::summarize(&maps, rss, huge);
                if !facts.large_anon.is_empty()
                    && let Ok(r) = p.smaps_rollup()
                    && let Some(m) = r.memory_map_rollup.0.first()
                {
                    facts.anon_huge_kib =
                        m.extension.map.get("AnonHugePages").copied().unwrap_or(0) / 1024;
                }
                t.exec_files = memory::exec_files(&maps);
                t.facts.memory = Some(facts);
            }
            Err(e) => gaps.record(Some(pid), "maps", &e),
        }
        match p.fd() {
            Ok(fds) => {
                for fd in fds.flatten() {
                    if let FDTarget::Socket(inode) = fd.target {
                        t.socket_inodes.push(inode);
                    }
                }
            }
            Err(e) => gaps.record(Some(pid), "fd list", &e),
        }

        // The executable, scanned once per distinct file.
        let owner_of = |uid: u32| {
            self.users
                .get(&uid)
                .map(|u| u.name.clone())
                .unwrap_or_else(|| uid.to_string())
        };
        if let Some(exe) = t.facts.exe.clone() {
            let link = self.proc_root.join(pid.to_string()).join("exe");
            match files::open_regular(&link, false) {
                Ok((file, key)) => {
                    let owner = file
                        .metadata()
                        .map(|m| owner_of(std::os::unix::fs::MetadataExt::uid(&m)))
                        .unwrap_or_default();
                    t.exe_key = Some(key);
                    t.facts.exe_binary = Some(cache.scan(file, key, &exe, &owner));
                }
                Err(e) => gaps.io(pid, "exe scan", &e),
            }
        }

        // XMRig-style configs.
        let root = self.proc_root.join(pid.to_string()).join("root");
        let root_id = match std::fs::metadata(&root) {
            Ok(m) => (
                std::os::unix::fs::MetadataExt::dev(&m),
                std::os::unix::fs::MetadataExt::ino(&m),
            ),
            Err(e) => {
                gaps.io(pid, "root", &e);
                return;
            }
        };
        let mut candidates: Vec<String> = Vec::new();
        if let Some(exe) = &t.facts.exe {
            let path = exe.trim_end_matches(" (deleted)");
            if path.starts_with('/')
                && !path.starts_with("/memfd:")
                && let Some((dir, _)) = path.rsplit_once('/')
            {
                candidates.push(format!("{dir}/config.json"));
            }
        }
        if let Some(cwd) = &t.facts.cwd {
            candidates.push(format!("{}/config.json", cwd.trim_end_matches('/')));
        }
        if let Some(home) = self
            .users
            .get(&t.facts.uid)
            .map(|u| u.home.trim_end_matches('/').to_string())
        {
            candidates.push(format!("{home}/.xmrig.json"));
            candidates.push(format!("{home}/.config/xmrig.json"));
        }
        candidates.dedup();
        for path in candidates {
            let key = (root_id.0, root_id.1, path.clone());
            let found = self
                .configs
                .entry(key)
                .or_insert_with(|| {
                    let full = root.join(path.trim_start_matches('/'));
                    match files::read_regular(&full, files::MAX_CONFIG_BYTES, true) {
                        Ok((bytes, _)) => miner_config::parse(&path, &bytes),
                        Err(_) => None,
                    }
                })
                .clone();
            if let Some(c) = found
                && !t.facts.configs.iter().any(|x| x.path == c.path)
            {
                t.facts.configs.push(c);
            }
        }
    }
}

/// Scans the file-backed executable mappings (shared libraries) of a candidate.
fn scan_libraries(
    t: &mut Tracked,
    users: &HashMap<u32, User>,
    cache: &mut BinaryCache<'_, '_>,
    proc_root: &Path,
    gaps: &mut Gaps,
) {
    let pid = t.facts.pid;
    let mut seen: HashSet<u64> = HashSet::new();
    for memory::ExecFile {
        start,
        end,
        inode,
        path,
    } in &t.exec_files
    {
        if t.exe_key.is_some_and(|k| k.ino == *inode) || !seen.insert(*inode) {
            continue;
        }
        // map_files names the mapped file itself, even deleted or replaced.
        let link = proc_root
            .join(pid.to_string())
            .join("map_files")
            .join(format!("{start:x}-{end:x}"));
        let opened = files::open_regular(&link, false).or_else(|_| {
            let clean = path.trim_end_matches(" (deleted)");
            let full = proc_root
                .join(pid.to_string())
                .join("root")
                .join(clean.trim_start_matches('/'));
            files::open_regular(&full, true).and_then(|(f, k)| {
                if k.ino == *inode {
                    Ok((f, k))
                } else {
                    Err(std::io::Error::other("file on disk is not the mapped one"))
                }
            })
        });
        match opened {
            Ok((file, key)) => {
                let owner = file
                    .metadata()
                    .ok()
                    .and_then(|m| {
                        users
                            .get(&std::os::unix::fs::MetadataExt::uid(&m))
                            .map(|u| u.name.clone())
                    })
                    .unwrap_or_default();
                let id = cache.scan(file, key, path, &owner);
                if !t.facts.library_binaries.contains(&id) {
                    t.facts.library_binaries.push(id);
                }
            }
            Err(e) => gaps.io(pid, &format!("library scan {path}"), &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_check_is_reused_only_while_the_shape_holds() {
        let c = Checked::now((false, true), 7);
        let hour = Duration::from_secs(3600);
        assert_eq!(c.reuse((false, true), hour), Some(7));
        // JIT code appeared (a miner past its cache set-up): check anew.
        assert_eq!(c.reuse((true, true), hour), None);
        assert_eq!(c.reuse((false, true), Duration::ZERO), None);
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let re = Regex::new("[0-9a-f]{64}").expect("regex");
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let paths = vec![format!("/system.slice/docker-{id}.scope")];
        assert_eq!(container_id(&paths, &re).as_deref(), Some(id));
        assert_eq!(container_id(&["/user.slice".to_string()], &re), None);
    }

    #[test]
    fn host_name_comes_from_the_hosts_root_when_mounted_elsewhere() {
        if std::env::var_os("MINERWATCH_HOSTNAME").is_some() {
            return; // set by whoever runs the tests: it wins, as documented
        }
        let root = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(root.path().join("etc")).expect("mkdir");
        std::fs::write(
            root.path().join("etc/hostname"),
            "# node\n\nnode-7.example\n",
        )
        .expect("write");
        assert_eq!(host_name(root.path()), "node-7.example");
        // No file there: our own name.
        let empty = tempfile::tempdir().expect("tmp");
        let own = sysinfo::System::host_name().unwrap_or_default();
        assert_eq!(host_name(empty.path()), own);
        assert_eq!(host_name(Path::new("/")), own);
    }

    #[test]
    fn ancestry_walks_to_init() {
        let parents: HashMap<i32, (i32, String)> = [
            (1, (0, "systemd".to_string())),
            (100, (1, "sshd".to_string())),
            (200, (100, "bash".to_string())),
        ]
        .into();
        let a = ancestry(200, &parents);
        assert_eq!(
            a.iter().map(|x| x.pid).collect::<Vec<_>>(),
            vec![200, 100, 1]
        );
        assert_eq!(a[1].name, "sshd");
    }
}
