//! Detectors: facts of one process → signals with evidence.
//!
//! Signal ids are stable (scripts and allow-lists key on them); new ones may
//! be added, existing ones are never renamed.

use serde::{Deserialize, Serialize};

mod pool;
mod rounding;

use super::Policy;
use super::persistence::Suspect;
use crate::snapshot::{BinaryFacts, HostSnapshot, ProcessFacts, Region, RuleMatch};
use crate::snapshot::{RANDOMX_CACHE, RANDOMX_DATASET};

/// How much a signal proves on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strength {
    /// Common in benign programs; never enough alone.
    Weak,
    /// Strong in combination.
    Medium,
    /// A miner cannot shed it without ceasing to mine.
    Strong,
}

impl Strength {
    /// The weight a signal of this strength adds to the score.
    pub fn weight(self) -> u32 {
        match self {
            Strength::Weak => 10,
            Strength::Medium => 30,
            Strength::Strong => 50,
        }
    }
}

/// What a signal is evidence of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// It is doing work: CPU, rounding-mode flips, a live pool connection,
    /// pool traffic in its memory.
    Activity,
    /// It holds RandomX code (engine constants, JIT-emitted programs): it
    /// can run RandomX.
    Capability,
    /// Its memory has RandomX's shape (dataset- or cache-sized anonymous
    /// memory, JIT regions, huge pages), as JVMs, databases and emulators
    /// do too: never evidence of mining on its own account.
    Shape,
    /// It hides: deleted or staged binaries, fake names.
    Stealth,
    /// It is set up to mine: miner arguments, wallets, configs, miner code.
    Intent,
    /// Evidence that it is not mining now (its busy threads, sampled while
    /// they ran, stayed at round-to-nearest): weighs nothing, and the
    /// verdict no longer counts its RandomX capability.
    Against,
}

/// One piece of evidence against a process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Stable id, e.g. `rx.memory_layout`.
    pub id: String,
    pub strength: Strength,
    pub kind: Kind,
    pub weight: u32,
    /// One sentence a responder can verify by hand.
    pub evidence: String,
}

impl Signal {
    pub(crate) fn new(id: &str, strength: Strength, kind: Kind, evidence: String) -> Self {
        Signal {
            id: id.to_string(),
            strength,
            kind,
            weight: if kind == Kind::Against {
                0
            } else {
                strength.weight()
            },
            evidence,
        }
    }

    /// Evidence specific to RandomX or to a miner (rounding-mode flips,
    /// RandomX code, miner data or code, a Stratum connection, miner
    /// arguments or configs), not a coincidence of size, CPU or stealth that
    /// benign programs share.
    pub fn specific(&self) -> bool {
        self.strength >= Strength::Medium
            && matches!(self.kind, Kind::Activity | Kind::Capability | Kind::Intent)
    }
}

const MIB: u64 = 1024 * 1024;
/// XMRig maps the fast-mode dataset as exactly this many bytes.
pub const XMRIG_DATASET_BYTES: u64 = 0x8200_0000;

/// All signals for one process.
pub fn detect(p: &ProcessFacts, snap: &HostSnapshot, policy: &Policy) -> Vec<Signal> {
    let persistence =
        super::persistence::suspects(&snap.host_facts.persistence, &policy.indicators);
    detect_with(p, snap, policy, &persistence)
}

/// [`detect`], with the suspect persistence entries judged once for all
/// processes.
pub fn detect_with(
    p: &ProcessFacts,
    snap: &HostSnapshot,
    policy: &Policy,
    persistence: &[Suspect<'_>],
) -> Vec<Signal> {
    let mut out = Vec::new();
    let busy = cpu(p, snap, policy, &mut out);
    memory(p, busy, &mut out);
    let shaped = out.iter().any(|s| s.kind == Kind::Shape);
    rounding::rounding(p, busy, &mut out);
    code(p, snap, &mut out);
    memory_code(p, &mut out);
    let pools = pool::pools_named(p, policy);
    pool::cmdline(p, policy, &mut out);
    pool::configs(p, &mut out);
    pool::network(p, &pools, shaped, policy, &mut out);
    identity(p, policy, &mut out);
    hiding(p, snap, persistence, &mut out);
    out
}

fn hiding(
    p: &ProcessFacts,
    snap: &HostSnapshot,
    persistence: &[Suspect<'_>],
    out: &mut Vec<Signal>,
) {
    if let Some(h) = snap.host_facts.hidden_pids.iter().find(|h| h.pid == p.pid) {
        out.push(Signal::new(
            "proc.hidden",
            Strength::Medium,
            Kind::Stealth,
            format!(
                "hidden: missing from the {} listing of /proc, seen by {}",
                h.missing_from.join(" and "),
                h.seen_by.join(", ")
            ),
        ));
    }
    let Some(exe) = p.exe.as_deref().map(|e| e.trim_end_matches(" (deleted)")) else {
        return;
    };
    let launchers: Vec<String> = persistence
        .iter()
        .filter(|s| s.entry.programs.iter().any(|p| p == exe))
        .map(|s| format!("{} {}:{}", s.entry.kind, s.entry.path, s.entry.line))
        .collect();
    if !launchers.is_empty() {
        out.push(Signal::new(
            "persist.launcher",
            Strength::Medium,
            Kind::Stealth,
            format!(
                "a suspect persistence entry launches its executable: {}",
                launchers.join(", ")
            ),
        ));
    }
}

/// Ticks of agent history from which a steady average counts.
const STEADY_TICKS: usize = 6;

fn cpu(p: &ProcessFacts, snap: &HostSnapshot, policy: &Policy, out: &mut Vec<Signal>) -> bool {
    if p.cpu.percent < policy.busy_percent {
        // Quiet this tick, but busy on average over the agent's history: a
        // miner that throttles in bursts.
        let h = &p.cpu.history;
        let mean = h.iter().sum::<f64>() / h.len().max(1) as f64;
        if h.len() >= STEADY_TICKS && mean >= policy.busy_percent {
            out.push(Signal::new(
                "cpu.steady",
                Strength::Weak,
                Kind::Activity,
                format!(
                    "{mean:.0} % of a core on average over the last {} ticks ({:.0} % in this one)",
                    h.len(),
                    p.cpu.percent
                ),
            ));
            return true;
        }
        return false;
    }
    let busiest = p
        .cpu
        .threads
        .first()
        .map(|t| {
            format!(
                "; busiest thread {} '{}' at {:.0} %",
                t.tid, t.name, t.percent
            )
        })
        .unwrap_or_default();
    let busy_threads = p
        .cpu
        .threads
        .iter()
        .filter(|t| t.percent >= policy.busy_percent)
        .count();
    out.push(Signal::new(
        "cpu.busy",
        Strength::Weak,
        Kind::Activity,
        format!(
            "{:.0} % of a core over the {:.1} s window, {} busy thread{}{}",
            p.cpu.percent,
            snap.window_secs,
            busy_threads,
            if busy_threads == 1 { "" } else { "s" },
            busiest
        ),
    ));
    true
}

fn describe(r: &Region) -> String {
    let size = if r.size >= MIB {
        format!("{} MiB", r.size / MIB)
    } else {
        format!("{} KiB", r.size / 1024)
    };
    match &r.path {
        Some(path) => format!("{size} {} mapping {path} at {}", r.perms, r.start),
        None => format!("{size} anonymous {} mapping at {}", r.perms, r.start),
    }
}

fn memory(p: &ProcessFacts, busy: bool, out: &mut Vec<Signal>) {
    let Some(m) = &p.memory else { return };
    let dataset = m
        .large_anon
        .iter()
        .find(|r| RANDOMX_DATASET.contains(&r.size));
    let cache = m
        .large_anon
        .iter()
        .find(|r| RANDOMX_CACHE.contains(&r.size));
    let rx_region = dataset
        .map(|r| {
            let exact = if r.size == XMRIG_DATASET_BYTES {
                ", exactly XMRig's 0x82000000"
            } else {
                ""
            };
            format!("{}: RandomX dataset size (2080 MiB){exact}", describe(r))
        })
        .or_else(|| cache.map(|r| format!("{}: RandomX cache size (256 MiB)", describe(r))));
    let jit = m.exec_anon.first();
    let huge = (m.hugetlb_kib >= 64 * 1024).then(|| {
        format!(
            "{} MiB in hugetlb pages (VmRSS {} MiB)",
            m.hugetlb_kib / 1024,
            m.rss_kib / 1024
        )
    });

    match (&rx_region, jit) {
        (Some(region), Some(jit)) if busy => {
            let mut evidence = format!(
                "{region}; {} of JIT code ({} executable anonymous region{}) while busy",
                describe(jit),
                m.exec_anon.len(),
                if m.exec_anon.len() == 1 { "" } else { "s" }
            );
            if let Some(h) = &huge {
                evidence.push_str("; ");
                evidence.push_str(h);
            }
            out.push(Signal::new(
                "rx.memory_layout",
                Strength::Medium,
                Kind::Shape,
                evidence,
            ));
            return;
        }
        _ => {}
    }
    if let Some(region) = rx_region {
        out.push(Signal::new(
            "mem.randomx_region",
            Strength::Medium,
            Kind::Shape,
            region,
        ));
    }
    if let Some(jit) = jit {
        out.push(Signal::new(
            "mem.jit",
            Strength::Weak,
            Kind::Shape,
            format!(
                "{}: executable anonymous memory, as JIT compilers (RandomX among them) make",
                describe(jit)
            ),
        ));
    }
    if let Some(h) = huge {
        out.push(Signal::new(
            "mem.huge_pages",
            Strength::Weak,
            Kind::Shape,
            h,
        ));
    }
}

fn binary<'a>(snap: &'a HostSnapshot, id: &str) -> Option<&'a BinaryFacts> {
    snap.binaries.iter().find(|b| b.id == id)
}

fn rule_list(matches: &[&RuleMatch]) -> String {
    matches
        .iter()
        .map(|m| match &m.description {
            Some(d) => format!("{} ({d})", m.rule),
            None => m.rule.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn code(p: &ProcessFacts, snap: &HostSnapshot, out: &mut Vec<Signal>) {
    let files = p
        .exe_binary
        .iter()
        .map(|id| (id, "executable"))
        .chain(p.library_binaries.iter().map(|id| (id, "mapped library")));
    let mut miner = Vec::new();
    let mut engine = Vec::new();
    let mut user = Vec::new();
    for (id, role) in files {
        let Some(b) = binary(snap, id) else { continue };
        let by = |cat: &[&str], user_rule: bool| -> Vec<&RuleMatch> {
            b.matches
                .iter()
                .filter(|m| {
                    m.user == user_rule && (cat.is_empty() || cat.contains(&m.category.as_str()))
                })
                .collect()
        };
        let m = by(&["xmrig", "miner", "stratum"], false);
        if !m.is_empty() {
            miner.push(format!("{role} {} matches {}", b.path, rule_list(&m)));
        }
        let e = by(&["randomx"], false);
        if !e.is_empty() {
            engine.push(format!("{role} {} matches {}", b.path, rule_list(&e)));
        }
        let u = by(&[], true);
        if !u.is_empty() {
            user.push(format!(
                "{role} {} matches user rule {}",
                b.path,
                rule_list(&u)
            ));
        }
    }
    if !miner.is_empty() {
        out.push(Signal::new(
            "sig.miner_code",
            Strength::Strong,
            Kind::Intent,
            miner.join("; "),
        ));
    }
    if !engine.is_empty() {
        out.push(Signal::new(
            "sig.randomx_engine",
            Strength::Medium,
            Kind::Capability,
            format!("{}: it can run RandomX", engine.join("; ")),
        ));
    }
    if !user.is_empty() {
        out.push(Signal::new(
            "sig.user_rule",
            Strength::Medium,
            Kind::Intent,
            user.join("; "),
        ));
    }
}

fn memory_code(p: &ProcessFacts, out: &mut Vec<Signal>) {
    let Some(scan) = &p.memory_scan else { return };
    let describe = |cats: &[&str]| -> Vec<String> {
        scan.matches
            .iter()
            .filter(|m| cats.contains(&m.category.as_str()))
            .map(|m| {
                let what = m
                    .description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                format!("{}{what} in {}", m.rule, m.regions.join(", "))
            })
            .collect()
    };
    let rx = describe(&["randomx"]);
    if !rx.is_empty() {
        out.push(Signal::new(
            "mem.randomx_code",
            Strength::Strong,
            Kind::Capability,
            format!("process memory holds RandomX code: {}", rx.join("; ")),
        ));
    }
    let miner = describe(&["xmrig", "miner", "stratum"]);
    if !miner.is_empty() {
        // A pool login or job in its memory: it talks to a pool, which is
        // activity even when the CPU is held low and the socket is proxied.
        let traffic = scan.matches.iter().any(|m| m.category == "stratum");
        out.push(Signal::new(
            "mem.miner_strings",
            Strength::Strong,
            if traffic {
                Kind::Activity
            } else {
                Kind::Intent
            },
            format!("process memory holds miner data: {}", miner.join("; ")),
        ));
    }
    let user = describe(&["user"]);
    if !user.is_empty() {
        out.push(Signal::new(
            "mem.user_rule",
            Strength::Medium,
            Kind::Intent,
            format!("process memory matches user rule {}", user.join("; ")),
        ));
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether `name` has the shape of a kernel thread's name: a known prefix
/// alone, or followed by a CPU number or a slash ("kworker/0:1", "kswapd0").
/// "kdevtmpfsi" and "kworkerds" are not: name.campaign judges those.
pub(crate) fn kernel_thread_name(name: &str, prefixes: &[String]) -> bool {
    let n = name.trim_start_matches('[').trim_end_matches(']');
    prefixes.iter().any(|k| {
        n.strip_prefix(k.as_str()).is_some_and(|rest| {
            rest.is_empty()
                || k.ends_with(['/', '_'])
                || rest.starts_with(|c: char| c == '/' || c.is_ascii_digit())
        })
    })
}

fn identity(p: &ProcessFacts, policy: &Policy, out: &mut Vec<Signal>) {
    let ind = &policy.indicators;
    let exe = p.exe.as_deref();
    if let Some(exe) = exe {
        let deleted = exe.ends_with(" (deleted)");
        let path = exe.trim_end_matches(" (deleted)");
        if path.starts_with("/memfd:") {
            out.push(Signal::new(
                "exe.memfd",
                Strength::Medium,
                Kind::Stealth,
                format!("runs from an in-memory file ({exe}): no binary on disk"),
            ));
        } else if deleted && ind.staging_path(path) {
            out.push(Signal::new(
                "exe.deleted_staging",
                Strength::Medium,
                Kind::Stealth,
                format!("executable {exe} was run from a staging directory and then deleted"),
            ));
        } else if ind.staging_path(path) {
            out.push(Signal::new(
                "exe.staging_path",
                Strength::Weak,
                Kind::Stealth,
                format!("executable {path} lies in a world-writable or hidden directory"),
            ));
        } else if deleted {
            out.push(Signal::new(
                "exe.deleted",
                Strength::Weak,
                Kind::Stealth,
                format!("executable {exe} was deleted after start (or replaced by an upgrade)"),
            ));
        }
    }

    let args = pool::args(p);
    let argv0 = args.first().map(String::as_str).unwrap_or("");
    if !p.kernel_thread {
        let bracketed = argv0.starts_with('[') && argv0.ends_with(']');
        let kname = |n: &str| kernel_thread_name(n, &ind.kernel_thread_prefixes);
        let shown = if bracketed || kname(argv0) {
            Some(argv0)
        } else if kname(&p.comm) {
            Some(p.comm.as_str())
        } else {
            None
        };
        if let Some(name) = shown {
            out.push(Signal::new(
                "name.fake_kernel_thread",
                Strength::Medium,
                Kind::Stealth,
                format!(
                    "calls itself '{name}' like a kernel thread, but it is a user process (executable {}, parent {})",
                    exe.unwrap_or("unreadable"),
                    p.ppid
                ),
            ));
        }
    }

    let names = [
        Some(p.comm.as_str()),
        Some(basename(argv0)),
        exe.map(|e| basename(e.trim_end_matches(" (deleted)"))),
    ];
    if let Some(name) = names
        .into_iter()
        .flatten()
        .find(|n| ind.campaign_names.iter().any(|c| c == n))
    {
        out.push(Signal::new(
            "name.campaign",
            Strength::Medium,
            Kind::Stealth,
            format!("named '{name}', a name used by known mining campaigns or miners"),
        ));
    }
}
