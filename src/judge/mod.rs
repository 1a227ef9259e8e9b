//! The judge: a pure function from a [`HostSnapshot`] to a [`Report`].
//!
//! Each detector in [`signals`] turns facts into [`Signal`]s — a stable id, a
//! strength, a weight and one sentence of evidence a responder can check by
//! hand. [`verdict`] combines them into a score and a [`Level`]. No I/O, no
//! clock, no globals: the same snapshot always gives the same report, which is
//! what lets `analyze` judge a snapshot saved on another machine.
//!
//! Combination rules (DESIGN.md, "Verdicts"; [`verdict`] has them exactly):
//! - weak signals weigh 10, medium 30, strong 50;
//! - shape is not proof: RandomX-sized memory, JIT regions and huge pages
//!   describe JVMs, databases and emulators too, and never count toward a
//!   level, with CPU or without;
//! - `miner` needs a strong signal specific to RandomX or to a miner
//!   (rounding-mode flips, RandomX code, miner data or code in memory or
//!   on disk, a Stratum connection), evidence of activity (CPU, flips, pool
//!   traffic) and a score of 60;
//! - `suspicious` needs a score of 40 and a medium or strong signal, so no
//!   single weak signal, nor any number of weak ones, gets there;
//! - signals that only say a process *can* run RandomX (engine constants,
//!   RandomX JIT code) never rise above `notice` on their own;
//! - evidence against counts: busy threads that were sampled while they ran
//!   and stayed at round-to-nearest are not hashing RandomX
//!   (`rx.not_hashing`), and then its RandomX capability no longer counts.

pub mod files;
pub mod host;
pub mod persistence;
mod policy;
pub mod signals;

use serde::{Deserialize, Serialize};

use crate::snapshot::{Ancestor, Coverage, HostInfo, HostSnapshot, ProcessFacts};

pub use policy::{AllowRule, Policy};
pub use signals::{Kind, Signal, Strength};

/// The JSON report schema.
pub const REPORT_SCHEMA: &str = "minerwatch/1";

/// How sure we are that a process mines.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Nothing found.
    #[default]
    Clean,
    /// Worth knowing, not alarming.
    Notice,
    /// Strong indicators, not proven: look.
    Suspicious,
    /// It is mining: act.
    Miner,
}

impl Level {
    /// The lowercase name used in every output.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Clean => "clean",
            Level::Notice => "notice",
            Level::Suspicious => "suspicious",
            Level::Miner => "miner",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "clean" => Ok(Level::Clean),
            "notice" => Ok(Level::Notice),
            "suspicious" => Ok(Level::Suspicious),
            "miner" => Ok(Level::Miner),
            other => Err(format!(
                "unknown level '{other}': use one of miner, suspicious, notice, clean"
            )),
        }
    }
}

/// The judged scan: what every output format renders.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub host: HostInfo,
    pub started_at: String,
    pub window_secs: f64,
    /// The highest level among the findings.
    pub verdict: Level,
    /// Processes at `notice` or above, highest score first.
    pub findings: Vec<Finding>,
    pub host_findings: Vec<HostFinding>,
    pub coverage: Coverage,
    /// Processes judged (in scope and observed).
    pub processes_judged: usize,
    /// The `--pid` scope, empty for the whole host.
    pub scope: Vec<i32>,
    /// Only the host checks about the scope were judged (`--pid` without
    /// `--host-checks`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scoped_host_checks: bool,
    /// Files on disk at `notice` or above, highest level first (a sweep).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_findings: Vec<files::FileFinding>,
    /// What the sweep read and what it skipped, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<files::SweepCoverage>,
    /// Processes in scope that could not be read (in part or at all): the
    /// verdict covers only what was read. Absent when nothing was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
}

/// What a scan could not see of the processes in its scope, and how to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incomplete {
    /// Processes we were refused something of (coverage.inaccessible).
    pub processes: usize,
    /// Processes in scope.
    pub of: usize,
    /// What was refused: the reads, deduplicated ("maps", "exe link",
    /// "ptrace (FPU sampling)").
    pub refused: Vec<String>,
    /// How to see them.
    pub fix: String,
}

/// Reads whose refusal makes a view incomplete, at most this many named.
const MAX_REFUSED_NAMED: usize = 8;

/// The [`Incomplete`] of a coverage, if any process in scope was refused.
pub fn incomplete(coverage: &Coverage) -> Option<Incomplete> {
    if coverage.inaccessible == 0 {
        return None;
    }
    let refused_error = |e: &str| {
        let e = e.to_ascii_lowercase();
        e.contains("permission denied")
            || e.contains("not permitted")
            || e.contains("cannot be read")
            || e.contains("refused")
    };
    let mut refused: Vec<String> = Vec::new();
    for e in coverage
        .errors
        .iter()
        .filter(|e| e.pid.is_some() && (refused_error(&e.error) || e.what.starts_with("ptrace")))
    {
        if !refused.contains(&e.what) && refused.len() < MAX_REFUSED_NAMED {
            refused.push(e.what.clone());
        }
    }
    let only_ptrace = !refused.is_empty() && refused.iter().all(|w| w.starts_with("ptrace"));
    let fix = if only_ptrace {
        "ptrace was refused: run as root or with CAP_SYS_PTRACE; as root, lower kernel.yama.ptrace_scope (3 forbids it to everyone) or lift the seccomp policy that forbids it"
    } else {
        "run as root, or grant CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (a service: AmbientCapabilities=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH, as the shipped unit does)"
    };
    Some(Incomplete {
        processes: coverage.inaccessible,
        of: coverage.processes,
        refused,
        fix: fix.to_string(),
    })
}

/// One process at `notice` or above.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub pid: i32,
    pub start_time: u64,
    pub level: Level,
    pub score: u32,
    pub process: ProcessSummary,
    pub signals: Vec<Signal>,
    /// Set when an allow rule capped this finding: the rule's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<String>,
}

/// The process as a responder needs to find it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSummary {
    pub name: String,
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
    pub user: Option<String>,
    pub uid: u32,
    pub cpu_percent: f64,
    pub threads: u64,
    pub container: Option<String>,
    pub cwd: Option<String>,
    pub ancestry: Vec<Ancestor>,
    /// SHA-256 of the executable, when it was read.
    pub exe_sha256: Option<String>,
}

/// A finding about the host rather than one process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostFinding {
    pub id: String,
    pub level: Level,
    pub evidence: String,
}

/// Judges a whole snapshot.
pub fn judge(snapshot: &HostSnapshot, policy: &Policy) -> Report {
    let persistence = persistence::suspects(&snapshot.host_facts.persistence, &policy.indicators);
    let mut findings: Vec<Finding> = snapshot
        .processes
        .iter()
        .filter_map(|p| {
            let mut signals = signals::detect_with(p, snapshot, policy, &persistence);
            // Evidence against first (it explains a low level), then the
            // strongest evidence; ties keep detection order.
            signals.sort_by_key(|s| (s.kind != Kind::Against, std::cmp::Reverse(s.weight)));
            let (mut level, score) = verdict(&signals);
            let process = summary(p, snapshot);
            let allowed = policy
                .allow
                .iter()
                .find(|r| r.allows(p, &process))
                .map(|r| {
                    level = level.min(r.max_level);
                    r.note()
                });
            (level > Level::Clean).then_some(Finding {
                pid: p.pid,
                start_time: p.start_time,
                level,
                score,
                process,
                signals,
                allowed,
            })
        })
        .collect();
    findings.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then(b.score.cmp(&a.score))
            .then(a.pid.cmp(&b.pid))
    });
    let host_findings = host::findings(snapshot, policy, &persistence);
    let file_findings = snapshot
        .sweep
        .as_ref()
        .map(|s| {
            files::findings(
                &s.files,
                &snapshot.host_facts.persistence,
                &snapshot.processes,
                &policy.allow,
            )
        })
        .unwrap_or_default();
    let verdict = findings
        .iter()
        .map(|f| f.level)
        .chain(host_findings.iter().map(|h: &HostFinding| h.level))
        .chain(file_findings.iter().map(|f| f.level))
        .max()
        .unwrap_or(Level::Clean);
    Report {
        schema: REPORT_SCHEMA.to_string(),
        host: snapshot.host.clone(),
        started_at: snapshot.started_at.clone(),
        window_secs: snapshot.window_secs,
        verdict,
        findings,
        host_findings,
        coverage: snapshot.coverage.clone(),
        processes_judged: snapshot.processes.len(),
        scope: snapshot.scope.clone(),
        scoped_host_checks: snapshot.scoped_host_checks,
        file_findings,
        sweep: snapshot.sweep.as_ref().map(files::SweepCoverage::of),
        incomplete: incomplete(&snapshot.coverage),
    }
}

fn summary(p: &ProcessFacts, snapshot: &HostSnapshot) -> ProcessSummary {
    let exe_sha256 = p.exe_binary.as_ref().and_then(|id| {
        snapshot
            .binaries
            .iter()
            .find(|b| &b.id == id)
            .and_then(|b| b.sha256.clone())
    });
    ProcessSummary {
        name: p.comm.clone(),
        exe: p.exe.clone(),
        cmdline: p.cmdline.clone(),
        user: p.user.clone(),
        uid: p.uid,
        cpu_percent: (p.cpu.percent * 10.0).round() / 10.0,
        threads: p.threads,
        container: p.container.clone(),
        cwd: p.cwd.clone(),
        ancestry: p.ancestry.clone(),
        exe_sha256,
    }
}

/// The level of a file that landed in a watched directory (the agent's
/// `watch_dirs`) and matched these rules: any rule match there is worth a
/// look, since the file is not yet running; `None` without a match. The
/// first allow rule about files that matches it caps the level (`None` at
/// `clean`) and gives its note.
pub fn landed_file(
    matches: &[crate::snapshot::RuleMatch],
    file: &crate::snapshot::FileMeta,
    allow: &[AllowRule],
) -> Option<(Level, Option<String>)> {
    if matches.is_empty() {
        return None;
    }
    match allow.iter().find(|r| r.allows_file(file)) {
        Some(r) => (r.max_level > Level::Clean)
            .then(|| (r.max_level.min(Level::Suspicious), Some(r.note()))),
        None => Some((Level::Suspicious, None)),
    }
}

/// Combines one process's signals into a level and a score (0–100).
///
/// The level rests on the signals that count: never shape (RandomX-sized
/// memory, JIT regions, huge pages: JVMs, databases and emulators have them
/// too), and not RandomX capability either when the process was seen not
/// hashing ([`Kind::Against`]). Of those:
/// - `miner`: a strong signal, one specific to RandomX or to a miner
///   ([`Signal::specific`]), activity, and a score of 60;
/// - `suspicious`: a medium or strong signal and a score of 40;
/// - `notice`: anything else, and any process whose counted signals only
///   show what it can run.
///
/// The score is the sum of all weights, at most 100, held within the
/// level's band (notice below 40, suspicious below 60, miner from 60).
pub fn verdict(signals: &[Signal]) -> (Level, u32) {
    let evidence: Vec<&Signal> = signals.iter().filter(|s| s.kind != Kind::Against).collect();
    if evidence.is_empty() {
        return (Level::Clean, 0);
    }
    let not_hashing = signals.iter().any(|s| s.kind == Kind::Against);
    let counted: Vec<&Signal> = evidence
        .iter()
        .copied()
        .filter(|s| match s.kind {
            Kind::Shape | Kind::Against => false,
            Kind::Capability => !not_hashing,
            Kind::Activity | Kind::Stealth | Kind::Intent => true,
        })
        .collect();
    let total = evidence.iter().map(|s| s.weight).sum::<u32>().min(100);
    let score: u32 = counted.iter().map(|s| s.weight).sum();
    let strong = counted.iter().any(|s| s.strength == Strength::Strong);
    let specific = counted.iter().any(|s| s.specific());
    let active = counted.iter().any(|s| s.kind == Kind::Activity);
    let medium_or_strong = counted.iter().any(|s| s.strength >= Strength::Medium);
    let capability_only = counted.iter().all(|s| s.kind == Kind::Capability);
    if capability_only {
        (Level::Notice, total.min(39))
    } else if strong && specific && active && score >= 60 {
        (Level::Miner, total.max(60))
    } else if medium_or_strong && score >= 40 {
        (Level::Suspicious, total.clamp(40, 59))
    } else {
        (Level::Notice, total.min(39))
    }
}

#[cfg(test)]
mod tests;
