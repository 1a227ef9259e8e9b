//! A PID namespace of a test's own: `unshare --pid --fork --mount-proc`
//! with a sleeping init, and processes started in it with `nsenter`, so
//! that a whole-host scan or the agent sees, reads and ptraces only what
//! the test started. Dropping it kills its init, and the kernel kills
//! everything left inside.

use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

use super::Child;

pub struct PidNs {
    /// `unshare`, whose child is the namespace's init (pid 1 inside).
    unshare: Child,
    /// The init's pid outside.
    init: i32,
}

impl PidNs {
    pub fn new() -> PidNs {
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", "sleep", "3600"]);
        let unshare = Child::spawn(cmd).expect("unshare runs (util-linux)");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(&init) = children(unshare.pid()).first() {
                return PidNs { unshare, init };
            }
            assert!(Instant::now() < deadline, "unshare started no init");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The init's pid outside: `/proc/INIT/root` shows the namespace's
    /// mounts.
    pub fn init(&self) -> i32 {
        self.init
    }

    /// `nsenter --pid --mount` into the namespace, running `program args`.
    /// The process inside is the child of the returned `nsenter` guard
    /// (killed with it: same process group); see [`PidNs::inner`].
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.init.to_string(), "--pid", "--mount", "--"])
            .arg(program);
        cmd
    }

    /// Spawns [`PidNs::command`] with `args`.
    pub fn spawn<S: AsRef<OsStr>>(&self, program: impl AsRef<OsStr>, args: &[S]) -> Child {
        let mut cmd = self.command(program);
        cmd.args(args);
        Child::spawn(cmd).expect("nsenter runs (util-linux)")
    }

    /// The pids (outside, inside) of the process an `nsenter` guard runs.
    pub fn inner(&self, nsenter: &Child) -> (i32, i32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(&outer) = children(nsenter.pid()).first()
                && let Some(inner) = ns_pid(outer)
            {
                return (outer, inner);
            }
            assert!(Instant::now() < deadline, "nsenter started nothing");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for PidNs {
    fn drop(&mut self) {
        // SIGKILL to the init: the kernel then kills the whole namespace.
        // The init is unshare's unreaped child, so its pid is not reused.
        if self.unshare.is_running() {
            // SAFETY: plain kill(2) of a process this guard started.
            unsafe { libc::kill(self.init, libc::SIGKILL) };
        }
        self.unshare.kill();
    }
}

/// The children of `pid`'s main thread.
fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// `pid`'s pid in its innermost PID namespace (`NSpid:`'s last field).
pub fn ns_pid(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}
