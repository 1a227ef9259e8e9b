//! The command line: formats, exit codes, errors, on fixtures and idle processes.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::support;
use crate::{BIN, SNAPSHOTS, minerwatch};

fn fixture(name: &str) -> String {
    format!("{SNAPSHOTS}/{name}.json")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `analyze` of every snapshot fixture, as JSON, text, ECS and Markdown,
/// against tests/golden/NAME.json, NAME.txt, NAME.ecs.ndjson and NAME.md
/// (`MINERWATCH_BLESS=1 cargo test` rewrites them): what the report says
/// may change only on purpose.
#[test]
fn analyze_of_every_fixture_matches_its_golden_files() {
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
    let mut names: Vec<String> = std::fs::read_dir(SNAPSHOTS)
        .expect("snapshot fixtures")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .map(String::from)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    for name in &names {
        for (format, ext) in [
            ("json", "json"),
            ("text", "txt"),
            ("ecs", "ecs.ndjson"),
            ("markdown", "md"),
        ] {
            let out = minerwatch(&["analyze", &fixture(name), "--format", format]);
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "{name} {format}: {}",
                stderr(&out)
            );
            let path = format!("{golden}/{name}.{ext}");
            if std::env::var_os("MINERWATCH_BLESS").is_some() {
                std::fs::write(&path, &out.stdout).expect("bless golden file");
            }
            let want = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{path}: {e} (MINERWATCH_BLESS=1 writes it)"));
            assert!(
                out.stdout == want,
                "{name} --format {format} differs from {path}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert!(
                !out.stdout.contains(&0x1b),
                "no colours when stdout is not a terminal"
            );
        }
    }
}

#[test]
fn analyze_json_follows_the_contract() {
    let out = minerwatch(&["analyze", &fixture("xmrig-pool"), "--format", "json"]);
    let r = crate::json_out(&out, 1);
    assert_eq!(r["schema"], "minerwatch/1");
    assert_eq!(r["verdict"], "miner");
    for key in ["hostname", "kernel", "cpus", "boot_time"] {
        assert!(!r["host"][key].is_null(), "host.{key}");
    }
    assert!(r["started_at"].is_string() && r["window_secs"].is_number());
    let f = &r["findings"][0];
    for key in ["pid", "start_time", "level", "score"] {
        assert!(!f[key].is_null(), "finding.{key}");
    }
    for key in [
        "name",
        "exe",
        "cmdline",
        "user",
        "cpu_percent",
        "threads",
        "container",
        "ancestry",
    ] {
        assert!(f["process"].get(key).is_some(), "process.{key}");
    }
    let s = &f["signals"][0];
    assert!(s["id"].is_string() && s["weight"].is_number() && s["evidence"].is_string());
    assert!(r["host_findings"].is_array());
    for key in ["processes", "inaccessible", "vanished", "errors"] {
        assert!(r["coverage"].get(key).is_some(), "coverage.{key}");
    }
}

#[test]
fn analyze_ndjson_has_findings_then_summary() {
    let out = minerwatch(&["analyze", &fixture("xmrig-pool"), "--format", "ndjson"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["type"], "finding");
    assert_eq!(lines[0]["level"], "miner");
    assert_eq!(lines[1]["type"], "summary");
    assert_eq!(lines[1]["verdict"], "miner");
    assert_eq!(lines[1]["counts"]["miner"], 1);
}

#[test]
fn fail_on_sets_the_exit_code() {
    let _stable = support::host_state_stable();
    let f = fixture("xmrig-pool");
    assert_eq!(
        minerwatch(&["analyze", &f, "--fail-on", "miner"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(
        minerwatch(&["analyze", &f, "--fail-on", "notice"])
            .status
            .code(),
        Some(1)
    );
    // An idle process: clean, exit 0 whatever the threshold.
    let mut sleeper = support::spawn_benign("sleep", &["60"]);
    let out = minerwatch(&[
        "scan",
        "--pid",
        &sleeper.pid().to_string(),
        "--window",
        "0.3",
        "--fail-on",
        "notice",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    sleeper.kill();
}

#[test]
fn bad_fail_on_level_is_exit_2() {
    let out = minerwatch(&["analyze", &fixture("xmrig-light"), "--fail-on", "loud"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("loud"));
}

#[test]
fn unknown_flag_is_exit_2() {
    let out = minerwatch(&["scan", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--frobnicate"));
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_window_and_pid_are_exit_2_with_the_value_named() {
    for (args, needle) in [
        (vec!["scan", "--window", "soon"], "--window 'soon'"),
        (vec!["scan", "--window", "-1"], "--window '-1'"),
        (vec!["scan", "--pid", "abc"], "--pid 'abc'"),
        (vec!["scan", "--pid", "0"], "--pid '0'"),
    ] {
        let out = minerwatch(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn missing_root_or_proc_root_is_exit_2() {
    for flag in ["--root", "--proc-root"] {
        let out = minerwatch(&["scan", flag, "/nonexistent/root", "--window", "0.2"]);
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(
            stderr(&out).contains(&format!("{flag} '/nonexistent/root' is not a directory")),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn pid_that_does_not_exist_is_exit_2() {
    // Pids above pid_max never exist.
    let out = minerwatch(&["scan", "--pid", "2147483600", "--window", "0.2"]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(e.contains("--pid 2147483600: no such process"), "{e}");
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_rules_dir_is_exit_2() {
    let out = minerwatch(&["scan", "--rules", "/nonexistent/rules", "--window", "0.2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/rules"),
        "{}",
        stderr(&out)
    );
    let file = tempfile::NamedTempFile::new().expect("tmp");
    let path = file.path().to_string_lossy().to_string();
    let out = minerwatch(&["scan", "--rules", &path, "--window", "0.2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));
}

#[test]
fn unreadable_rules_dir_is_exit_2() {
    // Root reads any directory; run the check as nobody (uid 65534).
    let dir = tempfile::tempdir().expect("tmp");
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).expect("mkdir");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cmd = Command::new(BIN);
    cmd.args(["rules", "check"]).arg(&locked);
    if crate::is_root() {
        use std::os::unix::process::CommandExt;
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read rules directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn rules_check_reports_bad_files_with_line() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("ok.yar"),
        "rule fine { strings: $a = \"abc\" condition: $a and filepath != \"\" }",
    )
    .expect("w");
    let out = minerwatch(&["rules", "check", &dir.path().to_string_lossy()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::write(
        dir.path().join("broken.yar"),
        "rule x {\n  strings: $a = \"q\"\n  condition: $b\n}\n",
    )
    .expect("w");
    let out = minerwatch(&["rules", "check", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("broken.yar:3"), "{text}");
    assert!(text.contains("ok.yar: 1 rules OK"), "{text}");
    // With no directory: the embedded rules alone.
    assert_eq!(minerwatch(&["rules", "check"]).status.code(), Some(0));
}

#[test]
fn scan_loads_good_user_rules_and_skips_bad_ones() {
    let _stable = support::host_state_stable();
    let dir = tempfile::tempdir().expect("tmp");
    // A Loki-style rule using externals must compile unchanged.
    std::fs::write(
        dir.path().join("loki.yar"),
        "rule loki_style { condition: filename == \"sleep\" and filepath contains \"bin\" and extension == \"\" and filetype == \"ELF\" and owner == \"root\" }",
    )
    .expect("w");
    std::fs::write(dir.path().join("bad.yar"), "rule {").expect("w");
    let mut sleeper = support::spawn_benign("sleep", &["60"]);
    let report = crate::scan_pids(
        &[sleeper.pid()],
        &[
            "--window",
            "0.3",
            "--rules",
            &dir.path().to_string_lossy(),
            "--fail-on",
            "miner",
        ],
    );
    sleeper.kill();
    let ids = crate::signal_ids(&report, sleeper.pid());
    assert_eq!(ids, vec!["sig.user_rule"], "{report}");
}

#[test]
fn analyze_rejects_corrupt_and_wrong_schema_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases = [
        (
            "corrupt.json",
            "{\"schema\": \"minerwatch-snapsh",
            "not valid JSON",
        ),
        (
            "other.json",
            "{\"schema\": \"something/9\"}",
            "schema 'something/9'",
        ),
        ("noschema.json", "{\"hello\": 1}", "no \"schema\" field"),
        (
            "partial.json",
            "{\"schema\": \"minerwatch-snapshot/1\", \"host\": 3}",
            "does not match schema",
        ),
    ];
    for (name, body, needle) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, body).expect("w");
        let out = minerwatch(&["analyze", &p.to_string_lossy()]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(stderr(&out).contains(needle), "{name}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
    }
    // A report is not a snapshot.
    let report = minerwatch(&["analyze", &fixture("xmrig-light"), "--format", "json"]);
    let p = dir.path().join("report.json");
    std::fs::write(&p, &report.stdout).expect("w");
    let out = minerwatch(&["analyze", &p.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("schema 'minerwatch/1'"),
        "{}",
        stderr(&out)
    );
    let out = minerwatch(&["analyze", "/nonexistent/host.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/host.json"));
}

#[test]
fn save_then_analyze_round_trips_with_mode_0600() {
    let _stable = support::host_state_stable();
    let dir = tempfile::tempdir().expect("tmp");
    let save = dir.path().join("host.json");
    let mut sleeper = support::spawn_benign("sleep", &["60"]);
    let pid = sleeper.pid().to_string();
    let out = minerwatch(&[
        "scan",
        "--pid",
        &pid,
        "--window",
        "0.3",
        "--save",
        &save.to_string_lossy(),
        "--format",
        "json",
    ]);
    sleeper.kill();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mode = std::fs::metadata(&save)
        .expect("saved")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let snap: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&save).expect("read")).expect("json");
    assert_eq!(snap["schema"], "minerwatch-snapshot/1");
    assert!(
        snap["processes"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["comm"] == "sleep"))
    );
    let again = minerwatch(&["analyze", &save.to_string_lossy(), "--format", "json"]);
    assert_eq!(again.status.code(), Some(0));
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let b: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(a["findings"], b["findings"]);
    assert_eq!(a["processes_judged"], b["processes_judged"]);
    // Only the snapshot: no temporary left beside it.
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
}

#[test]
fn unwritable_save_path_fails_before_scanning_and_leaves_nothing() {
    let _stable = support::host_state_stable();
    let out = minerwatch(&[
        "scan",
        "--save",
        "/nonexistent/dir/host.json",
        "--window",
        "0.2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("cannot write --save '/nonexistent/dir/host.json'"),
        "{e}"
    );
    assert!(out.stdout.is_empty());
    let dir = tempfile::tempdir().expect("tmp");
    let out = minerwatch(&[
        "scan",
        "--save",
        &dir.path().to_string_lossy(),
        "--window",
        "0.2",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is a directory"));
    // A symlink planted at the temporary's name is never followed.
    let target = dir.path().join("victim");
    std::fs::write(&target, "keep").expect("w");
    let save = dir.path().join("out.json");
    let mut sleeper = support::spawn_benign("sleep", &["60"]);
    let out = minerwatch(&[
        "scan",
        "--pid",
        &sleeper.pid().to_string(),
        "--window",
        "0.2",
        "--save",
        &save.to_string_lossy(),
    ]);
    sleeper.kill();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&target).expect("r"), "keep");
}

#[test]
fn broken_pipe_exits_quietly() {
    let mut child = Command::new(BIN)
        .args([
            "analyze",
            &fixture("xmrig-fast-hugepages"),
            "--format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Read nothing and close the pipe.
    drop(child.stdout.take());
    let status = child.wait().expect("wait");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(err.is_empty(), "stderr: {err}");
    assert!(
        status.code() == Some(1) || status.code() == Some(0),
        "{status:?}"
    );
}

#[test]
fn vanished_zombie_and_refused_processes_are_coverage_not_crashes() {
    let _stable = support::host_state_stable();
    // A zombie nobody reaps (its parent exec'd sleep), and a child that
    // exits during the window and is reaped.
    let mut tree = support::spawn_benign(
        "sh",
        &[
            "-c",
            "(sleep 0.05 & exec sleep 60) & sleep 3; exec sleep 60",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    // The first sample comes well before the child's 3 s are up, even with
    // minerwatch starting slowly on a loaded machine; the second after.
    let report = crate::scan_pids(&[tree.pid()], &["--window", "5"]);
    assert!(
        report["coverage"]["vanished"].as_u64() >= Some(1),
        "{report}"
    );
    assert!(
        report["processes_judged"].as_u64() >= Some(3),
        "zombie and parents judged: {report}"
    );
    assert_eq!(report["verdict"], "clean", "{report}");

    // As an unprivileged user, a root process's maps and exe are refused.
    if crate::is_root() {
        use std::os::unix::process::CommandExt;
        let as_nobody = |extra: &[&str]| {
            crate::scan_json(tree.pid())
                .args(["--window", "0.3"])
                .args(extra)
                .uid(65534)
                .gid(65534)
                .output()
                .expect("run as nobody")
        };
        // Nothing found in what it could read, but it could not read them:
        // not `clean` and exit 0, but exit 2 and the reason with the fix.
        let out = as_nobody(&[]);
        let r = crate::json_out(&out, 2);
        assert!(r["coverage"]["inaccessible"].as_u64() >= Some(1), "{r}");
        let errors = r["coverage"]["errors"].to_string();
        assert!(
            errors.contains("maps") || errors.contains("exe"),
            "{errors}"
        );
        let inc = &r["incomplete"];
        assert_eq!(inc["processes"], r["coverage"]["inaccessible"], "{r}");
        assert!(
            inc["fix"]
                .as_str()
                .is_some_and(|f| f.contains("CAP_SYS_PTRACE") && f.contains("CAP_DAC_READ_SEARCH")),
            "{inc}"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--accept-partial"), "{err}");
        // The text says it too.
        let out = Command::new(crate::BIN)
            .args(["scan", "--window", "0.3", "--pid", &tree.pid().to_string()])
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run as nobody");
        assert_eq!(out.status.code(), Some(2));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("incomplete:") && text.contains("could not be read"),
            "{text}"
        );
        // Accepted on purpose: exit 0, still reported.
        let r = crate::json_out(&as_nobody(&["--accept-partial"]), 0);
        assert!(r["incomplete"]["processes"].as_u64() >= Some(1), "{r}");
    }
    tree.kill();
}

#[test]
fn a_process_with_thousands_of_threads_is_scanned_without_trouble() {
    let _stable = support::host_state_stable();
    let mut many = support::spawn_benign(
        "python3",
        &[
            "-c",
            "import threading, time\n\
             for _ in range(1500):\n    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n\
             print('ready', flush=True)\ntime.sleep(60)\n",
        ],
    );
    assert!(
        many.wait_for_line("ready", std::time::Duration::from_secs(30)),
        "{}",
        many.stderr_so_far()
    );
    let dir = tempfile::tempdir().expect("tmp");
    let save = dir.path().join("s.json");
    let report = crate::scan_pids(
        &[many.pid()],
        &["--window", "0.5", "--save", &save.to_string_lossy()],
    );
    assert_eq!(report["verdict"], "clean", "{report}");
    let snap: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&save).expect("read")).expect("json");
    assert!(
        snap["processes"][0]["threads"].as_u64() > Some(1500),
        "{}",
        snap["processes"][0]["threads"]
    );
    many.kill();
}

#[test]
fn hostile_command_lines_cannot_forge_text_or_markdown_output() {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("sleep");
    cmd.arg0("[kworker/0:1]\nverdict: clean\x1b[2J| x |\n# Forged")
        .arg("60");
    let mut evil = support::Child::spawn(cmd).expect("spawn");
    let pid = evil.pid().to_string();
    let out = minerwatch(&["scan", "--window", "0.3", "--pid", &pid]);
    let md = minerwatch(&[
        "scan", "--window", "0.3", "--pid", &pid, "--format", "markdown",
    ]);
    evil.kill();
    // Markdown: no raw escape, no forged table cell, heading or line.
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.contains("### PID"), "{md}");
    assert!(!md.contains('\x1b'), "raw escape in markdown: {md:?}");
    assert!(
        !md.lines().any(|l| l.starts_with("# Forged")),
        "forged heading: {md}"
    );
    assert!(
        md.contains("\\[kworker/0:1\\]\\nverdict: clean\\x1b\\[2J\\| x \\|\\n\\# Forged"),
        "{md}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("fake") || text.contains("kernel thread"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "raw escape in output: {text:?}");
    assert!(
        !text.lines().any(|l| l == "verdict: clean"),
        "forged line: {text}"
    );
    assert!(text.contains("\\nverdict: clean\\x1b[2J"), "{text}");
}

#[test]
fn man_page_and_completions_come_from_the_cli() {
    let man = minerwatch(&["man"]);
    assert_eq!(man.status.code(), Some(0));
    let text = String::from_utf8_lossy(&man.stdout);
    assert!(
        text.contains(".TH minerwatch 1") && text.contains("agent") && text.contains("analyze"),
        "{text}"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = minerwatch(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("fail-on"),
            "{shell}"
        );
    }
    let out = minerwatch(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `scan --config` and `analyze --config` apply the agent's allow rules, as
/// the agent would; a bad config is exit 2 naming the file.
#[test]
fn the_agents_allow_rules_apply_to_scan_and_analyze_with_config() {
    let _stable = support::host_state_stable();
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("mw.toml");
    std::fs::write(
        &config,
        "[[allow]]\nexe = \"/usr/local/bin/xmrig\"\nmax_level = \"notice\"\nreason = \"the lab's benchmark rig\"\n",
    )
    .expect("write");
    let cfg = config.to_string_lossy();
    let out = minerwatch(&[
        "analyze",
        &fixture("xmrig-pool"),
        "--format",
        "json",
        "--config",
        &cfg,
    ]);
    let r = crate::json_out(&out, 0);
    assert_eq!(r["findings"][0]["level"], "notice", "{r}");
    assert!(
        r["findings"][0]["allowed"]
            .as_str()
            .is_some_and(|a| a.contains("the lab's benchmark rig")),
        "{r}"
    );
    // Without it, the same snapshot is a miner.
    let r = crate::json_out(
        &minerwatch(&["analyze", &fixture("xmrig-pool"), "--format", "json"]),
        1,
    );
    assert_eq!(r["findings"][0]["level"], "miner");
    // scan takes it too; an idle process stays clean, exit 0.
    let mut sleeper = support::spawn_benign("sleep", &["60"]);
    let out = minerwatch(&[
        "scan",
        "--pid",
        &sleeper.pid().to_string(),
        "--window",
        "0.3",
        "--config",
        &cfg,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    sleeper.kill();
    std::fs::write(
        &config,
        "[[allow]]\nexe = \"/x\"\nmax_levle = \"notice\"\nreason = \"r\"\n",
    )
    .expect("write");
    let out = minerwatch(&["analyze", &fixture("xmrig-pool"), "--config", &cfg]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("mw.toml") && err.contains("max_levle"),
        "{err}"
    );
}

/// Every text field a `--rules` directory feeds: its file names, a rule's
/// metadata and the source quoted in a compile error, in `scan` (text and
/// Markdown, stdout and stderr) and `rules check`.
#[test]
fn rule_files_cannot_put_control_characters_on_a_terminal() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let _stable = support::host_state_stable();
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path()
            .join(OsStr::from_bytes(b"evil\x1b[2J\nverdict: clean\x9b\xff.yar")),
        "rule evil_rule {\n  meta:\n    description = \"\\x1b]0;owned\\x07\\nverdict: clean\\x1b[2J\"\n  \
         condition: filename == \"sleep\"\n}\n",
    )
    .expect("w");
    std::fs::write(
        dir.path().join(OsStr::from_bytes(b"bad\x1b[31m.yar")),
        b"rule x {\n  condition: \x1b[2J\x07 true\n}\n",
    )
    .expect("w");
    let rules = dir.path().to_string_lossy().into_owned();
    let mut sleeper = support::spawn_benign("sleep", &["60"]);
    let pid = sleeper.pid().to_string();
    for format in ["text", "markdown"] {
        let out = minerwatch(&[
            "scan",
            "--window",
            "0.3",
            "--pid",
            &pid,
            "--rules",
            &rules,
            "--format",
            format,
            "--fail-on",
            "miner",
        ]);
        let (stdout, err) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        );
        assert_eq!(out.status.code(), Some(0), "{format}: {stdout}{err}");
        assert!(
            stdout.contains("evil_rule") || stdout.contains("evil\\_rule"),
            "{format}: the user rule matched: {stdout}"
        );
        for (stream, text) in [("stdout", &stdout), ("stderr", &err)] {
            let bad = crate::raw_controls(text);
            assert!(bad.is_empty(), "{format} {stream}: raw {bad:?} in {text}");
            assert!(
                !text.lines().any(|l| l.trim() == "verdict: clean"),
                "{format} {stream}: a forged line in {text}"
            );
        }
        assert!(
            err.contains("bad\\x1b[31m.yar"),
            "{format}: the bad file named, escaped: {err}"
        );
    }
    let out = minerwatch(&["rules", "check", &rules]);
    assert_eq!(out.status.code(), Some(1));
    for text in [
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr(&out),
    ] {
        let bad = crate::raw_controls(&text);
        assert!(bad.is_empty(), "rules check: raw {bad:?} in {text}");
        assert!(
            !text.lines().any(|l| l.trim() == "verdict: clean"),
            "{text}"
        );
    }
    sleeper.kill();
}
