//! procfs-core's parsers behind a guard. A /proc file can be crafted (a
//! mount over /proc/PID, a `--proc-root` the intruder controls) and some
//! of those parsers panic on malformed text: `Stat::from_read` slices
//! around the parentheses of comm before checking they are where the
//! kernel puts them (found by the fuzz entries: "(" first, or ")" last).
//! Every read of a parsed /proc file goes through here: `stat` is read
//! capped and shape-checked first; every parse runs under `catch_unwind`,
//! so a parser bug is an error in the coverage, never a crashed scan.
//!
//! Text is read as bytes, capped, and decoded lossily before it is parsed:
//! a process names its binary and writes its command line, and one byte of
//! invalid UTF-8 there made procfs's `read_to_string` fail the whole
//! `cmdline`, `status` and `maps` of a RandomX worker, which then scanned
//! as a `notice` (found by tests/integration/hostile.rs).
//!
//! `maps`: procfs-core reads a mapped file named "/SYSV…" as a System V
//! segment's key (hex at bytes 5..13): an intruder's file named "/SYSVx"
//! panicked it and "/SYSVzzzzzzzz" failed the whole parse, hiding every
//! mapping of the process (found by `fuzz/run-all`); a name "[stack:…"
//! ending in a multi-byte character panicked it too, and one that is not
//! "[stack:TID]" failed it (found by the next run: only a file mounted over
//! /proc/PID/maps can say so, as no kernel since 4.5 writes such names).
//! Such names are handed over shielded ([`shield`]) and restored after.

use std::io::{self, Cursor, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use procfs::ProcResult;
use procfs::prelude::*;
use procfs::process::{MMapPath, MemoryMap, Process, Stat, Status};

/// `/proc/PID/stat` is one line of at most a few hundred bytes.
const STAT_CAP: u64 = 64 << 10;
/// `/proc/PID/status`: about 1.5 KiB; a long `Groups:` line at most.
const STATUS_CAP: u64 = 1 << 20;
/// `/proc/PID/cmdline`: exec(2) allows at most 6 MiB of arguments and
/// environment (3/4 of the 8 MiB stack limit cap); only `PR_SET_MM` can
/// point it at more.
pub(crate) const CMDLINE_CAP: u64 = 8 << 20;
/// `/proc/PID/maps`: 65,530 mappings (the default `vm.max_map_count`) of
/// ~100 bytes is 6.5 MiB; long file names can make it much more, and what
/// is beyond the cap is reported as not seen.
pub(crate) const MAPS_CAP: u64 = 32 << 20;

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
    stat_from_bytes(&relative(p, rel, STAT_CAP)?.0)
}

/// Up to `cap` bytes of `reader`, and whether there was more.
fn capped(reader: impl Read, cap: u64) -> io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::with_capacity(4096);
    reader.take(cap.saturating_add(1)).read_to_end(&mut buf)?;
    let more = buf.len() as u64 > cap;
    buf.truncate(usize::try_from(cap).unwrap_or(usize::MAX));
    Ok((buf, more))
}

/// A file of the process's /proc directory, capped.
fn relative(p: &Process, rel: &str, cap: u64) -> ProcResult<(Vec<u8>, bool)> {
    capped(p.open_relative(rel)?, cap).map_err(|e| procfs::ProcError::Io(e, None))
}

/// A /proc text file (by path), at most `cap` bytes, invalid UTF-8
/// replaced: for the readers that look for one field (`TracerPid:`, the
/// state in `stat`) in text a process partly wrote.
pub(crate) fn text_file(path: &Path, cap: u64) -> io::Result<String> {
    let (bytes, _) = capped(std::fs::File::open(path)?, cap)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The arguments of `/proc/PID/cmdline` (empty ones dropped, as procfs
/// does), each decoded lossily, at most [`CMDLINE_CAP`] bytes in all.
pub(crate) fn cmdline(p: &Process) -> ProcResult<Vec<String>> {
    Ok(cmdline_from_bytes(&relative(p, "cmdline", CMDLINE_CAP)?.0))
}

pub(crate) fn cmdline_from_bytes(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

pub(crate) fn status(p: &Process) -> ProcResult<Status> {
    let (bytes, _) = relative(p, "status", STATUS_CAP)?;
    status_from_bytes(&bytes)
}

pub(crate) fn status_from_bytes(bytes: &[u8]) -> ProcResult<Status> {
    let text = String::from_utf8_lossy(bytes);
    guarded("status", || {
        Status::from_buf_read(Cursor::new(text.as_bytes()))
    })
}

/// `/proc/PID/maps` parsed, and whether it was longer than [`MAPS_CAP`]
/// (the mappings past the cap are not in the list).
pub(crate) fn maps(p: &Process) -> ProcResult<(Vec<MemoryMap>, bool)> {
    let (bytes, more) = relative(p, "maps", MAPS_CAP)?;
    Ok((maps_from_bytes(&bytes, more)?, more))
}

/// Maps text parsed; `cut` when the text was cut at a cap, so that its
/// last, partial line is dropped.
pub(crate) fn maps_from_bytes(bytes: &[u8], cut: bool) -> ProcResult<Vec<MemoryMap>> {
    let whole = if cut {
        bytes
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(&bytes[..0], |end| &bytes[..=end])
    } else {
        bytes
    };
    let text = String::from_utf8_lossy(whole);
    let text = shield(&text);
    let mut maps: Vec<MemoryMap> = guarded("maps", || {
        procfs::process::MemoryMaps::from_buf_read(Cursor::new(text.as_bytes()))
            .map(|m| m.into_iter().collect())
    })?;
    for m in &mut maps {
        unshield(&mut m.pathname);
    }
    Ok(maps)
}

/// What a shielded name holds after its first character: no name in maps
/// holds a NUL.
const SHIELD: char = '\0';

/// Whether procfs-core would mis-read a mapped name, and so fail or panic
/// over the whole file: one starting "/SYSV" that is not a System V
/// segment's ("/SYSV" and 8 hex digits, as the kernel writes it), sliced
/// as a hex key; one starting "[stack:" that is not "[stack:TID]" (as
/// kernels before 4.5 wrote a thread's stack), sliced at its last byte and
/// parsed as a number.
fn misread(path: &str) -> bool {
    if path.starts_with("/SYSV") {
        return !path
            .get(5..13)
            .is_some_and(|key| key.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    if let Some(rest) = path.strip_prefix("[stack:") {
        return !rest
            .strip_suffix(']')
            .is_some_and(|tid| !tid.is_empty() && tid.bytes().all(|b| b.is_ascii_digit()));
    }
    false
}

/// `text` with every mapped name that procfs-core would mis-read
/// ([`misread`]) shielded: a NUL after its first character ("/\0SYSV…",
/// "[\0stack:…"), which procfs-core takes as a plain path or a pseudo-path
/// and [`unshield`] takes out again.
fn shield(text: &str) -> std::borrow::Cow<'_, str> {
    // procfs-core's split: the name is what follows the fifth space,
    // trimmed.
    let name_start = |line: &str| {
        let i = line.match_indices(' ').nth(4).map(|(i, _)| i + 1)?;
        let first = i + line[i..].find(|c: char| !c.is_whitespace())?;
        misread(line[first..].trim()).then_some(first)
    };
    if !text.split_inclusive('\n').any(|l| name_start(l).is_some()) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split_inclusive('\n') {
        match name_start(line) {
            // Both first characters ('/' and '[') are one byte.
            Some(first) => {
                out.push_str(&line[..=first]);
                out.push(SHIELD);
                out.push_str(&line[first + 1..]);
            }
            None => out.push_str(line),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A mapped name as it was before [`shield`].
fn unshield(name: &mut MMapPath) {
    match name {
        MMapPath::Path(path) => {
            let bytes = path.as_os_str().as_bytes();
            if bytes.len() >= 2 && bytes[1] == SHIELD as u8 {
                let real = [&bytes[..1], &bytes[2..]].concat();
                *path = std::ffi::OsString::from_vec(real).into();
            }
        }
        MMapPath::Other(other) => {
            if let Some(rest) = other.strip_prefix(SHIELD) {
                *other = rest.to_string();
            }
        }
        _ => {}
    }
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
    fn invalid_utf8_in_a_processes_own_text_is_replaced_not_fatal() {
        // Found by tests/integration/hostile.rs: a worker whose binary was
        // named with a 0xff byte lost cmdline, status and maps to
        // read_to_string's UTF-8 check, and with them its conviction.
        let args = cmdline_from_bytes(b"\x1b]0;x\x07\n\xfe\xff\0--seconds\x0030\0\0");
        assert_eq!(args, ["\x1b]0;x\x07\n\u{fffd}\u{fffd}", "--seconds", "30"]);
        let real = std::fs::read_to_string("/proc/self/status").expect("own status");
        let mut crafted = b"Name:\tkw\xffer\n".to_vec();
        crafted.extend(
            real.lines()
                .skip(1)
                .flat_map(|l| [l.as_bytes(), b"\n"].concat()),
        );
        let status = status_from_bytes(&crafted).expect("status parses");
        assert_eq!(status.name, "kw\u{fffd}er");
        assert!(status.vmrss.is_some_and(|kib| kib > 0), "{status:?}");
        let maps = b"00400000-00452000 r-xp 00000000 08:02 173521 /tmp/kw\xffer\n\
                     7f00-8f00 rw-p 00000000 00:00 0 \n7f0";
        let whole = maps_from_bytes(maps, true).expect("maps parse");
        assert_eq!(whole.len(), 2, "{whole:?}");
        assert!(maps_from_bytes(maps, false).is_err(), "a partial last line");
    }

    #[test]
    fn a_forged_thread_stack_name_does_not_hide_the_maps() {
        // Found by fuzz/run-all (proc_maps, 2026-12-06): procfs-core slices
        // a name starting "[stack:" at its last byte (a panic when that
        // byte ends a multi-byte character) and parses what follows the
        // colon as a thread id (an error otherwise): either hid every
        // mapping of the process.
        let maps = "55b3308cc000-55b3308f2000 r--p 00000000 fe:00 1006797      [stack:sr/local/bin/xmrig\u{fffd}\u{5eb}\n\
                    7f0000000000-7f0010000000 rw-p 00000000 00:00 0 \n\
                    7f1000000000-7f1000001000 rw-p 00000000 00:00 0 [stack:x]\n\
                    7f2000000000-7f2000001000 rw-p 00000000 00:00 0 [stack:]\n\
                    7f3000000000-7f3000001000 rw-p 00000000 00:00 0 [stack:4242]\n\
                    7f4000000000-7f4000001000 rw-p 00000000 00:00 0 [stack:\u{e9}]\n";
        let parsed = maps_from_bytes(maps.as_bytes(), false).expect("maps parse");
        let names: Vec<MMapPath> = parsed.iter().map(|m| m.pathname.clone()).collect();
        assert_eq!(
            names,
            [
                MMapPath::Path("[stack:sr/local/bin/xmrig\u{fffd}\u{5eb}".into()),
                MMapPath::Anonymous,
                MMapPath::Other("stack:x".into()),
                MMapPath::Other("stack:".into()),
                MMapPath::TStack(4242),
                MMapPath::Other("stack:\u{e9}".into()),
            ]
        );
        assert_eq!(parsed[0].address, (0x55b3_308c_c000, 0x55b3_308f_2000));
    }

    #[test]
    fn a_file_named_like_a_sysv_segment_does_not_hide_the_maps() {
        // Found by fuzz/run-all (proc_maps): procfs-core slices a path that
        // starts with "/SYSV" at bytes 5..13 as a hex key, so a miner that
        // maps a file it named "/SYSVx" panicked the parse, and one named
        // "/SYSVzzzzzzzz" failed it: either hid every mapping.
        let maps = "00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/kworker\n\
                    7f0000000000-7f0010000000 rw-p 00000000 00:00 0 \n\
                    7f1000000000-7f1000001000 r--s 00000000 08:02 9 /SYSVx\n\
                    7f2000000000-7f2000001000 r--s 00000000 08:02 10   /SYSVzzzzzzzz (deleted)\n\
                    7f3000000000-7f3000001000 r--s 00000000 08:02 11 /SYSV\u{fffd}\u{fffd}\u{fffd}\n\
                    7f4000000000-7f4000001000 rw-s 00000000 00:01 12 /SYSV0000002a (deleted)\n";
        let parsed = maps_from_bytes(maps.as_bytes(), false).expect("maps parse");
        let paths: Vec<MMapPath> = parsed.iter().map(|m| m.pathname.clone()).collect();
        assert_eq!(
            paths,
            [
                MMapPath::Path("/usr/bin/kworker".into()),
                MMapPath::Anonymous,
                MMapPath::Path("/SYSVx".into()),
                MMapPath::Path("/SYSVzzzzzzzz (deleted)".into()),
                MMapPath::Path("/SYSV\u{fffd}\u{fffd}\u{fffd}".into()),
                MMapPath::Vsys(42),
            ]
        );
        assert_eq!(parsed[1].address, (0x7f00_0000_0000, 0x7f00_1000_0000));
        // Text without such a name is handed over as it is.
        assert!(matches!(
            shield("1-2 r-xp 0 0:0 0 /bin/x\n"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn our_own_stat_reads_through_the_guard() {
        let me = Process::myself().expect("self");
        let s = stat(&me).expect("stat");
        assert_eq!(s.pid, i32::try_from(std::process::id()).expect("pid"));
    }
}
