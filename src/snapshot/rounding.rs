//! Rounding-mode samples of a process's busy threads, as `observe::fpu`
//! takes them with ptrace (`PTRACE_INTERRUPT`, `PTRACE_GETFPREGS`: MXCSR
//! bits 13–14), with each thread's CPU time from
//! `/proc/PID/task/TID/schedstat` before every sample.

use serde::{Deserialize, Serialize};

/// FPU rounding-mode samples of one process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FpuFacts {
    /// Per sampled thread.
    pub threads: Vec<ThreadFpu>,
    /// Samples read in all.
    pub samples: u32,
    /// Samples whose rounding mode was not the default (round to nearest).
    pub non_default: u32,
    /// Distinct rounding modes seen (0 nearest, 1 down, 2 up, 3 toward zero), sorted.
    pub modes: Vec<u8>,
    /// Set when another process already traces it (from TracerPid in status).
    pub traced_by: Option<i32>,
    /// Why attaching was refused (EPERM: Yama, seccomp, already traced), if it was.
    pub refused: Option<String>,
    /// Longest time one thread was held stopped for one sample, microseconds.
    pub max_stop_us: u64,
    /// Wall time the whole sampling of this process took, milliseconds.
    pub elapsed_ms: u64,
    /// Sampling ended because `budget` ran out before all rounds were done.
    pub budget_exceeded: bool,
    /// Signals that arrived while a thread was attached: the sample was taken
    /// at the signal-delivery-stop and the detach passed the signal on.
    pub signals_relayed: u32,
    /// A failure that is not a refusal: status unreadable (process gone),
    /// sampling thread could not start or panicked.
    pub error: Option<String>,
}

impl FpuFacts {
    /// Share of samples in a non-default rounding mode; `None` without samples.
    pub fn non_default_share(&self) -> Option<f64> {
        (self.samples > 0).then(|| f64::from(self.non_default) / f64::from(self.samples))
    }

    /// Recomputes `samples`, `non_default` and `modes` from `threads`.
    pub fn summarize(&mut self) {
        let all = || self.threads.iter().flat_map(|t| t.modes.iter().copied());
        self.samples = u32::try_from(all().count()).unwrap_or(u32::MAX);
        self.non_default = u32::try_from(all().filter(|&m| m != 0).count()).unwrap_or(u32::MAX);
        let mut modes: Vec<u8> = all().collect();
        modes.sort_unstable();
        modes.dedup();
        self.modes = modes;
    }
}

/// Rounding-mode samples of one thread.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadFpu {
    /// The thread sampled (`/proc/PID/task/TID`).
    pub tid: i32,
    /// Rounding mode of each sample, in order.
    pub modes: Vec<u8>,
    /// For each sample, whether it caught the thread at work: it had run (at
    /// least [`RAN_NS`] of CPU time, from `/proc/PID/task/TID/schedstat`)
    /// since the previous look, and the stop did not find it at rest in a
    /// system call that waits (a sleep, a futex, a poll) after runs long
    /// enough to hold a RandomX hash. A sample of a thread that did not run
    /// repeats its last state, and one of a thread asleep between bursts of
    /// hashing shows it at rest: neither proves anything. Snapshots from
    /// older builds recorded only the first condition, or nothing (empty).
    #[serde(default)]
    pub ran: Vec<bool>,
    /// What the thread was doing at the samples that did not catch it at
    /// work, each once: `sleeping`, `stopped`, `waiting for a CPU
    /// (throttled or preempted)`, `at rest in a system call that waits
    /// (between bursts of work)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub idle: Vec<String>,
    /// Why sampling this thread stopped early (exited, stopped, ...).
    pub error: Option<String>,
}

impl ThreadFpu {
    /// Samples taken while the thread ran.
    pub fn ran_samples(&self) -> usize {
        self.ran.iter().filter(|r| **r).count()
    }
}

/// CPU time a thread must have used since the previous look for its next
/// sample to count as taken while it ran: far more than the microseconds
/// a ptrace stop itself costs it, far less than a busy thread runs between
/// two samples.
pub const RAN_NS: u64 = 1_000_000;
