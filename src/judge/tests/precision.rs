//! The precision rules: shape is not proof, evidence against counts,
//! specific evidence with activity convicts, and the quiet miner's signals.

use super::*;

/// A JVM with `-Xms256m -Xmx256m`: a 254–264 MiB heap, an rwx code cache,
/// one busy thread.
pub(super) fn jvm(cpu: f64) -> ProcessFacts {
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
