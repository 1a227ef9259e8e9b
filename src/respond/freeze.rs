//! Stopping a process tree so that nothing in it runs, forks or respawns,
//! and ending it.
//!
//! When the tree has a cgroup of its own (every process of the cgroup is in
//! the tree, the tree is all in it, and it is not a root cgroup) the cgroup
//! freezer stops it in one write: `freezer.state = FROZEN` (cgroup v1) or
//! `cgroup.freeze = 1` (v2). Otherwise each member gets SIGSTOP through a
//! pidfd (so a pid reused meanwhile is never signalled), parents first, and
//! the tree is listed again until no new child appears.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use serde::Serialize;

use crate::safefs;

/// What /proc/PID/stat says of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub comm: String,
    /// `R`, `S`, `T` (stopped), `t` (traced), `Z` …
    pub state: char,
    pub ppid: i32,
    pub start_time: u64,
    /// PF_KTHREAD in the flags: a kernel thread.
    pub kernel_thread: bool,
}

/// Reads `<proc_root>/PID/stat`.
pub fn stat(proc_root: &Path, pid: i32) -> Option<Stat> {
    let (bytes, _) =
        safefs::read_regular(&proc_root.join(pid.to_string()).join("stat"), 4096, true).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state): field N is rest[N - 3].
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let flags: u64 = rest.get(6)?.parse().ok()?;
    let start_time = rest.get(19)?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        start_time,
        kernel_thread: flags & 0x0020_0000 != 0,
    })
}

/// The children of every thread of `pid` (`/proc/PID/task/*/children`).
fn children(proc_root: &Path, pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let tasks = proc_root.join(pid.to_string()).join("task");
    for t in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        if let Ok((b, _)) = safefs::read_regular(&t.path().join("children"), 1 << 20, true) {
            out.extend(
                String::from_utf8_lossy(&b)
                    .split_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// `pid` and all its descendants now, parents before children.
pub fn tree(proc_root: &Path, pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 100_000 {
        for c in children(proc_root, out[i]) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

/// One member of a tree, held by a pidfd.
#[derive(Debug)]
pub struct Member {
    pub pid: i32,
    pub start_time: u64,
    pub comm: String,
    fd: OwnedFd,
}

impl Member {
    /// Opens a pidfd for `pid` and checks that it is still the process
    /// started at `start_time` (when given) after the pidfd is held.
    pub fn open(proc_root: &Path, pid: i32, start_time: Option<u64>) -> io::Result<Member> {
        let p = Pid::from_raw(pid).ok_or_else(|| io::Error::other("pid 0"))?;
        let fd = pidfd_open(p, PidfdFlags::empty())?;
        let st = stat(proc_root, pid).ok_or_else(|| io::Error::other("exited"))?;
        if start_time.is_some_and(|s| s != st.start_time) {
            return Err(io::Error::other(
                "the pid now names another process (it was reused)",
            ));
        }
        Ok(Member {
            pid,
            start_time: st.start_time,
            comm: st.comm,
            fd,
        })
    }

    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        pidfd_send_signal(&self.fd, sig).map_err(io::Error::from)
    }
}

/// How a tree is frozen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Method {
    /// cgroup v1 freezer: `DIR/freezer.state`.
    CgroupV1 { dir: PathBuf },
    /// cgroup v2: `DIR/cgroup.freeze`.
    CgroupV2 { dir: PathBuf },
    /// SIGSTOP of every member.
    Sigstop,
}

impl Method {
    pub fn describe(&self) -> String {
        match self {
            Method::CgroupV1 { dir } => {
                format!("the cgroup v1 freezer ({}/freezer.state)", dir.display())
            }
            Method::CgroupV2 { dir } => {
                format!("the cgroup freezer ({}/cgroup.freeze)", dir.display())
            }
            Method::Sigstop => "SIGSTOP of every process of the tree".into(),
        }
    }
}

/// Where cgroup hierarchies are mounted, from our mountinfo: (freezer v1, v2).
fn cgroup_mounts(proc_root: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
    let Ok((b, _)) = safefs::read_regular(&proc_root.join("self/mountinfo"), 1 << 20, true) else {
        return (None, None);
    };
    let (mut v1, mut v2) = (None, None);
    for line in String::from_utf8_lossy(&b).lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount = left.split_whitespace().nth(4).map(PathBuf::from);
        let mut r = right.split_whitespace();
        let fstype = r.next().unwrap_or("");
        let opts = r.nth(1).unwrap_or("");
        match fstype {
            "cgroup" if opts.split(',').any(|o| o == "freezer") => v1 = v1.or(mount),
            "cgroup2" => v2 = v2.or(mount),
            _ => {}
        }
    }
    (v1, v2)
}

/// Pids listed in `DIR/cgroup.procs`.
fn cgroup_procs(dir: &Path) -> Option<Vec<i32>> {
    let (b, _) = safefs::read_regular(&dir.join("cgroup.procs"), 4 << 20, true).ok()?;
    Some(
        String::from_utf8_lossy(&b)
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect(),
    )
}

/// The freezer for `tree` (its first pid the root): a cgroup that holds
/// exactly the tree, else SIGSTOP.
pub fn method_for(proc_root: &Path, tree: &[i32]) -> Method {
    let Some(&root) = tree.first() else {
        return Method::Sigstop;
    };
    let Ok((b, _)) = safefs::read_regular(
        &proc_root.join(root.to_string()).join("cgroup"),
        64 << 10,
        true,
    ) else {
        return Method::Sigstop;
    };
    let text = String::from_utf8_lossy(&b);
    let (v1, v2) = cgroup_mounts(proc_root);
    let mut options: Vec<Method> = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrl, path) = (parts.next(), parts.next(), parts.next());
        let (Some(ctrl), Some(path)) = (ctrl, path) else {
            continue;
        };
        if path == "/" || path.is_empty() {
            continue;
        }
        let rel = path.trim_start_matches('/');
        if ctrl.split(',').any(|c| c == "freezer")
            && let Some(m) = &v1
        {
            options.push(Method::CgroupV1 { dir: m.join(rel) });
        } else if ctrl.is_empty()
            && let Some(m) = &v2
            && m.join(rel).join("cgroup.freeze").exists()
        {
            options.push(Method::CgroupV2 { dir: m.join(rel) });
        }
    }
    for m in options {
        let dir = match &m {
            Method::CgroupV1 { dir } | Method::CgroupV2 { dir } => dir,
            Method::Sigstop => continue,
        };
        if let Some(procs) = cgroup_procs(dir) {
            let mut a = procs.clone();
            let mut b = tree.to_vec();
            a.sort_unstable();
            b.sort_unstable();
            if !a.is_empty() && a == b {
                return m;
            }
        }
    }
    Method::Sigstop
}

fn write_control(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(value.as_bytes())
}

fn read_control(path: &Path) -> String {
    safefs::read_regular(path, 64 << 10, true)
        .map(|(b, _)| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default()
}

/// The freezer's state in words: `FROZEN`, `THAWED`, `FREEZING`, or the
/// members' stat states.
pub fn state(proc_root: &Path, method: &Method, members: &[i32]) -> String {
    match method {
        Method::CgroupV1 { dir } => read_control(&dir.join("freezer.state")),
        Method::CgroupV2 { dir } => {
            let events = read_control(&dir.join("cgroup.events"));
            if events.lines().any(|l| l.trim() == "frozen 1") {
                "FROZEN".into()
            } else {
                "THAWED".into()
            }
        }
        Method::Sigstop => members
            .iter()
            .map(|p| {
                let s = stat(proc_root, *p).map_or('-', |s| s.state);
                format!("{p}:{s}")
            })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// Freezes the tree rooted at `members[0]`: returns the members (new
/// children found while freezing included) once all are stopped, or an
/// error saying which did not stop.
pub fn freeze(
    proc_root: &Path,
    method: &Method,
    members: &mut BTreeMap<i32, Member>,
    root: i32,
) -> io::Result<()> {
    match method {
        Method::CgroupV1 { dir } => {
            write_control(&dir.join("freezer.state"), "FROZEN")?;
            wait_for(|| read_control(&dir.join("freezer.state")) == "FROZEN")
                .then_some(())
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "{}/freezer.state did not reach FROZEN within 5 s",
                        dir.display()
                    ))
                })
        }
        Method::CgroupV2 { dir } => {
            write_control(&dir.join("cgroup.freeze"), "1")?;
            wait_for(|| {
                read_control(&dir.join("cgroup.events"))
                    .lines()
                    .any(|l| l.trim() == "frozen 1")
            })
            .then_some(())
            .ok_or_else(|| {
                io::Error::other(format!(
                    "{}/cgroup.events did not say frozen within 5 s",
                    dir.display()
                ))
            })
        }
        Method::Sigstop => {
            // Stop, list again, stop the newcomers, until the tree holds
            // still: a parent stopped cannot fork, so this ends.
            for _ in 0..50 {
                for m in members.values() {
                    let _ = m.signal(Signal::STOP);
                }
                let now = tree(proc_root, root);
                let mut new = false;
                for pid in now {
                    if let std::collections::btree_map::Entry::Vacant(v) = members.entry(pid)
                        && let Ok(m) = Member::open(proc_root, pid, None)
                    {
                        let _ = m.signal(Signal::STOP);
                        v.insert(m);
                        new = true;
                    }
                }
                if !new {
                    break;
                }
            }
            let pids: Vec<i32> = members.keys().copied().collect();
            let stopped = wait_for(|| {
                pids.iter().all(|p| {
                    stat(proc_root, *p).is_none_or(|s| matches!(s.state, 'T' | 't' | 'Z' | 'X'))
                })
            });
            if stopped {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "not every process stopped within 5 s: {}",
                    state(proc_root, method, &pids)
                )))
            }
        }
    }
}

/// Lets a frozen cgroup run again (needed after SIGKILL under cgroup v1,
/// where frozen tasks die only once thawed).
pub fn thaw(method: &Method) -> io::Result<()> {
    match method {
        Method::CgroupV1 { dir } => write_control(&dir.join("freezer.state"), "THAWED"),
        Method::CgroupV2 { dir } => write_control(&dir.join("cgroup.freeze"), "0"),
        Method::Sigstop => Ok(()),
    }
}

/// SIGKILLs every member and waits until each is gone (or a zombie).
pub fn kill(proc_root: &Path, method: &Method, members: &BTreeMap<i32, Member>) -> io::Result<()> {
    for m in members.values() {
        let _ = m.signal(Signal::KILL);
    }
    thaw(method)?;
    let alive = || {
        members
            .values()
            .filter(|m| {
                stat(proc_root, m.pid)
                    .is_some_and(|s| s.start_time == m.start_time && !matches!(s.state, 'Z' | 'X'))
            })
            .map(|m| m.pid)
            .collect::<Vec<_>>()
    };
    if wait_for(|| alive().is_empty()) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "still alive 5 s after SIGKILL: {:?}",
            alive()
        )))
    }
}

fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_reads_comm_with_parentheses_and_spaces() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(dir.path().join("7")).expect("mkdir");
        let fields = "S 1 7 7 0 -1 2097216 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0";
        std::fs::write(dir.path().join("7/stat"), format!("7 (a) (b c) {fields}\n"))
            .expect("write");
        let s = stat(dir.path(), 7).expect("stat");
        assert_eq!(s.comm, "a) (b c");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.start_time, 12345);
        assert!(s.kernel_thread);
    }

    #[test]
    fn our_own_tree_is_listed() {
        let me = std::process::id() as i32;
        let t = tree(Path::new("/proc"), me);
        assert_eq!(t.first(), Some(&me));
    }
}
