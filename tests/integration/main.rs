//! minerwatch's integration tests: the real binary against real processes.
//!
//! - `cli`: formats, exit codes and error messages (fast, on fixtures);
//! - `miners`: a librandomx worker in every disguise, regtest monerod mining,
//!   an XMRig-style client on a fake Stratum pool: each must be convicted;
//! - `outputs`: the agent's syslog output against a real rsyslogd;
//! - `host`, `host_checks`: hidden processes, mounts, leftovers and
//!   persistence, with real processes, a compiled LD_PRELOAD hider, mounts;
//! - `corpus`: the CI subset of the benign corpus (tests/support/corpus/):
//!   heavy programs of every class that must stay at most `notice`.
//!
//! Every process a test starts is killed by its guard, also on failure, and
//! scans are limited to those processes with `--pid`.

#[path = "../support/mod.rs"]
mod support;

mod agent;
mod cli;
mod contain;
mod corpus;
mod faults;
mod fpu;
mod host;
mod host_checks;
mod hostile;
mod miners;
mod outputs;
mod privilege;
mod sweep;

use std::process::{Command, Output};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_minerwatch");
pub const SNAPSHOTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/snapshots");

/// Runs minerwatch with `args`.
pub fn minerwatch(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("minerwatch runs")
}

/// `minerwatch scan --format json --pid PID`, for the test to add flags,
/// environment or a user to before running it.
pub fn scan_json(pid: i32) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["scan", "--format", "json", "--pid", &pid.to_string()]);
    cmd
}

/// The JSON document a run printed, after checking that it exited with
/// `code` (its stderr in the message when not).
pub fn json_out(out: &Output, code: i32) -> Value {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// `scan --format json` limited to `pids` (default window); returns the report.
pub fn scan_pids(pids: &[i32], extra: &[&str]) -> Value {
    let mut args = vec!["scan".to_string(), "--format".into(), "json".into()];
    for p in pids {
        args.push("--pid".into());
        args.push(p.to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = minerwatch(&argv);
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(1),
        "scan failed ({code:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("scan prints JSON");
    // The exit code follows the default --fail-on suspicious.
    let worst = level_rank(report["verdict"].as_str().unwrap_or(""));
    assert_eq!(
        code == Some(1),
        worst >= 2,
        "exit code {code:?} vs verdict {}",
        report["verdict"]
    );
    report
}

/// Whether the tests run as root (some drop to another user).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Characters that must never reach a terminal raw: C0 controls but
/// newline, DEL, and the C1 controls (U+0080 to U+009F, which some
/// terminals obey).
pub fn raw_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| (c.is_control() && *c != '\n') || ('\u{80}'..='\u{9f}').contains(c))
        .collect()
}

/// The events in an agent's NDJSON file so far (a line not yet whole is
/// left out).
pub fn agent_events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A process's peak RSS (`VmHWM`) in KiB, 0 when it cannot be read.
pub fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// 0 clean, 1 notice, 2 suspicious, 3 miner.
pub fn level_rank(level: &str) -> u8 {
    match level {
        "notice" => 1,
        "suspicious" => 2,
        "miner" => 3,
        _ => 0,
    }
}

/// The finding for `pid`, if it has one.
pub fn finding(report: &Value, pid: i32) -> Option<&Value> {
    report["findings"]
        .as_array()?
        .iter()
        .find(|f| f["pid"].as_i64() == Some(i64::from(pid)))
}

/// The level of `pid` in the report ("clean" when it has no finding).
pub fn level_of(report: &Value, pid: i32) -> String {
    finding(report, pid)
        .and_then(|f| f["level"].as_str())
        .unwrap_or("clean")
        .to_string()
}

/// Signal ids of `pid`'s finding.
pub fn signal_ids(report: &Value, pid: i32) -> Vec<String> {
    finding(report, pid)
        .and_then(|f| f["signals"].as_array())
        .map(|s| {
            s.iter()
                .filter_map(|x| x["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
