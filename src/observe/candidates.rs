//! Which processes the expensive checks look at, decided from what the
//! window showed: pure functions, every threshold in this file.
//!
//! Three checks cost more than reading `/proc`: scanning the mapped
//! libraries, reading process memory, and stopping threads for their
//! rounding mode. Each runs only on candidates:
//! - libraries: busy, or with JIT regions or large anonymous memory;
//! - memory: busy, RandomX-sized memory, or no binary on disk;
//! - rounding mode (ptrace): busy and RandomX-shaped, able to run RandomX,
//!   hiding, or named with `--pid`; a RandomX-shaped or RandomX-capable
//!   process is sampled even at a few percent of a core, because a miner
//!   held to a quarter of a core by a CPU quota or by bursts must still be
//!   caught at work, and a benign look-alike must still be cleared.
//!
//! Idle processes are never stopped.

use super::memory;
use crate::snapshot::{MemoryFacts, ProcessFacts};

/// CPU (percent of a core over the window) from which a process's libraries
/// and memory are scanned.
pub const SCAN_CPU_PERCENT: f64 = 10.0;
/// CPU from which any other candidate (hiding, `--pid`) is sampled.
pub const FPU_PROCESS_PERCENT: f64 = 15.0;
/// CPU from which one of its threads is sampled.
pub const FPU_THREAD_PERCENT: f64 = 10.0;
/// CPU from which a RandomX-shaped or RandomX-capable process is sampled.
pub const SHAPED_PROCESS_PERCENT: f64 = 2.0;
/// CPU from which one of its threads is sampled.
pub const SHAPED_THREAD_PERCENT: f64 = 1.0;
/// Below this, the busiest sampled thread runs only part of the time: it is
/// sampled at the slower, longer pace of [`Pace::LowDuty`].
pub const LOW_DUTY_PERCENT: f64 = 60.0;

/// How a candidate's threads are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Threads that run most of the time: a few hundred milliseconds.
    Busy,
    /// A thread that runs a fraction of the time: up to 1.5 s.
    LowDuty,
}

/// The threads to sample for their rounding mode, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpuPlan {
    /// Busiest first.
    pub tids: Vec<i32>,
    pub pace: Pace,
}

/// What of RandomX's shape a process's memory has: (JIT regions, a
/// RandomX-sized anonymous mapping). The agent checks a process anew when
/// this changes: a miner allocates its cache or dataset, and its JIT code
/// only once that is set up.
pub type Shape = (bool, bool);

/// The [`Shape`] of a process (nothing when its maps were not read).
pub fn shape(f: &ProcessFacts) -> Shape {
    f.memory
        .as_ref()
        .map_or((false, false), |m| (!m.exec_anon.is_empty(), rx_sized(m)))
}

/// Whether its memory has RandomX's shape: JIT regions or a RandomX-sized
/// anonymous mapping.
pub fn rx_shaped(m: &MemoryFacts) -> bool {
    !m.exec_anon.is_empty() || rx_sized(m)
}

/// Whether it holds an anonymous mapping of a RandomX dataset's or cache's size.
pub fn rx_sized(m: &MemoryFacts) -> bool {
    m.large_anon.iter().any(|r| memory::randomx_sized(r.size))
}

/// Its executable is deleted or lives only in memory (memfd).
pub fn exe_gone(f: &ProcessFacts) -> bool {
    f.exe
        .as_deref()
        .is_some_and(|e| e.ends_with(" (deleted)") || e.starts_with("/memfd:"))
}

/// Which threads of `f` to stop for their rounding mode, if any. `scoped`:
/// named with `--pid`; `randomx_code`: its executable or a library holds the
/// RandomX engine.
pub fn fpu_plan(f: &ProcessFacts, scoped: bool, randomx_code: bool) -> Option<FpuPlan> {
    if f.kernel_thread {
        return None;
    }
    let shaped = f.memory.as_ref().is_some_and(rx_shaped) || randomx_code;
    let hiding = exe_gone(f) || f.cmdline.first().is_some_and(|a| a.starts_with('['));
    let (process_min, thread_min) = if shaped {
        (SHAPED_PROCESS_PERCENT, SHAPED_THREAD_PERCENT)
    } else if hiding || scoped {
        (FPU_PROCESS_PERCENT, FPU_THREAD_PERCENT)
    } else {
        return None;
    };
    if f.cpu.percent < process_min {
        return None;
    }
    // Threads come busiest first.
    let tids: Vec<i32> = f
        .cpu
        .threads
        .iter()
        .filter(|t| t.percent >= thread_min)
        .map(|t| t.tid)
        .collect();
    let busiest = f.cpu.threads.first().map_or(0.0, |t| t.percent);
    let pace = if busiest < LOW_DUTY_PERCENT {
        Pace::LowDuty
    } else {
        Pace::Busy
    };
    (!tids.is_empty()).then_some(FpuPlan { tids, pace })
}

/// Worth reading the memory of: busy, RandomX-sized memory, or hiding its binary.
pub fn memory_candidate(f: &ProcessFacts) -> bool {
    if f.kernel_thread {
        return false;
    }
    let rx = f.memory.as_ref().is_some_and(rx_sized);
    f.cpu.percent >= SCAN_CPU_PERCENT || rx || exe_gone(f)
}

/// Worth scanning the mapped libraries of: busy, or with JIT regions or
/// large anonymous memory.
pub fn library_candidate(f: &ProcessFacts) -> bool {
    f.cpu.percent >= SCAN_CPU_PERCENT
        || f.memory
            .as_ref()
            .is_some_and(|m| !m.exec_anon.is_empty() || !m.large_anon.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{CpuFacts, Region, ThreadCpu};

    const MIB: u64 = 1024 * 1024;

    fn process(percent: f64, threads: &[(i32, f64)]) -> ProcessFacts {
        ProcessFacts {
            pid: 10,
            exe: Some("/usr/bin/app".into()),
            cmdline: vec!["app".into()],
            cpu: CpuFacts {
                percent,
                threads: threads
                    .iter()
                    .map(|&(tid, percent)| ThreadCpu {
                        tid,
                        name: "app".into(),
                        percent,
                    })
                    .collect(),
                ..CpuFacts::default()
            },
            memory: Some(MemoryFacts::default()),
            ..ProcessFacts::default()
        }
    }

    fn shaped(mut p: ProcessFacts) -> ProcessFacts {
        p.memory = Some(MemoryFacts {
            large_anon: vec![Region {
                start: "0x7f0000000000".into(),
                size: 258 * MIB,
                perms: "rw-p".into(),
                path: None,
            }],
            ..MemoryFacts::default()
        });
        p
    }

    #[test]
    fn an_ordinary_busy_process_is_not_stopped_unless_named() {
        let p = process(100.0, &[(10, 100.0)]);
        assert_eq!(fpu_plan(&p, false, false), None);
        let plan = fpu_plan(&p, true, false).expect("named with --pid");
        assert_eq!((plan.tids, plan.pace), (vec![10], Pace::Busy));
        // Named but nearly idle: nothing to see.
        assert_eq!(fpu_plan(&process(5.0, &[(10, 5.0)]), true, false), None);
    }

    #[test]
    fn randomx_shaped_or_capable_processes_are_sampled_at_low_cpu() {
        let p = shaped(process(4.0, &[(11, 3.5), (12, 0.5)]));
        let plan = fpu_plan(&p, false, false).expect("shaped");
        assert_eq!((plan.tids, plan.pace), (vec![11], Pace::LowDuty));
        let p = process(4.0, &[(11, 4.0)]);
        assert!(fpu_plan(&p, false, true).is_some(), "RandomX engine");
        // Idle is never touched, shaped or not.
        assert_eq!(
            fpu_plan(&shaped(process(1.0, &[(11, 1.0)])), true, true),
            None
        );
    }

    #[test]
    fn a_quota_limited_worker_gets_the_low_duty_pace() {
        let p = shaped(process(25.0, &[(20, 25.0)]));
        assert_eq!(
            fpu_plan(&p, false, false).map(|p| p.pace),
            Some(Pace::LowDuty)
        );
        let p = shaped(process(99.0, &[(20, 99.0)]));
        assert_eq!(fpu_plan(&p, false, false).map(|p| p.pace), Some(Pace::Busy));
    }

    #[test]
    fn hiding_processes_are_sampled_when_busy() {
        let mut p = process(30.0, &[(30, 30.0)]);
        p.exe = Some("/dev/shm/x (deleted)".into());
        assert!(fpu_plan(&p, false, false).is_some());
        p.exe = Some("/usr/bin/app".into());
        p.cmdline = vec!["[kworker/0:1]".into()];
        assert!(fpu_plan(&p, false, false).is_some());
        p.kernel_thread = true;
        assert_eq!(fpu_plan(&p, true, true), None);
    }

    #[test]
    fn memory_and_library_candidates() {
        assert!(memory_candidate(&process(10.0, &[])));
        assert!(!memory_candidate(&process(9.0, &[])));
        assert!(memory_candidate(&shaped(process(0.0, &[]))));
        let mut gone = process(0.0, &[]);
        gone.exe = Some("/memfd:x (deleted)".into());
        assert!(memory_candidate(&gone));
        assert!(!library_candidate(&gone));
        assert!(library_candidate(&shaped(process(0.0, &[]))));
    }
}
