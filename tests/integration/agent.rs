//! The agent end to end, inside a PID namespace of its own so that its
//! whole-host scans see, ptrace and read only the processes this test starts.

use std::process::Command;

use crate::BIN;
use crate::support;

#[test]
fn agent_alerts_on_a_miner_resolves_it_survives_bad_rules_and_stops_fast() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    std::fs::create_dir(d.join("rules")).expect("mkdir");
    std::fs::create_dir(d.join("drop")).expect("mkdir");
    std::fs::write(
        d.join("rules/ok.yar"),
        "rule local_ok { strings: $a = \"minerwatch-agent-test\" condition: $a }\n",
    )
    .expect("write");
    let events = d.join("events.ndjson");
    // An executable carrying XMRig's identity strings, made from our own
    // rule's string literals so that no test source holds them.
    let rule_text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/yara/xmrig.yar"))
            .expect("rules");
    let section = rule_text
        .split("rule ")
        .find(|r| r.starts_with("xmrig_identity_strings"))
        .expect("xmrig_identity_strings rule");
    let mut body = b"\x7fELF\x02\x01\x01\0".to_vec();
    for line in section.lines() {
        if let Some((_, lit)) = line.split_once("= \"")
            && let Some(end) = lit.rfind('"')
        {
            body.extend_from_slice(lit[..end].replace("\\\"", "\"").as_bytes());
            body.push(0);
        }
    }
    let xmrig_like = d.join("xmrig-like");
    std::fs::write(&xmrig_like, &body).expect("write");
    let config = d.join("minerwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ntick_secs = 1\nheartbeat_secs = 2\nhost_check_secs = 3600\ncpu_budget_percent = 100\nrules_dir = \"{}\"\n\
             watch_dirs = [\"{}\"]\n\n[[output]]\nkind = \"file\"\npath = \"{}\"\n",
            d.join("rules").display(),
            d.join("drop").display(),
            events.display()
        ),
    )
    .expect("write config");
    let check = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let script = format!(
        r#"set -u
ev={ev}
wait_for() {{ for i in $(seq 600); do grep -q "$1" "$ev" 2>/dev/null && return 0; sleep 0.1; done; echo "timeout waiting for $1"; return 1; }}
{bin} agent --config {cfg} 2>{dir}/agent.err &
A=$!
wait_for '"heartbeat"'
mkfifo {dir}/drop/pipe
truncate -s 5G {dir}/drop/sparse && chmod +x {dir}/drop/sparse
cp {xmrig_like} {dir}/drop/.x && chmod +x {dir}/drop/.x
wait_for '"path":"{dir}/drop/.x"'
cp /usr/lib/x86_64-linux-gnu/librandomx.so.0 {dir}/drop/kdevtmpfsi
chmod +x {dir}/drop/kdevtmpfsi
wait_for '"path":"{dir}/drop/kdevtmpfsi"'
shm=/dev/shm/.mw-agent-$$; mkdir -p $shm; cp {worker} $shm/kdevtmpfsi
$shm/kdevtmpfsi --mode light --seconds 60 > {dir}/worker.out &
W=$!
for i in $(seq 600); do grep -q hashing {dir}/worker.out && break; sleep 0.05; done
t_hash=$(date +%s%N)
rm -rf $shm
echo "worker=$W"
wait_for "\"pid\":$W"
echo "alert_ms=$(( ($(date +%s%N) - t_hash) / 1000000 ))"
wait_for "\"level\":\"miner\".*\"pid\":$W"
kill -9 $W; wait $W 2>/dev/null
wait_for '"resolved"'
echo 'rule broken {{ condition: $nope }}' > {dir}/rules/bad.yar
kill -HUP $A
wait_for '"rules_error"'
rm {dir}/rules/bad.yar
echo 'rule local_marker {{ strings: $a = "mw-agent-fixed-rules" condition: $a }}' > {dir}/rules/new.yar
kill -HUP $A
# Until the new rules are in, a dropped marker matches nothing: drop it anew
# (new content, so it is scanned again) until it is reported.
for i in $(seq 60); do
  printf 'xx mw-agent-fixed-rules %s xx' $i > {dir}/drop/marker && chmod +x {dir}/drop/marker
  sleep 0.5
  grep -q '"path":"{dir}/drop/marker"' $ev && break
done
wait_for '"path":"{dir}/drop/marker"'
kill -0 $A && echo "alive after bad rules"
t0=$(date +%s%N)
kill -TERM $A
wait $A
echo "agent_exit=$?"
echo "stop_ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
"#,
        ev = events.display(),
        bin = BIN,
        cfg = config.display(),
        dir = d.display(),
        worker = support::rxworker_bin().display(),
        xmrig_like = xmrig_like.display(),
    );
    let out = Command::new("timeout")
        .args([
            "180",
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "bash",
            "-c",
            &script,
        ])
        .output()
        .expect("unshare bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let agent_err = std::fs::read_to_string(d.join("agent.err")).unwrap_or_default();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each event line is JSON"))
        .collect();
    let context = format!("stdout:\n{stdout}\nagent stderr:\n{agent_err}\nevents:\n{lines:#?}");
    assert!(!stdout.contains("timeout waiting"), "{context}");
    let worker: i64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("worker="))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no worker pid: {context}"));

    // Alerted within two ticks (1 s each) of its first hash, plus up to 2 s
    // for one tick's deep checks and rule scans in a debug build.
    let alert_ms: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("alert_ms="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX);
    assert!(
        alert_ms <= 4000,
        "alerted {alert_ms} ms after the first hash: {context}"
    );
    // One alert for the worker, as a miner (it may pass through suspicious
    // first while its first tick catches only part of its CPU).
    let alerts: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|e| e["type"] == "alert" && e["pid"] == worker)
        .collect();
    assert!(!alerts.is_empty() && alerts.len() <= 2, "{context}");
    assert_eq!(
        alerts.last().map(|a| a["level"].clone()),
        Some(serde_json::json!("miner")),
        "{context}"
    );
    assert!(
        lines
            .iter()
            .any(|e| e["type"] == "resolved" && e["pid"] == worker && e["last_level"] == "miner"),
        "{context}"
    );
    let hb = lines
        .iter()
        .find(|e| e["type"] == "heartbeat")
        .expect("heartbeat");
    for k in [
        "processes",
        "tick_ms",
        "cpu_percent",
        "rss_kib",
        "rules_hash",
        "dropped_events",
    ] {
        assert!(!hb[k].is_null(), "heartbeat.{k}: {hb}");
    }
    let err = lines
        .iter()
        .find(|e| e["type"] == "rules_error")
        .expect("rules_error");
    assert!(
        err["error"].as_str().is_some_and(|e| e.contains("bad.yar")),
        "{err}"
    );
    assert!(stdout.contains("alive after bad rules"), "{context}");
    assert!(stdout.contains("agent_exit=0"), "{context}");
    let stop_ms: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stop_ms="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX);
    assert!(stop_ms < 1000, "SIGTERM took {stop_ms} ms: {context}");
    // The event file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&events)
        .expect("events")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn config_check_and_show_report_problems_and_the_effective_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[agent]\ntick_seconds = 5\n").expect("write");
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("tick_seconds") && e.contains("bad.toml"), "{e}");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[agent]\ntick_secs = 7\n[[allow]]\nexe = \"/usr/bin/monerod\"\nreason = \"node\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["config", "show", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("tick_secs = 7.0")
            && shown.contains("heartbeat_secs = 300")
            && shown.contains("/usr/bin/monerod"),
        "{shown}"
    );
}
