//! Established TCP connections of each process, from `/proc/PID/net/tcp{,6}`
//! (one read per network namespace) and the socket inodes in
//! `/proc/PID/fd`; for a connection to a loopback address, the local process
//! holding the other end (a local proxy, a database), found among the
//! processes observed or, for RandomX-shaped processes, in the fd tables of
//! the others.
//!
//! Limits: only the ESTABLISHED state is listed; UDP and UNIX sockets are
//! not; the peer of a loopback connection is named only when its process is
//! observed, or when the connection is a RandomX-shaped process's.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;

use procfs::process::{FDTarget, Process};

use super::coverage::CoverageLog;
use super::process::Watched;
use crate::snapshot::{Connection, LocalPeer};

/// One network namespace's established connections.
#[derive(Default)]
struct Table {
    by_inode: HashMap<u64, Connection>,
    /// Socket inode by (local, remote) endpoints, as `ip:port`.
    by_ends: HashMap<(String, String), u64>,
}

/// Fills each process's `connections`, with the local peer of loopback ones.
pub(super) fn connections(tracked: &mut [Watched], proc_root: &Path, gaps: &mut CoverageLog) {
    let mut tables: HashMap<String, Table> = HashMap::new();
    // (process index, connection index, the peer's socket inode)
    let mut loopback: Vec<(usize, usize, u64)> = Vec::new();
    for (ti, t) in tracked.iter_mut().enumerate() {
        if t.socket_inodes.is_empty() {
            continue;
        }
        let pid = t.facts.pid;
        let ns = match &t.net_ns {
            Some(ns) => ns.clone(),
            None => match t.process.namespaces() {
                Ok(n) => {
                    let ns =
                        n.0.get(std::ffi::OsStr::new("net"))
                            .map(|n| format!("{}:{}", n.identifier, n.device_id))
                            .unwrap_or_default();
                    t.net_ns = Some(ns.clone());
                    ns
                }
                Err(e) => {
                    gaps.record(Some(pid), "net namespace", &e);
                    continue;
                }
            },
        };
        let table = tables
            .entry(ns)
            .or_insert_with(|| read_table(&t.process, gaps));
        let mut conns: Vec<(Connection, u64)> = t
            .socket_inodes
            .iter()
            .filter_map(|i| table.by_inode.get(i).map(|c| (c.clone(), *i)))
            .collect();
        conns.sort_by(|a, b| {
            (&a.0.remote_ip, a.0.remote_port).cmp(&(&b.0.remote_ip, b.0.remote_port))
        });
        conns.dedup_by(|a, b| a.0 == b.0);
        for (ci, (c, _)) in conns.iter().enumerate() {
            let peer_end = (
                format!("{}:{}", c.remote_ip, c.remote_port),
                c.local.clone(),
            );
            if is_loopback(&c.remote_ip)
                && let Some(inode) = table.by_ends.get(&peer_end)
            {
                loopback.push((ti, ci, *inode));
            }
        }
        t.facts.connections = conns.into_iter().map(|(c, _)| c).collect();
    }
    if loopback.is_empty() {
        return;
    }
    // The peers among the processes observed, then among the others.
    let mut owners: HashMap<u64, LocalPeer> = HashMap::new();
    let wanted: HashSet<u64> = loopback.iter().map(|(_, _, i)| *i).collect();
    for t in tracked.iter() {
        for inode in t.socket_inodes.iter().filter(|i| wanted.contains(i)) {
            owners.insert(*inode, peer_of(t));
        }
    }
    // Walking every fd table costs: only for the peers of RandomX-shaped
    // processes, where the judge asks whether the peer is a proxy.
    let missing: HashSet<u64> = loopback
        .iter()
        .filter(|(ti, _, inode)| {
            !owners.contains_key(inode)
                && tracked
                    .get(*ti)
                    .and_then(|t| t.facts.memory.as_ref())
                    .is_some_and(super::candidates::rx_shaped)
        })
        .map(|(_, _, inode)| *inode)
        .collect();
    if !missing.is_empty() {
        let seen: HashSet<i32> = tracked.iter().map(|t| t.facts.pid).collect();
        owners.extend(find_owners(proc_root, &missing, &seen));
    }
    for (ti, ci, inode) in loopback {
        if let (Some(peer), Some(c)) = (
            owners.get(&inode),
            tracked
                .get_mut(ti)
                .and_then(|t| t.facts.connections.get_mut(ci)),
        ) {
            c.peer = Some(peer.clone());
        }
    }
}

fn read_table(p: &Process, gaps: &mut CoverageLog) -> Table {
    let mut table = Table::default();
    for (name, entries) in [
        ("net/tcp", super::procread::tcp(p)),
        ("net/tcp6", super::procread::tcp6(p)),
    ] {
        match entries {
            Ok(entries) => {
                for e in entries {
                    if e.state == procfs::net::TcpState::Established {
                        let c = connection(&e);
                        let remote = format!("{}:{}", c.remote_ip, c.remote_port);
                        table.by_ends.insert((c.local.clone(), remote), e.inode);
                        table.by_inode.insert(e.inode, c);
                    }
                }
            }
            Err(err) => gaps.record(Some(p.pid), name, &err),
        }
    }
    table
}

fn is_loopback(ip: &str) -> bool {
    ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn peer_of(t: &Watched) -> LocalPeer {
    LocalPeer {
        pid: t.facts.pid,
        comm: t.facts.comm.clone(),
        exe: t.facts.exe.clone(),
    }
}

/// Processes outside those observed holding the socket inodes `wanted`:
/// their fd tables are listed (links only, nothing else is read).
fn find_owners(
    proc_root: &Path,
    wanted: &HashSet<u64>,
    seen: &HashSet<i32>,
) -> Vec<(u64, LocalPeer)> {
    let mut found = Vec::new();
    let Ok(all) = procfs::process::all_processes_with_root(proc_root) else {
        return found;
    };
    for p in all.flatten() {
        if found.len() == wanted.len() {
            break;
        }
        if seen.contains(&p.pid) {
            continue;
        }
        let Ok(fds) = p.fd() else { continue };
        for fd in fds.flatten() {
            if let FDTarget::Socket(inode) = fd.target
                && wanted.contains(&inode)
            {
                let comm = super::procread::stat(&p)
                    .map(|s| s.comm)
                    .unwrap_or_default();
                let exe = p.exe().ok().map(|e| e.to_string_lossy().into_owned());
                found.push((
                    inode,
                    LocalPeer {
                        pid: p.pid,
                        comm,
                        exe,
                    },
                ));
            }
        }
    }
    found
}

fn plain_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        v4 => v4.to_string(),
    }
}

pub(crate) fn connection(e: &procfs::net::TcpNetEntry) -> Connection {
    Connection {
        local: format!(
            "{}:{}",
            plain_ip(e.local_address.ip()),
            e.local_address.port()
        ),
        remote_ip: plain_ip(e.remote_address.ip()),
        remote_port: e.remote_address.port(),
        peer: None,
    }
}
