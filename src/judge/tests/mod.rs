//! Judge tests on JSON snapshot fixtures (tests/fixtures/snapshots), which
//! were generated from the /proc files recorded from real miners
//! (tests/fixtures/proc) by `observe::fixtures::regenerate_snapshot_fixtures`.

use super::*;
use crate::snapshot::*;

mod precision;

const SNAPSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/snapshots");
const WALLET: &str = "4ApM6hUHyYx16547k5sn3zRND22RhkaWd4JdemFQyTKQ36ixnHzMV4LRzyFP6XEdkjMTZqHsQA5DhDZWLchXHcKf4dKqcj7";

pub(super) fn load(name: &str) -> HostSnapshot {
    let text = std::fs::read_to_string(format!("{SNAPSHOTS}/{name}.json")).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture parses")
}

/// A snapshot holding just `p`.
pub(super) fn with(p: ProcessFacts) -> HostSnapshot {
    let mut s = load("xmrig-light");
    s.processes = vec![p];
    s
}

pub(super) fn judge1(s: &HostSnapshot) -> (Level, u32, Vec<String>) {
    let p = &s.processes[0];
    let signals = signals::detect(p, s, &Policy::default());
    let (level, score) = verdict(&signals);
    (level, score, signals.into_iter().map(|s| s.id).collect())
}

/// An ordinary busy process: a compiler in /usr/bin at 100 % of a core.
pub(super) fn plain(cpu: f64) -> ProcessFacts {
    ProcessFacts {
        pid: 4242,
        start_time: 1000,
        ppid: 1,
        uid: 1000,
        user: Some("dev".into()),
        comm: "cc1plus".into(),
        cmdline: vec![
            "/usr/lib/gcc/x86_64-linux-gnu/12/cc1plus".into(),
            "-O2".into(),
            "x.cc".into(),
        ],
        exe: Some("/usr/lib/gcc/x86_64-linux-gnu/12/cc1plus".into()),
        threads: 1,
        cpu: CpuFacts {
            percent: cpu,
            ticks: (cpu * 5.0) as u64,
            threads: vec![ThreadCpu {
                tid: 4242,
                name: "cc1plus".into(),
                percent: cpu,
            }],
            whole_window: true,
            ..CpuFacts::default()
        },
        memory: Some(MemoryFacts::default()),
        ..ProcessFacts::default()
    }
}

pub(super) fn region(size: u64, perms: &str) -> Region {
    Region {
        start: "0x7f0000000000".into(),
        size,
        perms: perms.into(),
        path: None,
    }
}

pub(super) const MIB: u64 = 1024 * 1024;

/// The rounding-mode samples a real scan of the recorded miners took: two
/// and three modes in five samples (SIGNALS.md §1).
pub(super) fn flipping(s: &mut HostSnapshot) {
    let tid = s.processes[0].cpu.threads[0].tid;
    s.processes[0].fpu = Some(fpu_ran(tid, &[0, 3, 1, 0, 3], &[true; 5]));
}

#[test]
fn recorded_xmrig_fast_hugepages_is_miner() {
    // From /proc alone its layout is shape: its miner options and name make
    // it suspicious, not convicted.
    let mut s = load("xmrig-fast-hugepages");
    let (level, _, ids) = judge1(&s);
    assert_eq!(level, Level::Suspicious, "{ids:?}");
    assert!(ids.contains(&"rx.memory_layout".to_string()));
    // What a real scan of it also reads: the rounding mode flipping.
    flipping(&mut s);
    let (level, score, ids) = judge1(&s);
    assert_eq!(level, Level::Miner, "{ids:?}");
    assert!(score >= 80);
    let report = judge(&s, &Policy::default());
    let ev = &report.findings[0]
        .signals
        .iter()
        .find(|x| x.id == "rx.memory_layout")
        .expect("layout")
        .evidence;
    assert!(
        ev.contains("2080 MiB") && ev.contains("0x82000000") && ev.contains("hugetlb"),
        "{ev}"
    );
}

#[test]
fn recorded_xmrig_light_is_miner() {
    let mut s = load("xmrig-light");
    let (level, _, ids) = judge1(&s);
    assert_eq!(level, Level::Suspicious, "{ids:?}");
    assert!(ids.contains(&"rx.memory_layout".to_string()));
    flipping(&mut s);
    let (level, _, ids) = judge1(&s);
    assert_eq!(level, Level::Miner, "{ids:?}");
}

#[test]
fn recorded_xmrig_pool_is_miner_with_stratum_and_wallet() {
    let (level, _, ids) = judge1(&load("xmrig-pool"));
    assert_eq!(level, Level::Miner);
    for id in ["net.stratum", "cmd.wallet", "rx.memory_layout"] {
        assert!(ids.contains(&id.to_string()), "{id} missing from {ids:?}");
    }
}

#[test]
fn recorded_monerod_mining_is_miner() {
    // The wallet on its command line and its CPU: suspicious; flipping: miner.
    let mut s = load("monerod-regtest-mining");
    let (level, _, ids) = judge1(&s);
    assert_eq!(level, Level::Suspicious, "{ids:?}");
    flipping(&mut s);
    let (level, _, ids) = judge1(&s);
    assert_eq!(level, Level::Miner, "{ids:?}");
}

#[test]
fn monerod_as_idle_node_is_only_notice() {
    let mut s = load("monerod-regtest-mining");
    let p = &mut s.processes[0];
    p.cpu = CpuFacts::default();
    // The same daemon, not told to mine.
    p.cmdline = [
        "monerod",
        "--regtest",
        "--offline",
        "--data-dir",
        "/var/lib/monero",
    ]
    .map(String::from)
    .to_vec();
    let (level, score, ids) = judge1(&s);
    assert_eq!(level, Level::Notice, "{ids:?}");
    assert!(score < 40);
    assert!(ids.contains(&"mem.randomx_region".to_string()));
}

#[test]
fn randomx_engine_in_a_library_is_capability_only() {
    let mut p = plain(0.0);
    p.library_binaries = vec!["lib".into()];
    let mut s = with(p);
    s.binaries = vec![BinaryFacts {
        id: "lib".into(),
        path: "/usr/lib/x86_64-linux-gnu/librandomx.so.0".into(),
        matches: vec![RuleMatch {
            rule: "randomx_engine_constants".into(),
            namespace: "minerwatch_randomx".into(),
            category: "randomx".into(),
            description: None,
            user: false,
        }],
        ..BinaryFacts::default()
    }];
    let (level, _, ids) = judge1(&s);
    assert_eq!(
        (level, ids.as_slice()),
        (Level::Notice, &["sig.randomx_engine".to_string()][..])
    );
    // Paired with steady CPU it is worth a look, but not proof.
    s.processes[0].cpu = plain(100.0).cpu;
    let (level, _, _) = judge1(&s);
    assert_eq!(level, Level::Suspicious);
}

#[test]
fn xmrig_code_in_exe_with_cpu_is_miner() {
    let mut p = plain(100.0);
    p.exe_binary = Some("x".into());
    let mut s = with(p);
    s.binaries = vec![BinaryFacts {
        id: "x".into(),
        path: "/opt/app/worker".into(),
        matches: vec![RuleMatch {
            rule: "xmrig_identity_strings".into(),
            namespace: "minerwatch_xmrig".into(),
            category: "xmrig".into(),
            description: Some("XMRig".into()),
            user: false,
        }],
        ..BinaryFacts::default()
    }];
    let (level, score, ids) = judge1(&s);
    assert_eq!(level, Level::Miner, "{ids:?} {score}");
    // Idle, the same binary is suspicious, not convicted.
    s.processes[0].cpu = CpuFacts::default();
    assert_eq!(judge1(&s).0, Level::Suspicious);
}

#[test]
fn user_rule_match_is_medium() {
    let mut p = plain(0.0);
    p.exe_binary = Some("x".into());
    let mut s = with(p);
    s.binaries = vec![BinaryFacts {
        id: "x".into(),
        path: "/opt/x".into(),
        matches: vec![RuleMatch {
            rule: "MAL_Miner".into(),
            namespace: "user0".into(),
            category: "user".into(),
            description: None,
            user: true,
        }],
        ..BinaryFacts::default()
    }];
    let (level, score, ids) = judge1(&s);
    assert_eq!(ids, vec!["sig.user_rule"]);
    assert_eq!((level, score), (Level::Notice, 30));
}

#[test]
fn busy_compiler_alone_is_notice() {
    let (level, score, ids) = judge1(&with(plain(199.0)));
    assert_eq!((level, score), (Level::Notice, 10));
    assert_eq!(ids, vec!["cpu.busy"]);
}

#[test]
fn idle_process_is_clean() {
    let (level, score, ids) = judge1(&with(plain(3.0)));
    assert_eq!((level, score, ids.len()), (Level::Clean, 0, 0));
}

#[test]
fn xz_sized_region_is_not_randomx() {
    let mut p = plain(100.0);
    p.memory = Some(MemoryFacts {
        large_anon: vec![region(673 * MIB, "rw-p")],
        ..MemoryFacts::default()
    });
    assert_eq!(judge1(&with(p)).2, vec!["cpu.busy"]);
}

#[test]
fn jvm_like_jit_huge_pages_and_cpu_stay_notice() {
    let mut p = plain(150.0);
    p.memory = Some(MemoryFacts {
        hugetlb_kib: 1024 * 1024,
        exec_anon: vec![region(240 * MIB, "rwxp")],
        ..MemoryFacts::default()
    });
    let (level, score, ids) = judge1(&with(p));
    assert_eq!(level, Level::Notice, "{ids:?}");
    assert_eq!(score, 30);
    assert!(ids.contains(&"mem.huge_pages".to_string()));
}

#[test]
fn deleted_exe_in_dev_shm_with_cpu_is_suspicious() {
    let mut p = plain(100.0);
    p.exe = Some("/dev/shm/.x/kthreadx (deleted)".into());
    let (level, score, ids) = judge1(&with(p));
    assert_eq!((level, score), (Level::Suspicious, 40), "{ids:?}");
    assert!(ids.contains(&"exe.deleted_staging".to_string()));
}

#[test]
fn staging_path_alone_is_notice_and_upgrade_deleted_exe_is_weak() {
    let mut p = plain(0.0);
    p.exe = Some("/tmp/build/a.out".into());
    assert_eq!(judge1(&with(p.clone())).2, vec!["exe.staging_path"]);
    p.exe = Some("/usr/sbin/nginx (deleted)".into());
    let (level, score, ids) = judge1(&with(p));
    assert_eq!(
        (level, score, ids),
        (Level::Notice, 10, vec!["exe.deleted".to_string()])
    );
}

#[test]
fn memfd_exe_is_medium() {
    let mut p = plain(0.0);
    p.exe = Some("/memfd:x (deleted)".into());
    let (level, score, ids) = judge1(&with(p));
    assert_eq!(
        (level, score, ids),
        (Level::Notice, 30, vec!["exe.memfd".to_string()])
    );
}

#[test]
fn pool_port_and_fake_kworker_is_suspicious() {
    let mut p = plain(0.0);
    p.cmdline = vec!["[kworker/0:1]".into()];
    p.connections = vec![Connection {
        local: "10.0.0.5:50000".into(),
        remote_ip: "192.0.2.7".into(),
        remote_port: 3333,
        peer: None,
    }];
    let (level, score, ids) = judge1(&with(p.clone()));
    assert_eq!((level, score), (Level::Suspicious, 40), "{ids:?}");
    assert!(
        ids.contains(&"name.fake_kernel_thread".to_string())
            && ids.contains(&"net.pool_port".to_string())
    );
    // A real kernel thread with that name is not fake.
    p.kernel_thread = true;
    p.connections.clear();
    assert_eq!(judge1(&with(p)).0, Level::Clean);
}

#[test]
fn pool_port_alone_is_notice() {
    let mut p = plain(0.0);
    p.connections = vec![Connection {
        local: "10.0.0.5:50000".into(),
        remote_ip: "192.0.2.7".into(),
        remote_port: 4444,
        peer: None,
    }];
    assert_eq!(judge1(&with(p)).0, Level::Notice);
}

#[test]
fn campaign_name_is_medium() {
    let mut p = plain(0.0);
    p.comm = "kdevtmpfsi".into();
    let (level, score, ids) = judge1(&with(p));
    assert_eq!(
        (level, score, ids),
        (Level::Notice, 30, vec!["name.campaign".to_string()])
    );
}

#[test]
fn stratum_client_with_miner_args_is_at_least_suspicious() {
    let mut p = plain(0.0);
    p.comm = "worker".into();
    p.cmdline = [
        "worker",
        "-o",
        "stratum+tcp://127.0.0.1:41234",
        "-u",
        WALLET,
        "-p",
        "x",
        "--donate-level",
        "1",
    ]
    .map(String::from)
    .to_vec();
    p.connections = vec![Connection {
        local: "127.0.0.1:50000".into(),
        remote_ip: "127.0.0.1".into(),
        remote_port: 41234,
        peer: None,
    }];
    let (level, _, ids) = judge1(&with(p.clone()));
    assert_eq!(level, Level::Miner, "{ids:?}");
    for id in ["net.stratum", "cmd.miner_args", "cmd.wallet"] {
        assert!(ids.contains(&id.to_string()), "{id}: {ids:?}");
    }
    // Connected somewhere else: no stratum signal.
    p.connections[0].remote_port = 41235;
    let (_, _, ids) = judge1(&with(p));
    assert!(!ids.contains(&"net.stratum".to_string()));
}

#[test]
fn config_file_names_pool() {
    let mut p = plain(0.0);
    p.configs = vec![MinerConfig {
        path: "/tmp/.x/config.json".into(),
        pools: vec![PoolEntry {
            url: Some("pool.supportxmr.com:443".into()),
            user: Some(WALLET.into()),
        }],
        donate_level: Some(1),
        has_randomx_section: true,
        ..MinerConfig::default()
    }];
    p.connections = vec![Connection {
        local: "10.0.0.5:50000".into(),
        remote_ip: "198.51.100.3".into(),
        remote_port: 443,
        peer: None,
    }];
    let (level, _, ids) = judge1(&with(p.clone()));
    // A hostname pool cannot be resolved offline: the port of the pool it names counts.
    assert!(
        ids.contains(&"config.miner".to_string()) && ids.contains(&"net.stratum".to_string()),
        "{ids:?}"
    );
    assert_eq!(level, Level::Miner);
    // Without the connection, a miner config alone is notice.
    p.connections.clear();
    assert_eq!(judge1(&with(p)).0, Level::Notice);
}

/// A memory scan that matched these (rule, category) pairs.
pub(super) fn memory_scan(rules: &[(&str, &str)]) -> crate::snapshot::MemoryScan {
    crate::snapshot::MemoryScan {
        regions_scanned: 4,
        bytes_scanned: 1 << 20,
        matches: rules
            .iter()
            .map(|(rule, category)| crate::snapshot::MemoryMatch {
                rule: rule.to_string(),
                namespace: "minerwatch".into(),
                category: category.to_string(),
                description: None,
                regions: vec!["0x7f0000000000 rwxp anonymous".into()],
            })
            .collect(),
        ..Default::default()
    }
}

/// Samples of one thread: `modes`, and whether it had run before each.
pub(super) fn fpu_ran(tid: i32, modes: &[u8], ran: &[bool]) -> crate::snapshot::FpuFacts {
    let mut distinct = modes.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    crate::snapshot::FpuFacts {
        threads: vec![crate::snapshot::ThreadFpu {
            tid,
            modes: modes.to_vec(),
            ran: ran.to_vec(),
            ..Default::default()
        }],
        samples: modes.len() as u32,
        non_default: modes.iter().filter(|m| **m != 0).count() as u32,
        modes: distinct,
        ..Default::default()
    }
}

pub(super) fn fpu(
    modes: &[u8],
    samples: u32,
    non_default: u32,
    traced_by: Option<i32>,
) -> crate::snapshot::FpuFacts {
    crate::snapshot::FpuFacts {
        threads: vec![crate::snapshot::ThreadFpu {
            tid: 4242,
            modes: modes.to_vec(),
            error: None,
            ..crate::snapshot::ThreadFpu::default()
        }],
        samples,
        non_default,
        modes: modes.to_vec(),
        traced_by,
        ..Default::default()
    }
}

#[test]
fn rounding_mode_flips_with_cpu_are_miner() {
    let mut p = plain(100.0);
    p.fpu = Some(fpu(&[0, 1, 3], 6, 4, None));
    let (level, score, ids) = judge1(&with(p.clone()));
    assert_eq!((level, score), (Level::Miner, 60), "{ids:?}");
    let s = with(p);
    let sig = signals::detect(&s.processes[0], &s, &Policy::default());
    let ev = &sig
        .iter()
        .find(|x| x.id == "rx.rounding_modes")
        .expect("signal")
        .evidence;
    assert!(
        ev.contains("3 FPU rounding modes (nearest, down, toward zero) seen in 6 samples")
            && ev.contains("67 %"),
        "{ev}"
    );
}

#[test]
fn default_rounding_mode_is_no_signal() {
    let mut p = plain(100.0);
    p.fpu = Some(fpu(&[0], 6, 0, None));
    assert_eq!(judge1(&with(p)).2, vec!["cpu.busy"]);
}

#[test]
fn already_traced_while_busy_is_weak() {
    let mut p = plain(100.0);
    p.fpu = Some(fpu(&[], 0, 0, Some(777)));
    let (level, score, ids) = judge1(&with(p.clone()));
    assert_eq!((level, score), (Level::Notice, 20), "{ids:?}");
    assert!(ids.contains(&"ptrace.already_traced".to_string()));
}

#[test]
fn combination_rules() {
    use Kind::*;
    use Strength::*;
    let s = |strength, kind| Signal::new("t", strength, kind, String::new());
    assert_eq!(verdict(&[]), (Level::Clean, 0));
    assert_eq!(verdict(&[s(Weak, Activity)]).0, Level::Notice);
    // Any number of weak signals stays below suspicious.
    let weak = vec![
        s(Weak, Activity),
        s(Weak, Stealth),
        s(Weak, Intent),
        s(Weak, Capability),
        s(Weak, Stealth),
    ];
    assert_eq!(verdict(&weak), (Level::Notice, 39));
    assert_eq!(
        verdict(&[s(Medium, Stealth), s(Weak, Activity)]),
        (Level::Suspicious, 40)
    );
    assert_eq!(
        verdict(&[s(Medium, Stealth), s(Medium, Intent)]).0,
        Level::Suspicious
    );
    // Strong without activity: suspicious; with activity: miner.
    assert_eq!(verdict(&[s(Strong, Intent)]).0, Level::Suspicious);
    assert_eq!(
        verdict(&[s(Strong, Intent), s(Weak, Activity)]).0,
        Level::Miner
    );
    assert_eq!(
        verdict(&[s(Strong, Activity), s(Strong, Intent)]),
        (Level::Miner, 100)
    );
    // Capability alone never rises above notice.
    assert_eq!(
        verdict(&[
            s(Medium, Capability),
            s(Medium, Capability),
            s(Weak, Capability)
        ]),
        (Level::Notice, 39)
    );
}

#[test]
fn report_orders_findings_and_sets_verdict() {
    let mut s = load("xmrig-light");
    flipping(&mut s);
    s.processes.push(plain(100.0));
    s.processes.push(plain(0.0));
    let r = judge(&s, &Policy::default());
    assert_eq!(r.verdict, Level::Miner);
    assert_eq!(r.findings.len(), 2);
    assert!(r.findings[0].level > r.findings[1].level);
    assert_eq!(r.processes_judged, 3);
    assert_eq!(r.schema, "minerwatch/1");
}

#[test]
fn hidden_busy_process_is_suspicious_and_reported_once() {
    let mut s = with(plain(100.0));
    s.host_facts.hidden_pids = vec![crate::snapshot::HiddenPid {
        pid: 4242,
        seen_by: vec!["getdents64".into()],
        missing_from: vec!["readdir".into()],
    }];
    let (level, score, ids) = judge1(&s);
    assert_eq!((level, score), (Level::Suspicious, 40), "{ids:?}");
    assert!(ids.contains(&"proc.hidden".to_string()));
    // In its finding, not again as a host finding.
    let r = judge(&s, &Policy::default());
    assert!(
        !r.host_findings
            .iter()
            .any(|h| h.id == "host.hidden_process"),
        "{:?}",
        r.host_findings
    );
}

#[test]
fn allow_rules_cap_or_suppress_and_say_so() {
    use crate::judge::AllowRule;
    let mut s = load("monerod-regtest-mining");
    s.processes[0].exe = Some("/usr/bin/monerod".into());
    let rule = AllowRule {
        exe: Some("/usr/bin/monerod".into()),
        sha256: None,
        path: None,
        user: None,
        name: None,
        container: None,
        max_level: Level::Notice,
        reason: "our own Monero node".into(),
    };
    let policy = Policy {
        allow: vec![rule.clone()],
        ..Policy::default()
    };
    let r = judge(&s, &policy);
    assert_eq!(r.findings[0].level, Level::Notice);
    assert!(
        r.findings[0]
            .allowed
            .as_deref()
            .is_some_and(|a| a.contains("our own Monero node"))
    );
    // Suppressed entirely at clean.
    let policy = Policy {
        allow: vec![AllowRule {
            max_level: Level::Clean,
            ..rule.clone()
        }],
        ..Policy::default()
    };
    assert!(judge(&s, &policy).findings.is_empty());
    // A directory: its executable lies under it, not beside it.
    let under = |dir: &str| Policy {
        allow: vec![AllowRule {
            exe: None,
            path: Some(dir.into()),
            ..rule.clone()
        }],
        ..Policy::default()
    };
    assert_eq!(
        judge(&s, &under("/usr/bin/")).findings[0].level,
        Level::Notice
    );
    assert_eq!(
        judge(&s, &under("/usr/bi/")).findings[0].level,
        Level::Suspicious
    );
    // A deleted executable at the allowed path is not the allowed program.
    s.processes[0].exe = Some("/usr/bin/monerod (deleted)".into());
    let policy = Policy {
        allow: vec![rule],
        ..Policy::default()
    };
    let f = &judge(&s, &policy).findings[0];
    assert_eq!(f.level, Level::Suspicious);
    assert!(f.allowed.is_none());
}

#[test]
fn bursty_cpu_counts_through_agent_history() {
    let mut p = plain(2.0);
    p.memory = Some(MemoryFacts {
        large_anon: vec![region(256 * MIB, "rw-p")],
        exec_anon: vec![region(77_824, "rwxp")],
        ..MemoryFacts::default()
    });
    p.cpu.history = vec![60.0, 0.0, 55.0, 0.0, 58.0, 2.0];
    p.memory_scan = Some(memory_scan(&[("randomx_jit_program_code", "randomx")]));
    let (level, _, ids) = judge1(&with(p.clone()));
    assert_eq!(level, Level::Miner, "{ids:?}");
    assert!(
        ids.contains(&"cpu.steady".to_string()) && ids.contains(&"mem.randomx_code".to_string())
    );
    // Too little history: no verdict on it.
    p.cpu.history.truncate(3);
    assert_eq!(judge1(&with(p)).0, Level::Notice);
}

#[test]
fn landed_files_are_suspicious_unless_an_allow_rule_about_files_caps_them() {
    use crate::judge::{AllowRule, landed_file};
    use crate::snapshot::{FileMeta, RuleMatch};
    let hit = [RuleMatch {
        rule: "xmrig_identity_strings".into(),
        category: "miner".into(),
        ..RuleMatch::default()
    }];
    let file = FileMeta {
        path: "/tmp/build/xmrig".into(),
        host_path: "/tmp/build/xmrig".into(),
        sha256: "ab".repeat(32),
        ..FileMeta::default()
    };
    assert_eq!(landed_file(&[], &file, &[]), None);
    assert_eq!(
        landed_file(&hit, &file, &[]),
        Some((Level::Suspicious, None))
    );
    let rule = AllowRule {
        exe: None,
        sha256: None,
        path: Some("/tmp/build/".into()),
        user: None,
        name: None,
        container: None,
        max_level: Level::Notice,
        reason: "CI builds".into(),
    };
    let capped = landed_file(&hit, &file, std::slice::from_ref(&rule));
    assert_eq!(
        capped,
        Some((
            Level::Notice,
            Some("CI builds (allow rule caps it at notice)".into())
        ))
    );
    let gone = AllowRule {
        max_level: Level::Clean,
        ..rule.clone()
    };
    assert_eq!(landed_file(&hit, &file, &[gone]), None);
    // A rule that also names a user is about processes.
    let by_user = AllowRule {
        user: Some("ci".into()),
        ..rule
    };
    assert_eq!(
        landed_file(&hit, &file, &[by_user]),
        Some((Level::Suspicious, None))
    );
}

#[test]
fn a_coverage_with_refused_processes_is_incomplete_with_the_fix() {
    use crate::snapshot::{Coverage, CoverageError};
    let err = |pid: Option<i32>, what: &str, error: &str| CoverageError {
        pid,
        what: what.into(),
        error: error.into(),
    };
    let mut c = Coverage {
        processes: 3,
        inaccessible: 0,
        vanished: 1,
        errors: vec![err(Some(9), "stat", "No such file or directory")],
    };
    // Vanished is not refused.
    assert_eq!(super::incomplete(&c), None);
    c.inaccessible = 2;
    c.errors
        .push(err(Some(7), "maps", "Permission denied (os error 13)"));
    c.errors
        .push(err(Some(8), "maps", "Permission denied (os error 13)"));
    c.errors
        .push(err(Some(8), "exe link", "Permission denied (os error 13)"));
    c.errors.push(err(None, "/etc/cron.d", "Permission denied"));
    let i = super::incomplete(&c).expect("incomplete");
    assert_eq!((i.processes, i.of), (2, 3));
    assert_eq!(i.refused, vec!["maps".to_string(), "exe link".to_string()]);
    assert!(i.fix.contains("CAP_SYS_PTRACE") && i.fix.contains("CAP_DAC_READ_SEARCH"));
    // Only ptrace refused (root under Yama): the fix names Yama.
    c.errors = vec![err(Some(7), "ptrace (FPU sampling)", "EPERM")];
    c.inaccessible = 1;
    let i = super::incomplete(&c).expect("incomplete");
    assert!(i.fix.contains("ptrace_scope"), "{}", i.fix);
}
