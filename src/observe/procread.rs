//! procfs-core's parsers behind a guard. A /proc file can be crafted (a
//! mount over /proc/PID, a `--proc-root` the intruder controls) and some
//! of those parsers panic on malformed text: `Stat::from_read` slices
//! around the parentheses of comm before checking they are where the
//! kernel puts them (found by the fuzz entries: "(" first, or ")" last).
//! Every read of a parsed /proc file goes through here: `stat` is read
//! capped and shape-checked first; every parse runs under `catch_unwind`,
//! so a parser bug is an error in the coverage, never a crashed scan.

use std::io::{Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};

use procfs::ProcResult;
use procfs::prelude::*;
use procfs::process::{MemoryMap, Process, Stat, Status};

/// `/proc/PID/stat` is one line of at most a few hundred bytes.
const STAT_CAP: u64 = 64 << 10;

fn malformed(what: &str) -> procfs::ProcError {
    procfs::ProcError::Other(format!("malformed {what}"))
}

/// Runs a procfs parse; a panic inside becomes an error.
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> ProcResult<T>) -> ProcResult<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(malformed(what)))
}

/// Whether a stat line has the shape procfs-core's parser slices by:
/// digits, " (", comm, ") " (the last ')'), then the fields.
fn stat_shape_ok(line: &str) -> bool {
    let line = line.trim();
    let (Some(open), Some(close)) = (line.find('('), line.rfind(')')) else {
        return false;
    };
    open >= 2
        && line.as_bytes().get(open - 1) == Some(&b' ')
        && line[..open - 1].bytes().all(|b| b.is_ascii_digit())
        && close > open
        && line.len() >= close + 2
        // procfs-core slices at these byte offsets: a multi-byte character
        // after the ')' would split.
        && line.is_char_boundary(close + 2)
}

/// utime + stime of a stat, saturating: the fields of a crafted file can
/// be anything up to u64::MAX.
pub(crate) fn cpu_ticks(s: &Stat) -> u64 {
    s.utime.saturating_add(s.stime)
}

/// cutime + cstime of a stat (reaped children), 0 when negative.
pub(crate) fn children_ticks(s: &Stat) -> u64 {
    u64::try_from(s.cutime.saturating_add(s.cstime)).unwrap_or(0)
}

/// A stat file's bytes, parsed.
pub(crate) fn stat_from_bytes(data: &[u8]) -> ProcResult<Stat> {
    if !stat_shape_ok(&String::from_utf8_lossy(data)) {
        return Err(malformed("stat"));
    }
    guarded("stat", || Stat::from_read(Cursor::new(data)))
}

/// `/proc/PID/stat`, read capped and parsed.
pub(crate) fn stat(p: &Process) -> ProcResult<Stat> {
    stat_at(p, "stat")
}

/// `/proc/PID/task/TID/stat`, read capped and parsed.
pub(crate) fn task_stat(p: &Process, tid: i32) -> ProcResult<Stat> {
    stat_at(p, &format!("task/{tid}/stat"))
}

fn stat_at(p: &Process, rel: &str) -> ProcResult<Stat> {
    let mut buf = Vec::with_capacity(512);
    p.open_relative(rel)?
        .take(STAT_CAP)
        .read_to_end(&mut buf)
        .map_err(|e| procfs::ProcError::Io(e, None))?;
    stat_from_bytes(&buf)
}

pub(crate) fn status(p: &Process) -> ProcResult<Status> {
    guarded("status", || p.status())
}

pub(crate) fn maps(p: &Process) -> ProcResult<Vec<MemoryMap>> {
    guarded("maps", || p.maps().map(|m| m.into_iter().collect()))
}

pub(crate) fn cgroups(p: &Process) -> ProcResult<procfs::ProcessCGroups> {
    guarded("cgroup", || p.cgroups())
}

pub(crate) fn tcp(p: &Process) -> ProcResult<Vec<procfs::net::TcpNetEntry>> {
    guarded("net/tcp", || p.tcp())
}

pub(crate) fn tcp6(p: &Process) -> ProcResult<Vec<procfs::net::TcpNetEntry>> {
    guarded("net/tcp6", || p.tcp6())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_that_would_panic_procfs_is_an_error() {
        // Found by fuzz::props: '(' at the start made procfs-core slice
        // buf[..-1]; ')' as the last byte, buf[len + 1..].
        for bad in [
            "(",
            "(a) R",
            "1 (a)",
            ") (",
            "x (a) R 1",
            " (a) R 1",
            "1(a) R 1",
            "1 (a)\u{e9}R 1",
        ] {
            assert!(stat_from_bytes(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let ok = "4242 (a) b) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0 9000 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let s = stat_from_bytes(ok.as_bytes()).expect("parses");
        assert_eq!((s.pid, s.comm.as_str(), s.utime), (4242, "a) b", 250));
    }

    #[test]
    fn cpu_ticks_of_a_crafted_stat_saturate_instead_of_overflowing() {
        // Found by fuzz::props: utime + stime near u64::MAX overflowed
        // (a panic in debug builds, a wrong figure in release).
        let max = u64::MAX;
        let line = format!(
            "7 (x) R 1 7 7 0 -1 0 0 0 0 0 {max} {max} 9223372036854775807 9223372036854775807 20 0 1 0 5 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        );
        let s = stat_from_bytes(line.as_bytes()).expect("parses");
        assert_eq!(cpu_ticks(&s), max);
        assert_eq!(children_ticks(&s), u64::try_from(i64::MAX).expect("fits"));
        assert_eq!(crate::observe::fpu::parse_stat_cpu_ticks(&line), Some(max));
    }

    #[test]
    fn our_own_stat_reads_through_the_guard() {
        let me = Process::myself().expect("self");
        let s = stat(&me).expect("stat");
        assert_eq!(s.pid, i32::try_from(std::process::id()).expect("pid"));
    }
}
