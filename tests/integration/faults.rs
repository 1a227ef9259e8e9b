//! The agent under faults (issue 11, item 6), each built for real in a PID
//! and mount namespace of the test's own: its output disk full (a 256 KiB
//! tmpfs), its log deleted and rotated by someone else, a SIGHUP storm, the
//! rules directory replaced by a symlink to /dev/zero and by a FIFO, a
//! config with megabyte strings, and the wall clock jumping back an hour.
//! A syslog collector (a real rsyslogd) that flaps, and one that accepts
//! and never reads. It keeps ticking to the outputs that work, holds the
//! events a failing output could not take, says in its heartbeats what each
//! holds and lost, and delivers them when the fault ends.

use std::collections::HashSet;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::BIN;
use crate::support::pidns::PidNs;
use crate::support::{self, Child, rsyslogd};

use crate::agent_events as events;

fn heartbeats(path: &Path) -> Vec<Value> {
    events(path)
        .into_iter()
        .filter(|e| e["type"] == "heartbeat")
        .collect()
}

/// The tick count of each heartbeat among `evs`, in order.
fn ticks(evs: &[Value]) -> Vec<u64> {
    evs.iter()
        .filter(|e| e["type"] == "heartbeat")
        .filter_map(|h| h["ticks"].as_u64())
        .collect()
}

/// The wall-clock seconds (fractional) of each event's `time`.
fn times(evs: &[Value]) -> Vec<f64> {
    evs.iter()
        .filter_map(|e| e["time"].as_str()?.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_millisecond() as f64 / 1000.0)
        .collect()
}

/// What heartbeat `h` says of the output named `output`, if it names it.
fn loss_of(h: &Value, output: &str) -> Option<Value> {
    h["output_losses"]
        .as_array()?
        .iter()
        .find(|o| o["output"] == output)
        .cloned()
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

/// The agent's stderr and its last heartbeat, for a failure's message.
fn last_beat(agent: &Child, events: &Path) -> String {
    format!(
        "agent stderr: {}\nlast heartbeat: {:#}",
        agent.stderr_so_far(),
        heartbeats(events).last().cloned().unwrap_or(Value::Null)
    )
}

/// SIGTERM to the agent the test started; it must exit 0 within 30 s.
fn terminate(agent: &mut Child, agent_pid: i32, context: impl Fn(&Child) -> String) {
    // SAFETY: SIGTERM to the agent this test started.
    unsafe { libc::kill(agent_pid, libc::SIGTERM) };
    let status = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", context(agent));
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
    let context = |agent: &Child| last_beat(agent, &main_events);
    assert!(
        wait_beats(&main_events, 60, |b| b.len() >= 2)
            && wait_beats(&small_events, 10, |b| !b.is_empty()),
        "{}",
        context(&agent)
    );

    // 1. The small disk full: the main output goes on and says what the
    // small one holds; freed, the small one takes it all, each line whole.
    let filler = small_seen.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 512 * 1024]);
    let small_output = format!("file {}", on_small.display());
    let small_loss = |h: &Value| loss_of(h, &small_output);
    assert!(
        wait_beats(&main_events, 20, |b| b
            .last()
            .and_then(small_loss)
            .is_some_and(|o| o["failing"] == true
                && o["queued"].as_u64() >= Some(2)
                && o["lost"] == 0
                && o["last_error"].to_string().contains("space"))),
        "disk full not reported: {}",
        context(&agent)
    );
    std::fs::remove_file(&filler).expect("free the disk");
    assert!(
        wait_beats(&main_events, 20, |b| b
            .last()
            .and_then(small_loss)
            .is_some_and(|o| o["failing"] == false
                && o["queued"] == 0
                && o["lost"] == 0)),
        "the small output did not recover: {}",
        context(&agent)
    );
    // Nothing lost: every heartbeat the main output got while the disk was
    // full reached the small one too, in order, and no line is cut.
    let small_text = std::fs::read_to_string(&small_events).expect("small events");
    assert!(
        small_text
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "a cut line in the small output:\n{small_text}"
    );
    let (small_ticks, main_ticks) = (ticks(&events(&small_events)), ticks(&events(&main_events)));
    let last_small = small_ticks.last().copied().unwrap_or(0);
    let expected: Vec<u64> = main_ticks
        .into_iter()
        .filter(|&t| t <= last_small)
        .collect();
    assert_eq!(small_ticks, expected, "the small output lost heartbeats");

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

    terminate(&mut agent, agent_pid, context);
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
    let times = times(&beats);
    assert_eq!(times.len(), beats.len(), "{beats:#?}");
    assert!(
        times
            .windows(2)
            .any(|w| (3000.0..=3700.0).contains(&(w[0] - w[1]))),
        "no step back of an hour in {times:?}"
    );
    assert!(
        times
            .windows(2)
            .any(|w| (3000.0..=3700.0).contains(&(w[1] - w[0]))),
        "no step forward of an hour in {times:?}"
    );
    let ticks = ticks(&beats);
    assert!(ticks.windows(2).all(|w| w[1] > w[0]), "{ticks:?}");
    worker.kill();
    terminate(&mut agent, agent_pid, context);
}

/// A TCP "collector" on 127.0.0.1 that accepts every connection and never
/// reads: its receive buffers are small, so what is sent to it fills them
/// and the sender's writes block. Closed with the guard.
struct StalledCollector {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl StalledCollector {
    fn start() -> StalledCollector {
        use rustix::net::{AddressFamily, SocketType, ipproto, sockopt};
        let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, Some(ipproto::TCP))
            .expect("socket");
        // Before listen(), so accepted connections start with it.
        sockopt::set_socket_recv_buffer_size(&fd, 4096).expect("SO_RCVBUF");
        rustix::net::bind(&fd, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind");
        rustix::net::listen(&fd, 64).expect("listen");
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            held.len()
        });
        StalledCollector {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listener and every connection; how many it accepted.
    fn close(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for StalledCollector {
    fn drop(&mut self) {
        self.close();
    }
}

/// A syslog collector (a real rsyslogd on 127.0.0.1) stopped and started
/// three times, and a second one that accepts and never reads, beside a
/// file output: the file output and the healthy collector get every alert
/// at once and a heartbeat about every second throughout; the stalled one
/// is named in the heartbeats with what it holds; what the flapping one
/// missed while down is delivered when it is back, nothing lost.
#[test]
fn the_agent_holds_events_for_a_collector_that_flaps_and_goes_on_past_one_that_stalls() {
    let bin = rsyslogd::find_rsyslogd().expect(
        "rsyslogd is missing: run the test command from the README, which installs rsyslog",
    );
    let _heavy = support::heavy_lock();
    let ns = PidNs::new();
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    let (udp, tcp) = (rsyslogd::free_udp_port(), support::free_port());
    let sock = d.join("log.sock");
    let received_log = d.join("received.log");
    rsyslogd::write_conf(d, udp, tcp, &sock, &received_log);
    let mut collector = rsyslogd::Rsyslogd::start(&bin, d, tcp, &sock);
    let mut stalled = StalledCollector::start();
    let drops = d.join("drop");
    let rules = d.join("rules");
    std::fs::create_dir(&drops).expect("drop dir");
    std::fs::create_dir(&rules).expect("rules dir");
    std::fs::write(
        rules.join("landed.yar"),
        "rule landed_marker { strings: $m = \"MW-LANDED-MARKER\" condition: $m }\n",
    )
    .expect("rule");
    let main_events = d.join("events.ndjson");
    let config = d.join("minerwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ntick_secs = 1.0\nheartbeat_secs = 1\ncpu_budget_percent = 100\n\
             max_events_per_minute = 1000\nrules_dir = \"{rules}\"\nwatch_dirs = [\"{drops}\"]\n\n\
             [[output]]\nkind = \"file\"\npath = \"{main}\"\n\n\
             [[output]]\nkind = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{tcp}\"\n\n\
             [[output]]\nkind = \"syslog\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{stall}\"\n",
            rules = rules.display(),
            drops = drops.display(),
            main = main_events.display(),
            stall = stalled.port,
        ),
    )
    .expect("config");
    let mut agent = ns.spawn(BIN, &["agent", "--config", &config.to_string_lossy()]);
    let (agent_pid, _) = ns.inner(&agent);
    let context = |agent: &Child| last_beat(agent, &main_events);
    let flapping = format!("syslog tcp 127.0.0.1:{tcp}");
    let stalling = format!("syslog tcp 127.0.0.1:{}", stalled.port);
    let collected = || -> Vec<Value> {
        rsyslogd::received(&received_log)
            .into_iter()
            .filter(|r| r.input == "in_tcp")
            .map(|r| r.json)
            .collect()
    };
    assert!(
        wait_beats(&main_events, 60, |b| b.len() >= 2),
        "{}",
        context(&agent)
    );

    // 1. 300 files land that the rules match: 300 alerts of about 1 KiB,
    // far more than the stalled collector's buffers hold. The file output
    // and the healthy collector get them all within seconds while the
    // stalled one's writes block.
    let landed_at = Instant::now();
    for i in 0..300 {
        // Executable, as the drop watcher looks only at those.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(drops.join(format!("f{i:03}")))
            .expect("land a file");
        writeln!(f, "MW-LANDED-MARKER {i}").expect("write it");
    }
    let landed = |evs: &[Value]| -> HashSet<String> {
        evs.iter()
            .filter(|e| e["type"] == "alert")
            .filter_map(|e| e["file"]["path"].as_str().map(str::to_owned))
            .collect()
    };
    // Behind a stalled collector written to in line, they took 21 s and
    // the heartbeats stopped for 10 s; in a queue of its own, under 1 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (landed(&events(&main_events)).len() < 300 || landed(&collected()).len() < 300)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        (
            landed(&events(&main_events)).len(),
            landed(&collected()).len()
        ),
        (300, 300),
        "the alerts did not all reach the outputs that work: {}",
        context(&agent)
    );
    let took = landed_at.elapsed();
    // The stalled collector is named with what it holds; the heartbeats
    // keep coming about a second apart.
    assert!(
        wait_beats(&main_events, 20, |b| b
            .last()
            .and_then(|h| loss_of(h, &stalling))
            .is_some_and(|o| o["queued"].as_u64() > Some(0))),
        "the stalled collector is not named: {}",
        context(&agent)
    );
    let n = heartbeats(&main_events).len();
    assert!(
        wait_beats(&main_events, 12, |b| b.len() >= n + 6),
        "ticking slowed behind the stalled collector: {}",
        context(&agent)
    );

    // 2. The other collector stopped and started three times. It is
    // stopped right after it took a heartbeat, so nothing is in flight to
    // it (TCP syslog has no acknowledgement: what is in a dying
    // collector's buffers is lost unseen, see the README's limits).
    for flap in 0..3 {
        let got = collected().len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while collected().len() == got && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        collector.stop();
        assert!(
            wait_beats(&main_events, 15, |b| b
                .last()
                .and_then(|h| loss_of(h, &flapping))
                .is_some_and(
                    |o| o["failing"] == true && o["queued"].as_u64() >= Some(2)
                )),
            "flap {flap}: the collector's absence is not named: {}",
            context(&agent)
        );
        collector = rsyslogd::Rsyslogd::start(&bin, d, tcp, &sock);
        assert!(
            wait_beats(&main_events, 20, |b| b
                .last()
                .and_then(|h| loss_of(h, &flapping))
                .is_some_and(|o| o["failing"] == false && o["queued"] == 0)),
            "flap {flap}: the collector did not recover: {}",
            context(&agent)
        );
    }
    // Nothing lost: every heartbeat the file output got up to the last one
    // the collector got reached the collector too.
    let at_collector = ticks(&collected());
    let last = at_collector.last().copied().unwrap_or(0);
    let at_file: Vec<u64> = ticks(&events(&main_events))
        .into_iter()
        .filter(|&t| t <= last)
        .collect();
    let mut sorted = at_collector.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, at_file, "the collector lost heartbeats");
    let flapping_now = heartbeats(&main_events)
        .last()
        .and_then(|h| loss_of(h, &flapping));
    assert_eq!(
        flapping_now.as_ref().map(|o| o["lost"].clone()),
        Some(Value::from(0)),
        "{flapping_now:#?}"
    );
    // The file output's heartbeats never stopped for the faults.
    let file_times = times(&heartbeats(&main_events));
    let gap = file_times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0, f64::max);
    assert!(
        gap < 4.0,
        "a {gap:.1} s gap between heartbeats (alerts took {took:?}): {}",
        context(&agent)
    );

    terminate(&mut agent, agent_pid, context);
    assert!(
        stalled.close() >= 1,
        "the agent never reached the stalled collector"
    );
    // Its warnings went to a pipe, as to the journal under systemd: plain
    // text, no terminal escapes.
    let stderr = agent.stderr_so_far();
    assert!(
        stderr.contains("holding events") && !stderr.contains('\x1b'),
        "{stderr}"
    );
}
