//! `minerwatch contain`, `collect` and `analyze` of a bundle, on processes
//! the tests start: a disguised, deleted librandomx worker in a freezer
//! cgroup of its own, a benign shell tree, and the refusals.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{self, Child, Disguise, WorkerOpts};
use crate::{BIN, json_out};

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("minerwatch runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `/proc/PID/stat` state letter.
fn state(pid: i32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.trim_start().chars().next())
        })
        .unwrap_or('-')
}

fn sha256(bytes: &[u8]) -> String {
    minerwatch::safefs::sha256_hex(bytes)
}

/// One member of a .tar.gz.
fn member(bundle: &Path, name: &str) -> Option<Vec<u8>> {
    let file = std::fs::File::open(bundle).expect("open bundle");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for e in tar.entries().expect("entries") {
        let mut e = e.expect("entry");
        if e.path().expect("path").to_string_lossy() == name {
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).expect("read member");
            return Some(buf);
        }
    }
    None
}

/// A freezer cgroup the test made for its worker; thawed and removed on
/// drop (after the worker is dead), also when the test fails.
struct TestCgroup {
    dir: PathBuf,
    v1: bool,
}

impl TestCgroup {
    fn new(pid: i32) -> TestCgroup {
        let name = format!("minerwatch-test-{}-{pid}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/freezer/cgroup.procs").exists();
        let dir = if v1 {
            Path::new("/sys/fs/cgroup/freezer").join(name)
        } else {
            Path::new("/sys/fs/cgroup").join(name)
        };
        std::fs::create_dir(&dir).expect("make the test's cgroup (run the tests as root)");
        let cg = TestCgroup { dir, v1 };
        std::fs::write(cg.dir.join("cgroup.procs"), pid.to_string()).expect("move worker");
        cg
    }

    fn frozen(&self) -> bool {
        if self.v1 {
            std::fs::read_to_string(self.dir.join("freezer.state"))
                .is_ok_and(|s| s.trim() == "FROZEN")
        } else {
            std::fs::read_to_string(self.dir.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l == "frozen 1"))
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = if self.v1 {
            std::fs::write(self.dir.join("freezer.state"), "THAWED")
        } else {
            std::fs::write(self.dir.join("cgroup.freeze"), "0")
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Findings as (pid, level, sorted signal ids), to compare two reports.
fn findings(report: &serde_json::Value) -> Vec<(i64, String, Vec<String>)> {
    report["findings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| {
                    let mut ids: Vec<String> = f["signals"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s["id"].as_str().map(str::to_string))
                        .collect();
                    ids.sort();
                    (
                        f["pid"].as_i64().unwrap_or(0),
                        f["level"].as_str().unwrap_or("").to_string(),
                        ids,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn contain_plans_then_freezes_collects_kills_quarantines_and_disables_the_cron_line() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let original = sha256(&std::fs::read(support::rxworker_bin()).expect("read rxworker"));
    let mut w = support::spawn_worker(&WorkerOpts {
        disguise: Disguise::ShmCampaign("kswapd0".into()),
        extra_args: vec!["--seconds".into(), "60".into()],
        ..WorkerOpts::light()
    });
    assert!(w.wait_for_line("hashing", Duration::from_secs(60)));
    let pid = w.pid();
    let cg = TestCgroup::new(pid);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .expect("exe link")
        .to_string_lossy()
        .into_owned();
    let exe_path = exe.trim_end_matches(" (deleted)").to_string();
    assert!(exe.ends_with(" (deleted)"), "{exe}");
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc/cron.d")).expect("mkdir");
    let cron_line = format!("@reboot root {exe_path} --mode light");
    std::fs::write(root.join("etc/cron.d/kswapd"), format!("{cron_line}\n")).expect("cron");
    let root_s = root.to_string_lossy().into_owned();
    let pid_s = pid.to_string();
    let b1 = tmp.path().join("frozen.tar.gz");
    let b1_s = b1.to_string_lossy().into_owned();

    // Without --yes: the plan, and nothing changes.
    let out = run(&[
        "contain", &pid_s, "--root", &root_s, "--window", "1", "--out", &b1_s,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = stdout(&out);
    assert!(
        plan.contains("nothing was changed") && plan.contains("freezer"),
        "{plan}"
    );
    assert!(!cg.frozen() && !b1.exists());
    assert!(matches!(state(pid), 'R' | 'S'), "{}", state(pid));

    // --yes: frozen in its cgroup, the bundle holds the executable.
    let out = run(&[
        "contain", &pid_s, "--root", &root_s, "--window", "1", "--yes", "--out", &b1_s,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(cg.frozen(), "not frozen: {}", stdout(&out));
    assert!(w.is_running());
    let mode = std::fs::metadata(&b1).expect("bundle").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let exe_copy = member(&b1, &format!("proc/{pid}/exe")).expect("exe in bundle");
    assert_eq!(sha256(&exe_copy), original);
    // analyze of the bundle: the findings of the scan that made it.
    let made = member(&b1, "report.json").expect("report.json");
    let made: serde_json::Value = serde_json::from_slice(&made).expect("json");
    assert_eq!(made["verdict"], "miner", "{made:#}");
    let again = json_out(&run(&["analyze", &b1_s, "--format", "json"]), 1);
    assert_eq!(findings(&again), findings(&made));
    for name in [
        "snapshot.json",
        "report.md",
        "manifest.json",
        "files/etc/cron.d/kswapd",
    ] {
        assert!(member(&b1, name).is_some(), "{name} missing");
    }
    assert!(member(&b1, &format!("proc/{pid}/maps")).is_some());

    // Frozen, it no longer looks busy: a second contain must be forced,
    // and the refusal says so.
    let b2 = tmp.path().join("killed.tar.gz");
    let b2_s = b2.to_string_lossy().into_owned();
    let q = tmp.path().join("quarantine");
    let q_s = q.to_string_lossy().into_owned();
    let act = [
        "contain",
        &pid_s,
        "--root",
        &root_s,
        "--window",
        "1",
        "--yes",
        "--out",
        &b2_s,
        "--kill",
        "--quarantine",
        "--quarantine-dir",
        &q_s,
        "--disable-persistence",
    ];
    let out = run(&act);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let mut forced = act.to_vec();
    forced.extend(["--force", &pid_s]);
    let out = run(&forced);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!w.is_running(), "killed tree still runs: {}", stdout(&out));
    // Quarantine: one mode-0000 copy with the original's hash, and its record.
    let files: Vec<PathBuf> = std::fs::read_dir(&q)
        .expect("quarantine dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    let copy = files
        .iter()
        .find(|p| p.extension().is_none())
        .expect("quarantined copy");
    assert_eq!(
        std::fs::metadata(copy).expect("meta").permissions().mode() & 0o777,
        0
    );
    assert_eq!(
        sha256(&std::fs::read(copy).expect("root reads 0000")),
        original
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copy.with_extension("json")).expect("record"))
            .expect("record json");
    assert_eq!(record["sha256"], original.as_str());
    assert_eq!(record["origin"], exe.as_str());
    // The cron line commented out with the marker; the original in the bundle.
    let cron = std::fs::read_to_string(root.join("etc/cron.d/kswapd")).expect("cron");
    assert!(
        cron.starts_with("# minerwatch contain") && cron.trim_end().ends_with(&cron_line),
        "{cron}"
    );
    let kept = member(&b2, "files/etc/cron.d/kswapd").expect("original cron file in bundle");
    assert_eq!(String::from_utf8_lossy(&kept), format!("{cron_line}\n"));
    drop(cg);
}

/// A benign shell with two sleeping children, started by the test; the
/// children's pids once both exist.
fn benign_tree() -> (Child, Vec<i32>) {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "sleep 60 & sleep 60 & wait"]);
    let sh = Child::spawn(cmd).expect("sh");
    let deadline = Instant::now() + Duration::from_secs(5);
    let children = || {
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", sh.pid()))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse::<i32>().ok())
            .collect::<Vec<_>>()
    };
    while children().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let kids = children();
    assert_eq!(kids.len(), 2);
    (sh, kids)
}

/// `contain PID --force PID --window 0.2 --yes` then `extra`: the benign
/// trees these tests start are never rated `miner`, so they are forced.
fn contain_forced(pid: i32, extra: &[&str]) -> Output {
    let pid_s = pid.to_string();
    let mut args = vec![
        "contain", &pid_s, "--force", &pid_s, "--window", "0.2", "--yes",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn a_tree_without_its_own_cgroup_is_stopped_member_by_member() {
    // A benign shell and two children, contained by --force: SIGSTOP each.
    let (sh, kids) = benign_tree();
    let tmp = tempfile::tempdir().expect("tmp");
    let b = tmp.path().join("b.tar.gz");
    let out = contain_forced(
        sh.pid(),
        &["--out", &b.to_string_lossy(), "--format", "json"],
    );
    let log = json_out(&out, 0);
    assert_eq!(
        log["plan"]["targets"][0]["freeze"]["method"], "sigstop",
        "{log:#}"
    );
    for p in std::iter::once(sh.pid()).chain(kids.iter().copied()) {
        assert_eq!(state(p), 'T', "{p} not stopped: {log:#}");
    }
    assert!(member(&b, &format!("proc/{}/status", kids[0])).is_some());
    drop(sh); // SIGKILLs the group: stopped processes die too
}

/// A 64 KiB tmpfs the test mounted, too small for any bundle; unmounted on
/// drop, also when the test fails.
struct TinyTmpfs(tempfile::TempDir);

impl TinyTmpfs {
    fn new() -> TinyTmpfs {
        let dir = tempfile::tempdir().expect("tmp");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount (run the tests as root)");
        assert!(st.success(), "mount a tmpfs (run the tests as root)");
        TinyTmpfs(dir)
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn a_bundle_that_cannot_be_written_leaves_the_tree_frozen_and_unkilled() {
    let (sh, kids) = benign_tree();
    let full = TinyTmpfs::new();
    let b = full.0.path().join("b.tar.gz");
    let out = contain_forced(sh.pid(), &["--kill", "--out", &b.to_string_lossy()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{text}{}", stderr(&out));
    assert!(
        text.contains("skipped: the evidence bundle was not written"),
        "{text}"
    );
    // Not killed: stopped, waiting for another try with a writable --out.
    for p in std::iter::once(sh.pid()).chain(kids.iter().copied()) {
        assert_eq!(state(p), 'T', "{p} not left stopped: {text}");
    }
    assert!(!b.exists(), "a partial bundle was left behind");
    let left: Vec<_> = std::fs::read_dir(full.0.path())
        .expect("read tmpfs")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    drop(sh); // SIGKILLs the group: stopped processes die too
}

#[test]
fn collect_and_contain_refuse_an_out_in_a_missing_directory() {
    let (sh, _kids) = benign_tree();
    let pid_s = sh.pid().to_string();
    for args in [
        vec![
            "collect",
            "--pid",
            &pid_s,
            "--out",
            "/nonexistent-mw/b.tar.gz",
        ],
        vec![
            "contain",
            &pid_s,
            "--force",
            &pid_s,
            "--yes",
            "--out",
            "/nonexistent-mw/b.tar.gz",
        ],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    }
    // Refused before anything was done: the tree still runs.
    assert_ne!(state(sh.pid()), 'T');
}

#[test]
fn contain_refuses_pid_1_itself_its_ancestors_and_a_busy_benign_process() {
    let out = run(&["contain", "1", "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("init"), "{}", stderr(&out));
    // The test harness is an ancestor of the minerwatch it starts.
    let me = std::process::id().to_string();
    let out = run(&["contain", &me, "--yes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ancestor"), "{}", stderr(&out));
    // minerwatch itself: the shell execs into it, keeping its pid.
    let out = Command::new("sh")
        .args(["-c", "exec \"$0\" contain $$ --yes", BIN])
        .output()
        .expect("sh");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("itself"), "{}", stderr(&out));
    // A busy benign process is judged, and not contained.
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "while :; do :; done"]);
    let busy = Child::spawn(cmd).expect("busy sh");
    std::thread::sleep(Duration::from_millis(200));
    let pid = busy.pid().to_string();
    let out = run(&["contain", &pid, "--yes", "--window", "1", "--kill"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("not miner") && err.contains("--force"),
        "{err}"
    );
    assert!(
        matches!(state(busy.pid()), 'R' | 'S'),
        "touched: {}",
        state(busy.pid())
    );
}

#[test]
fn collect_writes_a_bundle_that_analyze_judges_and_refuses_bad_input() {
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    let s = Child::spawn(cmd).expect("sleep");
    let tmp = tempfile::tempdir().expect("tmp");
    let b = tmp.path().join("b.tar.gz");
    let b_s = b.to_string_lossy().into_owned();
    let pid = s.pid().to_string();
    let out = run(&["collect", "--pid", &pid, "--out", &b_s, "--window", "0.2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("minerwatch analyze"),
        "{}",
        stdout(&out)
    );
    let exe = member(&b, &format!("proc/{pid}/exe")).expect("exe");
    let sleep_bin = std::fs::read_link(format!("/proc/{pid}/exe")).expect("link");
    assert_eq!(
        sha256(&exe),
        sha256(&std::fs::read(sleep_bin).expect("sleep"))
    );
    let report = json_out(&run(&["analyze", &b_s, "--format", "json"]), 0);
    assert_eq!(report["scope"][0], s.pid());
    // An existing file is never overwritten; a missing pid is an error.
    let out = run(&["collect", "--pid", &pid, "--out", &b_s]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    // A bundle that was altered is refused by analyze.
    let mut bytes = std::fs::read(&b).expect("read");
    let n = bytes.len();
    bytes.truncate(n / 2);
    let cut = tmp.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes).expect("write");
    let out = run(&["analyze", &cut.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bundle"), "{}", stderr(&out));
}
