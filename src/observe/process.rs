//! One process as it is observed: its first CPU sample, the details read
//! while the window runs (identity, memory layout, sockets, binary, miner
//! configs), and what the agent remembers of it for the next tick.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use procfs::ProcError;
use procfs::process::{FDTarget, Process, Stat};
use regex::Regex;

use super::binaries::BinaryCache;
use super::coverage::CoverageLog;
use super::{memory, miner_config};
use crate::safefs::{self as files, FileKey};
use crate::snapshot::*;

/// The flag in `stat` that marks a kernel thread.
const PF_KTHREAD: u32 = 0x0020_0000;

/// A user from /etc/passwd.
#[derive(Debug, Clone)]
pub(super) struct User {
    pub(super) name: String,
    pub(super) home: String,
}

pub(super) fn read_users() -> HashMap<u32, User> {
    let mut users = HashMap::new();
    let Ok((bytes, _)) = files::read_regular(Path::new("/etc/passwd"), 8 * 1024 * 1024, true)
    else {
        return users;
    };
    for line in String::from_utf8_lossy(&bytes).lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 7
            && let Ok(uid) = f[2].parse::<u32>()
        {
            users.entry(uid).or_insert(User {
                name: f[0].to_string(),
                home: f[5].to_string(),
            });
        }
    }
    users
}

/// A container id: 64 hex digits.
pub(crate) fn container_re() -> Option<&'static Regex> {
    static RE: std::sync::OnceLock<Option<Regex>> = std::sync::OnceLock::new();
    RE.get_or_init(|| Regex::new("[0-9a-f]{64}").ok()).as_ref()
}

/// Container id (64 hex digits) from /proc/PID/cgroup paths.
pub(crate) fn container_id(paths: &[String], re: &Regex) -> Option<String> {
    paths
        .iter()
        .find_map(|p| re.find(p).map(|m| m.as_str().to_string()))
}

/// One process being observed.
pub(super) struct Watched {
    pub(super) process: Process,
    pub(super) start_ticks: u64,
    pub(super) ticks0: u64,
    pub(super) children0: u64,
    pub(super) threads0: HashMap<i32, u64>,
    pub(super) facts: ProcessFacts,
    pub(super) exec_files: Vec<memory::ExecFile>,
    pub(super) exe_key: Option<FileKey>,
    pub(super) socket_inodes: Vec<u64>,
    /// Network namespace (`identifier:device`), read when it has sockets.
    pub(super) net_ns: Option<String>,
    pub(super) zombie: bool,
    /// Observed since the first sample (false: started during the window).
    pub(super) whole_window: bool,
    /// Its [`fingerprint`] at the first sample.
    pub(super) fingerprint: Fingerprint,
    /// When its details were read; `None`: not yet (or reused, see `Remembered`).
    pub(super) read_at: Option<Instant>,
    /// Per-thread ticks at the end of the window; `None` when no thread ran
    /// (they are `threads0`).
    pub(super) threads1: Option<HashMap<i32, u64>>,
}

/// Fields of `stat` that move whenever a process runs or its memory changes:
/// CPU ticks, page faults, sizes, threads.
pub(super) type Fingerprint = [u64; 7];

pub(super) fn fingerprint(s: &Stat) -> Fingerprint {
    [
        s.utime,
        s.stime,
        s.minflt,
        s.majflt,
        s.vsize,
        s.rss,
        u64::try_from(s.num_threads).unwrap_or(0),
    ]
}

/// What the agent remembers of a process from the previous tick, so that an
/// idle process costs two `stat` reads a tick: its details (identity, memory
/// layout, sockets, binary, configs) while its [`Fingerprint`] holds, and its
/// per-thread ticks while its CPU ticks do not move.
pub(super) struct Remembered {
    pub(super) fingerprint: Fingerprint,
    pub(super) read_at: Instant,
    pub(super) details: ProcessDetails,
    /// utime+stime and per-thread ticks at the end of the last window.
    pub(super) ticks: u64,
    pub(super) threads: HashMap<i32, u64>,
}

/// Everything [`DetailReader::read`] reads.
pub(super) struct ProcessDetails {
    pub(super) uid: u32,
    pub(super) user: Option<String>,
    pub(super) cmdline: Vec<String>,
    pub(super) exe: Option<String>,
    pub(super) cwd: Option<String>,
    pub(super) container: Option<String>,
    pub(super) memory: Option<MemoryFacts>,
    pub(super) exe_binary: Option<String>,
    pub(super) configs: Vec<MinerConfig>,
    pub(super) exec_files: Vec<memory::ExecFile>,
    pub(super) exe_key: Option<FileKey>,
    pub(super) socket_inodes: Vec<u64>,
    pub(super) net_ns: Option<String>,
}

impl ProcessDetails {
    pub(super) fn of(t: &Watched) -> Self {
        let f = &t.facts;
        ProcessDetails {
            uid: f.uid,
            user: f.user.clone(),
            cmdline: f.cmdline.clone(),
            exe: f.exe.clone(),
            cwd: f.cwd.clone(),
            container: f.container.clone(),
            memory: f.memory.clone(),
            exe_binary: f.exe_binary.clone(),
            configs: f.configs.clone(),
            exec_files: t.exec_files.clone(),
            exe_key: t.exe_key,
            socket_inodes: t.socket_inodes.clone(),
            net_ns: t.net_ns.clone(),
        }
    }

    pub(super) fn restore(&self, t: &mut Watched) {
        let f = &mut t.facts;
        f.uid = self.uid;
        f.user.clone_from(&self.user);
        f.cmdline.clone_from(&self.cmdline);
        f.exe.clone_from(&self.exe);
        f.cwd.clone_from(&self.cwd);
        f.container.clone_from(&self.container);
        f.memory.clone_from(&self.memory);
        f.exe_binary.clone_from(&self.exe_binary);
        f.configs.clone_from(&self.configs);
        t.exec_files.clone_from(&self.exec_files);
        t.exe_key = self.exe_key;
        t.socket_inodes.clone_from(&self.socket_inodes);
        t.net_ns.clone_from(&self.net_ns);
    }
}

/// How long remembered details of an idle process are trusted: 30 to 60 s,
/// spread by pid so that the re-reads do not all fall on one tick.
pub(super) fn refresh_after(pid: i32) -> Duration {
    Duration::from_secs(30 + u64::from(pid.unsigned_abs() % 31))
}

/// Starts tracking a process: its identity and first CPU sample. A process
/// first seen after the window began counts its CPU from its start.
pub(super) fn track(
    p: Process,
    stat: &Stat,
    whole_window: bool,
    known: Option<&Remembered>,
    gaps: &mut CoverageLog,
) -> Watched {
    let pid = p.pid;
    let threads0 = if let Some(k) =
        known.filter(|k| whole_window && k.ticks == super::procread::cpu_ticks(stat))
    {
        // No thread has run since the last window ended.
        k.threads.clone()
    } else if whole_window {
        match thread_ticks(&p) {
            Ok(t) => t
                .into_iter()
                .map(|(tid, (ticks, _))| (tid, ticks))
                .collect(),
            Err(e) => {
                gaps.record(Some(pid), "task list", &e);
                HashMap::new()
            }
        }
    } else {
        HashMap::new()
    };
    let facts = ProcessFacts {
        pid,
        start_time: stat.starttime,
        ppid: stat.ppid,
        comm: stat.comm.clone(),
        nice: stat.nice,
        threads: u64::try_from(stat.num_threads).unwrap_or(0),
        kernel_thread: stat.flags & PF_KTHREAD != 0,
        ..ProcessFacts::default()
    };
    Watched {
        process: p,
        start_ticks: stat.starttime,
        ticks0: if whole_window {
            super::procread::cpu_ticks(stat)
        } else {
            0
        },
        children0: if whole_window {
            super::procread::children_ticks(stat)
        } else {
            0
        },
        threads1: None,
        threads0,
        facts,
        exec_files: Vec::new(),
        exe_key: None,
        socket_inodes: Vec::new(),
        net_ns: None,
        zombie: stat.state == 'Z' || stat.state == 'X',
        whole_window,
        fingerprint: fingerprint(stat),
        read_at: None,
    }
}

pub(super) fn thread_ticks(p: &Process) -> Result<HashMap<i32, (u64, String)>, ProcError> {
    let mut out = HashMap::new();
    for task in p.tasks()?.flatten() {
        if let Ok(s) = super::procread::task_stat(p, task.tid) {
            out.insert(task.tid, (super::procread::cpu_ticks(&s), s.comm));
        }
    }
    Ok(out)
}

/// What reading a process's details needs besides the process: who the
/// users are, where procfs is, and the configs already looked for this run.
pub(super) struct DetailReader<'a> {
    pub(super) users: &'a HashMap<u32, User>,
    pub(super) cid_re: Option<&'a Regex>,
    pub(super) proc_root: &'a Path,
    /// (root dev, root ino, path) → the XMRig-style config found there.
    pub(super) configs: HashMap<(u64, u64, String), Option<MinerConfig>>,
}

impl DetailReader<'_> {
    /// Identity, memory layout, sockets, binary and configs of one process.
    pub(super) fn read(
        &mut self,
        t: &mut Watched,
        cache: &mut BinaryCache<'_, '_>,
        gaps: &mut CoverageLog,
    ) {
        let pid = t.facts.pid;
        let p = &t.process;
        match p.uid() {
            Ok(uid) => {
                t.facts.uid = uid;
                t.facts.user = self.users.get(&uid).map(|u| u.name.clone());
            }
            Err(e) => gaps.record(Some(pid), "uid", &e),
        }
        match super::procread::cmdline(p) {
            Ok(c) => t.facts.cmdline = c,
            Err(e) => {
                gaps.record(Some(pid), "cmdline", &e);
                if !p.is_alive() {
                    return;
                }
            }
        }
        if t.facts.kernel_thread || t.zombie {
            return;
        }
        match p.exe() {
            Ok(e) => t.facts.exe = Some(e.to_string_lossy().into_owned()),
            Err(ProcError::NotFound(_)) if p.is_alive() => {}
            Err(e) => gaps.record(Some(pid), "exe link", &e),
        }
        match p.cwd() {
            Ok(c) => t.facts.cwd = Some(c.to_string_lossy().into_owned()),
            Err(ProcError::NotFound(_)) if p.is_alive() => {}
            Err(e) => gaps.record(Some(pid), "cwd", &e),
        }
        if let (Some(re), Ok(groups)) = (self.cid_re, super::procread::cgroups(p)) {
            let paths: Vec<String> = groups.0.iter().map(|g| g.pathname.clone()).collect();
            t.facts.container = container_id(&paths, re);
        }
        let (rss, huge) = match super::procread::status(p) {
            Ok(s) => (s.vmrss.unwrap_or(0), s.hugetlbpages.unwrap_or(0)),
            Err(e) => {
                gaps.record(Some(pid), "status", &e);
                (0, 0)
            }
        };
        match super::procread::maps(p) {
            Ok((maps, cut)) => {
                if cut {
                    gaps.note(
                        Some(pid),
                        "maps",
                        format!(
                            "longer than {} MiB: the mappings past that were not seen",
                            super::procread::MAPS_CAP >> 20
                        ),
                    );
                }
                let mut facts = memory::summarize(&maps, rss, huge);
                if !facts.large_anon.is_empty()
                    && let Ok(r) = p.smaps_rollup()
                    && let Some(m) = r.memory_map_rollup.0.first()
                {
                    facts.anon_huge_kib =
                        m.extension.map.get("AnonHugePages").copied().unwrap_or(0) / 1024;
                }
                t.exec_files = memory::exec_files(&maps);
                t.facts.memory = Some(facts);
            }
            Err(e) => gaps.record(Some(pid), "maps", &e),
        }
        match p.fd() {
            Ok(fds) => {
                for fd in fds.flatten() {
                    if let FDTarget::Socket(inode) = fd.target {
                        t.socket_inodes.push(inode);
                    }
                }
            }
            Err(e) => gaps.record(Some(pid), "fd list", &e),
        }

        // The executable, scanned once per distinct file.
        let owner_of = |uid: u32| {
            self.users
                .get(&uid)
                .map(|u| u.name.clone())
                .unwrap_or_else(|| uid.to_string())
        };
        if let Some(exe) = t.facts.exe.clone() {
            let link = self.proc_root.join(pid.to_string()).join("exe");
            match files::open_regular(&link, false) {
                Ok((file, key)) => {
                    let owner = file
                        .metadata()
                        .map(|m| owner_of(std::os::unix::fs::MetadataExt::uid(&m)))
                        .unwrap_or_default();
                    t.exe_key = Some(key);
                    t.facts.exe_binary = Some(cache.scan(file, key, &exe, &owner));
                }
                Err(e) => gaps.io(pid, "exe scan", &e),
            }
        }

        // XMRig-style configs.
        let root = self.proc_root.join(pid.to_string()).join("root");
        let root_id = match std::fs::metadata(&root) {
            Ok(m) => (
                std::os::unix::fs::MetadataExt::dev(&m),
                std::os::unix::fs::MetadataExt::ino(&m),
            ),
            Err(e) => {
                gaps.io(pid, "root", &e);
                return;
            }
        };
        let mut candidates: Vec<String> = Vec::new();
        if let Some(exe) = &t.facts.exe {
            let path = exe.trim_end_matches(" (deleted)");
            if path.starts_with('/')
                && !path.starts_with("/memfd:")
                && let Some((dir, _)) = path.rsplit_once('/')
            {
                candidates.push(format!("{dir}/config.json"));
            }
        }
        if let Some(cwd) = &t.facts.cwd {
            candidates.push(format!("{}/config.json", cwd.trim_end_matches('/')));
        }
        if let Some(home) = self
            .users
            .get(&t.facts.uid)
            .map(|u| u.home.trim_end_matches('/').to_string())
        {
            candidates.push(format!("{home}/.xmrig.json"));
            candidates.push(format!("{home}/.config/xmrig.json"));
        }
        candidates.dedup();
        for path in candidates {
            let key = (root_id.0, root_id.1, path.clone());
            let found = self
                .configs
                .entry(key)
                .or_insert_with(|| {
                    let full = root.join(path.trim_start_matches('/'));
                    match files::read_regular(&full, files::MAX_CONFIG_BYTES, true) {
                        Ok((bytes, _)) => miner_config::parse(&path, &bytes),
                        Err(_) => None,
                    }
                })
                .clone();
            if let Some(c) = found
                && !t.facts.configs.iter().any(|x| x.path == c.path)
            {
                t.facts.configs.push(c);
            }
        }
    }
}

impl<'a> DetailReader<'a> {
    pub(super) fn new(users: &'a HashMap<u32, User>, proc_root: &'a Path) -> Self {
        DetailReader {
            users,
            cid_re: container_re(),
            proc_root,
            configs: HashMap::new(),
        }
    }
}

/// Reads the details of every watched process, or, for one that has been
/// idle since the agent last read them, restores what it remembers.
/// Returns how many were restored.
pub(super) fn read_details(
    watched: &mut [Watched],
    remembered: &HashMap<(i32, u64), Remembered>,
    reader: &mut DetailReader<'_>,
    cache: &mut BinaryCache<'_, '_>,
    gaps: &mut CoverageLog,
) -> usize {
    let mut reused = 0;
    for t in watched {
        let pid = t.facts.pid;
        // Idle since its details were read (the agent): reuse them.
        if let Some(k) = remembered
            .get(&(pid, t.start_ticks))
            .filter(|k| k.fingerprint == t.fingerprint && k.read_at.elapsed() < refresh_after(pid))
        {
            k.details.restore(t);
            if let Some(key) = t.exe_key {
                cache.touch(key);
            }
            reused += 1;
            continue;
        }
        reader.read(t, cache, gaps);
        t.read_at = Some(Instant::now());
    }
    reused
}

/// What to remember of `t` for the next tick, taking the previous memory
/// of it from `remembered` when its details were reused this tick.
pub(super) fn remember(
    t: &mut Watched,
    remembered: &mut HashMap<(i32, u64), Remembered>,
) -> Option<Remembered> {
    let key = (t.facts.pid, t.start_ticks);
    let (read_at, details) = match (t.read_at, remembered.remove(&key)) {
        (Some(at), _) => (at, ProcessDetails::of(t)),
        // Reused this tick: the remembered details are still right but
        // for the network namespace, read now if it was not before.
        (None, Some(mut k)) => {
            k.details.net_ns.clone_from(&t.net_ns);
            (k.read_at, k.details)
        }
        (None, None) => return None,
    };
    let threads = t
        .threads1
        .take()
        .unwrap_or_else(|| std::mem::take(&mut t.threads0));
    Some(Remembered {
        fingerprint: t.fingerprint,
        read_at,
        details,
        ticks: t.ticks0 + t.facts.cpu.ticks,
        threads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_cgroup_paths() {
        let re = Regex::new("[0-9a-f]{64}").expect("regex");
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let paths = vec![format!("/system.slice/docker-{id}.scope")];
        assert_eq!(container_id(&paths, &re).as_deref(), Some(id));
        assert_eq!(container_id(&["/user.slice".to_string()], &re), None);
    }
}
