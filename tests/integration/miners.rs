//! Real miners must be convicted.

use std::time::Duration;

use crate::support::quiet::{QUIET_NAME, QuietMiner, cpu_share, established_peers};
use crate::support::{self, Disguise, FakePool, Monerod, WorkerOpts};
use crate::{finding, level_of, scan_pids, signal_ids};

const START: Duration = Duration::from_secs(60);

/// Starts a worker, waits until it hashes, scans it with the default window.
fn convict(opts: WorkerOpts, wait: Duration) -> (serde_json::Value, i32) {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let mut w = support::spawn_worker(&opts);
    assert!(
        w.wait_for_line("hashing", wait),
        "worker never hashed: {}",
        w.stderr_so_far()
    );
    let report = scan_pids(&[w.pid()], &[]);
    assert_eq!(
        level_of(&report, w.pid()),
        "miner",
        "{opts:?} not convicted: {}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    // What it cannot shed: its JIT code in memory and, hashing flat out,
    // the rounding-mode flips (a throttled thread may sleep through samples).
    let ids = signal_ids(&report, w.pid());
    assert!(
        ids.contains(&"mem.randomx_code".into()),
        "{opts:?}: {ids:?}"
    );
    if opts.throttle.is_none() {
        assert!(
            ids.contains(&"rx.rounding_modes".into()),
            "{opts:?}: {ids:?}"
        );
    }
    (report, w.pid())
}

#[test]
fn plain_light_worker_is_miner() {
    let (report, pid) = convict(WorkerOpts::light(), START);
    let ids = signal_ids(&report, pid);
    assert!(ids.contains(&"rx.memory_layout".into()), "{ids:?}");
    assert!(ids.contains(&"rx.rounding_modes".into()), "{ids:?}");
    // librandomx is a mapped library: its engine constants are found.
    assert!(ids.contains(&"sig.randomx_engine".into()), "{ids:?}");
    let f = finding(&report, pid).expect("finding");
    let ev = f["signals"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "rx.memory_layout"))
        .and_then(|s| s["evidence"].as_str())
        .unwrap_or_default();
    assert!(
        ev.contains("RandomX cache size") && ev.contains("rwxp"),
        "{ev}"
    );
    assert!(
        f["process"]["exe_sha256"]
            .as_str()
            .is_some_and(|h| h.len() == 64)
    );
}

#[test]
fn worker_run_from_dev_shm_under_campaign_name_and_deleted_is_miner() {
    let opts = WorkerOpts {
        disguise: Disguise::ShmCampaign("kdevtmpfsi".into()),
        ..WorkerOpts::light()
    };
    let (report, pid) = convict(opts, START);
    let ids = signal_ids(&report, pid);
    for id in ["exe.deleted_staging", "name.campaign", "rx.memory_layout"] {
        assert!(ids.contains(&id.to_string()), "{id}: {ids:?}");
    }
    let exe = finding(&report, pid)
        .and_then(|f| f["process"]["exe"].as_str())
        .unwrap_or_default();
    assert!(
        exe.starts_with("/dev/shm/") && exe.ends_with("kdevtmpfsi (deleted)"),
        "{exe}"
    );
}

#[test]
fn worker_named_like_a_kernel_thread_is_miner() {
    let opts = WorkerOpts {
        disguise: Disguise::Argv0("[kworker/0:1]".into()),
        ..WorkerOpts::light()
    };
    let (report, pid) = convict(opts, START);
    assert!(signal_ids(&report, pid).contains(&"name.fake_kernel_thread".into()));
}

#[test]
fn throttled_worker_at_30_percent_is_miner() {
    let opts = WorkerOpts {
        throttle: Some(30),
        ..WorkerOpts::light()
    };
    let (report, pid) = convict(opts, START);
    let cpu = finding(&report, pid)
        .and_then(|f| f["process"]["cpu_percent"].as_f64())
        .unwrap_or(0.0);
    assert!(
        (15.0..60.0).contains(&cpu),
        "throttled worker used {cpu} % of a core"
    );
}

#[test]
fn fast_mode_worker_with_full_dataset_is_miner() {
    // Filling the 2080 MiB dataset takes 30–90 s on two shared cores.
    let (report, pid) = convict(
        WorkerOpts {
            extra_args: vec!["--seconds".into(), "400".into()],
            ..WorkerOpts::fast()
        },
        Duration::from_secs(300),
    );
    let f = finding(&report, pid).expect("finding");
    let ev = f["signals"].to_string();
    assert!(ev.contains("RandomX dataset size"), "{ev}");
}

#[test]
fn monerod_node_is_at_most_notice_and_mining_monerod_is_miner() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let mut node = Monerod::start();
    assert!(
        node.wait_rpc(Duration::from_secs(60)),
        "monerod RPC never came up"
    );
    let pid = node.pid();
    let idle = scan_pids(&[pid], &[]);
    let level = level_of(&idle, pid);
    assert!(
        level == "clean" || level == "notice",
        "plain monerod rated {level}: {idle}"
    );

    node.start_mining(support::WALLET, 1)
        .expect("start_mining accepted");
    assert!(
        node.wait_hashing(Duration::from_secs(300)),
        "monerod never hashed"
    );
    let mining = scan_pids(&[pid], &[]);
    assert_eq!(level_of(&mining, pid), "miner", "{mining}");
    assert!(signal_ids(&mining, pid).contains(&"rx.memory_layout".into()));
}

#[test]
fn xmrig_style_client_on_a_stratum_pool_is_at_least_suspicious() {
    support::ensure_packages();
    let pool = FakePool::start();
    let mut client = support::spawn_stratum_client(pool.addr(), support::WALLET);
    assert!(
        client.wait_for_line("connected", Duration::from_secs(20)),
        "client never connected"
    );
    assert!(
        pool.wait_login(Duration::from_secs(20)),
        "pool got no login"
    );
    let report = scan_pids(&[client.pid()], &["--window", "1"]);
    let level = level_of(&report, client.pid());
    assert!(
        level == "suspicious" || level == "miner",
        "{level}: {report}"
    );
    let ids = signal_ids(&report, client.pid());
    for id in ["net.stratum", "cmd.miner_args", "cmd.wallet"] {
        assert!(ids.contains(&id.to_string()), "{id}: {ids:?}");
    }
}

#[test]
fn worker_from_memfd_with_wiped_argv_and_config_only_in_memory_is_miner() {
    let opts = WorkerOpts {
        disguise: Disguise::Memfd("sshd".into()),
        extra_args: [
            "-u",
            support::WALLET,
            "--config-in-memory",
            "pool.example.net:3333",
            "--wipe-argv",
            "/usr/sbin/sshd -D",
        ]
        .map(String::from)
        .to_vec(),
        ..WorkerOpts::light()
    };
    let (report, pid) = convict(opts, START);
    let f = finding(&report, pid).expect("finding");
    // Nothing on the command line or on disk gives it away...
    assert_eq!(
        f["process"]["cmdline"],
        serde_json::json!(["/usr/sbin/sshd -D"])
    );
    let ids = signal_ids(&report, pid);
    assert!(
        !ids.contains(&"cmd.wallet".into()) && !ids.contains(&"cmd.miner_args".into()),
        "{ids:?}"
    );
    // ...but its memory does.
    for id in [
        "exe.memfd",
        "mem.randomx_code",
        "mem.miner_strings",
        "rx.rounding_modes",
    ] {
        assert!(ids.contains(&id.to_string()), "{id}: {ids:?}");
    }
    let ev = f["signals"].to_string();
    assert!(ev.contains("[heap]"), "the match names its region: {ev}");
}

#[test]
fn no_ptrace_flag_samples_nothing() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let mut w = support::spawn_worker(&WorkerOpts::light());
    assert!(w.wait_for_line("hashing", START));
    let dir = tempfile::tempdir().expect("tmp");
    let save = dir.path().join("s.json");
    let report = scan_pids(
        &[w.pid()],
        &[
            "--window",
            "1",
            "--no-ptrace",
            "--save",
            &save.to_string_lossy(),
        ],
    );
    assert!(!signal_ids(&report, w.pid()).contains(&"rx.rounding_modes".into()));
    let snap: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&save).expect("read")).expect("json");
    assert!(
        snap["processes"][0]["fpu"].is_null(),
        "{}",
        snap["processes"][0]["fpu"]
    );
}

#[test]
fn no_memory_flag_leaves_memory_alone() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let mut w = support::spawn_worker(&WorkerOpts::light());
    assert!(w.wait_for_line("hashing", START));
    let report = scan_pids(&[w.pid()], &["--window", "1", "--no-memory"]);
    let ids = signal_ids(&report, w.pid());
    assert!(
        !ids.iter().any(|i| i.starts_with("mem.randomx_code")),
        "{ids:?}"
    );
    assert_eq!(
        level_of(&report, w.pid()),
        "miner",
        "its rounding modes still convict: {ids:?}"
    );
}

/// The start of XMRig's user agent ("<name>/"), from our own rule's format
/// string so that no test source holds it.
fn xmrig_agent_prefix() -> String {
    let rules =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/yara/xmrig.yar"))
            .expect("rules/yara/xmrig.yar");
    rules
        .lines()
        .find(|l| l.trim_start().starts_with("$core_agent_fmt"))
        .and_then(|l| l.split_once("= \""))
        .and_then(|(_, lit)| lit.split_once("%s"))
        .map(|(prefix, _)| prefix.to_string())
        .expect("the $core_agent_fmt string in xmrig.yar")
}

/// A quiet miner: held to a quarter of a core by a cgroup quota, on a pool
/// over TLS through a local SOCKS5 proxy, binary and config deleted.
#[test]
fn quota_limited_proxied_deleted_worker_is_miner() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let miner = QuietMiner::start(25);
    let pid = miner.pid();

    // The rig is what it claims. The pool got an XMRig login, through the chain.
    let logins = miner.logins();
    let agent = format!(r#""agent":"{}"#, xmrig_agent_prefix());
    assert!(
        logins.iter().any(|l| l.contains(r#""method":"login""#)
            && l.contains(&format!(r#""login":"{}""#, support::WALLET))
            && l.contains(&agent)),
        "the pool got no XMRig login: {logins:?}"
    );
    // Binary and config are gone.
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("read /proc/PID/exe");
    let exe = exe.to_string_lossy();
    assert_eq!(
        exe,
        format!("{} (deleted)", miner.exe_path().display()),
        "exe link"
    );
    assert!(exe.ends_with(&format!("/{QUIET_NAME} (deleted)")), "{exe}");
    assert!(!miner.config_path().exists(), "config still there");
    assert!(
        !miner.exe_path().parent().is_some_and(|d| d.exists()),
        "its directory is still there"
    );
    // Its only TCP peer is the SOCKS5 proxy: not the TLS front, not the pool.
    let proxy = miner.pool();
    let peers = established_peers(pid).expect("read the worker's sockets");
    assert!(
        !peers.is_empty() && peers.iter().all(|p| *p == proxy.socks_addr()),
        "peers {peers:?}; socks {}, TLS front {}, pool {}",
        proxy.socks_addr(),
        proxy.front_addr(),
        proxy.pool_addr()
    );
    assert!(
        !peers
            .iter()
            .any(|p| p.port() == proxy.front_addr().port() || p.port() == proxy.pool_addr().port()),
        "{peers:?}"
    );
    // Held to the quota while it hashes flat out.
    let share = cpu_share(pid, Duration::from_secs(3)).expect("worker CPU");
    assert!(
        (0.05..=0.30).contains(&share),
        "quiet worker used {:.0} % of a core",
        share * 100.0
    );

    let report = scan_pids(&[pid], &[]);
    let ids = signal_ids(&report, pid);
    eprintln!("quiet miner at 25 %: signals {ids:?}");
    assert_eq!(
        level_of(&report, pid),
        "miner",
        "quiet miner not convicted ({ids:?}): {}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    assert!(
        ids.iter()
            .any(|i| i == "rx.rounding_modes" || i == "mem.randomx_code"),
        "nothing RandomX-specific: {ids:?}"
    );
    // Its one connection leads to the local SOCKS5 proxy, named as such.
    let f = finding(&report, pid).expect("finding");
    let proxy_ev = f["signals"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "net.local_proxy"))
        .and_then(|s| s["evidence"].as_str())
        .unwrap_or_default();
    assert!(
        proxy_ev.contains(&format!(
            "{}, served by microsocks",
            miner.pool().socks_addr()
        )),
        "{ids:?}: {proxy_ev}"
    );
}
