//! The expensive checks, for candidates only (observe/candidates.rs):
//! scanning mapped libraries, sampling the rounding mode with ptrace, and
//! scanning process memory; each reused in the agent while recent and while
//! the process keeps its memory shape.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use procfs::process::MemoryMap;

use super::binaries::{BinaryCache, scan_libraries};
use super::coverage::CoverageLog;
use super::process::{User, Watched};
use super::{Options, candidates, files, fpu, memscan};
use crate::signatures::Signatures;

/// Memory read by all memory scans of one run together.
const MAX_MEMORY_PER_SCAN: u64 = 512 * 1024 * 1024;

/// The expensive checks of one process the agent ran lately, each reused
/// while it is recent and the process's memory keeps the shape it had.
#[derive(Default)]
pub(super) struct RecentChecks {
    rounding: Option<Checked<fpu::FpuFacts>>,
    memory: Option<Checked<memscan::MemoryScan>>,
}

/// One check's result, when it ran, and the memory shape it saw.
pub(super) struct Checked<T> {
    at: Instant,
    shape: candidates::Shape,
    facts: T,
}

impl<T: Clone> Checked<T> {
    pub(super) fn now(shape: candidates::Shape, facts: T) -> Self {
        Checked {
            at: Instant::now(),
            shape,
            facts,
        }
    }

    /// The result, while younger than `ttl` and the shape is unchanged.
    pub(super) fn reuse(&self, shape: candidates::Shape, ttl: Duration) -> Option<T> {
        (self.shape == shape && self.at.elapsed() < ttl).then(|| self.facts.clone())
    }
}

/// Rounding-mode samples that showed no flips (a look-alike cleared, or
/// threads not seen running) are taken again after this long at most: a
/// miner sampled while it still set up its cache is not cleared for the
/// whole recheck interval.
const RECHECK_UNFLIPPED: Duration = Duration::from_secs(60);

/// Runs the expensive checks of every candidate among `alive`, reusing and
/// refreshing `checked` (by pid and start time).
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    alive: &mut [Watched],
    opts: &Options,
    sigs: &Signatures,
    users: &HashMap<u32, User>,
    cache: &mut BinaryCache<'_, '_>,
    checked: &mut HashMap<(i32, u64), RecentChecks>,
    gaps: &mut CoverageLog,
) {
    let me_exe = files::open_regular(&opts.proc_root.join("self").join("exe"), false)
        .ok()
        .map(|(_, k)| (k.dev, k.ino));
    let mut memory_left = MAX_MEMORY_PER_SCAN;
    for t in alive {
        if candidates::library_candidate(&t.facts) {
            scan_libraries(t, users, cache, &opts.proc_root, gaps);
        }
        // Checked recently (the agent) and the same shape since: reuse, do
        // not stop or read it again. A process that gains JIT code or
        // RandomX-sized memory (a miner past its set-up) is checked anew.
        let key = (t.facts.pid, t.start_ticks);
        let shape = candidates::shape(&t.facts);
        let recent = checked.get(&key);
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
        if opts.ptrace && !rounding_reused {
            sample_rounding(t, opts, cache, checked, shape, gaps);
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
            if let Some(scan) = scan_memory(t, &opts.proc_root, sigs, &budget, gaps) {
                memory_left = memory_left.saturating_sub(scan.bytes_scanned);
                checked.entry(key).or_default().memory = Some(Checked::now(shape, scan.clone()));
                t.facts.memory_scan = Some(scan);
            }
        }
    }
}

/// Samples the rounding mode of a candidate's threads.
fn sample_rounding(
    t: &mut Watched,
    opts: &Options,
    cache: &BinaryCache<'_, '_>,
    checked: &mut HashMap<(i32, u64), RecentChecks>,
    shape: candidates::Shape,
    gaps: &mut CoverageLog,
) {
    // Only a process that used some CPU can be a candidate: look up its
    // binaries' matches for those alone.
    let randomx_code = t.facts.cpu.percent >= candidates::SHAPED_PROCESS_PERCENT && {
        let ids = t.facts.exe_binary.iter().chain(&t.facts.library_binaries);
        cache.has_category(ids, "randomx")
    };
    let Some(plan) = candidates::fpu_plan(&t.facts, !opts.pids.is_empty(), randomx_code) else {
        return;
    };
    let how = match plan.pace {
        candidates::Pace::Busy => fpu::SampleOptions::default(),
        candidates::Pace::LowDuty => fpu::SampleOptions::low_duty(),
    };
    let facts = fpu::sample(&opts.proc_root, t.facts.pid, &plan.tids, &how);
    if let Some(why) = &facts.refused {
        gaps.inaccessible.insert(t.facts.pid);
        gaps.note(Some(t.facts.pid), "ptrace (FPU sampling)", why.clone());
    }
    let key = (t.facts.pid, t.start_ticks);
    checked.entry(key).or_default().rounding = Some(Checked::now(shape, facts.clone()));
    t.facts.fpu = Some(facts);
}

/// Scans a candidate's memory with the rules, within `budget`.
fn scan_memory(
    t: &Watched,
    proc_root: &Path,
    sigs: &Signatures,
    budget: &memscan::Budget,
    gaps: &mut CoverageLog,
) -> Option<memscan::MemoryScan> {
    let maps: Vec<MemoryMap> = match super::procread::maps(&t.process) {
        Ok((maps, _)) => maps,
        Err(e) => {
            gaps.record(Some(t.facts.pid), "maps (memory scan)", &e);
            return None;
        }
    };
    let pid = t.facts.pid;
    match memscan::scan(
        proc_root,
        pid,
        t.facts.exe.as_deref(),
        &maps,
        sigs.rules(),
        budget,
    ) {
        Ok(scan) => Some(scan),
        Err(e) => {
            gaps.io(pid, "memory scan", &e);
            None
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
}
