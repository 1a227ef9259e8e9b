//! The snapshot fixtures the judge's tests use (tests/fixtures/snapshots),
//! made from the /proc files recorded from real miners (tests/fixtures/proc)
//! with observe's own parsers.

use crate::snapshot::*;

const SNAPSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/snapshots");

/// Rewrites tests/fixtures/snapshots from tests/fixtures/proc:
/// `cargo test --lib regenerate_snapshot_fixtures -- --ignored`.
/// The recorded miners each ran one hashing thread at a full core; that CPU
/// figure and, for xmrig-pool, its connection to the pool on 127.0.0.1:3333
/// (tests/fixtures/README.md) are the only facts added.
#[test]
#[ignore]
fn regenerate_snapshot_fixtures() {
    use procfs::FromRead;
    use procfs::process::{MemoryMaps, Stat, Status};
    let proc_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc");
    std::fs::create_dir_all(SNAPSHOTS).expect("mkdir");
    for name in [
        "xmrig-fast-hugepages",
        "xmrig-light",
        "xmrig-pool",
        "monerod-regtest-mining",
    ] {
        let dir = format!("{proc_dir}/{name}");
        let stat = Stat::from_file(format!("{dir}/stat")).expect("stat");
        let status = Status::from_file(format!("{dir}/status")).expect("status");
        let maps: Vec<_> = MemoryMaps::from_file(format!("{dir}/maps"))
            .expect("maps")
            .into_iter()
            .collect();
        let cmdline: Vec<String> = std::fs::read_to_string(format!("{dir}/cmdline"))
            .expect("cmdline")
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        // One recording shows its argv joined by spaces, as setproctitle leaves it.
        let exe = cmdline[0]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let memory = crate::observe::memory::summarize(
            &maps,
            status.vmrss.unwrap_or(0),
            status.hugetlbpages.unwrap_or(0),
        );
        let connections = if name == "xmrig-pool" {
            vec![Connection {
                local: "127.0.0.1:40512".into(),
                remote_ip: "127.0.0.1".into(),
                remote_port: 3333,
                peer: None,
            }]
        } else {
            Vec::new()
        };
        let p = ProcessFacts {
            pid: stat.pid,
            start_time: stat.starttime,
            ppid: stat.ppid,
            ancestry: vec![Ancestor {
                pid: stat.ppid,
                name: "bash".into(),
            }],
            uid: status.ruid,
            user: Some("root".into()),
            comm: stat.comm.clone(),
            cmdline,
            exe: Some(exe),
            cwd: Some("/root".into()),
            container: None,
            nice: stat.nice,
            threads: u64::try_from(stat.num_threads).unwrap_or(0),
            kernel_thread: false,
            cpu: CpuFacts {
                percent: 99.6,
                ticks: 498,
                threads: vec![ThreadCpu {
                    tid: stat.pid + 5,
                    name: stat.comm.clone(),
                    percent: 99.4,
                }],
                whole_window: true,
                ..CpuFacts::default()
            },
            memory: Some(memory),
            connections,
            ..ProcessFacts::default()
        };
        let snap = HostSnapshot {
            schema: SNAPSHOT_SCHEMA.into(),
            host: HostInfo {
                hostname: "fixture".into(),
                kernel: "6.1.0".into(),
                cpus: 2,
                boot_time: "2026-11-01T00:00:00Z".into(),
                clock_ticks: 100,
            },
            started_at: "2026-11-01T01:00:00Z".into(),
            window_secs: 5.0,
            host_cpu: HostCpu {
                busy_ticks: 520,
                total_ticks: 1000,
                ..HostCpu::default()
            },
            processes: vec![p],
            binaries: Vec::new(),
            rules: RulesInfo::default(),
            scope: Vec::new(),
            scoped_host_checks: false,
            coverage: Coverage {
                processes: 1,
                ..Coverage::default()
            },
            host_facts: Default::default(),
            preload_binaries: Vec::new(),
            sweep: None,
        };
        let json = serde_json::to_string_pretty(&snap).expect("json");
        std::fs::write(format!("{SNAPSHOTS}/{name}.json"), json + "\n").expect("write");
    }
}
