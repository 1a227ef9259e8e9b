//! Which processes a scan looks at: the process table from the raw
//! getdents64 listing of /proc, narrowed to `--pid` and descendants, and
//! the processes that started during the window or that only the host
//! checks found; and each one's ancestry.

use std::collections::{BTreeSet, HashMap, HashSet};

use procfs::ProcError;
use procfs::process::{Process, Stat};

use super::binaries::BinaryCache;
use super::coverage::CoverageLog;
use super::process::{DetailReader, Watched, track};
use super::{ObserveError, Options, host};
use crate::snapshot::{Ancestor, HostFacts};

/// Ancestry chains are cut at this length (a loop would be a kernel bug).
const MAX_ANCESTRY: usize = 64;

/// The process table at the start of a scan.
pub(super) struct Table {
    /// `stat` of every process listed, in scope or not.
    pub(super) stats: HashMap<i32, Stat>,
    /// The processes in scope, by pid, still to be watched.
    pub(super) handles: HashMap<i32, Process>,
    /// Pids in scope, sorted, without minerwatch itself.
    pub(super) pids: Vec<i32>,
}

/// Reads the process table and the scope. Fails when /proc cannot be listed
/// or a `--pid` names no process.
pub(super) fn read_table(opts: &Options, gaps: &mut CoverageLog) -> Result<Table, ObserveError> {
    // The raw getdents64 listing: an LD_PRELOAD rootkit hooks readdir.
    let listed = host::list_pids_raw(&opts.proc_root).map_err(|source| ObserveError::ProcList {
        path: opts.proc_root.clone(),
        source: ProcError::Io(source, Some(opts.proc_root.clone())),
    })?;
    let mut stats: HashMap<i32, Stat> = HashMap::new();
    let mut handles: HashMap<i32, Process> = HashMap::new();
    for pid in listed {
        let Ok(p) = Process::new_with_root(opts.proc_root.join(pid.to_string())) else {
            continue;
        };
        match super::procread::stat(&p) {
            Ok(stat) => {
                stats.insert(pid, stat);
                handles.insert(pid, p);
            }
            Err(e) if p.is_alive() => gaps.record(Some(pid), "stat", &e),
            Err(_) => {}
        }
    }
    let scope: HashSet<i32> = if opts.pids.is_empty() {
        stats.keys().copied().collect()
    } else {
        for pid in &opts.pids {
            if !stats.contains_key(pid) {
                if !process_exists(*pid) {
                    return Err(ObserveError::NoSuchPid(*pid));
                }
                // It runs, but its /proc entry cannot be read (a mount over
                // /proc/PID, hidepid): the scan goes on and says so.
                gaps.inaccessible.insert(*pid);
                gaps.note(
                    Some(*pid),
                    "stat",
                    "the process runs but its /proc entry cannot be read".into(),
                );
            }
        }
        descendants(&stats, &opts.pids)
    };
    // Never judge ourselves: our CPU is the scan's, our memory holds the rules.
    let me = own_pid();
    let mut pids: Vec<i32> = scope.into_iter().filter(|p| *p != me).collect();
    pids.sort_unstable();
    handles.retain(|pid, _| pids.binary_search(pid).is_ok());
    Ok(Table {
        stats,
        handles,
        pids,
    })
}

pub(super) fn own_pid() -> i32 {
    i32::try_from(std::process::id()).unwrap_or(-1)
}

/// Adds the processes that started during the window (a build's next
/// compiler, a miner restarted by cron), for the part they ran, and those
/// only the host checks found (hidden from listings), with their details.
pub(super) fn add_late(
    table: &mut Table,
    watched: &mut Vec<Watched>,
    host_facts: &HostFacts,
    opts: &Options,
    reader: &mut DetailReader<'_>,
    cache: &mut BinaryCache<'_, '_>,
    gaps: &mut CoverageLog,
) {
    let Ok(listed) = host::list_pids_raw(&opts.proc_root) else {
        return;
    };
    let me = own_pid();
    let extra = host_facts.hidden_pids.iter().map(|h| h.pid);
    // Looked up once per listed pid: a scan over `watched` for each made
    // this quadratic (a tenth of a second at 10,000 processes).
    let watching: HashSet<(i32, u64)> = watched
        .iter()
        .map(|t| (t.facts.pid, t.start_ticks))
        .collect();
    let mut fresh: Vec<(Process, Stat)> = Vec::new();
    for pid in listed.into_iter().chain(extra).collect::<BTreeSet<i32>>() {
        let known = table
            .stats
            .get(&pid)
            .is_some_and(|s| watching.contains(&(pid, s.starttime)));
        if pid == me || known {
            continue;
        }
        let Ok(p) = Process::new_with_root(opts.proc_root.join(pid.to_string())) else {
            continue;
        };
        if let Ok(stat) = super::procread::stat(&p) {
            table.stats.insert(p.pid, stat.clone());
            fresh.push((p, stat));
        }
    }
    let scope_now = if opts.pids.is_empty() {
        None
    } else {
        Some(descendants(&table.stats, &opts.pids))
    };
    for (p, stat) in fresh {
        if scope_now.as_ref().is_some_and(|s| !s.contains(&p.pid)) || gaps.vanished.contains(&p.pid)
        {
            continue;
        }
        let mut t = track(p, &stat, false, None, gaps);
        t.read_at = Some(std::time::Instant::now());
        reader.read(&mut t, cache, gaps);
        watched.push(t);
    }
}

/// Sets each process's ancestry from the table.
pub(super) fn set_ancestry(watched: &mut [Watched], table: &Table) {
    let parents: HashMap<i32, (i32, String)> = table
        .stats
        .iter()
        .map(|(pid, s)| (*pid, (s.ppid, s.comm.clone())))
        .collect();
    for t in watched {
        t.facts.ancestry = ancestry(t.facts.ppid, &parents);
    }
}

/// Whether `pid` names a running process (kill(pid, 0); EPERM means it does).
pub(super) fn process_exists(pid: i32) -> bool {
    rustix::process::Pid::from_raw(pid).is_some_and(|p| {
        matches!(
            rustix::process::test_kill_process(p),
            Ok(()) | Err(rustix::io::Errno::PERM)
        )
    })
}

pub(super) fn descendants(table: &HashMap<i32, Stat>, roots: &[i32]) -> HashSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, s) in table {
        children.entry(s.ppid).or_default().push(*pid);
    }
    let mut out: HashSet<i32> = HashSet::new();
    let mut stack: Vec<i32> = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if out.insert(pid)
            && let Some(c) = children.get(&pid)
        {
            stack.extend(c);
        }
    }
    out
}

pub(super) fn ancestry(mut ppid: i32, parents: &HashMap<i32, (i32, String)>) -> Vec<Ancestor> {
    let mut out = Vec::new();
    while ppid > 0 && out.len() < MAX_ANCESTRY {
        let Some((next, name)) = parents.get(&ppid) else {
            break;
        };
        out.push(Ancestor {
            pid: ppid,
            name: name.clone(),
        });
        ppid = *next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestry_walks_to_init() {
        let parents: HashMap<i32, (i32, String)> = [
            (1, (0, "systemd".to_string())),
            (100, (1, "sshd".to_string())),
            (200, (100, "bash".to_string())),
        ]
        .into();
        let a = ancestry(200, &parents);
        assert_eq!(
            a.iter().map(|x| x.pid).collect::<Vec<_>>(),
            vec![200, 100, 1]
        );
        assert_eq!(a[1].name, "sshd");
    }
}
