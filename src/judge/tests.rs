//! Judge tests on JSON snapshot fixtures (tests/fixtures/snapshots), which
//! were generated from the /proc files recorded from real miners
//! (tests/fixtures/proc) by `observe::fixtures::regenerate_snapshot_fixtures`.

use super::*;
use crate::snapshot::*;

const SNAPSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/snapshots");
const WALLET: &str = "4ApM6hUHyYx16547k5sn3zRND22RhkaWd4JdemFQyTKQ36ixnHzMV4LRzyFP6XEdkjMTZqHsQA5DhDZWLchXHcKf4dKqcj7";

fn load(name: &str) -> HostSnapshot {
    let text = std::fs::read_to_string(format!("{SNAPSHOTS}/{name}.json")).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture parses")
}

/// A snapshot holding just `p`.
fn with(p: ProcessFacts) -> HostSnapshot {
    let mut s = load("xmrig-light");
    s.processes = vec![p];
    s
}

fn judge1(s: &HostSnapshot) -> (Level, u32, Vec<String>) {
    let p = &s.processes[0];
    let signals = signals::detect(p, s, &Policy::default());
    let (level, score) = verdict(&signals);
    (level, score, signals.into_iter().map(|s| s.id).collect())
}

/// An ordinary busy process: a compiler in /usr/bin at 100 % of a core.
fn plain(cpu: f64) -> ProcessFacts {
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

fn region(size: u64, perms: &str) -> Region {
    Region {
        start: "0x7f0000000000".into(),
        size,
        perms: perms.into(),
        path: None,
    }
}

const MIB: u64 = 1024 * 1024;

/// The rounding-mode samples a real scan of the recorded miners took: two
/// and three modes in five samples (SIGNALS.md §1).
fn flipping(s: &mut HostSnapshot) {
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

/// A JVM with `-Xms256m -Xmx256m`: a 254–264 MiB heap, an rwx code cache,
/// one busy thread.
fn jvm(cpu: f64) -> ProcessFacts {
    let mut p = plain(cpu);
    p.comm = "java".into();
    p.exe = Some("/usr/lib/jvm/java-17-openjdk-amd64/bin/java".into());
    p.cmdline = ["java", "-Xms256m", "-Xmx256m", "-cp", "/srv/app", "Main"]
        .map(String::from)
        .to_vec();
    p.cpu.threads[0].name = "java".into();
    p.memory = Some(MemoryFacts {
        large_anon: vec![region(258 * MIB, "rw-p")],
        exec_anon: vec![region(2 * MIB, "rwxp")],
        ..MemoryFacts::default()
    });
    p
}

#[test]
fn shape_and_cpu_stay_notice() {
    // The JVM of the precision issue: rated `miner` (60) once.
    let (level, score, ids) = judge1(&with(jvm(100.0)));
    assert_eq!(level, Level::Notice, "{ids:?}");
    assert!(score < 40, "{score}");
    assert_eq!(ids, vec!["cpu.busy", "rx.memory_layout"]);
    // With a 2080 MiB dataset-sized heap, huge pages, several JIT regions: the same.
    let mut p = jvm(190.0);
    let m = p.memory.as_mut().expect("memory");
    m.large_anon = vec![region(2080 * MIB, "rw-p")];
    m.exec_anon.push(region(77_824, "rwxp"));
    m.hugetlb_kib = 2 * 1024 * 1024;
    let (level, _, ids) = judge1(&with(p));
    assert_eq!(level, Level::Notice, "{ids:?}");
}

#[test]
fn shape_with_all_nearest_samples_names_the_evidence_against() {
    let mut p = jvm(100.0);
    p.fpu = Some(fpu_ran(4242, &[0; 8], &[true; 8]));
    let s = with(p);
    let report = judge(&s, &Policy::default());
    let f = &report.findings[0];
    assert_eq!(f.level, Level::Notice);
    let against = &f.signals[0];
    assert_eq!(
        (against.id.as_str(), against.kind, against.weight),
        ("rx.not_hashing", Kind::Against, 0)
    );
    assert_eq!(
        against.evidence,
        "8 samples of its busy thread 4242 'java' at 100 % taken while it ran, all round-to-nearest: \
         not RandomX at work (RandomX's CFROUND leaves round-to-nearest in about 2 of 3 samples)"
    );
}

#[test]
fn samples_of_a_thread_that_did_not_run_prove_nothing() {
    // Stopped, sleeping or held back by a quota between samples: its samples
    // repeat its last state.
    let mut p = jvm(100.0);
    let mut f = fpu_ran(4242, &[0; 8], &[false; 8]);
    f.threads[0].idle = vec!["stopped".into()];
    p.fpu = Some(f);
    assert!(
        !judge1(&with(p.clone()))
            .2
            .contains(&"rx.not_hashing".to_string())
    );
    // Seven that ran are not enough.
    let mut ran = [true; 8];
    ran[3] = false;
    p.fpu = Some(fpu_ran(4242, &[0; 8], &ran));
    assert!(
        !judge1(&with(p.clone()))
            .2
            .contains(&"rx.not_hashing".to_string())
    );
    // Snapshots from before per-sample tracking say nothing about it.
    p.fpu = Some(fpu(&[0], 8, 0, None));
    assert!(
        !judge1(&with(p.clone()))
            .2
            .contains(&"rx.not_hashing".to_string())
    );
    // A quiet thread seen running does not clear a busy one that was not.
    p.cpu.threads.push(ThreadCpu {
        tid: 4243,
        name: "GC Thread#0".into(),
        percent: 12.0,
    });
    let mut f = fpu_ran(4243, &[0; 8], &[true; 8]);
    f.threads.push(crate::snapshot::ThreadFpu {
        tid: 4242,
        modes: vec![0; 8],
        ran: vec![false; 8],
        idle: vec!["waiting for a CPU (throttled or preempted)".into()],
        error: None,
    });
    p.fpu = Some(f.clone());
    assert!(
        !judge1(&with(p.clone()))
            .2
            .contains(&"rx.not_hashing".to_string())
    );
    // The other way round it does, and says which thread proved nothing.
    f.threads[0].tid = 4242;
    f.threads[1].tid = 4243;
    p.fpu = Some(f);
    let s = with(p);
    let sig = signals::detect(&s.processes[0], &s, &Policy::default());
    let ev = &sig
        .iter()
        .find(|x| x.id == "rx.not_hashing")
        .expect("against")
        .evidence;
    assert!(
        ev.contains("thread 4243 'GC Thread#0' at 12 % was not seen running (waiting for a CPU (throttled or preempted)): its 8 samples prove nothing"),
        "{ev}"
    );
}

#[test]
fn evidence_against_caps_randomx_capability_but_not_miner_identity() {
    // A Monero node answering wallets: RandomX engine, cache-sized memory,
    // a busy RPC thread that stays at round-to-nearest.
    let mut p = jvm(100.0);
    p.comm = "monerod".into();
    p.exe = Some("/usr/bin/monerod".into());
    p.exe_binary = Some("monerod".into());
    let mut s = with(p);
    s.binaries = vec![BinaryFacts {
        id: "monerod".into(),
        path: "/usr/bin/monerod".into(),
        matches: vec![RuleMatch {
            rule: "randomx_engine_constants".into(),
            namespace: "minerwatch_randomx".into(),
            category: "randomx".into(),
            description: None,
            user: false,
        }],
        ..BinaryFacts::default()
    }];
    // Not sampled: the engine and the CPU are worth a look.
    assert_eq!(judge1(&s).0, Level::Suspicious);
    s.processes[0].fpu = Some(fpu_ran(4242, &[0; 8], &[true; 8]));
    let (level, _, ids) = judge1(&s);
    assert_eq!(level, Level::Notice, "{ids:?}");
    // An XMRig binary is a miner whatever its threads do now (say, while it
    // fills its dataset).
    s.binaries[0].matches[0].category = "xmrig".into();
    s.binaries[0].matches[0].rule = "xmrig_identity_strings".into();
    let (level, _, ids) = judge1(&s);
    assert_eq!(level, Level::Miner, "{ids:?}");
}

#[test]
fn specific_evidence_with_activity_is_miner() {
    // RandomX code in its memory and CPU, held to 28 % of a core.
    let mut p = jvm(28.0);
    p.memory_scan = Some(memory_scan(&[("randomx_jit_program_code", "randomx")]));
    let (level, score, ids) = judge1(&with(p.clone()));
    assert_eq!(level, Level::Miner, "{ids:?}");
    assert_eq!(score, 90);
    // Rounding-mode flips are activity themselves: no CPU signal needed.
    let mut q = jvm(5.0);
    q.fpu = Some(fpu_ran(4242, &[0, 2, 2, 1], &[true; 4]));
    q.memory_scan = p.memory_scan.clone();
    let (level, _, ids) = judge1(&with(q));
    assert_eq!(level, Level::Miner, "{ids:?}");
    assert!(!ids.contains(&"cpu.busy".to_string()));
    // Without any activity the same code is capability.
    p.cpu = plain(1.0).cpu;
    let (level, _, ids) = judge1(&with(p));
    assert_eq!(level, Level::Notice, "{ids:?}");
}

#[test]
fn a_pool_login_in_memory_is_activity_a_config_is_intent() {
    let mut p = plain(0.0);
    p.memory_scan = Some(memory_scan(&[("stratum_xmrig_login_json", "stratum")]));
    let s = with(p.clone());
    let sig = signals::detect(&s.processes[0], &s, &Policy::default());
    assert_eq!(sig[0].kind, Kind::Activity);
    // With its deleted binary, that is a miner even with its CPU held down.
    p.exe = Some("/usr/sbin/php-fpm (deleted)".into());
    let (level, _, ids) = judge1(&with(p.clone()));
    assert_eq!(level, Level::Miner, "{ids:?}");
    p.memory_scan = Some(memory_scan(&[("stratum_xmrig_config_json", "xmrig")]));
    let s = with(p);
    let sig = signals::detect(&s.processes[0], &s, &Policy::default());
    let m = sig
        .iter()
        .find(|x| x.id == "mem.miner_strings")
        .expect("signal");
    assert_eq!(m.kind, Kind::Intent);
    assert_eq!(verdict(&sig).0, Level::Suspicious);
}

#[test]
fn a_randomx_shaped_process_behind_a_local_proxy_is_a_weak_signal() {
    let proxied = |port: u16, comm: &str| Connection {
        local: "127.0.0.1:50110".into(),
        remote_ip: "127.0.0.1".into(),
        remote_port: port,
        peer: Some(LocalPeer {
            pid: 77,
            comm: comm.into(),
            exe: Some(format!("/usr/bin/{comm}")),
        }),
    };
    let mut p = jvm(25.0);
    p.connections = vec![proxied(41080, "microsocks")];
    let s = with(p.clone());
    let sig = signals::detect(&s.processes[0], &s, &Policy::default());
    let proxy = sig
        .iter()
        .find(|x| x.id == "net.local_proxy")
        .expect("signal");
    assert_eq!(
        (proxy.strength, proxy.kind),
        (Strength::Weak, Kind::Stealth)
    );
    assert!(
        proxy
            .evidence
            .contains("127.0.0.1:41080, served by microsocks (pid 77)"),
        "{}",
        proxy.evidence
    );
    assert_eq!(verdict(&sig).0, Level::Notice);
    // A well-known proxy port, its listener unknown.
    p.connections = vec![Connection {
        peer: None,
        ..proxied(9050, "tor")
    }];
    assert!(
        judge1(&with(p.clone()))
            .2
            .contains(&"net.local_proxy".to_string())
    );
    // A local database is no proxy; nor is a proxy a signal for a process
    // without RandomX's shape.
    p.connections = vec![proxied(5432, "postgres")];
    assert!(
        !judge1(&with(p.clone()))
            .2
            .contains(&"net.local_proxy".to_string())
    );
    let mut q = plain(100.0);
    q.connections = vec![proxied(41080, "microsocks")];
    assert!(!judge1(&with(q)).2.contains(&"net.local_proxy".to_string()));
}

#[test]
fn randomx_layout_at_low_cpu_is_shape() {
    let mut p = jvm(28.0);
    p.cpu = plain(5.0).cpu;
    let (level, _, ids) = judge1(&with(p));
    assert_eq!(level, Level::Notice, "{ids:?}");
    assert!(
        ids.contains(&"mem.randomx_region".to_string()) && ids.contains(&"mem.jit".to_string())
    );
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
fn memory_scan(rules: &[(&str, &str)]) -> crate::snapshot::MemoryScan {
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
fn fpu_ran(tid: i32, modes: &[u8], ran: &[bool]) -> crate::snapshot::FpuFacts {
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

fn fpu(
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
