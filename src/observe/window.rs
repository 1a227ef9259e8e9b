//! The CPU window: host and own ticks at both ends, the wait, and each
//! process's and thread's CPU over it from the second sample.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use procfs::process::Process;

use super::Options;
use super::coverage::CoverageLog;
use super::process::{Watched, thread_ticks};
use crate::safefs as files;
use crate::snapshot::{HostCpu, ThreadCpu};

/// Host-wide (busy, total, task) ticks from the first line of /proc/stat.
pub(super) fn host_ticks(proc_root: &Path) -> Option<(u64, u64, u64)> {
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
pub(super) fn self_ticks(proc_root: &Path) -> u64 {
    Process::new_with_root(proc_root.join("self"))
        .and_then(|p| super::procread::stat(&p))
        .map(|s| super::procread::cpu_ticks(&s))
        .unwrap_or(0)
}

/// Host-wide and own ticks at one end of the window.
pub(super) struct Ends {
    host: Option<(u64, u64, u64)>,
    own: u64,
}

impl Ends {
    pub(super) fn read(proc_root: &Path) -> Ends {
        Ends {
            host: host_ticks(proc_root),
            own: self_ticks(proc_root),
        }
    }
}

/// Host CPU over the window, from its two ends.
pub(super) fn host_cpu(start: &Ends, end: &Ends, gaps: &mut CoverageLog) -> HostCpu {
    match (start.host, end.host) {
        (Some((b0, t0, k0)), Some((b1, t1, k1))) => HostCpu {
            busy_ticks: b1.saturating_sub(b0),
            total_ticks: t1.saturating_sub(t0),
            task_ticks: k1.saturating_sub(k0),
            self_ticks: end.own.saturating_sub(start.own),
        },
        _ => {
            gaps.note(
                None,
                "/proc/stat",
                "host CPU ticks could not be read".into(),
            );
            HostCpu::default()
        }
    }
}

/// Sleeps until the window, begun at `t0`, is over (or the agent is asked
/// to stop).
pub(super) fn wait(opts: &Options, t0: Instant) {
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
}

/// The second CPU sample: each process's and busy thread's CPU over the
/// `elapsed` window. Processes that exited or whose pid was reused are
/// dropped and counted as vanished.
pub(super) fn second_sample(
    watched: Vec<Watched>,
    clock_ticks: u64,
    elapsed: f64,
    gaps: &mut CoverageLog,
) -> Vec<Watched> {
    let per_tick = 100.0 / (clock_ticks as f64 * elapsed);
    let mut alive = Vec::with_capacity(watched.len());
    for mut t in watched {
        let pid = t.facts.pid;
        match super::procread::stat(&t.process) {
            Ok(s) if s.starttime == t.start_ticks => {
                let ticks = super::procread::cpu_ticks(&s).saturating_sub(t.ticks0);
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
                    t.facts.cpu.threads = busy_threads(&t.threads0, threads1, per_tick);
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
    alive
}

/// Threads that ran over the window, busiest first, at most 32.
fn busy_threads(
    threads0: &HashMap<i32, u64>,
    threads1: HashMap<i32, (u64, String)>,
    per_tick: f64,
) -> Vec<ThreadCpu> {
    let mut threads: Vec<ThreadCpu> = threads1
        .into_iter()
        .filter_map(|(tid, (ticks1, name))| {
            let d = ticks1.saturating_sub(threads0.get(&tid).copied().unwrap_or(0));
            (d > 0).then(|| ThreadCpu {
                tid,
                name,
                percent: (d as f64 * per_tick * 10.0).round() / 10.0,
            })
        })
        .collect();
    threads.sort_by(|a, b| b.percent.total_cmp(&a.percent).then(a.tid.cmp(&b.tid)));
    threads.truncate(32);
    threads
}
