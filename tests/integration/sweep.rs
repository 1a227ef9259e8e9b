//! `minerwatch sweep` on trees the tests plant: a dormant librandomx worker
//! with its XMRig config and the cron line that starts it at boot, and a
//! hostile tree (FIFO, socket, device node, symlink loops, a symlink to
//! /dev/zero, a sparse 10 GiB file, 1,000 nested directories, 100,000
//! files).

use std::path::Path;
use std::process::Command;

use crate::support;
use crate::{BIN, json_out};

/// Plants `var/tmp/.x/kworker` (the librandomx worker, dormant) and its
/// `config.json` (XMRig-style, a TLS pool and a wallet) under `root`.
fn plant_dormant_miner(root: &Path) -> String {
    let dir = root.join("var/tmp/.x");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(support::rxworker_bin(), dir.join("kworker")).expect("copy worker");
    let config = Command::new(support::rxworker_bin())
        .args([
            "--print-config",
            "pool.example.net:443",
            "-",
            support::WALLET,
        ])
        .output()
        .expect("rxworker --print-config");
    assert!(config.status.success());
    std::fs::write(dir.join("config.json"), &config.stdout).expect("write config");
    let sha = Command::new("sha256sum")
        .arg(dir.join("kworker"))
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&sha.stdout)
        .split_whitespace()
        .next()
        .expect("hash")
        .to_string()
}

fn sweep(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("sweep")
        .args(args)
        .output()
        .expect("minerwatch sweep runs")
}

fn level_of<'a>(report: &'a serde_json::Value, host_path: &str) -> &'a serde_json::Value {
    report["file_findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["host_path"] == host_path))
        .map(|f| &f["level"])
        .unwrap_or_else(|| panic!("no file finding for {host_path}: {report:#}"))
}

#[test]
fn a_dormant_miner_started_by_cron_is_miner_and_without_the_cron_line_suspicious() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let sha = plant_dormant_miner(root);
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    let r = root.to_str().expect("utf-8 path");

    // No cron line: the config is a miner config on disk, the worker only
    // calls the RandomX library (as a Monero node would).
    let out = sweep(&["--root", r, "--format", "json"]);
    let rep = json_out(&out, 1);
    assert_eq!(rep["verdict"], "suspicious", "{rep:#}");
    assert_eq!(level_of(&rep, "/var/tmp/.x/config.json"), "suspicious");
    assert_eq!(level_of(&rep, "/var/tmp/.x/kworker"), "notice");

    // Started at boot by cron: both are the miner, linked to the line.
    std::fs::write(
        root.join("etc/crontab"),
        "SHELL=/bin/sh\n@reboot root /var/tmp/.x/kworker -B >/dev/null 2>&1\n",
    )
    .expect("crontab");
    let out = sweep(&["--root", r, "--format", "json"]);
    let rep = json_out(&out, 1);
    assert_eq!(rep["verdict"], "miner", "{rep:#}");
    for p in ["/var/tmp/.x/config.json", "/var/tmp/.x/kworker"] {
        assert_eq!(level_of(&rep, p), "miner", "{p}: {rep:#}");
    }
    let worker = rep["file_findings"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["host_path"] == "/var/tmp/.x/kworker"))
        .expect("worker finding");
    assert_eq!(worker["sha256"], sha.as_str());
    assert_eq!(worker["mode"], 0o755);
    let by = worker["launched_by"][0].as_str().expect("launched_by");
    assert!(
        by.contains("etc/crontab:2") && by.contains("@reboot"),
        "{by}"
    );
    // A persistence entry and a default root: found without naming a path.
    assert!(
        rep["sweep"]["roots"].as_array().is_some_and(|r| r
            .iter()
            .any(|p| p.as_str().is_some_and(|p| p.ends_with("var/tmp")))),
        "{rep:#}"
    );

    // A known-bad hash list names the worker: suspicious on its own.
    std::fs::remove_file(root.join("etc/crontab")).expect("rm crontab");
    std::fs::remove_file(root.join("var/tmp/.x/config.json")).expect("rm config");
    let hashes = root.join("bad.sha256");
    std::fs::write(
        &hashes,
        format!("# from the last case\n{sha}  kworker dropper\n"),
    )
    .expect("hashes");
    let out = sweep(&[
        "--root",
        r,
        "--hashes",
        hashes.to_str().expect("utf-8"),
        "--format",
        "json",
    ]);
    let rep = json_out(&out, 1);
    assert_eq!(
        level_of(&rep, "/var/tmp/.x/kworker"),
        "suspicious",
        "{rep:#}"
    );

    // Bad input: exit 2, the problem named.
    std::fs::write(&hashes, "not-a-hash\n").expect("hashes");
    let out = sweep(&["--root", r, "--hashes", hashes.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 1") && err.contains("not-a-hash"),
        "{err}"
    );
    let out = sweep(&[&format!("{r}/no/such/dir")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn allow_rules_of_the_config_cap_the_swept_files_they_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let sha = plant_dormant_miner(&root);
    std::fs::create_dir_all(root.join("etc")).expect("mkdir");
    std::fs::write(
        root.join("etc/crontab"),
        "@reboot root /var/tmp/.x/kworker -B\n",
    )
    .expect("crontab");
    let r = root.to_str().expect("utf-8 path");
    let config = tmp.path().join("minerwatch.toml");
    let c = config.to_str().expect("utf-8 path");

    // The directory allowed up to notice: both files stay, capped, and say why.
    std::fs::write(
        &config,
        "[[allow]]\npath = \"/var/tmp/.x/\"\nmax_level = \"notice\"\nreason = \"our benchmark rig\"\n",
    )
    .expect("config");
    // The cron line itself stays a suspect host finding: it runs a program
    // from a hidden directory in /var/tmp, whatever the files are.
    let rep = json_out(&sweep(&["--root", r, "--config", c, "--format", "json"]), 1);
    assert_eq!(rep["verdict"], "suspicious", "{rep:#}");
    assert!(
        rep["host_findings"]
            .as_array()
            .is_some_and(|h| h.iter().any(|f| f["id"] == "host.persistence")),
        "{rep:#}"
    );
    for f in rep["file_findings"].as_array().expect("findings") {
        assert_eq!(f["level"], "notice", "{f:#}");
        assert!(
            f["allowed"]
                .as_str()
                .is_some_and(|a| a.contains("our benchmark rig")),
            "{f:#}"
        );
    }
    let text = sweep(&["--root", r, "--config", c]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("allowed  our benchmark rig"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // The worker's hash allowed away: the config beside it is still the miner.
    std::fs::write(
        &config,
        format!(
            "[[allow]]\nsha256 = \"{sha}\"\nmax_level = \"clean\"\nreason = \"signed build\"\n"
        ),
    )
    .expect("config");
    let rep = json_out(&sweep(&["--root", r, "--config", c, "--format", "json"]), 1);
    assert_eq!(level_of(&rep, "/var/tmp/.x/config.json"), "miner");
    assert!(
        !rep["file_findings"]
            .as_array()
            .expect("findings")
            .iter()
            .any(|f| f["host_path"] == "/var/tmp/.x/kworker"),
        "{rep:#}"
    );

    // A rule that would allow everything is refused, naming the rule.
    std::fs::write(&config, "[[allow]]\npath = \"/\"\nreason = \"all\"\n").expect("config");
    let out = sweep(&["--root", r, "--config", c]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("allow[0]") && err.contains("path '/'"),
        "{err}"
    );
}

#[test]
fn a_hostile_tree_is_swept_to_the_end_with_every_skip_counted() {
    let _heavy = support::heavy_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path();
    let mk = |kind: rustix::fs::FileType, name: &str, dev: u64| {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            t.join(name),
            kind,
            rustix::fs::Mode::from_raw_mode(0o600),
            dev,
        )
        .unwrap_or_else(|e| panic!("mknod {name}: {e}"));
    };
    mk(rustix::fs::FileType::Fifo, "fifo", 0);
    // A character device like /dev/null (1, 3): needs root, as the tests run.
    mk(
        rustix::fs::FileType::CharacterDevice,
        "null",
        rustix::fs::makedev(1, 3),
    );
    let _sock = std::os::unix::net::UnixListener::bind(t.join("sock")).expect("socket");
    std::os::unix::fs::symlink("loop-b", t.join("loop-a")).expect("symlink");
    std::os::unix::fs::symlink("loop-a", t.join("loop-b")).expect("symlink");
    std::os::unix::fs::symlink(".", t.join("self")).expect("symlink");
    std::os::unix::fs::symlink("/dev/zero", t.join("zero")).expect("symlink");
    std::fs::File::create(t.join("sparse"))
        .and_then(|f| f.set_len(10 << 30))
        .expect("sparse 10 GiB");
    // 1,000 nested directories with a miner config at the bottom.
    let mut deep = t.join("deep");
    for i in 0..1000 {
        deep.push(format!("{}", i % 10));
    }
    std::fs::create_dir_all(&deep).expect("deep tree");
    std::fs::write(
        deep.join("config.json"),
        r#"{"donate-level": 1, "randomx": {"mode": "auto"}, "pools": [{"url": "pool.example.net:3333", "user": "4Wallet"}]}"#,
    )
    .expect("deep config");
    // 100,000 small files in 100 directories.
    for d in 0..100 {
        let dir = t.join(format!("many/{d}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..1000 {
            std::fs::write(dir.join(format!("{f}.txt")), b"log line\n").expect("small file");
        }
    }

    let out = Command::new("timeout")
        .args(["300", "/usr/bin/time", "-f", "maxrss_kib=%M", BIN, "sweep"])
        .arg(t)
        .args([
            "--max-file-size",
            "16M",
            "--threads",
            "2",
            "--format",
            "json",
        ])
        .output()
        .expect("minerwatch sweep runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rep = json_out(&out, 1);
    let sw = &rep["sweep"];
    let skipped = |reason: &str| -> u64 {
        sw["skipped"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.contains(reason))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0)
    };
    assert_eq!(skipped("fifo"), 1, "{sw:#}");
    assert_eq!(skipped("socket"), 1, "{sw:#}");
    assert_eq!(skipped("character device"), 1, "{sw:#}");
    assert_eq!(skipped("symlink (not followed)"), 4, "{sw:#}");
    assert_eq!(
        skipped("larger than --max-file-size: only its first 16 MiB read"),
        1,
        "{sw:#}"
    );
    // Every regular file read: the sparse one (16 MiB of it), the deep
    // config, the 100,000 small ones.
    assert_eq!(sw["files_read"], 100_002, "{sw:#}");
    assert!(
        sw["bytes_read"].as_u64().is_some_and(|b| b < (17 << 20)),
        "{sw:#}"
    );
    let deep_found = rep["file_findings"]
        .as_array()
        .and_then(|a| {
            a.iter().find(|f| {
                f["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("config.json"))
            })
        })
        .expect("the config 1,000 levels down");
    assert_eq!(deep_found["level"], "suspicious");
    // Memory stays bounded: two readers of at most 16 MiB each and the rules.
    let maxrss: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maxrss in stderr: {stderr}"));
    assert!(maxrss < 300 * 1024, "peak RSS {maxrss} KiB");
}

#[test]
fn scan_sweep_links_a_running_worker_to_its_binary_and_config_on_disk() {
    let _heavy = support::heavy_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    plant_dormant_miner(root);
    let exe = root.join("var/tmp/.x/kworker");
    let mut worker = support::Child::spawn({
        let mut c = Command::new(&exe);
        c.args(["--mode", "light", "--seconds", "30"]);
        c
    })
    .expect("start the worker");
    assert!(
        worker.wait_for_line("hashing", std::time::Duration::from_secs(30)),
        "{}",
        worker.stderr_so_far()
    );
    let worker_pid = worker.pid();
    let pid = worker_pid.to_string();
    let out = Command::new(BIN)
        .args(["scan", "--sweep", "--window", "1", "--pid", &pid, "--root"])
        .arg(root)
        .args(["--format", "json"])
        .output()
        .expect("minerwatch scan --sweep");
    worker.kill();
    let rep = json_out(&out, 1);
    let files = rep["file_findings"].as_array().expect("file findings");
    let exe = exe.to_str().expect("utf-8");
    let bin = files
        .iter()
        .find(|f| f["path"] == exe)
        .unwrap_or_else(|| panic!("no finding for {exe}: {rep:#}"));
    assert_eq!(bin["level"], "miner", "{bin:#}");
    assert_eq!(
        bin["launched_by"][0],
        format!("running process {pid} kworker").as_str(),
        "{bin:#}"
    );
    let config = files
        .iter()
        .find(|f| f["host_path"] == "/var/tmp/.x/config.json")
        .expect("config finding");
    assert_eq!(config["level"], "miner", "{config:#}");
    // The process itself is judged as in any scan.
    assert!(
        rep["findings"].as_array().is_some_and(|f| f
            .iter()
            .any(|f| f["pid"] == worker_pid && f["level"] == "miner")),
        "{rep:#}"
    );
}

#[test]
fn cpu_limit_holds_the_sweep_to_its_share_of_a_core() {
    let _heavy = support::heavy_lock();
    let tmp = tempfile::tempdir().expect("tempdir");
    // 40 files of 512 KiB of random bytes to hash and match.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..40 {
        let data: Vec<u8> = (0..512 * 1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        std::fs::write(tmp.path().join(format!("{i}.bin")), data).expect("write");
    }
    let out = Command::new("/usr/bin/time")
        .args(["-f", "cpu_s=%U %S wall_s=%e", BIN, "sweep"])
        .arg(tmp.path())
        .args(["--cpu-limit", "50", "--threads", "2"])
        .output()
        .expect("minerwatch sweep");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("cpu_s="))
        .unwrap_or_else(|| panic!("no time line: {stderr}"));
    let nums: Vec<f64> = line
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|v| v.parse().ok())
        .collect();
    let (cpu, wall) = (nums[0] + nums[1], nums[2]);
    assert!(cpu > 0.2, "it did work: {line}");
    // At most half a core on average (what it spent before and after the
    // sweep's last file, exiting and printing, is the slack).
    assert!(cpu / wall <= 0.6, "{line}");
}

#[test]
fn files_deleted_while_the_sweep_reads_them_are_counted_not_fatal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("churn");
    std::fs::create_dir(&dir).expect("mkdir");
    const N: u64 = 10_000;
    for f in 0..N {
        std::fs::write(dir.join(format!("{f}.log")), b"a line of a log\n").expect("file");
    }
    // Slowed to 5 % of a core, the readers are still at work when the files
    // they were handed go away.
    let sweep = support::Child::spawn({
        let mut c = Command::new(BIN);
        c.arg("sweep")
            .arg(&dir)
            .args(["--cpu-limit", "5", "--threads", "1", "--format", "json"]);
        c
    })
    .expect("sweep starts");
    // Once the walker or a reader holds the directory or a file in it open,
    // delete everything in it.
    let has_dir_open = || {
        std::fs::read_dir(format!("/proc/{}/fd", sweep.pid()))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(&dir)))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !has_dir_open() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    for f in 0..N {
        let _ = std::fs::remove_file(dir.join(format!("{f}.log")));
    }
    let mut sweep = sweep;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while sweep.is_running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!sweep.is_running(), "sweep did not finish");
    let rep: serde_json::Value =
        serde_json::from_str(&sweep.stdout_so_far()).expect("one JSON report");
    let sw = &rep["sweep"];
    let read = sw["files_read"].as_u64().expect("files_read");
    let vanished = sw["skipped"]["vanished while swept"].as_u64().unwrap_or(0);
    assert!(vanished > 0, "no file vanished under the sweep: {sw:#}");
    assert!(read + vanished <= N, "{sw:#}");
    assert_eq!(rep["verdict"], "clean", "{rep:#}");
}
