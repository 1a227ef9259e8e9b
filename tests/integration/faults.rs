//! The agent under faults (issue 11, item 6), each built for real in a PID
//! and mount namespace of the test's own: its output disk full (a 256 KiB
//! tmpfs), its log deleted and rotated by someone else, a SIGHUP storm, the
//! rules directory replaced by a symlink to /dev/zero and by a FIFO, a
//! config with megabyte strings, and the wall clock jumping back an hour.
//! It keeps ticking to the outputs that work, says in its heartbeats what
//! each failing output lost, and recovers when the fault ends.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::BIN;
use crate::support::pidns::PidNs;
use crate::support::{self, Child};

use crate::agent_events as events;

fn heartbeats(path: &Path) -> Vec<Value> {
    events(path)
        .into_iter()
        .filter(|e| e["type"] == "heartbeat")
        .collect()
}

/// Waits up to `secs` for `pred` over the heartbeats in `path`.
fn wait_beats(path: &Path, secs: u64, pred: impl Fn(&[Value]) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if pred(&heartbeats(path)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn sh(ns: &PidNs, script: &str) {
    let out = ns
        .command("sh")
        .args(["-c", script])
        .output()
        .expect("nsenter sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_agent_keeps_ticking_through_faults_says_what_it_lost_and_recovers() {
    let _heavy = support::heavy_lock();
    let ns = PidNs::new();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    // The small disk, mounted in the namespace's mount table only; the test
    // reads it through the init's /proc/PID/root.
    let small = d.join("small");
    std::fs::create_dir(&small).expect("mkdir");
    sh(
        &ns,
        &format!("mount -t tmpfs -o size=256k tmpfs {}", small.display()),
    );
    let small_seen = PathBuf::from(format!("/proc/{}/root", ns.init()))
        .join(small.strip_prefix("/").expect("absolute temp dir"));
    let on_small = small.join("events.ndjson");
    let small_events = small_seen.join("events.ndjson");
    let main_events = d.join("events.ndjson");
    let rules = d.join("rules");
    std::fs::create_dir(&rules).expect("rules");
    std::fs::write(
        rules.join("mine.yar"),
        "rule watched_sleep { condition: filename == \"sleep\" }\n",
    )
    .expect("rule");
    let config = d.join("minerwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ntick_secs = 1.0\nheartbeat_secs = 1\ncpu_budget_percent = 100\n\
             rules_dir = \"{}\"\nwatch_dirs = []\n\n\
             [[output]]\nkind = \"file\"\npath = \"{}\"\n\n\
             [[output]]\nkind = \"file\"\npath = \"{}\"\n",
            rules.display(),
            on_small.display(),
            main_events.display()
        ),
    )
    .expect("config");
    let mut agent = ns.spawn(BIN, &["agent", "--config", &config.to_string_lossy()]);
    let (agent_pid, _) = ns.inner(&agent);
    let context = |agent: &Child| {
        format!(
            "agent stderr: {}\nlast heartbeat: {:#}",
            agent.stderr_so_far(),
            heartbeats(&main_events)
                .last()
                .cloned()
                .unwrap_or(Value::Null)
        )
    };
    assert!(
        wait_beats(&main_events, 60, |b| b.len() >= 2)
            && wait_beats(&small_events, 10, |b| !b.is_empty()),
        "{}",
        context(&agent)
    );

    // 1. The small disk full: the main output goes on and names the loss.
    let filler = small_seen.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 512 * 1024]);
    let on_full = heartbeats(&small_events).len();
    assert!(
        wait_beats(&main_events, 20, |b| b.last().is_some_and(|h| {
            h["output_losses"].as_array().is_some_and(|l| {
                l.iter().any(|o| {
                    o["failing"] == true
                        && o["lost"].as_u64() >= Some(2)
                        && o["output"].to_string().contains("small")
                        && o["last_error"].to_string().contains("space")
                })
            })
        })),
        "disk full not reported: {}",
        context(&agent)
    );
    // The disk freed: the small output recovers, its loss counted.
    std::fs::remove_file(&filler).expect("free the disk");
    assert!(
        wait_beats(&small_events, 20, |b| b.len() > on_full + 1),
        "the small output did not recover: {}",
        context(&agent)
    );
    assert!(
        wait_beats(&main_events, 10, |b| b.last().is_some_and(|h| {
            h["output_losses"]
                .as_array()
                .is_some_and(|l| l.iter().all(|o| o["failing"] == false))
        })),
        "{}",
        context(&agent)
    );

    // 2. The main log deleted, then rotated away, by someone else: a fresh
    // file each time.
    std::fs::remove_file(&main_events).expect("delete the log");
    assert!(
        wait_beats(&main_events, 20, |b| b.len() >= 2),
        "no fresh log after deletion: {}",
        context(&agent)
    );
    let rotated = d.join("events.ndjson.old");
    std::fs::rename(&main_events, &rotated).expect("rotate");
    assert!(
        wait_beats(&main_events, 20, |b| b.len() >= 2),
        "no fresh log after rotation: {}",
        context(&agent)
    );

    // 3. A SIGHUP storm: 200 reloads asked in a second.
    for _ in 0..200 {
        // SAFETY: kill(2) of the agent this test started.
        unsafe { libc::kill(agent_pid, libc::SIGHUP) };
        std::thread::sleep(Duration::from_millis(5));
    }
    let n = heartbeats(&main_events).len();
    assert!(
        wait_beats(&main_events, 20, |b| b.len() >= n + 3),
        "ticking stopped after the SIGHUP storm: {}",
        context(&agent)
    );

    // 4. The rules directory replaced by a symlink to /dev/zero, then by a
    // FIFO: each reload is refused (named), the rules in force stay, and
    // nothing blocks.
    let hash = |b: &[Value]| b.last().map(|h| h["rules_hash"].clone());
    let before = hash(&heartbeats(&main_events));
    let kept = d.join("rules.kept");
    std::fs::rename(&rules, &kept).expect("move rules");
    std::os::unix::fs::symlink("/dev/zero", &rules).expect("symlink");
    // SAFETY: kill(2) of the agent this test started.
    unsafe { libc::kill(agent_pid, libc::SIGHUP) };
    let n = heartbeats(&main_events).len();
    assert!(
        wait_beats(&main_events, 20, |b| b.len() >= n + 3 && hash(b) == before),
        "rules dir → /dev/zero: {}",
        context(&agent)
    );
    std::fs::remove_file(&rules).expect("unlink");
    let mkfifo = Command::new("mkfifo").arg(&rules).status().expect("mkfifo");
    assert!(mkfifo.success());
    // SAFETY: kill(2) of the agent this test started.
    unsafe { libc::kill(agent_pid, libc::SIGHUP) };
    let n = heartbeats(&main_events).len();
    assert!(
        wait_beats(&main_events, 20, |b| b.len() >= n + 3 && hash(b) == before),
        "rules dir → FIFO: {}",
        context(&agent)
    );
    let refused: Vec<Value> = events(&main_events)
        .into_iter()
        .filter(|e| e["type"] == "rules_error")
        .collect();
    assert!(
        refused.len() >= 2
            && refused
                .iter()
                .all(|e| e["error"].to_string().contains("rules")),
        "the refused reloads are not in the events: {refused:#?} {}",
        context(&agent)
    );
    // Restored: the next reload takes the rules again.
    std::fs::remove_file(&rules).expect("unlink fifo");
    std::fs::rename(&kept, &rules).expect("restore");
    // SAFETY: kill(2) of the agent this test started.
    unsafe { libc::kill(agent_pid, libc::SIGHUP) };
    let n = heartbeats(&main_events).len();
    assert!(
        wait_beats(&main_events, 20, |b| b.len() >= n + 2),
        "{}",
        context(&agent)
    );

    // 5. A config rewritten with megabyte strings: the reload is refused
    // (a config is at most 1 MiB) and the agent goes on with the one in
    // force, its memory bounded.
    let good = std::fs::read_to_string(&config).expect("config");
    let huge = format!(
        "{good}\n[[allow]]\nexe = \"/{}\"\nreason = \"{}\"\n",
        "a".repeat(1 << 20),
        "b".repeat(1 << 20)
    );
    std::fs::write(&config, huge).expect("huge config");
    // SAFETY: kill(2) of the agent this test started.
    unsafe { libc::kill(agent_pid, libc::SIGHUP) };
    let n = heartbeats(&main_events).len();
    assert!(
        wait_beats(&main_events, 30, |b| b.len() >= n + 3),
        "ticking stopped after a megabyte config: {}",
        context(&agent)
    );
    assert!(agent.is_running(), "{}", context(&agent));
    assert!(
        events(&main_events)
            .iter()
            .any(|e| e["type"] == "rules_error"
                && e["error"].to_string().contains("larger than 1 MiB")),
        "the megabyte config was not refused by name: {}",
        context(&agent)
    );
    let rss_kib = crate::peak_rss_kib(agent_pid);
    assert!((1..256 * 1024).contains(&rss_kib), "peak RSS {rss_kib} KiB");

    // SAFETY: SIGTERM to the agent this test started.
    unsafe { libc::kill(agent_pid, libc::SIGTERM) };
    let status = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        context(&agent)
    );
}

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The wall clock jumping back an hour and forward again, for the agent
/// alone (libfaketime, the monotonic clock left alone, as a real clock
/// step leaves it): ticks and heartbeats keep their cadence, a worker that
/// starts while the clock is behind is alerted, and event times follow the
/// wall clock.
#[test]
fn the_agent_keeps_its_cadence_when_the_wall_clock_jumps_back_an_hour() {
    assert!(
        Path::new(FAKETIME).exists(),
        "{FAKETIME} is missing (Debian package faketime): run the test command from the README"
    );
    let _heavy = support::heavy_lock();
    let ns = PidNs::new();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let stamp = d.join("clock");
    std::fs::write(&stamp, "+0\n").expect("clock");
    let main_events = d.join("events.ndjson");
    let config = d.join("minerwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ntick_secs = 1.0\nheartbeat_secs = 1\ncpu_budget_percent = 100\nwatch_dirs = []\n\n\
             [[output]]\nkind = \"file\"\npath = \"{}\"\n",
            main_events.display()
        ),
    )
    .expect("config");
    let mut cmd = ns.command(BIN);
    cmd.args(["agent", "--config"])
        .arg(&config)
        .env("LD_PRELOAD", FAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", &stamp)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let mut agent = Child::spawn(cmd).expect("agent starts");
    let (agent_pid, _) = ns.inner(&agent);
    let context = |agent: &Child| {
        format!(
            "agent stderr: {}\nevents: {:#?}",
            agent.stderr_so_far(),
            events(&main_events)
        )
    };
    assert!(
        wait_beats(&main_events, 60, |b| b.len() >= 3),
        "{}",
        context(&agent)
    );
    let wall = |e: &Value| {
        e["time"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(|t| t.as_second())
    };
    // Back an hour, a worker started meanwhile, then forward again.
    std::fs::write(&stamp, "-1h\n").expect("clock back");
    let before = heartbeats(&main_events).len();
    let mut worker = ns.spawn(
        support::rxworker_bin(),
        &["--mode", "light", "--seconds", "60"],
    );
    assert!(worker.wait_for_line("hashing", Duration::from_secs(60)));
    let (_, worker_pid) = ns.inner(&worker);
    let alerted = |evs: &[Value]| {
        evs.iter()
            .any(|e| e["type"] == "alert" && e["pid"] == worker_pid && e["level"] == "miner")
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while !alerted(&events(&main_events)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        alerted(&events(&main_events)),
        "no alert while the clock was back: {}",
        context(&agent)
    );
    assert!(
        wait_beats(&main_events, 10, |b| b.len() >= before + 3),
        "{}",
        context(&agent)
    );
    std::fs::write(&stamp, "+0\n").expect("clock forward");
    let behind = heartbeats(&main_events).len();
    assert!(
        wait_beats(&main_events, 10, |b| b.len() >= behind + 3),
        "ticking stopped when the clock came forward: {}",
        context(&agent)
    );
    // The heartbeats' times went back about an hour and came forward again,
    // while they kept coming about one a second.
    let beats = heartbeats(&main_events);
    let times: Vec<i64> = beats.iter().filter_map(wall).collect();
    assert_eq!(times.len(), beats.len(), "{beats:#?}");
    assert!(
        times
            .windows(2)
            .any(|w| (3000..=3700).contains(&(w[0] - w[1]))),
        "no step back of an hour in {times:?}"
    );
    assert!(
        times
            .windows(2)
            .any(|w| (3000..=3700).contains(&(w[1] - w[0]))),
        "no step forward of an hour in {times:?}"
    );
    let ticks: Vec<u64> = beats.iter().filter_map(|h| h["ticks"].as_u64()).collect();
    assert!(ticks.windows(2).all(|w| w[1] > w[0]), "{ticks:?}");
    worker.kill();
    // SAFETY: SIGTERM to the agent this test started.
    unsafe { libc::kill(agent_pid, libc::SIGTERM) };
    let status = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        context(&agent)
    );
}
