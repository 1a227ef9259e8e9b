//! `minerwatch contain`: stop a running miner without losing the evidence.
//!
//! [`refuse`] turns away what must never be touched (PID 1, kernel threads,
//! minerwatch and its ancestors) before anything is read; [`plan`] checks
//! the current judgement (each pid must be `miner` unless forced) and lists
//! what would be done; [`execute`] does it, in this order, logging each
//! action with the state before and after:
//!
//! 1. freeze every tree ([`super::freeze`]), state checked;
//! 2. collect the evidence bundle while frozen ([`super::bundle`]), with
//!    the plan, the originals of every persistence file and the executable
//!    as read through /proc/PID/exe (also when deleted);
//! 3. `--kill`: SIGKILL every tree, checked gone;
//! 4. `--quarantine`: the executable read in step 2 into a root-only
//!    directory as a mode-0000 file with a JSON record of its hash and
//!    origin, and the original removed (only when it is still the same
//!    file: device and inode checked);
//! 5. `--disable-persistence`: the cron lines, systemd units and rc.local
//!    lines that launch the process commented out with a marked comment
//!    (systemd units also lose their enablement symlinks), its libraries
//!    removed from ld.so.preload.
//!
//! Without `--kill` the trees stay frozen: the plan says how to thaw them.
//! Steps 4 and 5 live in `disarm.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::RespondError;
use super::bundle::{self, CollectOptions};
use super::disarm::{Held, disable_entry, failed, ok, quarantine, remove_preload};
use super::freeze::{self, Member, Method};
use crate::judge::{Level, Report, persistence::launching};
use crate::safefs::{self, write::private_dir};
use crate::snapshot::{HostSnapshot, PersistenceEntry};

pub use super::disarm::MARKER;

/// Largest executable copied into quarantine.
const MAX_QUARANTINE_BYTES: u64 = 1 << 30;

/// What the responder asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub pids: Vec<i32>,
    /// Pids contained although the judgement does not rate them `miner`.
    pub force: Vec<i32>,
    pub kill: bool,
    /// The quarantine directory, with `--quarantine`.
    pub quarantine: Option<PathBuf>,
    pub disable_persistence: bool,
    /// Where the bundle goes.
    pub out: PathBuf,
    pub collect: CollectOptions,
}

/// One process asked for and its tree.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub pid: i32,
    pub start_time: u64,
    pub comm: String,
    pub exe: Option<String>,
    pub level: Level,
    /// Contained by `--force` although not rated `miner`.
    pub forced: bool,
    /// pid and comm of every member, the target first.
    pub tree: Vec<(i32, String)>,
    pub freeze: Method,
    /// Persistence entries that launch its executable.
    pub persistence: Vec<PersistenceEntry>,
    /// ld.so.preload entries a member of the tree maps.
    pub preload: Vec<String>,
}

/// Everything `contain` would do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub targets: Vec<Target>,
    pub bundle: PathBuf,
    pub kill: bool,
    pub quarantine: Option<PathBuf>,
    pub disable_persistence: bool,
    /// The steps in words, in order.
    pub steps: Vec<String>,
}

/// One action carried out.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    /// freeze, collect, kill, quarantine, remove-original, disable-persistence.
    pub step: String,
    pub target: String,
    pub before: String,
    pub after: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The pids of minerwatch and its ancestors.
fn ourselves(proc_root: &Path) -> Vec<i32> {
    let mut out = vec![std::process::id() as i32];
    let mut pid = out[0];
    while let Some(s) = freeze::stat(proc_root, pid) {
        if s.ppid <= 0 || out.contains(&s.ppid) {
            break;
        }
        out.push(s.ppid);
        pid = s.ppid;
    }
    out
}

/// Refuses, before anything is scanned, what `contain` never touches.
pub fn refuse(proc_root: &Path, pids: &[i32]) -> Result<(), RespondError> {
    if pids.is_empty() {
        return Err(RespondError::Refused(
            "contain needs at least one PID (or --report FILE with a miner finding)".into(),
        ));
    }
    let us = ourselves(proc_root);
    for &pid in pids {
        if pid <= 1 {
            return Err(RespondError::Refused(format!(
                "refusing PID {pid}: it is the init process (or no process); containing it would stop the host"
            )));
        }
        let Some(st) = freeze::stat(proc_root, pid) else {
            return Err(RespondError::Refused(format!(
                "refusing PID {pid}: no such process (it exited, or is hidden from this /proc)"
            )));
        };
        if st.kernel_thread {
            return Err(RespondError::Refused(format!(
                "refusing PID {pid} ({}): it is a kernel thread, which cannot be frozen or killed from user space",
                st.comm
            )));
        }
        if pid == us[0] {
            return Err(RespondError::Refused(format!(
                "refusing PID {pid}: it is this minerwatch itself"
            )));
        }
        if us.contains(&pid) {
            return Err(RespondError::Refused(format!(
                "refusing PID {pid} ({}): it is an ancestor of this minerwatch (a shell or tool that started it); containing it would stop the responder",
                st.comm
            )));
        }
    }
    Ok(())
}

/// Paths a process maps (from its maps file), for ld.so.preload links.
fn mapped_paths(proc_root: &Path, pid: i32) -> Vec<String> {
    safefs::read_regular(
        &proc_root.join(pid.to_string()).join("maps"),
        64 << 20,
        true,
    )
    .map(|(b, _)| {
        String::from_utf8_lossy(&b)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string))
            .collect()
    })
    .unwrap_or_default()
}

/// Checks the judgement and lists what would be done.
pub fn plan(snapshot: &HostSnapshot, report: &Report, req: &Request) -> Result<Plan, RespondError> {
    let proc_root = &req.collect.proc_root;
    let mut targets: Vec<Target> = Vec::new();
    let mut covered: Vec<i32> = Vec::new();
    for &pid in &req.pids {
        if covered.contains(&pid) {
            continue;
        }
        let p = snapshot
            .processes
            .iter()
            .find(|p| p.pid == pid)
            .ok_or_else(|| {
                RespondError::Refused(format!(
                    "refusing PID {pid}: the scan could not observe it (it exited or refused us: see the coverage), so it has no judgement"
                ))
            })?;
        let level = report
            .findings
            .iter()
            .find(|f| f.pid == pid && f.start_time == p.start_time)
            .map_or(Level::Clean, |f| f.level);
        let forced = req.force.contains(&pid);
        if level < Level::Miner && !forced {
            let frozen = freeze::stat(proc_root, pid).is_some_and(|s| matches!(s.state, 'T' | 't'))
                || freeze::state(proc_root, &freeze::method_for(proc_root, &[pid]), &[pid])
                    == "FROZEN";
            let why = if frozen {
                " (it is frozen, so its CPU and rounding modes cannot be seen: if minerwatch froze it, the bundle of that run holds the judgement)"
            } else {
                ""
            };
            return Err(RespondError::Refused(format!(
                "refusing PID {pid} ({}): the current judgement rates it {level}, not miner{why}; look at `minerwatch scan --pid {pid}` and, if you are sure, name it with --force {pid}",
                p.comm
            )));
        }
        let pids = freeze::tree(proc_root, pid);
        covered.extend(&pids);
        let tree: Vec<(i32, String)> = pids
            .iter()
            .map(|c| {
                (
                    *c,
                    freeze::stat(proc_root, *c)
                        .map(|s| s.comm)
                        .unwrap_or_default(),
                )
            })
            .collect();
        let freeze = freeze::method_for(proc_root, &pids);
        let exe = p.exe.as_deref().map(|e| e.trim_end_matches(" (deleted)"));
        let persistence: Vec<PersistenceEntry> = exe
            .map(|e| launching(&snapshot.host_facts.persistence, e))
            .unwrap_or_default()
            .into_iter()
            .cloned()
            .collect();
        let mapped: Vec<String> = pids
            .iter()
            .flat_map(|c| mapped_paths(proc_root, *c))
            .collect();
        let preload = snapshot
            .host_facts
            .ld_so_preload
            .as_ref()
            .map(|f| {
                f.entries
                    .iter()
                    .filter(|e| mapped.contains(e))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        targets.push(Target {
            pid,
            start_time: p.start_time,
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            level,
            forced,
            tree,
            freeze,
            persistence,
            preload,
        });
    }
    let mut steps = Vec::new();
    for t in &targets {
        let members: Vec<String> = t.tree.iter().map(|(p, c)| format!("{p} ({c})")).collect();
        steps.push(format!(
            "freeze {} [{}{}]: {}",
            members.join(", "),
            t.level,
            if t.forced { ", --force" } else { "" },
            t.freeze.describe()
        ));
    }
    steps.push(format!(
        "collect the evidence bundle into {} while frozen",
        req.out.display()
    ));
    if req.kill {
        steps.push("kill every frozen process (SIGKILL), checked gone".into());
    }
    if let Some(q) = &req.quarantine {
        for t in &targets {
            steps.push(format!(
                "quarantine the executable of {} ({}) into {} (mode 0000) and remove the original",
                t.pid,
                t.exe.as_deref().unwrap_or("?"),
                q.display()
            ));
        }
    }
    if req.disable_persistence {
        for t in &targets {
            for e in &t.persistence {
                steps.push(format!(
                    "disable {} {}:{}: `{}`",
                    e.kind, e.path, e.line, e.text
                ));
            }
            for lib in &t.preload {
                steps.push(format!("remove {lib} from ld.so.preload"));
            }
            if t.persistence.is_empty() && t.preload.is_empty() {
                steps.push(format!(
                    "no persistence entry launches {}: nothing to disable",
                    t.pid
                ));
            }
        }
    }
    if !req.kill {
        steps.push(
            "leave the trees frozen (thaw: kill -CONT each pid, or THAWED into freezer.state / 0 into cgroup.freeze)"
                .into(),
        );
    }
    Ok(Plan {
        targets,
        bundle: req.out.clone(),
        kill: req.kill,
        quarantine: req.quarantine.clone(),
        disable_persistence: req.disable_persistence,
        steps,
    })
}

/// Carries out `plan`. Returns every action, failed ones included; an
/// error only when nothing could be done safely (a tree that did not
/// freeze is not collected from or killed blind: it is reported). When the
/// bundle cannot be written, kill, quarantine and persistence are skipped
/// (failed, with the reason) and the trees stay frozen.
pub fn execute(
    plan: &Plan,
    snapshot: &HostSnapshot,
    report: &Report,
    req: &Request,
) -> Vec<Action> {
    let proc_root = &req.collect.proc_root;
    let mut log = Vec::new();
    // 1. Freeze.
    let mut trees: Vec<(&Target, BTreeMap<i32, Member>)> = Vec::new();
    for t in &plan.targets {
        let pids: Vec<i32> = t.tree.iter().map(|(p, _)| *p).collect();
        let before = freeze::state(proc_root, &t.freeze, &pids);
        let mut members = BTreeMap::new();
        match Member::open(proc_root, t.pid, Some(t.start_time)) {
            Ok(m) => {
                members.insert(t.pid, m);
            }
            Err(e) => {
                log.push(failed(
                    "freeze",
                    format!("{}", t.pid),
                    before,
                    e.to_string(),
                ));
                continue;
            }
        }
        for &c in pids.iter().skip(1) {
            if let Ok(m) = Member::open(proc_root, c, None) {
                members.insert(c, m);
            }
        }
        let target = format!("tree of {} ({})", t.pid, t.freeze.describe());
        match freeze::freeze(proc_root, &t.freeze, &mut members, t.pid) {
            Ok(()) => {
                let now: Vec<i32> = members.keys().copied().collect();
                let after = freeze::state(proc_root, &t.freeze, &now);
                let after = match &t.freeze {
                    Method::Sigstop => after,
                    _ => format!(
                        "{after}; {}",
                        freeze::state(proc_root, &Method::Sigstop, &now)
                    ),
                };
                log.push(ok("freeze", target, before, after));
                trees.push((t, members));
            }
            Err(e) => log.push(failed("freeze", target, before, e.to_string())),
        }
    }
    // 2. Collect, with the executables held for quarantine.
    let mut held: Vec<Held> = Vec::new();
    if req.quarantine.is_some() {
        for (t, _) in &trees {
            let exe = proc_root.join(t.pid.to_string()).join("exe");
            let link = std::fs::read_link(&exe)
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            match safefs::open_regular(&exe, false).and_then(|(mut f, key)| {
                let mut bytes = Vec::new();
                safefs::read_capped(&mut f, MAX_QUARANTINE_BYTES, &mut bytes)
                    .map(|truncated| (bytes, truncated, key))
            }) {
                Ok((bytes, truncated, key)) => held.push(Held {
                    pid: t.pid,
                    link,
                    bytes,
                    truncated,
                    dev: key.dev,
                    ino: key.ino,
                }),
                Err(e) => log.push(failed(
                    "quarantine",
                    format!("/proc/{}/exe", t.pid),
                    link,
                    format!("cannot read the executable: {e}"),
                )),
            }
        }
    }
    let frozen: Vec<i32> = trees.iter().flat_map(|(_, m)| m.keys().copied()).collect();
    let plan_json = serde_json::to_vec_pretty(plan).unwrap_or_default();
    let extra = vec![("contain/plan.json".to_string(), plan_json)];
    let collected = bundle::collect(snapshot, report, &frozen, &extra, &req.collect, &req.out);
    let bundle_error = collected.as_ref().err().map(|e| e.to_string());
    match collected {
        Ok(m) => log.push(ok(
            "collect",
            req.out.display().to_string(),
            "no bundle".into(),
            format!(
                "{} members, {} bytes, {} caps reached, {} read errors",
                m.members.len() + 1,
                m.total_bytes,
                m.capped.len(),
                m.errors.len()
            ),
        )),
        Err(e) => log.push(failed(
            "collect",
            req.out.display().to_string(),
            "no bundle".into(),
            e.to_string(),
        )),
    }
    // Without the bundle nothing that destroys evidence is done: the trees
    // stay frozen (their memory, the executable, the persistence files) for
    // another try with a writable --out.
    if let Some(e) = bundle_error {
        let why = format!(
            "skipped: the evidence bundle was not written ({e}); the trees stay frozen: contain them again with an --out that can be written (and --force, since frozen they no longer look busy)"
        );
        let mut skip = |step: &str, target: String| {
            log.push(failed(step, target, "as before".into(), why.clone()));
        };
        for (t, _) in &trees {
            if req.kill {
                skip("kill", format!("tree of {}", t.pid));
            }
            if req.quarantine.is_some() {
                skip("quarantine", format!("the executable of {}", t.pid));
            }
            if req.disable_persistence && (!t.persistence.is_empty() || !t.preload.is_empty()) {
                skip(
                    "disable-persistence",
                    format!("the persistence of {}", t.pid),
                );
            }
        }
        return log;
    }
    // 3. Kill.
    if req.kill {
        for (t, members) in &trees {
            let pids: Vec<i32> = members.keys().copied().collect();
            let before = freeze::state(proc_root, &Method::Sigstop, &pids);
            let target = format!("tree of {}", t.pid);
            match freeze::kill(proc_root, &t.freeze, members) {
                Ok(()) => log.push(ok("kill", target, before, "every process gone".into())),
                Err(e) => log.push(failed("kill", target, before, e.to_string())),
            }
        }
    }
    // 4. Quarantine.
    if let Some(dir) = &req.quarantine {
        for h in &held {
            log.extend(quarantine(dir, h, snapshot, &req.collect.root));
        }
    }
    // 5. Persistence.
    if req.disable_persistence {
        for (t, _) in &trees {
            for e in &t.persistence {
                log.extend(disable_entry(e, &req.collect.root));
            }
            if !t.preload.is_empty() {
                log.push(remove_preload(snapshot, &t.preload, &req.collect.root));
            }
        }
    }
    log
}

/// What the agent did with one `miner` finding.
#[derive(Debug, Clone)]
pub struct AutoContained {
    pub frozen: Vec<i32>,
    pub method: String,
    pub bundle: Option<PathBuf>,
    pub error: Option<String>,
}

/// The agent's `[contain] freeze_on_miner`: freezes the tree of `pid` (the
/// refusals of [`refuse`] apply) and writes its bundle into `dir`. The tree
/// stays frozen.
pub fn freeze_and_collect(
    snapshot: &HostSnapshot,
    report: &Report,
    pid: i32,
    start_time: u64,
    opts: &CollectOptions,
    dir: &Path,
) -> AutoContained {
    let proc_root = &opts.proc_root;
    let mut done = AutoContained {
        frozen: Vec::new(),
        method: String::new(),
        bundle: None,
        error: None,
    };
    if let Err(e) = refuse(proc_root, &[pid]) {
        done.error = Some(e.to_string());
        return done;
    }
    let root = match Member::open(proc_root, pid, Some(start_time)) {
        Ok(m) => m,
        Err(e) => {
            done.error = Some(format!("process {pid}: {e}"));
            return done;
        }
    };
    let pids = freeze::tree(proc_root, pid);
    let method = freeze::method_for(proc_root, &pids);
    done.method = method.describe();
    let mut members = BTreeMap::new();
    members.insert(pid, root);
    for &c in pids.iter().skip(1) {
        if let Ok(m) = Member::open(proc_root, c, None) {
            members.insert(c, m);
        }
    }
    if let Err(e) = freeze::freeze(proc_root, &method, &mut members, pid) {
        done.error = Some(format!("freezing: {e}"));
        return done;
    }
    done.frozen = members.keys().copied().collect();
    if let Err(e) = private_dir(dir) {
        done.error = Some(format!("evidence directory '{}': {e}", dir.display()));
        return done;
    }
    let out = dir.join(format!(
        "minerwatch-{pid}-{start_time}-{}.tar.gz",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
    ));
    match bundle::collect(snapshot, report, &done.frozen, &[], opts, &out) {
        Ok(_) => done.bundle = Some(out),
        Err(e) => done.error = Some(e.to_string()),
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_1_ourselves_and_our_parent_are_refused() {
        let proc = Path::new("/proc");
        let err = refuse(proc, &[1]).expect_err("pid 1");
        assert!(err.to_string().contains("init"), "{err}");
        let me = std::process::id() as i32;
        let err = refuse(proc, &[me]).expect_err("self");
        assert!(err.to_string().contains("itself"), "{err}");
        let parent = freeze::stat(proc, me).expect("stat").ppid;
        if parent > 1 {
            let err = refuse(proc, &[parent]).expect_err("parent");
            assert!(err.to_string().contains("ancestor"), "{err}");
        }
        assert!(refuse(proc, &[]).is_err());
    }
}
