//! The tracer guard's own behaviour, which needs its private type: it
//! detaches on drop and on a panic, and passes on a signal met at a stop.
//! The sampler's behaviour through its public API is tested against real
//! targets in tests/integration/fpu.rs. These start one busy `bash` loop of
//! their own (never touching anything else) and kill it on every exit path.

use super::*;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A busy bash loop that ignores SIGRTMIN's default action (it runs `:`),
/// killed and reaped on drop.
struct Busy(Child);

impl Busy {
    fn start() -> Busy {
        let mut child = Command::new("bash")
            .args(["-c", "trap : RTMIN; echo ready; while :; do :; done"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bash");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(out)
            .read_line(&mut line)
            .expect("ready line");
        assert_eq!(line.trim(), "ready");
        Busy(child)
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("pid fits i32")
    }

    fn tracer(&self) -> Option<i32> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()));
        parse_tracer_pid(&status.unwrap_or_default())
    }

    /// The state letter of its `stat`.
    fn state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The guard detaches on drop, whether the thread was left running with
/// an interrupt pending or the scope unwound from a panic.
#[test]
fn guard_detaches_on_drop_and_panic() {
    let busy = Busy::start();
    let pid = busy.pid();
    // Checked on this thread, before it exits (its exit would detach).
    {
        let _g = imp::Attached::seize(pid).expect("seize");
        assert_ne!(busy.tracer(), Some(0));
    }
    assert_eq!(busy.tracer(), Some(0));
    {
        let _g = imp::Attached::seize(pid).expect("seize");
        imp::ptrace(imp::PTRACE_INTERRUPT, pid, 0).expect("interrupt");
    }
    assert_eq!(busy.tracer(), Some(0));
    let r = std::panic::catch_unwind(|| {
        let _g = imp::Attached::seize(pid).expect("seize");
        let _ = imp::ptrace(imp::PTRACE_INTERRUPT, pid, 0);
        panic!("test panic while attached");
    });
    assert!(r.is_err());
    assert_eq!(busy.tracer(), Some(0));
    assert_eq!(busy.state(), Some('R'), "left running, not stopped");
}

/// A signal sent while attached is met at its signal-delivery-stop,
/// sampled there, and passed on by the detach.
#[test]
fn a_signal_met_while_attached_is_relayed() {
    let mut busy = Busy::start();
    let pid = busy.pid();
    for _ in 0..10 {
        let mut att = imp::Attached::seize(pid).expect("seize");
        // SAFETY: kill(2) on our own, still running, child. A real-time
        // signal: rustix's Signal cannot name one.
        unsafe { libc::kill(pid, libc::SIGRTMIN()) };
        // Wait for its signal-delivery-stop ('t'): on a busy machine the
        // loop may not run for a while, and an interrupt that came first
        // would be met first.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while busy.state() != Some('t') && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let taken = imp::take(&mut att, Duration::from_millis(100));
        assert!(matches!(&taken, Ok(t) if t.relayed == Some(libc::SIGRTMIN())));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(busy.running(), "still running after its signals");
    assert_eq!(busy.tracer(), Some(0));
}
