//! The agent end to end, inside a PID namespace of its own so that its
//! whole-host scans see, ptrace and read only the processes this test starts.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::BIN;
use crate::support;
use crate::support::quiet::{self, CpuQuota, QuietFiles, TlsFront};

/// The agent's events and what a script printed, after running `body` in a
/// fresh PID namespace beside an agent started with `config` (which must
/// write NDJSON to `events`). `body` sees `$ev` (the events file), `$A` (the
/// agent's pid) and `wait_for PATTERN` (up to 60 s); the agent has written
/// its first heartbeat when `body` starts and is stopped with SIGTERM after
/// it, timing the stop into `stop_ms=` and its status into `agent_exit=`.
struct AgentRun {
    stdout: String,
    events: Vec<serde_json::Value>,
    /// Everything, for assertion messages.
    context: String,
}

impl AgentRun {
    fn start(dir: &Path, config: &Path, events: &Path, body: &str, timeout_secs: u32) -> AgentRun {
        Self::start_with_env(dir, config, events, body, timeout_secs, "")
    }

    /// [`AgentRun::start`] with `env` (`NAME=value ...`, shell-quoted) set
    /// for the agent alone.
    fn start_with_env(
        dir: &Path,
        config: &Path,
        events: &Path,
        body: &str,
        timeout_secs: u32,
        env: &str,
    ) -> AgentRun {
        let script = format!(
            r#"set -u
ev={ev}
wait_for() {{ for i in $(seq 600); do grep -q "$1" "$ev" 2>/dev/null && return 0; sleep 0.1; done; echo "timeout waiting for $1"; return 1; }}
{env} {bin} agent --config {cfg} 2>{dir}/agent.err &
A=$!
wait_for '"heartbeat"'
{body}
t0=$(date +%s%N)
kill -TERM $A
wait $A
echo "agent_exit=$?"
echo "stop_ms=$(( ($(date +%s%N) - t0) / 1000000 ))"
"#,
            ev = events.display(),
            bin = BIN,
            cfg = config.display(),
            dir = dir.display(),
            env = if env.is_empty() {
                String::new()
            } else {
                format!("env {env}")
            },
        );
        let out = Command::new("timeout")
            .args([
                &timeout_secs.to_string(),
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
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let agent_err = std::fs::read_to_string(dir.join("agent.err")).unwrap_or_default();
        let events: Vec<serde_json::Value> = std::fs::read_to_string(events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each event line is JSON"))
            .collect();
        // Everything but heartbeats in full, heartbeats one line each: what
        // a failure needs is the alerts, and a minute of heartbeats buries
        // them.
        let mut shown = String::new();
        for e in &events {
            if e["type"] == "heartbeat" {
                shown.push_str(&format!(
                    "heartbeat ticks={} processes={} tick_ms={} time={}\n",
                    e["ticks"], e["processes"], e["tick_ms"], e["time"]
                ));
            } else {
                shown.push_str(&format!("{e}\n"));
            }
        }
        let context = format!("stdout:\n{stdout}\nagent stderr:\n{agent_err}\nevents:\n{shown}");
        assert!(!stdout.contains("timeout waiting"), "{context}");
        assert!(stdout.contains("agent_exit=0"), "{context}");
        AgentRun {
            stdout,
            events,
            context,
        }
    }

    /// The number the script printed as `name=N`.
    fn number(&self, name: &str) -> u64 {
        let prefix = format!("{name}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name}= printed: {}", self.context))
    }

    /// Alerts about process `pid`.
    fn alerts_for(&self, pid: u64) -> Vec<&serde_json::Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == "alert" && e["pid"] == pid)
            .collect()
    }
}

/// An agent config writing events to `events`, ticking every `tick` seconds,
/// with `extra` lines added to its [agent] table.
fn agent_config(dir: &Path, events: &Path, tick: f64, extra: &str) -> PathBuf {
    let config = dir.join("minerwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ntick_secs = {tick}\nheartbeat_secs = 2\nhost_check_secs = 3600\n{extra}\n\n             [[output]]\nkind = \"file\"\npath = \"{}\"\n",
            events.display()
        ),
    )
    .expect("write config");
    config
}

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
    let config = agent_config(
        d,
        &events,
        1.0,
        &format!(
            "cpu_budget_percent = 100\nrules_dir = \"{}\"\nwatch_dirs = [\"{}\"]\n\n[[allow]]\nexe = \"{}\"\nmax_level = \"notice\"\nreason = \"our own build\"",
            d.join("rules").display(),
            d.join("drop").display(),
            d.join("drop/ours").display()
        ),
    );
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

    let body = format!(
        r#"mkfifo {dir}/drop/pipe
truncate -s 5G {dir}/drop/sparse && chmod +x {dir}/drop/sparse
cp {xmrig_like} {dir}/drop/.x && chmod +x {dir}/drop/.x
wait_for '"path":"{dir}/drop/.x"'
# Written in two bursts a second apart, then closed: one drop, one alert.
{{ cat {xmrig_like}; sleep 1; echo more; }} > {dir}/drop/.y
wait_for '"path":"{dir}/drop/.y"'
cp {xmrig_like} {dir}/drop/ours && chmod +x {dir}/drop/ours
wait_for '"path":"{dir}/drop/ours"'
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
kill -0 $A && echo "alive after bad rules""#,
        dir = d.display(),
        worker = support::rxworker_bin().display(),
        xmrig_like = xmrig_like.display(),
    );
    let run = AgentRun::start(d, &config, &events, &body, 180);
    let (stdout, lines, context) = (&run.stdout, &run.events, &run.context);
    let worker = run.number("worker");

    // Alerted within two ticks (1 s each) of its first hash, plus up to 2 s
    // for one tick's deep checks and rule scans in a debug build.
    let alert_ms = run.number("alert_ms");
    assert!(
        alert_ms <= 4000,
        "alerted {alert_ms} ms after the first hash: {context}"
    );
    // One alert for the worker, as a miner (it may pass through suspicious
    // first while its first tick catches only part of its CPU).
    let alerts = run.alerts_for(worker);
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
    // Written, closed and made executable: one drop, one alert.
    let x_path = d.join("drop/.x").display().to_string();
    let x_alerts = lines
        .iter()
        .filter(|e| e["type"] == "alert" && e["file"]["path"] == x_path.as_str())
        .count();
    assert_eq!(x_alerts, 1, "{context}");
    let y_path = d.join("drop/.y").display().to_string();
    let y_alerts = lines
        .iter()
        .filter(|e| e["type"] == "alert" && e["file"]["path"] == y_path.as_str())
        .count();
    assert_eq!(y_alerts, 1, "{context}");
    // The allow rule naming one landed file caps its alert and says why.
    let ours = d.join("drop/ours").display().to_string();
    let ours = lines
        .iter()
        .find(|e| e["type"] == "alert" && e["file"]["path"] == ours.as_str())
        .expect("alert for drop/ours");
    assert_eq!(ours["level"], "notice", "{ours}");
    assert_eq!(
        ours["file"]["allowed"],
        "our own build (allow rule caps it at notice)"
    );
    assert!(
        lines.iter().any(|e| e["type"] == "alert"
            && e["file"]["path"] == x_path.as_str()
            && e["level"] == "suspicious"),
        "{context}"
    );
    let err = lines
        .iter()
        .find(|e| e["type"] == "rules_error")
        .expect("rules_error");
    assert!(
        err["error"].as_str().is_some_and(|e| e.contains("bad.yar")),
        "{err}"
    );
    assert!(stdout.contains("alive after bad rules"), "{context}");
    let stop_ms = run.number("stop_ms");
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

/// Ticks within which the agent alerts on a worker throttled to a quarter of
/// a core (measured: 2 at 1-s ticks; the bound leaves room for a loaded CI
/// machine). The README states this number.
const THROTTLED_TICKS: u64 = 5;

#[test]
fn agent_alerts_on_a_throttled_worker_within_a_few_ticks() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let events = d.join("events.ndjson");
    let config = agent_config(d, &events, 1.0, "");
    // Not disguised, on disk, a plain name: only what it does gives it away.
    let body = format!(
        r#"cp {worker} {dir}/dbus-session-helper
{dir}/dbus-session-helper --mode light --throttle 25 --seconds 40 > {dir}/worker.out &
W=$!
for i in $(seq 600); do grep -q hashing {dir}/worker.out && break; sleep 0.05; done
t_hash=$(date +%s%N)
echo "worker=$W"
echo "worker_said=$(head -c 300 {dir}/worker.out | tr '\n' ' ')"
wait_for "\"level\":\"miner\".*\"pid\":$W"
echo "alert_ms=$(( ($(date +%s%N) - t_hash) / 1000000 ))"
h0=$(awk '{{print $14+$15}}' /proc/$W/stat); sleep 2
echo "worker_ticks=$(( $(awk '{{print $14+$15}}' /proc/$W/stat) - h0 ))"
kill -9 $W; wait $W 2>/dev/null"#,
        dir = d.display(),
        worker = support::rxworker_bin().display(),
    );
    let run = AgentRun::start(d, &config, &events, &body, 120);
    let worker = run.number("worker");
    let alert_ms = run.number("alert_ms");
    assert!(
        alert_ms <= THROTTLED_TICKS * 1000,
        "throttled worker alerted as a miner {alert_ms} ms after its first hash (bound: {THROTTLED_TICKS} ticks of 1 s): {}",
        run.context
    );
    // It really was throttled: well under a core over 2 s of hashing (its
    // RandomX cache set-up before the first hash runs flat out).
    let ticks = run.number("worker_ticks");
    let hz = 100; // USER_HZ on Linux x86-64
    assert!(
        (ticks as f64 / hz as f64) < 2.0 * 0.6,
        "worker used {ticks} ticks in 2 s of hashing: not throttled? {}",
        run.context
    );
    let alerts = run.alerts_for(worker);
    let last = alerts.last().expect("an alert");
    assert_eq!(last["level"], "miner", "{}", run.context);
    assert!(
        last["signals"].to_string().contains("cpu.busy")
            || last["signals"].to_string().contains("cpu.steady"),
        "{last}"
    );
}

/// Benign heavy programs, one after another for a minute (a JIT-compiled
/// float loop, xz -9, stress-ng's CPU methods), under an agent ticking every
/// second: not one alert.
#[test]
fn agent_stays_quiet_through_a_minute_of_benign_heavy_programs() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let events = d.join("events.ndjson");
    // No CPU budget: judge every second even in a debug build.
    let config = agent_config(d, &events, 1.0, "cpu_budget_percent = 100");
    let body = r#"busy() { # name, then the command; runs it 20 s and prints the CPU ticks of it and its children
  name=$1; shift
  "$@" & P=$!
  sleep 20
  echo "$name=$(cat /proc/[0-9]*/stat 2>/dev/null | awk -v p=$P '$1==p || $4==p {s+=$14+$15} END {print s+0}')"
  kill $P; wait $P 2>/dev/null
}
busy node node -e 'let x = 0.1; for (;;) { x = Math.sqrt(x * 1.0000001 + 0.5) * 1.5; }'
busy xz sh -c 'exec xz -9 -T1 -c < /dev/urandom > /dev/null'
busy stress stress-ng --cpu 1 --cpu-method all --timeout 30s
sleep 2"#;
    let run = AgentRun::start(d, &config, &events, body, 180);
    for name in ["node", "xz", "stress"] {
        // Each was heavy: at least a third of a core over its 20 s.
        let ticks = run.number(name);
        assert!(
            ticks >= 600,
            "{name} used only {ticks} ticks: {}",
            run.context
        );
    }
    let alerts: Vec<&serde_json::Value> =
        run.events.iter().filter(|e| e["type"] == "alert").collect();
    assert!(alerts.is_empty(), "alerts on benign programs: {alerts:#?}");
    // It watched the whole minute, ticking all along: its heartbeats (every
    // 2 s) span the three programs. A count of ticks would depend on how
    // busy the rest of the machine is (a debug tick under load takes more
    // than its second); the span does not.
    let beats: Vec<jiff::Timestamp> = run
        .events
        .iter()
        .filter(|e| e["type"] == "heartbeat")
        .filter_map(|e| e["time"].as_str()?.parse().ok())
        .collect();
    let span = match (beats.first(), beats.last()) {
        (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
        _ => 0.0,
    };
    assert!(
        span >= 55.0,
        "heartbeats span only {span:.0} s: {}",
        run.context
    );
    let ticks = run
        .events
        .iter()
        .filter_map(|e| e["ticks"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(ticks >= 20, "only {ticks} ticks: {}", run.context);
}

/// A syslog collector that is down and a journald socket that is not there
/// (yet) do not keep the agent from starting: it warns, writes its other
/// outputs, and delivers to the collector once it is up.
#[test]
fn agent_starts_with_its_collectors_down_and_delivers_when_they_come_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let events = d.join("events.ndjson");
    let port = support::free_port();
    let config = agent_config(d, &events, 1.0, "");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!(
        "\n[[output]]\nkind = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
         [[output]]\nkind = \"journald\"\nsocket = \"{}\"\n",
        d.join("no-journal.socket").display()
    ));
    std::fs::write(&config, text).expect("write config");
    // The collector comes up after the agent: a listener on the port, kept
    // for the rest of the run, that saves what it receives.
    let body = format!(
        r#"python3 - {port} {dir}/received <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.settimeout(20)
with open(sys.argv[2], "wb") as out:
    while True:
        b = c.recv(65536)
        if not b: break
        out.write(b); out.flush()
PY
L=$!
for i in $(seq 200); do grep -q heartbeat {dir}/received 2>/dev/null && break; sleep 0.1; done
grep -q heartbeat {dir}/received && echo "collector got heartbeats"
"#,
        dir = d.display(),
    );
    let run = AgentRun::start(d, &config, &events, &body, 60);
    let err = std::fs::read_to_string(d.join("agent.err")).unwrap_or_default();
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("will retry"),
        "no warning about the collector: {err}"
    );
    assert!(err.contains("no-journal.socket"), "{err}");
    assert!(
        run.stdout.contains("collector got heartbeats"),
        "{}",
        run.context
    );
    let received = std::fs::read_to_string(d.join("received")).unwrap_or_default();
    // RFC 5424 over TCP with octet counting (RFC 6587): "LEN <PRI>1 TIME HOST minerwatch …".
    let (len, msg) = received.split_once(' ').expect("a framed message");
    assert!(len.parse::<usize>().is_ok(), "{received}");
    // Facility daemon (3): PRI 24 + severity (heartbeats are info, <30>; a
    // host alert may come first).
    let pri: u32 = msg
        .strip_prefix('<')
        .and_then(|m| m.split_once(">1 "))
        .and_then(|(p, _)| p.parse().ok())
        .unwrap_or_else(|| panic!("not RFC 5424: {received}"));
    assert_eq!(pri / 8, 3, "{received}");
    assert!(msg.contains(" minerwatch "), "{received}");
    assert!(received.contains("<30>1 "), "no heartbeat: {received}");
}

/// The quiet miner (a quarter of a core by cgroup quota, pool over TLS
/// through a local SOCKS5 proxy, binary and config deleted) under the agent.
/// Worker and proxy run inside the agent's PID namespace; the TLS front and
/// the pool outside it (the agent sees neither).
#[test]
fn agent_alerts_on_a_quota_limited_proxied_deleted_worker() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let front = TlsFront::start();
    let socks_port = support::free_port();
    let socks = std::net::SocketAddr::from(([127, 0, 0, 1], socks_port));
    let files = QuietFiles::write(front.addr(), socks, support::WALLET)
        .expect("write the quiet worker's files");
    let quota = CpuQuota::new(25).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let events = d.join("events.ndjson");
    let config = agent_config(d, &events, 1.0, "");
    let body = format!(
        r#"microsocks -i 127.0.0.1 -p {socks_port} > {dir}/socks.log 2>&1 &
S=$!
for i in $(seq 100); do (: < /dev/tcp/127.0.0.1/{socks_port}) 2>/dev/null && break; sleep 0.1; done
t_start=$(date +%s%N)
sh -c {worker} > {dir}/worker.out 2> {dir}/worker.err &
W=$!
for i in $(seq 600); do grep -q pool-ok {dir}/worker.out && break; sleep 0.1; done
rm {exe} {cfg} && rmdir {wdir}
for i in $(seq 600); do grep -q hashing {dir}/worker.out && break; sleep 0.1; done
t_hash=$(date +%s%N)
echo "worker=$W"
echo "worker_out=$(tr '\n' ' ' < {dir}/worker.out)"
echo "exe=$(readlink /proc/$W/exe)"
grep -qx "$W" {procs} && echo "in_cgroup=1"
wait_for "\"level\":\"miner\".*\"pid\":$W"
echo "alert_ms=$(( ($(date +%s%N) - t_hash) / 1000000 ))"
echo "worker_ticks=$(awk '{{print $14+$15}}' /proc/$W/stat)"
echo "worker_life_ms=$(( ($(date +%s%N) - t_start) / 1000000 ))"
echo "worker_err=$(tr '\n' ' ' < {dir}/worker.err)"
kill -9 $W $S; wait $W $S 2>/dev/null"#,
        dir = d.display(),
        worker = quiet::sh_quote(&files.shell_command(&quota, 120)),
        exe = quiet::sh_quote(&files.exe().to_string_lossy()),
        cfg = quiet::sh_quote(&files.config().to_string_lossy()),
        wdir = quiet::sh_quote(&files.dir().to_string_lossy()),
        procs = quiet::sh_quote(&quota.procs_file().to_string_lossy()),
    );
    let run = AgentRun::start(d, &config, &events, &body, 150);
    let worker = run.number("worker");
    // The rig: logged in through the chain, hashing, deleted, in the cgroup.
    assert!(
        run.stdout.contains("worker_out=pool-ok hashing"),
        "{}",
        run.context
    );
    assert!(
        front.pool().wait_login(Duration::from_secs(1)),
        "the pool got no login: {}",
        run.context
    );
    let exe_line = format!("exe={} (deleted)", files.exe().display());
    assert!(
        run.stdout.contains(&exe_line),
        "{exe_line}: {}",
        run.context
    );
    assert_eq!(run.number("in_cgroup"), 1, "{}", run.context);
    // Held to the quota over its whole life (start-up included): about a
    // quarter of a core, with room for tick rounding.
    let ticks = run.number("worker_ticks");
    let life_ms = run.number("worker_life_ms");
    assert!(
        ticks as f64 / 100.0 <= 0.3 * (life_ms as f64 / 1000.0) + 0.2,
        "worker used {ticks} ticks in {life_ms} ms: {}",
        run.context
    );
    let alerts = run.alerts_for(worker);
    let last = alerts.last().expect("an alert");
    assert_eq!(last["level"], "miner", "{}", run.context);
    eprintln!(
        "quiet miner under the agent: alerted after {} ms, signals {}",
        run.number("alert_ms"),
        last["signals"]
    );
}

#[test]
fn agent_tells_systemd_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let events = d.join("events.ndjson");
    let config = agent_config(d, &events, 1.0, "");
    // systemd's side of Type=notify: a datagram socket named by $NOTIFY_SOCKET.
    let sock_path = d.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    got.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
                }
            }
            while let Ok(n) = sock.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
            }
            got
        })
    };
    let run = AgentRun::start_with_env(
        d,
        &config,
        &events,
        "sleep 3",
        60,
        &format!("NOTIFY_SOCKET='{}'", sock_path.display()),
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = listener.join().expect("listener");
    assert_eq!(
        got.first().map(String::as_str),
        Some("READY=1"),
        "{got:?}\n{}",
        run.context
    );
    assert_eq!(
        got.last().map(String::as_str),
        Some("STOPPING=1"),
        "{got:?}"
    );
    let watchdogs = got.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(watchdogs >= 3, "a WATCHDOG=1 every 1 s tick: {got:?}");
    assert!(
        got.iter()
            .all(|m| ["READY=1", "WATCHDOG=1", "STOPPING=1"].contains(&m.as_str())),
        "{got:?}"
    );
}

#[test]
fn agent_with_freeze_on_miner_freezes_the_worker_and_writes_its_bundle() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let events = d.join("events.ndjson");
    let evidence = d.join("evidence");
    let config = agent_config(
        d,
        &events,
        1.0,
        &format!(
            "\n[contain]\nfreeze_on_miner = true\nevidence_dir = \"{}\"",
            evidence.display()
        ),
    );
    let body = format!(
        r#"{worker} --mode light --seconds 40 > {dir}/worker.out &
W=$!
echo "worker=$W"
wait_for '"type":"contained"'
sleep 0.5
echo "state=$(awk '{{print $3}}' /proc/$W/stat)"
h0=$(awk '{{print $14+$15}}' /proc/$W/stat); sleep 1
echo "ticks_frozen=$(( $(awk '{{print $14+$15}}' /proc/$W/stat) - h0 ))"
kill -9 $W; wait $W 2>/dev/null"#,
        dir = d.display(),
        worker = support::rxworker_bin().display(),
    );
    let run = AgentRun::start(d, &config, &events, &body, 120);
    let worker = run.number("worker");
    assert!(run.stdout.contains("state=T"), "{}", run.context);
    assert_eq!(run.number("ticks_frozen"), 0, "{}", run.context);
    let contained: Vec<&serde_json::Value> = run
        .events
        .iter()
        .filter(|e| e["type"] == "contained")
        .collect();
    assert_eq!(contained.len(), 1, "{}", run.context);
    let c = contained[0];
    assert_eq!(c["pid"], worker, "{}", run.context);
    assert!(c["error"].is_null(), "{}", run.context);
    let bundle = c["bundle"].as_str().expect("bundle path");
    assert!(bundle.starts_with(&*evidence.to_string_lossy()), "{bundle}");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(Path::new(bundle)), 0o600);
    assert_eq!(mode(&evidence), 0o700);
    let out = Command::new(BIN)
        .args(["analyze", bundle, "--format", "json"])
        .output()
        .expect("analyze");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["verdict"], "miner", "{report:#}");
}
