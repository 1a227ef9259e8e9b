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

mod binaries;
pub mod candidates;
mod coverage;
mod deep;
/// Careful file reading, kept under its old name for callers.
pub use crate::safefs as files;
#[cfg(test)]
mod fixtures;
pub mod fpu;
pub mod host;
mod host_info;
pub mod memory;
pub mod memscan;
pub mod miner_config;
mod net;
mod process;
pub(crate) mod procread;
mod scope;
pub mod sweep;
mod window;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use procfs::ProcError;

use crate::signatures::Signatures;
use crate::snapshot::*;
use binaries::BinaryCache;
use coverage::CoverageLog;
use process::{DetailReader, Watched};

pub use host_info::host_name;
// For the fuzz entries (src/fuzz.rs).
pub(crate) use net::connection as tcp_connection;
pub(crate) use process::{container_id, container_re};

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
    /// Only the host checks that concern the `pids` scope: the pid brute
    /// force asks about those pids only, and the snapshot says so (`scan
    /// --pid` without `--host-checks`).
    pub scoped_host_checks: bool,
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
            scoped_host_checks: false,
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

/// What the agent carries from one scan to the next, so that an unchanged
/// host costs little: every binary scanned (by content identity), and the
/// expensive checks of each candidate (by pid and start time).
#[derive(Default)]
pub struct Cache {
    binaries: HashMap<files::FileKey, BinaryFacts>,
    checked: HashMap<(i32, u64), deep::RecentChecks>,
    remembered: HashMap<(i32, u64), process::Remembered>,
    /// The last host checks' pid sweep and the pids they found hidden.
    sweep: Option<(host::PidSweep, Vec<i32>)>,
}

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

/// Observes the host, reusing and refreshing `cache`: the phases of a scan,
/// in order.
pub fn observe_with(
    opts: &Options,
    sigs: &Signatures,
    store: &mut Cache,
) -> Result<HostSnapshot, ObserveError> {
    let started_at = jiff::Timestamp::now().to_string();
    let clock_ticks = procfs::ticks_per_second().max(1);
    let mut gaps = CoverageLog::default();
    let users = process::read_users();

    // 1. Scope. Host checks (listings, brute force, leftovers) run beside
    // the window.
    let host_job = start_host_checks(opts, store);
    let mut table = scope::read_table(opts, &mut gaps)?;
    let in_scope = table.pids.len();

    // 2. First CPU sample.
    let start = window::Ends::read(&opts.proc_root);
    let t0 = Instant::now();
    let mut watched = first_sample(&mut table, store, &mut gaps);
    tracing::info!(processes = watched.len(), "first CPU sample taken");

    // 3. Details, while the window runs.
    let mut cache = BinaryCache::new(sigs, &mut store.binaries);
    let mut reader = DetailReader::new(&users, &opts.proc_root);
    let reused = process::read_details(
        &mut watched,
        &store.remembered,
        &mut reader,
        &mut cache,
        &mut gaps,
    );
    tracing::info!(
        elapsed_ms = t0.elapsed().as_millis() as u64,
        binaries = cache.used.len(),
        reused,
        "details read"
    );

    // 4. The window ends: host checks done, late arrivals added, the second
    // CPU sample.
    window::wait(opts, t0);
    let host_facts = finish_host_checks(host_job, opts, &mut store.sweep, &mut gaps);
    scope::add_late(
        &mut table,
        &mut watched,
        &host_facts,
        opts,
        &mut reader,
        &mut cache,
        &mut gaps,
    );
    let in_scope = watched.len().max(in_scope);
    let end = window::Ends::read(&opts.proc_root);
    let elapsed = t0.elapsed().as_secs_f64().max(0.001);
    let mut alive = window::second_sample(watched, clock_ticks, elapsed, &mut gaps);

    // 5. Sockets, then the expensive checks of the candidates.
    net::connections(&mut alive, &opts.proc_root, &mut gaps);
    deep::run(
        &mut alive,
        opts,
        sigs,
        &users,
        &mut cache,
        &mut store.checked,
        &mut gaps,
    );
    remember(&mut alive, &mut store.remembered, &mut store.checked);
    scope::set_ancestry(&mut alive, &table);
    tracing::info!(
        after_window_ms = t0.elapsed().saturating_sub(opts.window).as_millis() as u64,
        binaries = cache.used.len(),
        "observation done"
    );

    // 6. The snapshot.
    let host_cpu = window::host_cpu(&start, &end, &mut gaps);
    let processes: Vec<ProcessFacts> = alive
        .into_iter()
        .filter(|t| !gaps.vanished.contains(&t.facts.pid))
        .map(|t| t.facts)
        .collect();
    let preload_binaries = binaries::scan_preloads(&host_facts, &opts.root, &mut cache, &mut gaps);
    let mut scope_pids = opts.pids.clone();
    scope_pids.sort_unstable();
    Ok(HostSnapshot {
        schema: SNAPSHOT_SCHEMA.to_string(),
        host: host_info::host_info(clock_ticks, &opts.root),
        started_at,
        window_secs: (elapsed * 100.0).round() / 100.0,
        host_cpu,
        processes,
        binaries: cache.binaries(),
        rules: sigs.info().clone(),
        scoped_host_checks: opts.scoped_host_checks && !scope_pids.is_empty(),
        scope: scope_pids,
        coverage: gaps.into_coverage(in_scope),
        host_facts,
        preload_binaries,
        sweep: None,
    })
}

/// The host checks running beside the window: their facts and what they
/// could not read.
type HostChecks = std::thread::JoinHandle<(HostFacts, Vec<(String, String)>)>;

/// The host checks on a thread of their own, with the pid sweep that
/// follows the last one (the agent) or covers every pid (a scan).
fn start_host_checks(opts: &Options, store: &Cache) -> Option<HostChecks> {
    let sweep = match (&store.sweep, opts.pid_sweep_slices) {
        _ if opts.scoped_host_checks && !opts.pids.is_empty() => {
            host::Sweep::Pids(opts.pids.clone())
        }
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
    opts.host_checks.then(|| {
        let (root, proc_root) = (opts.root.clone(), opts.proc_root.clone());
        std::thread::spawn(move || host::observe_host_with(&root, &proc_root, &sweep))
    })
}

/// Joins the host checks; remembers their sweep for the next ones.
fn finish_host_checks(
    job: Option<HostChecks>,
    opts: &Options,
    sweep: &mut Option<(host::PidSweep, Vec<i32>)>,
    gaps: &mut CoverageLog,
) -> HostFacts {
    let (host_facts, host_gaps) = match job.map(|j| j.join()) {
        None => (HostFacts::default(), Vec::new()),
        Some(Ok(r)) => r,
        Some(Err(_)) => (
            HostFacts::default(),
            vec![("host checks".to_string(), "panicked".to_string())],
        ),
    };
    for (what, error) in host_gaps {
        gaps.note(None, &what, error);
    }
    if opts.host_checks {
        *sweep = Some((
            host_facts.pid_sweep.clone(),
            host_facts.hidden_pids.iter().map(|h| h.pid).collect(),
        ));
    }
    host_facts
}

/// The first CPU sample of every process in scope.
fn first_sample(table: &mut scope::Table, store: &Cache, gaps: &mut CoverageLog) -> Vec<Watched> {
    let mut watched = Vec::with_capacity(table.pids.len());
    for pid in &table.pids {
        let (Some(p), Some(stat)) = (table.handles.remove(pid), table.stats.get(pid)) else {
            continue;
        };
        let known = store.remembered.get(&(*pid, stat.starttime));
        watched.push(process::track(p, stat, true, known, gaps));
    }
    watched
}

/// What the agent keeps for the next tick: each process's details and
/// thread ticks, and only the recent checks of processes still alive.
fn remember(
    alive: &mut [Watched],
    remembered: &mut HashMap<(i32, u64), process::Remembered>,
    checked: &mut HashMap<(i32, u64), deep::RecentChecks>,
) {
    let alive_keys: HashSet<(i32, u64)> =
        alive.iter().map(|t| (t.facts.pid, t.start_ticks)).collect();
    checked.retain(|k, _| alive_keys.contains(k));
    let mut next = HashMap::with_capacity(alive.len());
    for t in alive {
        if let Some(r) = process::remember(t, remembered) {
            next.insert((t.facts.pid, t.start_ticks), r);
        }
    }
    *remembered = next;
}
