//! The Linux x86-64 backend: one ptrace attach per sample, on a dedicated
//! tracer thread (see the module docs of `observe::fpu`).

use super::*;
use std::io;
use std::path::PathBuf;
use std::time::Instant;

pub(super) use crate::sys::ptrace;
use crate::sys::{ptrace_mxcsr as read_mxcsr, ptrace_syscall};

const PTRACE_DETACH: u32 = 17;
const PTRACE_SEIZE: u32 = 0x4206;
pub(super) const PTRACE_INTERRUPT: u32 = 0x4207;
const PTRACE_EVENT_STOP: i32 = 128;
/// How long a guard waits for a stop before it detaches.
const DROP_WAIT: Duration = Duration::from_millis(50);
/// How long [`wait_stop`] spins before it sleeps between polls.
const SPIN: Duration = Duration::from_micros(500);

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// What a bounded wait for a ptrace-stop saw.
enum Waited {
    /// In a ptrace-stop: `event` is `status >> 16` (0 for a
    /// signal-delivery-stop, `PTRACE_EVENT_STOP` for interrupt and
    /// group stops).
    Stopped {
        sig: i32,
        event: i32,
    },
    /// Exited or killed (reaped by our wait), or no longer our tracee.
    Gone(String),
    Timeout,
    Failed(io::Error),
}

/// Polls `waitpid(tid, __WALL | WNOHANG)` until a stop or exit is
/// reported or `deadline` passes. Spins with `sched_yield` for the first
/// [`SPIN`] (a stop takes microseconds; a yield lets a tracee that shares
/// our core run into its stop, and sleeping instead would let a busy
/// core keep us off it for a scheduler tick while the tracee is already
/// stopped), then sleeps 50 µs doubling to 1 ms.
fn wait_stop(tid: i32, deadline: Instant) -> Waited {
    let start = Instant::now();
    let mut nap = Duration::from_micros(50);
    loop {
        match crate::sys::waitpid_nohang(tid) {
            Ok(Some(status)) => {
                if libc::WIFSTOPPED(status) {
                    return Waited::Stopped {
                        sig: libc::WSTOPSIG(status),
                        event: (status >> 16) & 0xff,
                    };
                }
                if libc::WIFEXITED(status) {
                    return Waited::Gone(format!("exited (status {})", libc::WEXITSTATUS(status)));
                }
                if libc::WIFSIGNALED(status) {
                    return Waited::Gone(format!("killed by signal {}", libc::WTERMSIG(status)));
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => match errno(&e) {
                libc::EINTR => continue,
                libc::ECHILD => return Waited::Gone("exited (no longer traced)".to_string()),
                _ => return Waited::Failed(e),
            },
        }
        if Instant::now() >= deadline {
            return Waited::Timeout;
        }
        if start.elapsed() < SPIN {
            std::thread::yield_now();
        } else {
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }
}

/// The signal a detach from this stop must re-inject: the pending signal
/// of a signal-delivery-stop, none for interrupt and group stops.
fn pending_signal(sig: i32, event: i32) -> i32 {
    if event == 0 { sig } else { 0 }
}

#[derive(Clone, Copy, PartialEq)]
enum Hold {
    /// Seized, not known to be stopped.
    Running,
    /// In a ptrace-stop we have waited for.
    Stopped { inject: i32 },
    /// Detached, or gone.
    Released,
}

/// A seized thread. Dropping it detaches it, stopping it first if needed.
pub(super) struct Attached {
    tid: i32,
    hold: Hold,
}

impl Attached {
    pub(super) fn seize(tid: i32) -> io::Result<Self> {
        ptrace(PTRACE_SEIZE, tid, 0)?;
        Ok(Self {
            tid,
            hold: Hold::Running,
        })
    }

    /// Detaches a stopped thread, re-injecting its pending signal.
    fn detach(&mut self) -> io::Result<()> {
        let inject = match self.hold {
            Hold::Stopped { inject } => inject,
            Hold::Running => 0,
            Hold::Released => return Ok(()),
        };
        let signal = usize::try_from(inject).unwrap_or(0);
        ptrace(PTRACE_DETACH, self.tid, signal)?;
        self.hold = Hold::Released;
        Ok(())
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        if self.hold == Hold::Released {
            return;
        }
        // Fails only if the thread was killed while stopped; then it
        // exits, which the wait below reaps.
        if matches!(self.hold, Hold::Stopped { .. }) && self.detach().is_ok() {
            return;
        }
        // A running tracee cannot be detached: stop it first.
        let _ = ptrace(PTRACE_INTERRUPT, self.tid, 0);
        match wait_stop(self.tid, Instant::now() + DROP_WAIT) {
            Waited::Stopped { sig, event } => {
                self.hold = Hold::Stopped {
                    inject: pending_signal(sig, event),
                };
                let _ = self.detach();
            }
            Waited::Gone(_) => self.hold = Hold::Released,
            // No stop reported. Detaching works if it is stopped all the
            // same; if it still runs (uninterruptible sleep), the kernel
            // detaches it, and drops the pending interrupt, when the
            // sampling thread exits.
            Waited::Timeout | Waited::Failed(_) => {
                if ptrace(PTRACE_DETACH, self.tid, 0).is_ok() {
                    self.hold = Hold::Released;
                }
            }
        }
    }
}

pub(super) struct Taken {
    pub(super) mode: u8,
    /// It stopped inside a system call that waits (a sleep, a futex, a
    /// poll): at rest between bursts of work, or woken and not yet back at
    /// its own code. Its rounding mode is what its code left when it went to
    /// rest, not what it computes with.
    waiting: bool,
    stop_us: u64,
    /// The signal of a group-stop the thread was found in.
    group_stop: Option<i32>,
    /// The signal of a signal-delivery-stop the sample was taken at,
    /// passed on by the detach.
    pub(super) relayed: Option<i32>,
}

pub(super) enum Fail {
    /// EPERM from PTRACE_SEIZE.
    Refused(io::Error),
    /// The thread is gone.
    Gone(String),
    Other(String),
}

fn gone_or(e: &io::Error, what: &str) -> Fail {
    if errno(e) == libc::ESRCH {
        Fail::Gone("exited".to_string())
    } else {
        Fail::Other(format!("{what}: {e}"))
    }
}

/// One sample of one thread: seize, interrupt, wait, read, detach.
fn sample_once(tid: i32, timeout: Duration) -> Result<Taken, Fail> {
    let mut att = Attached::seize(tid).map_err(|e| match errno(&e) {
        libc::EPERM => Fail::Refused(e),
        _ => gone_or(&e, "PTRACE_SEIZE"),
    })?;
    take(&mut att, timeout)
}

/// Interrupts a seized thread, reads its MXCSR at the first stop and
/// detaches it.
pub(super) fn take(att: &mut Attached, timeout: Duration) -> Result<Taken, Fail> {
    let tid = att.tid;
    let t0 = Instant::now();
    ptrace(PTRACE_INTERRUPT, tid, 0).map_err(|e| gone_or(&e, "PTRACE_INTERRUPT"))?;
    match wait_stop(tid, t0 + timeout) {
        Waited::Stopped { sig, event } => {
            let inject = pending_signal(sig, event);
            att.hold = Hold::Stopped { inject };
            let mxcsr = read_mxcsr(tid);
            // Unreadable: taken as at rest (only a thread in short bursts
            // then counts as at work).
            let waiting = ptrace_syscall(tid).map_or(true, |nr| nr.is_some_and(is_wait));
            // Timed before the detach: once it wakes the thread, the
            // thread may preempt us before we could read the clock.
            let stop_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
            att.detach().map_err(|e| gone_or(&e, "PTRACE_DETACH"))?;
            let mxcsr = mxcsr.map_err(|e| gone_or(&e, "PTRACE_GETFPREGS"))?;
            Ok(Taken {
                mode: rounding_mode(mxcsr),
                waiting,
                stop_us,
                group_stop: (event == PTRACE_EVENT_STOP && sig != libc::SIGTRAP).then_some(sig),
                relayed: (inject != 0).then_some(inject),
            })
        }
        Waited::Gone(why) => {
            att.hold = Hold::Released;
            Err(Fail::Gone(why))
        }
        Waited::Timeout => Err(Fail::Other(format!(
            "did not stop within {} ms",
            millis(timeout)
        ))),
        Waited::Failed(e) => Err(Fail::Other(format!("waitpid: {e}"))),
    }
}

fn read_tracer_pid(status: &Path) -> io::Result<i32> {
    let text = crate::observe::procread::text_file(status, 1 << 20)?;
    parse_tracer_pid(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no TracerPid line"))
}

fn read_state(task: &Path) -> Option<char> {
    parse_stat_state(&crate::observe::procread::text_file(&task.join("stat"), 64 << 10).ok()?)
}

/// A thread's CPU time so far.
#[derive(Clone, Copy)]
struct CpuTime {
    /// Time on a CPU, nanoseconds.
    run_ns: u64,
    /// Time spent runnable, waiting for a CPU, nanoseconds (0 when unknown).
    wait_ns: u64,
    /// Times it was switched onto a CPU (0 when unknown).
    slices: u64,
    /// Growth of `run_ns` that counts as having run: [`RAN_NS`], or one
    /// clock tick when only `stat` could be read.
    ran_threshold: u64,
}

/// From `schedstat` (nanoseconds: on CPU, waiting, timeslices), else
/// from `stat`'s utime + stime in clock ticks.
fn read_cpu_time(task: &Path) -> Option<CpuTime> {
    if let Ok(text) = std::fs::read_to_string(task.join("schedstat")) {
        let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
        if let (Some(Some(run_ns)), Some(Some(wait_ns))) = (f.next(), f.next()) {
            return Some(CpuTime {
                run_ns,
                wait_ns,
                slices: f.next().flatten().unwrap_or(0),
                ran_threshold: RAN_NS,
            });
        }
    }
    let stat = crate::observe::procread::text_file(&task.join("stat"), 64 << 10).ok()?;
    let ticks = parse_stat_cpu_ticks(&stat)?;
    let tick_ns = 1_000_000_000 / procfs::ticks_per_second().max(1);
    Some(CpuTime {
        run_ns: ticks.saturating_mul(tick_ns),
        wait_ns: 0,
        slices: 0,
        ran_threshold: tick_ns,
    })
}

fn is_dead(state: Option<char>) -> bool {
    matches!(state, None | Some('Z' | 'X' | 'x'))
}

/// Why a thread could not be attached.
enum Refusal {
    Gone,
    Traced(i32),
    Refused(String),
}

/// EPERM means: the thread is exiting (zombie), already traced, or the
/// kernel's policy (Yama, an LSM, seccomp on us, missing capability).
fn explain_refusal(proc_dir: &Path, task: &Path, e: &io::Error) -> Refusal {
    if is_dead(read_state(task)) {
        return Refusal::Gone;
    }
    match read_tracer_pid(&task.join("status")) {
        Ok(t) if t != 0 => return Refusal::Traced(t),
        Err(_) => return Refusal::Gone,
        Ok(_) => {}
    }
    let yama = proc_dir
        .parent()
        .map(|root| root.join("sys/kernel/yama/ptrace_scope"))
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|s| format!("Yama ptrace_scope {}", s.trim()))
        .unwrap_or_else(|| "no Yama".to_string());
    Refusal::Refused(format!(
        "ptrace refused: {e} ({yama}; else an LSM, seccomp or a missing CAP_SYS_PTRACE)"
    ))
}

#[derive(Default)]
struct SamplingResult {
    threads: Vec<ThreadFpu>,
    traced_by: Option<i32>,
    refused: Option<String>,
    max_stop_us: u64,
    budget_exceeded: bool,
    signals_relayed: u32,
}

impl SamplingResult {
    fn traced(&mut self, tracer: i32) -> String {
        let why = format!("already traced by pid {tracer}");
        self.traced_by.get_or_insert(tracer);
        self.refused.get_or_insert_with(|| why.clone());
        why
    }
}

pub(super) fn sample(proc_root: &Path, pid: i32, tids: &[i32], opts: &SampleOptions) -> FpuFacts {
    let started = Instant::now();
    let mut facts = FpuFacts::default();
    let proc_dir = proc_root.join(pid.to_string());
    let status = proc_dir.join("status");
    match read_tracer_pid(&status) {
        Ok(0) => {}
        Ok(tracer) => {
            facts.traced_by = Some(tracer);
            facts.refused = Some(format!("already traced by pid {tracer}"));
        }
        Err(e) => facts.error = Some(format!("cannot read {}: {e}", status.display())),
    }
    if u32::try_from(pid).ok() == Some(std::process::id()) {
        facts.refused = Some("cannot sample its own process".to_string());
    }
    if facts.refused.is_none() && facts.error.is_none() {
        let chosen = choose(tids, opts.max_threads);
        let joined = std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("minerwatch-fpu".to_string())
                .spawn_scoped(s, || run(&proc_dir, &chosen, opts, started))
                .map(|h| h.join())
        });
        match joined {
            Ok(Ok(out)) => {
                facts.threads = out.threads;
                facts.traced_by = out.traced_by;
                facts.refused = out.refused;
                facts.max_stop_us = out.max_stop_us;
                facts.budget_exceeded = out.budget_exceeded;
                facts.signals_relayed = out.signals_relayed;
            }
            Ok(Err(_)) => facts.error = Some("sampling thread panicked".to_string()),
            Err(e) => facts.error = Some(format!("cannot start sampling thread: {e}")),
        }
    }
    facts.summarize();
    facts.elapsed_ms = millis(started.elapsed());
    facts
}

/// A thread being sampled: its samples so far, where it lives in
/// procfs, and its CPU time at the previous look.
struct SampledThread {
    fpu: ThreadFpu,
    task: PathBuf,
    last: Option<CpuTime>,
    /// Samples in a row taken while it had not run.
    idle_run: u32,
}

/// A thread not seen running in this many samples in a row is left
/// alone: it is idle, and more stops would tell nothing.
const IDLE_RUN: u32 = 8;

impl SampledThread {
    /// Whether it still wants samples.
    fn wants(&self, opts: &SampleOptions) -> bool {
        self.fpu.error.is_none() && self.fpu.ran_samples() < opts.samples as usize
    }

    /// Looks at its CPU time and state just before a sample: how it ran
    /// since the previous look, and if it did not, what it was doing.
    fn look(&mut self) -> Ran {
        let now = read_cpu_time(&self.task);
        let ran = match (self.last, now) {
            (Some(a), Some(b)) => {
                let run = b.run_ns.saturating_sub(a.run_ns);
                let slices = b.slices.saturating_sub(a.slices);
                if run < b.ran_threshold {
                    Ran::No
                } else if slices > 0 && run / slices < SHORTER_THAN_A_HASH_NS {
                    Ran::ShortBursts
                } else {
                    Ran::Yes
                }
            }
            _ => Ran::No,
        };
        if ran == Ran::No {
            let waited = matches!((self.last, now), (Some(a), Some(b)) if b.wait_ns > a.wait_ns);
            let why = match read_state(&self.task) {
                Some('T' | 't') => "stopped",
                Some('R') if waited => "waiting for a CPU (throttled or preempted)",
                Some('R') => "runnable but not run",
                Some(_) => "sleeping",
                None => "gone",
            };
            self.idle(why);
        }
        if now.is_some() {
            self.last = now;
        }
        ran
    }

    /// Records, once, what it was doing at a sample that did not count.
    fn idle(&mut self, why: &str) {
        if !self.fpu.idle.iter().any(|i| i == why) {
            self.fpu.idle.push(why.to_string());
        }
    }
}

/// How a thread ran between two looks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// Not (less than its `ran_threshold` of CPU time).
    No,
    /// In runs longer, on average, than [`SHORTER_THAN_A_HASH_NS`].
    Yes,
    /// In runs all too short, on average, to hold one RandomX hash, which
    /// runs through without a system call: a server answering requests.
    ShortBursts,
}

/// A run on a CPU, on average, below which a thread cannot be computing
/// RandomX hashes between its rests: the fastest CPUs take about 0.8 ms a
/// hash with the full dataset, and a light-mode hash takes ten times that.
const SHORTER_THAN_A_HASH_NS: u64 = 300_000;

/// Why a sample of a thread that ran since the previous look still does
/// not count: it stopped in a system call that waits, at rest, after runs
/// long enough to hash in. A miner throttled to bursts sleeps between them,
/// and RandomX restores round-to-nearest after every hash: sampled there, it
/// looks benign.
const AT_REST: &str = "at rest in a system call that waits (between bursts of work)";

/// System calls that wait (x86-64 numbers): a thread stopped in one is at
/// rest, even when it was woken and waits for a CPU to return. Others (a
/// read, a send) are work done for it: a busy server's threads spend much
/// of their time there, and their samples count.
fn is_wait(nr: i64) -> bool {
    const WAITS: [libc::c_long; 17] = [
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_futex,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_select,
        libc::SYS_pselect6,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_sched_yield,
        libc::SYS_pause,
        libc::SYS_rt_sigsuspend,
        libc::SYS_rt_sigtimedwait,
        libc::SYS_wait4,
        libc::SYS_waitid,
        libc::SYS_io_getevents,
    ];
    WAITS.contains(&nr)
}

/// The sampling proper; runs on its own OS thread, the tracer.
fn run(proc_dir: &Path, tids: &[i32], opts: &SampleOptions, started: Instant) -> SamplingResult {
    let mut out = SamplingResult::default();
    let mut threads: Vec<SampledThread> = Vec::new();
    for &tid in tids {
        let task = proc_dir.join("task").join(tid.to_string());
        let state = read_state(&task);
        let error = if !task.exists() {
            Some("not a thread of this process".to_string())
        } else if is_dead(state) {
            Some("exited".to_string())
        } else if matches!(state, Some('T' | 't')) {
            Some("stopped: not sampled".to_string())
        } else {
            match read_tracer_pid(&task.join("status")) {
                Ok(0) => None,
                Ok(tracer) => Some(out.traced(tracer)),
                Err(_) => Some("exited".to_string()),
            }
        };
        // The first look: the first sample counts if it ran since.
        let last = read_cpu_time(&task);
        let fpu = ThreadFpu {
            tid,
            error,
            ..ThreadFpu::default()
        };
        threads.push(SampledThread {
            fpu,
            task,
            last,
            idle_run: 0,
        });
    }

    let rounds = opts.max_rounds.max(opts.samples);
    'rounds: for _ in 0..rounds {
        if !threads.iter().any(|t| t.wants(opts)) {
            break;
        }
        let left = opts.budget.saturating_sub(started.elapsed());
        if left.is_zero() {
            out.budget_exceeded = true;
            break;
        }
        std::thread::sleep(opts.interval.min(left));
        for t in threads.iter_mut().filter(|t| t.wants(opts)) {
            if started.elapsed() >= opts.budget {
                out.budget_exceeded = true;
                break 'rounds;
            }
            let ran = t.look();
            t.idle_run = if ran == Ran::No { t.idle_run + 1 } else { 0 };
            let tid = t.fpu.tid;
            t.fpu.error = match sample_once(tid, opts.stop_timeout) {
                Ok(taken) => {
                    t.fpu.modes.push(taken.mode);
                    // At rest in a wait, it shows the mode it computes
                    // with only if its runs were too short to hash in.
                    let at_work = match ran {
                        Ran::No => false,
                        Ran::Yes => !taken.waiting,
                        Ran::ShortBursts => true,
                    };
                    if ran == Ran::Yes && taken.waiting {
                        t.idle(AT_REST);
                    }
                    t.fpu.ran.push(at_work && taken.group_stop.is_none());
                    out.max_stop_us = out.max_stop_us.max(taken.stop_us);
                    out.signals_relayed += u32::from(taken.relayed.is_some());
                    match taken.group_stop {
                        Some(sig) => Some(format!("group-stopped by signal {sig}: left stopped")),
                        None if t.idle_run >= IDLE_RUN => Some(format!(
                            "not seen running in {IDLE_RUN} samples in a row: left alone"
                        )),
                        None => None,
                    }
                }
                Err(Fail::Gone(why) | Fail::Other(why)) => Some(why),
                Err(Fail::Refused(e)) => match explain_refusal(proc_dir, &t.task, &e) {
                    Refusal::Gone => Some("exited".to_string()),
                    Refusal::Traced(tracer) => Some(out.traced(tracer)),
                    Refusal::Refused(why) => {
                        t.fpu.error = Some(why.clone());
                        out.refused = Some(why);
                        break 'rounds;
                    }
                },
            };
        }
        if opts.until_verdict && distinct_modes(threads.iter().map(|t| &t.fpu)) >= 2 {
            break;
        }
    }
    out.threads = threads.into_iter().map(|t| t.fpu).collect();
    out
}
