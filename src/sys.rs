//! The system calls no maintained crate makes for us, each behind a safe
//! function with its safety argument. Everything else goes through
//! `rustix` (openat walks, getdents64, `*at` calls, kill and getpgid
//! probes, statfs, rlimits, priorities, uname), `signal-hook` (signal
//! handlers) and `sd-notify` (systemd's notify protocol).
//!
//! Why these stay raw:
//! - **ptrace and waitpid**: rustix has no ptrace. nix has `seize`,
//!   `interrupt`, `detach`, `getregset` and `waitpid`, but its `Signal` enum
//!   has no real-time signals: its `waitpid` fails with EINVAL on a tracee
//!   stopped by `SIGRTMIN+n` (and the status is then consumed), and its
//!   `detach` cannot re-inject one. A tracer of arbitrary processes must pass
//!   every signal through untouched (the fpu live tests relay `SIGRTMIN`), so
//!   the sampler keeps four plain calls of its own: [`ptrace`],
//!   [`ptrace_mxcsr`], [`waitpid_nohang`].
//! - **getrusage**: neither std nor rustix has it; nix would be a second
//!   syscall crate for one call.
//! - **ioprio_set**: no crate wraps it.

use std::io;
use std::time::Duration;

/// A whole-host scan holds a directory handle per process; lift the soft
/// limit on open files to the hard one so thousands of processes fit.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (lim.current, lim.maximum)
        && cur < max
    {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        );
    }
}

/// Lowers our CPU and I/O priority: nice 10 and the idle I/O class.
pub fn be_nice() {
    let _ = rustix::process::setpriority_process(None, 10);
    // ioprio_set(IOPRIO_WHO_PROCESS, 0 = ourselves, IOPRIO_CLASS_IDLE << 13)
    // SAFETY: three integer arguments, no memory passed to the kernel.
    unsafe {
        libc::syscall(libc::SYS_ioprio_set, 1, 0, 3 << 13);
    }
}

/// Our own user + system CPU time (`getrusage(RUSAGE_SELF)`).
pub fn self_cpu_time() -> Duration {
    // SAFETY: rusage is plain integers; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A ptrace request whose `addr` is unused and whose `data` is an integer
/// (SEIZE's option mask, DETACH's signal to deliver, INTERRUPT's 0).
pub fn ptrace(request: u32, tid: i32, data: usize) -> io::Result<()> {
    // SAFETY: SEIZE, INTERRUPT and DETACH read no memory through addr or
    // data: addr is ignored, data is an option mask or signal number.
    let r = unsafe {
        libc::ptrace(
            request as _,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            data as *mut libc::c_void,
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The register set of a ptrace-stopped thread that `request` copies out
/// (one of `Regs`'s implementors, each the kernel's layout for it).
#[cfg(target_arch = "x86_64")]
fn ptrace_regs<T: Regs>(tid: i32) -> io::Result<T> {
    // SAFETY: every `Regs` is a struct of plain integers: all-zero is valid.
    let mut regs: T = unsafe { std::mem::zeroed() };
    // SAFETY: T::REQUEST writes one T to `data`, which points to one we own.
    let r = unsafe {
        libc::ptrace(
            T::REQUEST as _,
            tid,
            std::ptr::null_mut::<libc::c_void>(),
            (&raw mut regs).cast::<libc::c_void>(),
        )
    };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(regs)
    }
}

/// A register set and the ptrace request that reads it.
#[cfg(target_arch = "x86_64")]
trait Regs {
    const REQUEST: u32;
}

#[cfg(target_arch = "x86_64")]
impl Regs for libc::user_fpregs_struct {
    const REQUEST: u32 = 14; // PTRACE_GETFPREGS
}

#[cfg(target_arch = "x86_64")]
impl Regs for libc::user_regs_struct {
    const REQUEST: u32 = 12; // PTRACE_GETREGS
}

/// MXCSR of a ptrace-stopped thread, by `PTRACE_GETFPREGS`.
#[cfg(target_arch = "x86_64")]
pub fn ptrace_mxcsr(tid: i32) -> io::Result<u32> {
    ptrace_regs::<libc::user_fpregs_struct>(tid).map(|r| r.mxcsr)
}

/// The system call a ptrace-stopped thread stopped inside (asleep in it,
/// or woken from it and not yet back in user space), by `PTRACE_GETREGS`:
/// `orig_rax` holds its number there, and -1 when the stop interrupted
/// user-space code (the kernel sets it so on every interrupt and exception
/// entry: no system call to restart). `None` in user space.
#[cfg(target_arch = "x86_64")]
pub fn ptrace_syscall(tid: i32) -> io::Result<Option<i64>> {
    // A u64 in the struct; the kernel's -1 reads as u64::MAX.
    let nr = ptrace_regs::<libc::user_regs_struct>(tid)?.orig_rax as i64;
    Ok((nr >= 0).then_some(nr))
}

/// `waitpid(tid, __WALL | WNOHANG)`: `Ok(None)` when nothing is to be
/// reported yet, else the raw status (decode it with the `libc::W*` macros;
/// any signal number, real-time ones included, comes through).
pub fn waitpid_nohang(tid: i32) -> io::Result<Option<i32>> {
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes one c_int into `status`, which we own.
    let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
    match r {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        _ => Ok(Some(status)),
    }
}
