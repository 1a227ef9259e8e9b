//! Least privilege (issue 11, item 4): `scan` and `agent` as user nobody
//! holding only CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (`setpriv`, with
//! every other capability dropped from the bounding set) still convict a
//! disguised RandomX worker that runs as root, and one that made itself
//! undumpable; as plain nobody they say what they could not see. Nothing
//! is written but the configured outputs, which are 0600 and never
//! followed through a symlink.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::BIN;
use crate::support::pidns::PidNs;
use crate::support::{self, Disguise, WorkerOpts};

const NOBODY: &str = "65534";
/// CAP_DAC_READ_SEARCH (2) and CAP_SYS_PTRACE (19).
const TWO_CAPS: u64 = (1 << 2) | (1 << 19);

/// `setpriv` to user and group nobody with `caps` (e.g.
/// "+sys_ptrace,+dac_read_search", or "" for none) as the only
/// capabilities it can ever have, then `program`.
fn as_nobody(caps: &str, program: &str) -> Vec<String> {
    let mut argv: Vec<String> = [
        "setpriv",
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if caps.is_empty() {
        argv.extend(["--inh-caps=-all", "--bounding-set=-all"].map(String::from));
    } else {
        argv.push(format!("--inh-caps=-all,{caps}"));
        argv.push(format!("--ambient-caps={caps}"));
        argv.push(format!("--bounding-set=-all,{caps}"));
    }
    argv.push("--".into());
    argv.push(program.into());
    argv
}

fn command(argv: &[String]) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env("NO_COLOR", "1");
    cmd
}

/// The effective capabilities and uid a program started that way has.
fn effective(caps: &str) -> (u64, String) {
    let out = command(&as_nobody(caps, "cat"))
        .arg("/proc/self/status")
        .output()
        .expect("setpriv runs (util-linux)");
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap_or(u64::MAX);
    (eff, field("Uid:"))
}

/// `report` rates `pid` a miner with its memory read and its rounding
/// modes sampled (ptrace): `who` saw it whole.
fn assert_convicted_whole(report: &Value, pid: i32, who: &str) {
    assert_eq!(crate::level_of(report, pid), "miner", "{who}: {report:#}");
    let ids = crate::signal_ids(report, pid);
    assert!(
        ids.iter().any(|s| s.starts_with("mem.")) && ids.contains(&"rx.rounding_modes".into()),
        "{who}: memory read and ptrace used: {ids:?}"
    );
}

#[test]
fn scan_with_only_ptrace_and_dac_read_search_convicts_a_disguised_root_worker() {
    if !crate::is_root() {
        eprintln!("skipped: needs root to drop to nobody with capabilities");
        return;
    }
    let _heavy = support::heavy_lock();
    let _stable = support::host_state_stable();
    let caps = "+sys_ptrace,+dac_read_search";
    let (eff, uid) = effective(caps);
    assert_eq!(eff, TWO_CAPS, "CapEff {eff:#x}");
    assert!(uid.starts_with(NOBODY), "Uid {uid}");
    assert_eq!(effective("").0, 0);

    let mut worker = support::spawn_worker(&WorkerOpts {
        disguise: Disguise::ShmCampaign("kdevtmpfsi".into()),
        ..WorkerOpts::light()
    });
    assert!(worker.wait_for_line("hashing", Duration::from_secs(60)));
    let pid = worker.pid().to_string();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let save = dir.path().join("snap.json");

    let out = command(&as_nobody(caps, BIN))
        .args(["scan", "--format", "json", "--window", "3", "--pid", &pid])
        .arg("--save")
        .arg(&save)
        .output()
        .expect("scan runs");
    let report = crate::json_out(&out, 1);
    assert_convicted_whole(&report, worker.pid(), "nobody with the two capabilities");
    assert_eq!(report["coverage"]["inaccessible"], 0, "{report:#}");
    assert!(
        report.get("incomplete").is_none_or(Value::is_null),
        "{report:#}"
    );
    // The snapshot it saved is 0600 and nobody's.
    let meta = std::fs::metadata(&save).expect("saved");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid().to_string(), NOBODY);

    // A symlink at the --save path is refused and its target left alone.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").expect("victim");
    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let out = command(&as_nobody(caps, BIN))
        .args(["scan", "--window", "0.2", "--pid", &pid, "--save"])
        .arg(&link)
        .output()
        .expect("scan runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "untouched"
    );

    // Plain nobody, no capability: only the name and the CPU could be
    // seen, and the report says what could not and how to fix it.
    let out = command(&as_nobody("", BIN))
        .args(["scan", "--window", "0.5", "--pid", &pid])
        .output()
        .expect("scan runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("MINER"), "{text}");
    assert!(
        text.contains("incomplete:") && text.contains("CAP_SYS_PTRACE"),
        "{text}"
    );
    worker.kill();
}

#[test]
fn agent_with_only_ptrace_and_dac_read_search_alerts_and_writes_nothing_else() {
    if !crate::is_root() {
        eprintln!("skipped: needs root to drop to nobody with capabilities");
        return;
    }
    let _heavy = support::heavy_lock();
    let ns = PidNs::new();
    let dir = tempfile::tempdir().expect("tmp");
    let out_dir = dir.path().join("out");
    let home = dir.path().join("home");
    for d in [&out_dir, &home] {
        std::fs::create_dir(d).expect("mkdir");
        chown_nobody(d);
    }
    let events = out_dir.join("events.ndjson");
    let config_for = |outputs: &[&Path]| -> String {
        let mut c =
            "[agent]\ntick_secs = 1.0\nheartbeat_secs = 1\nhost_check_secs = 3600\n".to_string();
        for o in outputs {
            c.push_str(&format!(
                "\n[[output]]\nkind = \"file\"\npath = \"{}\"\n",
                o.display()
            ));
        }
        c
    };
    // An output planted as a symlink to a file the agent must never write:
    // refused at start, named, exit 2, the target untouched.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").expect("victim");
    chown_nobody(&victim);
    let link = out_dir.join("planted.ndjson");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let planted = dir.path().join("planted.toml");
    std::fs::write(&planted, config_for(&[&events, &link])).expect("config");
    let config = dir.path().join("minerwatch.toml");
    std::fs::write(&config, config_for(&[&events])).expect("config");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let rx = support::rxworker_bin();
    let mut worker = ns.spawn(&rx, &["--mode", "light", "--seconds", "120"]);
    assert!(worker.wait_for_line("hashing", Duration::from_secs(60)));
    let (_, worker_pid) = ns.inner(&worker);

    let argv = as_nobody("+sys_ptrace,+dac_read_search", BIN);
    let refused = ns
        .command(&argv[0])
        .args(&argv[1..])
        .args(["agent", "--config"])
        .arg(&planted)
        .output()
        .expect("agent runs");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(
        err.contains("planted.ndjson") && err.contains("symlink"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "untouched"
    );
    std::fs::remove_file(&link).expect("unplant");

    let mut cmd = ns.command(&argv[0]);
    cmd.args(&argv[1..])
        .args(["agent", "--config"])
        .arg(&config)
        .current_dir(&home)
        .env("HOME", &home)
        .env("TMPDIR", &home);
    let mut agent = support::Child::spawn(cmd).expect("agent starts");
    let (agent_outer, _) = ns.inner(&agent);
    let read = || crate::agent_events(&events);
    let deadline = Instant::now() + Duration::from_secs(60);
    let alerted = loop {
        let alerted = read()
            .iter()
            .any(|e| e["type"] == "alert" && e["pid"] == worker_pid && e["level"] == "miner");
        if alerted || Instant::now() > deadline || !agent.is_running() {
            break alerted;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // SAFETY: SIGTERM to the agent this test started (its guard holds it).
    unsafe { libc::kill(agent_outer, libc::SIGTERM) };
    let status = agent.wait_exit(Duration::from_secs(30));
    let context = format!(
        "agent stderr: {}\nevents: {:#?}",
        agent.stderr_so_far(),
        read()
    );
    assert!(alerted, "no miner alert: {context}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{context}");
    // Only the configured output was written: 0600, nobody's.
    let meta = std::fs::metadata(&events).expect("events");
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid().to_string(), NOBODY);
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("out dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["events.ndjson"], "{names:?}");
    assert!(
        is_empty(&home),
        "the agent wrote into its cwd, HOME or TMPDIR"
    );
    worker.kill();
}

/// A worker that makes itself undumpable (`PR_SET_DUMPABLE` 0: its /proc
/// files become root's, and only a tracer holding CAP_SYS_PTRACE may read
/// its memory or trace it), run as nobody: root and a scanner with only
/// the two capabilities still convict it from its rounding modes and
/// memory; its own user, who convicts it when it is dumpable, can no
/// longer read it and is told so (exit 2), never just `clean`.
#[test]
fn an_undumpable_worker_is_convicted_with_ptrace_and_named_as_unread_without() {
    if !crate::is_root() {
        eprintln!("skipped: needs root to drop to nobody with capabilities");
        return;
    }
    let _heavy = support::heavy_lock();
    let _stable = support::host_state_stable();
    let worker_bin = support::rxworker_bin();
    let start = |extra: &[&str]| {
        let mut cmd = command(&as_nobody("", &worker_bin.to_string_lossy()));
        cmd.args(["--mode", "light", "--seconds", "60"]).args(extra);
        let mut w = support::Child::spawn(cmd).expect("worker starts");
        assert!(
            w.wait_for_line("hashing", Duration::from_secs(60)),
            "{}",
            w.stderr_so_far()
        );
        w
    };
    let scan = |caps: &str, pid: i32| {
        command(&as_nobody(caps, BIN))
            .args(["scan", "--format", "json", "--window", "2", "--pid"])
            .arg(pid.to_string())
            .output()
            .expect("scan runs")
    };

    // The control: dumpable, its own user reads it whole (unless Yama
    // keeps users from tracing what they did not start).
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "0".into());
    if yama == "0" {
        let mut plain = start(&[]);
        assert_convicted_whole(
            &crate::json_out(&scan("", plain.pid()), 1),
            plain.pid(),
            "nobody, a dumpable worker",
        );
        plain.kill();
    }

    let mut worker = start(&["--undumpable"]);
    let pid = worker.pid();
    let maps = std::fs::metadata(format!("/proc/{pid}/maps")).expect("maps");
    assert_eq!(
        maps.uid(),
        0,
        "an undumpable process's /proc files are root's"
    );
    assert_convicted_whole(&crate::scan_pids(&[pid], &["--window", "2"]), pid, "root");
    assert_convicted_whole(
        &crate::json_out(&scan("+sys_ptrace,+dac_read_search", pid), 1),
        pid,
        "nobody with the two capabilities",
    );
    let out = scan("", pid);
    let report = crate::json_out(&out, 2);
    assert_ne!(crate::level_of(&report, pid), "miner", "{report:#}");
    let refused = report["incomplete"].to_string();
    assert!(
        report["incomplete"]["processes"] == 1
            && refused.contains("maps")
            && refused.contains("ptrace")
            && refused.contains("CAP_SYS_PTRACE"),
        "{report:#}"
    );
    worker.kill();
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).expect("chown");
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}
