//! Files on disk (a sweep): which are a miner, a miner's config or a
//! RandomX engine, and which of them a persistence entry launches.
//!
//! The levels: a miner binary (an XMRig or other miner signature, a
//! known-bad hash, a user rule) or a miner config on disk is at least
//! `suspicious`; linked to a persistence entry (it is the program the entry
//! runs, the entry names it, or it is the config beside a program the entry
//! runs: XMRig reads `config.json` beside its binary) it is `miner`. A
//! RandomX engine alone (every Monero node and p2pool has one) is a
//! `notice`, also when launched; beside a miner config that a launched
//! program uses, it is that program: `miner`.

use serde::{Deserialize, Serialize};

use super::Level;
use super::policy::AllowRule;
use super::signals::{Kind, Signal, Strength};
use crate::snapshot::{FileMeta, PersistenceEntry, ProcessFacts, SweepFacts, SweepSkip, SweptFile};

/// What a sweep read and skipped: its coverage, in the report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepCoverage {
    pub roots: Vec<String>,
    pub files_read: u64,
    pub bytes_read: u64,
    pub max_file_size: u64,
    /// Counts by reason.
    pub skipped: std::collections::BTreeMap<String, u64>,
    /// The first skips, with their paths.
    pub skipped_examples: Vec<SweepSkip>,
    pub known_hashes: usize,
}

impl SweepCoverage {
    pub fn of(s: &SweepFacts) -> Self {
        SweepCoverage {
            roots: s.roots.clone(),
            files_read: s.files_read,
            bytes_read: s.bytes_read,
            max_file_size: s.max_file_size,
            skipped: s.skipped.clone(),
            skipped_examples: s.skipped_examples.clone(),
            known_hashes: s.known_hashes,
        }
    }
}

/// One file at `notice` or above.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileFinding {
    /// Where it is and what it is on disk.
    #[serde(flatten)]
    pub file: FileMeta,
    pub level: Level,
    pub score: u32,
    pub signals: Vec<Signal>,
    /// The persistence entries that launch it or use it, as
    /// `kind path:line: text`.
    pub launched_by: Vec<String>,
    /// Set when an allow rule capped this finding: the rule's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<String>,
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

fn describe(e: &PersistenceEntry) -> String {
    format!("{} {}:{}: {}", e.kind, e.path, e.line, e.text)
}

/// The entries that run `f` or name it in their command.
fn launchers<'a>(f: &SweptFile, entries: &'a [PersistenceEntry]) -> Vec<&'a PersistenceEntry> {
    super::persistence::launching(entries, &f.meta.host_path)
}

/// The entries that run a program in the directory of the config `f`.
fn beside<'a>(f: &SweptFile, entries: &'a [PersistenceEntry]) -> Vec<&'a PersistenceEntry> {
    let dir = dir_of(&f.meta.host_path);
    entries
        .iter()
        .filter(|e| {
            e.programs
                .iter()
                .any(|p| dir_of(p) == dir && !dir.is_empty())
        })
        .collect()
}

fn file_signals(f: &SweptFile) -> Vec<Signal> {
    let mut out = Vec::new();
    let named = |cat: &str| -> Vec<String> {
        f.rules
            .iter()
            .filter(|r| r.category == cat)
            .map(|r| r.rule.clone())
            .collect()
    };
    let miner_code: Vec<String> = ["xmrig", "miner", "stratum"]
        .iter()
        .flat_map(|c| named(c))
        .collect();
    if !miner_code.is_empty() {
        out.push(Signal::new(
            "file.miner_signature",
            Strength::Strong,
            Kind::Intent,
            format!(
                "matches {}: miner code or miner data",
                miner_code.join(", ")
            ),
        ));
    }
    let user = named("user");
    if !user.is_empty() {
        out.push(Signal::new(
            "file.user_rule",
            Strength::Medium,
            Kind::Intent,
            format!("matches --rules {}", user.join(", ")),
        ));
    }
    let mut randomx: Vec<String> = named("randomx")
        .into_iter()
        .map(|r| format!("matches {r}"))
        .collect();
    if f.randomx_api {
        randomx
            .push("calls the RandomX library (randomx_create_vm, randomx_calculate_hash)".into());
    }
    if !randomx.is_empty() {
        out.push(Signal::new(
            "file.randomx_engine",
            Strength::Medium,
            Kind::Capability,
            format!(
                "{}: it can compute RandomX (a miner, or a node such as monerod or p2pool)",
                randomx.join("; ")
            ),
        ));
    }
    if let Some(bad) = &f.known_bad {
        let why = if bad.is_empty() {
            String::new()
        } else {
            format!(" ({bad})")
        };
        out.push(Signal::new(
            "file.known_bad_hash",
            Strength::Strong,
            Kind::Intent,
            format!("SHA-256 {} is in the --hashes list{why}", f.meta.sha256),
        ));
    }
    if let Some(c) = &f.miner_config {
        let pools: Vec<String> = c
            .pools
            .iter()
            .map(|p| {
                format!(
                    "{} as {}",
                    p.url.as_deref().unwrap_or("?"),
                    p.user.as_deref().unwrap_or("?")
                )
            })
            .collect();
        let what = match (&c.parse_error, pools.is_empty()) {
            (Some(e), _) => format!("named like XMRig's config but not valid JSON ({e})"),
            (None, false) => format!("an XMRig-style miner config: pools {}", pools.join(", ")),
            (None, true) => {
                "an XMRig-style miner config (randomx, cpu or donate-level sections)".to_string()
            }
        };
        out.push(Signal::new(
            "file.miner_config",
            Strength::Strong,
            Kind::Intent,
            what,
        ));
    }
    out
}

/// The processes of the same snapshot whose executable is the file `f`, or,
/// for a config, whose executable or working directory is its directory.
///
/// Executables are as this host's /proc names them, so they are compared
/// with the path as swept (`--root` prefixed), not as the swept host names it.
fn runners(f: &SweptFile, processes: &[ProcessFacts]) -> Vec<String> {
    let dir = dir_of(&f.meta.path);
    processes
        .iter()
        .filter(|p| {
            let exe = p.exe.as_deref().map(|e| e.trim_end_matches(" (deleted)"));
            exe == Some(f.meta.path.as_str())
                || (f.miner_config.is_some()
                    && !dir.is_empty()
                    && (exe.map(dir_of) == Some(dir) || p.cwd.as_deref() == Some(dir)))
        })
        .map(|p| format!("running process {} {}", p.pid, p.comm))
        .collect()
}

/// Judges every swept file against the persistence entries of the host and
/// the processes observed with it (`scan --sweep`); the first allow rule
/// about files that matches one caps its level (`clean` drops it).
pub fn findings(
    files: &[SweptFile],
    entries: &[PersistenceEntry],
    processes: &[ProcessFacts],
    allow: &[AllowRule],
) -> Vec<FileFinding> {
    // Directories of launched programs that hold a miner config: a RandomX
    // engine launched from there is that miner.
    let config_dirs: Vec<&str> = files
        .iter()
        .filter(|f| f.miner_config.is_some())
        .map(|f| dir_of(&f.meta.host_path))
        .collect();
    let mut out: Vec<FileFinding> = files
        .iter()
        .filter_map(|f| {
            let mut signals = file_signals(f);
            if signals.is_empty() {
                return None;
            }
            let mut linked = launchers(f, entries);
            if f.miner_config.is_some() {
                for e in beside(f, entries) {
                    if !linked.iter().any(|l| std::ptr::eq(*l, e)) {
                        linked.push(e);
                    }
                }
            }
            let running = runners(f, processes);
            let mut launched_by: Vec<String> = linked.iter().map(|e| describe(e)).collect();
            launched_by.extend(running);
            let intent = signals.iter().any(|s| s.kind == Kind::Intent);
            let config_beside = config_dirs.contains(&dir_of(&f.meta.host_path));
            let mut level = match (intent, launched_by.is_empty(), config_beside) {
                (true, false, _) => Level::Miner,
                (true, true, _) => Level::Suspicious,
                (false, false, true) => Level::Miner,
                _ => Level::Notice,
            };
            if !launched_by.is_empty() {
                let beside_note = if !intent && config_beside {
                    " with a miner config beside it"
                } else {
                    ""
                };
                signals.push(Signal::new(
                    "file.launched",
                    Strength::Strong,
                    Kind::Activity,
                    format!("launched{beside_note} by {}", launched_by.join("; ")),
                ));
            }
            let total: u32 = signals.iter().map(|s| s.weight).sum::<u32>().min(100);
            let score = match level {
                Level::Miner => total.max(60),
                Level::Suspicious => total.clamp(40, 59),
                _ => total.min(39),
            };
            let allowed = allow.iter().find(|r| r.allows_file(&f.meta)).map(|r| {
                level = level.min(r.max_level);
                r.note()
            });
            (level > Level::Clean).then(|| FileFinding {
                file: f.meta.clone(),
                level,
                score,
                signals,
                launched_by,
                allowed,
            })
        })
        .collect();
    out.sort_by(|a, b| b.level.cmp(&a.level).then(a.file.path.cmp(&b.file.path)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{MinerConfig, PoolEntry, RuleMatch};

    fn file(path: &str) -> SweptFile {
        SweptFile {
            meta: FileMeta {
                path: format!("/fx{path}"),
                host_path: path.into(),
                sha256: "0".repeat(64),
                ..FileMeta::default()
            },
            ..SweptFile::default()
        }
    }

    fn config(path: &str) -> SweptFile {
        SweptFile {
            miner_config: Some(MinerConfig {
                path: path.into(),
                pools: vec![PoolEntry {
                    url: Some("pool.example:443".into()),
                    user: Some("4Wallet".into()),
                }],
                ..MinerConfig::default()
            }),
            ..file(path)
        }
    }

    fn engine(path: &str) -> SweptFile {
        SweptFile {
            rules: vec![RuleMatch {
                rule: "randomx_engine_constants".into(),
                category: "randomx".into(),
                ..RuleMatch::default()
            }],
            ..file(path)
        }
    }

    fn cron(program: &str) -> PersistenceEntry {
        PersistenceEntry {
            kind: "cron".into(),
            path: "/fx/etc/crontab".into(),
            line: 3,
            text: format!("@reboot root {program} -B"),
            command: format!("{program} -B"),
            programs: vec![program.into()],
            at_reboot: true,
            ..PersistenceEntry::default()
        }
    }

    #[test]
    fn a_dormant_miner_launched_by_cron_is_miner_and_without_it_suspicious() {
        let files = [
            config("/var/tmp/.x/config.json"),
            engine("/var/tmp/.x/kworker"),
        ];
        let with = findings(&files, &[cron("/var/tmp/.x/kworker")], &[], &[]);
        assert!(with.iter().all(|f| f.level == Level::Miner), "{with:#?}");
        assert!(
            with.iter()
                .all(|f| f.launched_by[0].contains("/fx/etc/crontab:3"))
        );
        let without = findings(&files, &[], &[], &[]);
        let level = |p: &str| {
            without
                .iter()
                .find(|f| f.file.host_path == p)
                .map(|f| f.level)
        };
        assert_eq!(level("/var/tmp/.x/config.json"), Some(Level::Suspicious));
        assert_eq!(level("/var/tmp/.x/kworker"), Some(Level::Notice));
    }

    #[test]
    fn a_launched_randomx_engine_alone_is_a_notice() {
        // A Monero node started by its systemd unit.
        let f = findings(
            &[engine("/usr/bin/monerod")],
            &[cron("/usr/bin/monerod")],
            &[],
            &[],
        );
        assert_eq!(f[0].level, Level::Notice, "{f:#?}");
        assert!(f[0].signals.iter().any(|s| s.id == "file.launched"));
    }

    #[test]
    fn a_miner_config_beside_a_running_process_is_miner() {
        let p = ProcessFacts {
            pid: 4242,
            comm: "kworker".into(),
            exe: Some("/fx/var/tmp/.x/kworker (deleted)".into()),
            ..ProcessFacts::default()
        };
        let f = findings(&[config("/var/tmp/.x/config.json")], &[], &[p], &[]);
        assert_eq!(f[0].level, Level::Miner, "{f:#?}");
        assert_eq!(f[0].launched_by, ["running process 4242 kworker"]);
    }

    #[test]
    fn files_that_match_nothing_are_not_findings() {
        assert!(findings(&[file("/tmp/a")], &[cron("/tmp/a")], &[], &[]).is_empty());
    }

    fn rule(f: impl FnOnce(&mut AllowRule)) -> AllowRule {
        let mut r = AllowRule {
            exe: None,
            sha256: None,
            path: None,
            user: None,
            name: None,
            container: None,
            max_level: Level::Notice,
            reason: "our pool's test rig".into(),
        };
        f(&mut r);
        r
    }

    #[test]
    fn allow_rules_about_files_cap_or_drop_swept_files() {
        let files = [
            config("/opt/rig/config.json"),
            config("/var/tmp/.x/config.json"),
        ];
        let launched = [cron("/opt/rig/xmrig"), cron("/var/tmp/.x/kworker")];
        let level = |allow: &[AllowRule], p: &str| {
            findings(&files, &launched, &[], allow)
                .iter()
                .find(|f| f.file.host_path == p)
                .map(|f| (f.level, f.allowed.clone()))
        };
        // A directory rule caps what lies under it, and only that.
        let dir = [rule(|r| r.path = Some("/opt/rig/".into()))];
        let capped = level(&dir, "/opt/rig/config.json").expect("still a finding");
        assert_eq!(capped.0, Level::Notice);
        assert!(capped.1.is_some_and(|n| n.contains("our pool's test rig")));
        assert_eq!(
            level(&dir, "/var/tmp/.x/config.json"),
            Some((Level::Miner, None))
        );
        // A prefix that is not a directory boundary does not match.
        let near = [rule(|r| r.path = Some("/opt/ri/".into()))];
        assert_eq!(
            level(&near, "/opt/rig/config.json").map(|l| l.0),
            Some(Level::Miner)
        );
        // max_level clean drops the file; exe names one file exactly.
        let gone = [rule(|r| {
            r.exe = Some("/opt/rig/config.json".into());
            r.max_level = Level::Clean;
        })];
        assert_eq!(level(&gone, "/opt/rig/config.json"), None);
        assert!(level(&gone, "/var/tmp/.x/config.json").is_some());
        // A hash matches only a file read whole.
        let hash = [rule(|r| r.sha256 = Some("0".repeat(64)))];
        assert_eq!(
            level(&hash, "/opt/rig/config.json").map(|l| l.0),
            Some(Level::Notice)
        );
        let mut partial = files.clone();
        partial[0].meta.truncated = true;
        let f = findings(&partial, &launched, &[], &hash);
        assert_eq!(f.iter().filter(|f| f.level == Level::Miner).count(), 1);
        // A rule that also names a user or process is about processes only.
        let by_user = [rule(|r| {
            r.path = Some("/opt/rig/".into());
            r.user = Some("root".into());
        })];
        assert_eq!(
            level(&by_user, "/opt/rig/config.json").map(|l| l.0),
            Some(Level::Miner)
        );
    }
}
