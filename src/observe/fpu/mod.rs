//! FPU rounding-mode sampling: the RandomX behaviour a miner cannot shed
//! (SIGNALS.md §1).
//!
//! RandomX's `CFROUND` instruction rewrites the SSE rounding mode (MXCSR bits
//! 13–14) in every program, so a hashing thread is caught in a non-default
//! mode most of the time (a real RandomX VM: ≥ 2 distinct modes in 5 samples,
//! non-default in 60–74 % of samples). Benign FP code (xz, OpenSSL, Python,
//! stress-ng) stays in mode 0, round to nearest.
//!
//! One sample of one thread (x86-64 Linux only): `PTRACE_SEIZE` (no options:
//! never `PTRACE_O_EXITKILL`, we must never kill the target),
//! `PTRACE_INTERRUPT`, a bounded `waitpid(tid, __WALL | WNOHANG)` poll for
//! the stop, `PTRACE_GETFPREGS`, `PTRACE_DETACH`. A thread is attached only
//! for the microseconds of one sample and never between samples, so a signal
//! that arrives while we sleep between rounds is never held up by us. If the
//! stop that arrives is a signal-delivery-stop rather than the interrupt
//! stop, the sample is taken there (the thread's user FPU state is intact
//! before the handler is set up) and the signal is re-injected by the
//! detach. A group-stop (SIGSTOP/SIGTSTP…) is sampled once and left in
//! place: detaching keeps the thread stopped as its sender wanted, and the
//! thread is not sampled again.
//!
//! Threads: ptrace binds a tracee to the OS thread that attached it. [`sample`]
//! therefore does all its ptrace work itself, on one dedicated short-lived OS
//! thread it spawns and joins, so callers may call it from any thread (but
//! should not sample the same process from two threads at once: the second
//! is refused as "already traced"). Every attach is held by a guard whose
//! `Drop` stops the thread if needed and detaches it with signal 0 (or the
//! pending signal), on errors and panics alike. The last resort is the
//! kernel: when the sampling thread exits, any tracee we still hold (one stuck
//! in uninterruptible sleep that could not be stopped in time) is detached
//! and any pending interrupt dropped.

use std::path::Path;
use std::time::Duration;

pub use crate::snapshot::{FpuFacts, RAN_NS, ThreadFpu};

/// How [`sample`] samples.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Samples wanted of each thread taken while it ran: a thread is sampled
    /// until it has this many (or the rounds or the budget run out).
    pub samples: u32,
    /// Rounds at most, each sampling once every thread that still needs
    /// samples; at least `samples`. More rounds than samples let a thread
    /// that runs a quarter of the time (a CPU quota) gather its samples.
    pub max_rounds: u32,
    /// Sleep between rounds (the first round comes one interval after a
    /// look at each thread's CPU time).
    pub interval: Duration,
    /// Threads sampled at most (the first ones of `tids`).
    pub max_threads: usize,
    /// No new sample is started once this much wall time has passed.
    pub budget: Duration,
    /// How long to wait for one thread to stop before giving up on it (a
    /// thread held back by a CPU quota stops only once it gets the CPU again).
    pub stop_timeout: Duration,
    /// End as soon as two distinct rounding modes were seen: the verdict
    /// needs no more, and the miner is stopped no more often than needed.
    pub until_verdict: bool,
}

impl Default for SampleOptions {
    /// For busy threads: 8 samples 30 ms apart, within 450 ms.
    fn default() -> Self {
        Self {
            samples: 8,
            max_rounds: 12,
            interval: Duration::from_millis(30),
            max_threads: 8,
            budget: Duration::from_millis(450),
            stop_timeout: Duration::from_millis(250),
            until_verdict: true,
        }
    }
}

impl SampleOptions {
    /// For threads that run only part of the time (throttled, held by a CPU
    /// quota, bursting): the same 8 samples, 40 ms apart, over up to 30
    /// rounds within 1.5 s, so that a thread running a quarter of the time
    /// is seen running often enough.
    pub fn low_duty() -> Self {
        Self {
            max_rounds: 30,
            interval: Duration::from_millis(40),
            budget: Duration::from_millis(1500),
            ..Self::default()
        }
    }
}

/// Rounding-mode field (bits 13–14) of an MXCSR value.
pub fn rounding_mode(mxcsr: u32) -> u8 {
    ((mxcsr >> 13) & 3) as u8
}

/// Samples the MXCSR rounding mode of the given threads of process `pid`
/// (the caller picks the busy threads; the first `max_threads` distinct ones
/// are used). `proc_root` is usually "/proc".
///
/// `proc_root` is only read (TracerPid, thread states); the threads are
/// traced by their real tids. Blocks for about `samples × interval` (less
/// with `until_verdict`, more for threads that do not run between samples),
/// never much past `budget`: at worst one more `stop_timeout` + 50 ms for a
/// thread that will not stop. Never kills, and never leaves a thread stopped
/// or attached. Needs CAP_SYS_PTRACE (or same uid and a permissive Yama
/// scope). May be called from any thread: see the module docs.
pub fn sample(proc_root: &Path, pid: i32, tids: &[i32], opts: &SampleOptions) -> FpuFacts {
    imp::sample(proc_root, pid, tids, opts)
}

/// `TracerPid:` from the text of a `status` file.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code)
)]
pub(crate) fn parse_tracer_pid(status: &str) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("TracerPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The state letter from the text of a `stat` file (after the `)` of comm).
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code)
)]
pub(crate) fn parse_stat_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// utime + stime (clock ticks) from the text of a `stat` file.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code)
)]
pub(crate) fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // After ") ": state is field 3, utime and stime are fields 14 and 15.
    let mut f = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime.saturating_add(stime))
}

/// Distinct rounding modes among the samples of `threads`.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code)
)]
fn distinct_modes<'a>(threads: impl Iterator<Item = &'a ThreadFpu>) -> usize {
    let mut seen = [false; 4];
    for m in threads.flat_map(|t| t.modes.iter()) {
        if let Some(s) = seen.get_mut(usize::from(*m)) {
            *s = true;
        }
    }
    seen.iter().filter(|s| **s).count()
}

/// Distinct positive tids in order, at most `max`.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code)
)]
fn choose(tids: &[i32], max: usize) -> Vec<i32> {
    let mut chosen: Vec<i32> = Vec::new();
    for &t in tids {
        if chosen.len() >= max {
            break;
        }
        if t > 0 && !chosen.contains(&t) {
            chosen.push(t);
        }
    }
    chosen
}

#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64")),
    allow(dead_code)
)]
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
#[path = "other.rs"]
mod imp;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "ptrace.rs"]
mod imp;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tx\nState:\tR (running)\nTracerPid:\t4242\nUid:\t0\n";
        assert_eq!(parse_tracer_pid(status), Some(4242));
        assert_eq!(parse_tracer_pid("Name:\tx\n"), None);
        assert_eq!(parse_stat_state("12 (a) b) c) t 1 2"), Some('t'));
        assert_eq!(parse_stat_state("12 (xz) R 1 2"), Some('R'));
        assert_eq!(parse_stat_state("garbage"), None);
        let stat = "12 (a) b) c) R 1 12 12 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 1 0 5";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(267));
        assert_eq!(parse_stat_cpu_ticks("12 (x) R 1"), None);
    }

    #[test]
    fn chooses_distinct_tids_up_to_max() {
        assert_eq!(choose(&[5, 5, 0, -1, 6, 7, 8], 3), vec![5, 6, 7]);
        assert_eq!(choose(&[], 8), Vec::<i32>::new());
    }

    #[test]
    fn rounding_mode_bits() {
        assert_eq!(rounding_mode(0x1f80), 0);
        assert_eq!(rounding_mode(0x1f80 | 0x2000), 1);
        assert_eq!(rounding_mode(0x1f80 | 0x4000), 2);
        assert_eq!(rounding_mode(0x7f80), 3);
    }

    #[test]
    fn summarizes_and_round_trips() -> Result<(), serde_json::Error> {
        let mut f = FpuFacts {
            threads: vec![
                ThreadFpu {
                    tid: 1,
                    modes: vec![0, 3, 3],
                    error: None,
                    ..ThreadFpu::default()
                },
                ThreadFpu {
                    tid: 2,
                    modes: vec![1],
                    error: Some("exited".into()),
                    ..ThreadFpu::default()
                },
            ],
            ..FpuFacts::default()
        };
        f.summarize();
        assert_eq!((f.samples, f.non_default), (4, 3));
        assert_eq!(f.modes, vec![0, 1, 3]);
        assert_eq!(f.non_default_share(), Some(0.75));
        let back: FpuFacts = serde_json::from_str(&serde_json::to_string(&f)?)?;
        assert_eq!(back, f);
        Ok(())
    }

    #[test]
    fn missing_process_is_an_error_not_a_panic() {
        let f = sample(
            Path::new("/nonexistent-proc"),
            1,
            &[1],
            &SampleOptions::default(),
        );
        assert!(f.error.is_some() || f.refused.is_some());
        assert_eq!(f.samples, 0);
    }
}

#[cfg(all(test, target_os = "linux", target_arch = "x86_64"))]
mod live_tests;
