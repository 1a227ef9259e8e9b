//! `minerwatch agent`: the observe → judge → report pipeline in a loop.
//!
//! Each tick observes every process (CPU over the tick, identity, memory
//! layout) and runs the expensive checks (rules on a new binary, memory
//! scans, rounding-mode sampling) only for candidates, cached per (pid,
//! start time) and per binary identity, so an unchanged host costs little.
//! CPU history per process lets the judge see a miner that throttles in
//! bursts. Alerts go to every configured output; SIGHUP reloads rules and
//! config off the main loop and keeps the last good ones; SIGTERM and SIGINT
//! stop within a second; systemd is told READY, WATCHDOG and STOPPING.
//!
//! New executables in drop directories are scanned the moment they land
//! ([`watch`]); a change to the rules directory or the config file reloads
//! them like SIGHUP does.

pub mod alerts;
pub mod deliver;
/// The config file, under its old name for callers.
pub use crate::config;
pub mod output;
pub mod watch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::judge;
use crate::observe::{self, Cache};
use crate::report::event::Heartbeat;
use crate::settings::Settings;
use crate::signatures::Signatures;
use config::{Config, OutputConfig};
use output::{Event, Sink};

/// The host checks' pid brute force covers the whole pid range once every
/// this many host checks (an hour at the default 300 s), besides every pid
/// allocated since the previous check: with pid_max 4194304 (systemd's
/// default) a full sweep costs about a third of a second of CPU.
const PID_SWEEP_SLICES: u32 = 12;

/// Ticks of CPU history kept per process.
const HISTORY: usize = 24;

/// Set by SIGTERM and SIGINT.
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);
/// Set by SIGHUP.
static RELOAD: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// SIGTERM and SIGINT set [`STOP`], SIGHUP sets [`RELOAD`] (once per process).
fn install_signal_handlers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        for (sig, flag) in [(SIGTERM, &*STOP), (SIGINT, &*STOP), (SIGHUP, &*RELOAD)] {
            if let Err(e) = signal_hook::flag::register(sig, Arc::clone(flag)) {
                tracing::warn!("cannot handle signal {sig}: {e}");
            }
        }
    });
}

/// Tells systemd (Type=notify) how we are, when it asked ($NOTIFY_SOCKET).
fn sd_notify(state: sd_notify::NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(std::slice::from_ref(&state)) {
        tracing::warn!("sd_notify {state}: {e}");
    }
}

/// Our own CPU time and RSS.
fn self_usage() -> (Duration, u64) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    (crate::sys::self_cpu_time(), rss)
}

/// Why the agent could not start (or a reload could not take effect).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A procfs or root directory given or configured is not a directory.
    #[error(
        "{flag} '{}' is not a directory; give the directory the host's procfs (or root) is mounted on",
        path.display()
    )]
    NotADirectory { flag: &'static str, path: PathBuf },
    /// The rules could not be loaded.
    #[error(transparent)]
    Rules(#[from] crate::signatures::RulesError),
    /// An output could not be opened; the message names it.
    #[error("{0}")]
    Output(std::io::Error),
}

/// Opens the configured outputs; stdout when none is configured.
fn open_outputs(config: &Config) -> Result<Vec<Box<dyn Sink>>, AgentError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    for o in &config.outputs {
        let sink: Box<dyn Sink> = match o {
            OutputConfig::File {
                path,
                max_bytes,
                keep,
                fields,
            } => Box::new(
                output::FileSink::open(path, *max_bytes, *keep, *fields).map_err(|e| {
                    AgentError::Output(std::io::Error::new(
                        e.kind(),
                        format!("output file {}: {e}", path.display()),
                    ))
                })?,
            ),
            OutputConfig::Stdout { fields } => Box::new(output::StdoutSink::new(*fields)),
            OutputConfig::Syslog {
                transport,
                address,
                fields,
            } => {
                // Checked when the config was loaded.
                let addr = transport
                    .socket_addr(address)
                    .map_err(|m| AgentError::Output(std::io::Error::other(m)))?;
                let t = match (transport, addr) {
                    (config::Transport::Udp, Some(a)) => output::SyslogTransport::Udp(a),
                    (config::Transport::Tcp, Some(a)) => output::SyslogTransport::Tcp(a),
                    _ => output::SyslogTransport::Unix(PathBuf::from(address)),
                };
                // A collector that is down (or starts after us) is retried
                // on every event; only a malformed address stops us.
                Box::new(output::SyslogSink::lazy(t, *fields))
            }
            OutputConfig::Journald { socket } => Box::new(output::JournaldSink::lazy(socket)),
        };
        sinks.push(sink);
    }
    if sinks.is_empty() {
        sinks.push(Box::new(output::StdoutSink::new(output::Fields::Native)));
    }
    Ok(sinks)
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// What a reload thread hands back.
enum Reloaded {
    Ok(Box<Config>, Box<Signatures>),
    Failed(String),
}

fn reload(path: Option<PathBuf>, tx: mpsc::Sender<Reloaded>) {
    std::thread::spawn(move || {
        let r = Config::load(path.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|(c, _)| {
                Signatures::load(c.agent.rules_dir.as_deref())
                    .map_err(|e| e.to_string())
                    .and_then(|s| match s.files().iter().find_map(|f| f.error.clone()) {
                        Some(e) => Err(format!("rule file failed to compile: {e}")),
                        None => Ok((c, s)),
                    })
            });
        let _ = tx.send(match r {
            Ok((c, s)) => Reloaded::Ok(Box::new(c), Box::new(s)),
            Err(e) => Reloaded::Failed(e),
        });
    });
}

/// Command-line settings that win over the config file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub proc_root: Option<PathBuf>,
    pub root: Option<PathBuf>,
}

impl Overrides {
    fn apply(&self, config: &mut Config) {
        if let Some(p) = &self.proc_root {
            config.agent.proc_root = p.clone();
        }
        if let Some(r) = &self.root {
            config.agent.root = r.clone();
        }
    }
}

/// How long a stopping agent waits for its outputs to take what they hold.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

/// Runs the agent until SIGTERM or SIGINT (or after `ticks` ticks).
pub fn run(
    config_path: Option<&Path>,
    ticks: Option<u64>,
    overrides: &Overrides,
) -> Result<(), AgentError> {
    let (mut config, files) = Config::load(config_path)?;
    overrides.apply(&mut config);
    for (flag, dir) in [
        ("--proc-root", &config.agent.proc_root),
        ("--root", &config.agent.root),
    ] {
        if !dir.is_dir() {
            return Err(AgentError::NotADirectory {
                flag,
                path: dir.clone(),
            });
        }
    }
    for f in &files {
        tracing::info!("config {}", f.display());
    }
    let sigs = Signatures::load(config.agent.rules_dir.as_deref())?;
    for f in sigs.files() {
        if let Some(e) = &f.error {
            tracing::warn!(
                "skipped rule file: {}",
                crate::report::escape_file_message(e, &f.path)
            );
        }
    }
    let shared = Arc::new(watch::Shared {
        sigs: std::sync::RwLock::new(Arc::new(sigs)),
        outputs: deliver::Outputs::start(open_outputs(&config)?),
        reload: AtomicBool::new(false),
        cap: alerts::RateCap::shared(config.agent.max_events_per_minute),
        hostname: observe::host_name(&config.agent.root),
        allow: std::sync::RwLock::new(Arc::new(config.allow.clone())),
        root: config.agent.root.clone(),
    });
    let send = |events: &[Event]| shared.outputs.send(events);
    let drop_dirs: Vec<PathBuf> = config
        .agent
        .watch_dirs
        .iter()
        .map(|d| config.agent.root.join(d.strip_prefix("/").unwrap_or(d)))
        .collect();
    let reload_on = watch::ReloadOn {
        rules_dir: config.agent.rules_dir.clone(),
        config_files: files.clone(),
    };
    let _watching = watch::start(&drop_dirs, reload_on, shared.clone())
        .map_err(|e| tracing::warn!("cannot watch drop directories: {e}"))
        .ok();
    install_signal_handlers();
    crate::sys::be_nice();
    // Every observed process holds a directory handle during a tick.
    crate::sys::raise_fd_limit();
    let mut cache = Cache::default();
    let mut tracker = alerts::Tracker::with_cap(shared.cap.clone());
    let mut history: HashMap<(i32, u64), VecDeque<f64>> = HashMap::new();
    // Miner trees frozen by `[contain] freeze_on_miner`, never twice.
    let mut contained: HashSet<(i32, u64)> = HashSet::new();
    let mut last_host_check: Option<Instant> = None;
    let mut budget = Budget::new(config.agent.cpu_budget_percent);
    let mut last_heartbeat = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut reloading = false;
    let mut tick: u64 = 0;
    let started = Instant::now();
    let cpu_at_start = self_usage().0;

    while !STOP.load(Ordering::Relaxed) {
        // A request that comes while a reload runs waits for the next one.
        if !reloading
            && (RELOAD.swap(false, Ordering::Relaxed)
                | shared.reload.swap(false, Ordering::Relaxed))
        {
            reloading = true;
            reload(config_path.map(Path::to_path_buf), tx.clone());
        }
        if let Ok(r) = rx.try_recv() {
            reloading = false;
            match r {
                Reloaded::Ok(mut c, s) => match open_outputs(&c) {
                    Ok(new_sinks) => {
                        overrides.apply(&mut c);
                        config = *c;
                        match shared.sigs.write() {
                            Ok(mut g) => *g = Arc::from(s),
                            Err(p) => *p.into_inner() = Arc::from(s),
                        }
                        shared.outputs.replace(new_sinks);
                        let allow = Arc::new(config.allow.clone());
                        match shared.allow.write() {
                            Ok(mut g) => *g = allow,
                            Err(p) => *p.into_inner() = allow,
                        }
                        alerts::lock(&shared.cap).set(config.agent.max_events_per_minute);
                        cache = Cache::default();
                        tracing::info!("config and rules reloaded");
                    }
                    Err(e) => send(&[reload_failed(&e.to_string())]),
                },
                Reloaded::Failed(e) => send(&[reload_failed(&e)]),
            }
        }
        let host_checks = last_host_check
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(config.agent.host_check_secs));
        let settings = Settings::agent_tick(&config, host_checks, PID_SWEEP_SLICES);
        let opts = observe::Options {
            stop: Some(&**STOP),
            ..settings.observe
        };
        let policy = settings.policy;
        let tick_start = Instant::now();
        let cpu0 = self_usage().0;
        let sigs = match shared.sigs.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        // The window ends early on SIGTERM/SIGINT.
        let observed = observe::observe_with(&opts, &sigs, &mut cache);
        if STOP.load(Ordering::Relaxed) {
            break;
        }
        let mut snap = match observed {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("observation failed: {e}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        if host_checks {
            last_host_check = Some(tick_start);
        }
        let alive: HashSet<(i32, u64)> = snap
            .processes
            .iter()
            .map(|p| (p.pid, p.start_time))
            .collect();
        history.retain(|k, _| alive.contains(k));
        for p in &mut snap.processes {
            let h = history.entry((p.pid, p.start_time)).or_default();
            h.push_back(p.cpu.percent);
            if h.len() > HISTORY {
                h.pop_front();
            }
            p.cpu.history = h.iter().copied().collect();
        }
        let processes_seen = snap.processes.len();
        let report = judge::judge(&snap, &policy);
        let events = tracker.update(&report, &alive, &now(), Instant::now());
        send(&events);
        contained.retain(|k| alive.contains(k));
        if config.contain.freeze_on_miner {
            send(&auto_contain(&config, &snap, &report, &mut contained));
        }
        tick += 1;
        let last_tick_ms = tick_start.elapsed().as_millis() as u64;
        if tick == 1 {
            sd_notify(sd_notify::NotifyState::Ready);
        }
        sd_notify(sd_notify::NotifyState::Watchdog);
        if last_heartbeat.elapsed() >= Duration::from_secs(config.agent.heartbeat_secs) || tick == 1
        {
            last_heartbeat = Instant::now();
            let (cpu, rss) = self_usage();
            let up = started.elapsed().as_secs_f64().max(0.001);
            let time = now();
            let output_losses = shared.outputs.losses();
            send(&[Event::heartbeat(&Heartbeat {
                schema: crate::judge::REPORT_SCHEMA,
                kind: "heartbeat",
                time: &time,
                host: &report.host.hostname,
                ticks: tick,
                processes: processes_seen,
                tick_ms: last_tick_ms,
                cpu_percent: ((cpu.saturating_sub(cpu_at_start)).as_secs_f64() / up * 1000.0)
                    .round()
                    / 10.0,
                rss_kib: rss,
                rules_hash: &sigs.info().hash,
                binaries_cached: cache.binaries(),
                dropped_events: tracker.dropped(),
                output_losses: &output_losses,
            })]);
        }
        if ticks.is_some_and(|n| tick >= n) {
            break;
        }
        // The CPU budget: sleep off what the tick used beyond it.
        budget.percent = config.agent.cpu_budget_percent;
        let used = self_usage().0.saturating_sub(cpu0);
        let pause = budget.charge(used, tick_start.elapsed());
        if !pause.is_zero() {
            // Keep systemd's watchdog fed while we sleep off a heavy tick.
            let until = Instant::now() + pause;
            let mut fed = Instant::now();
            while Instant::now() < until && !STOP.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if fed.elapsed() >= Duration::from_secs(5) {
                    sd_notify(sd_notify::NotifyState::Watchdog);
                    fed = Instant::now();
                }
            }
        }
    }
    sd_notify(sd_notify::NotifyState::Stopping);
    // What the outputs still hold (the last heartbeat, an alert behind a
    // slow collector) is delivered before we exit, within a bound.
    shared.outputs.close(OUTPUT_DRAIN);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Budget;
    use std::time::Duration;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn one_heavy_tick_is_covered_by_the_burst() {
        let mut b = Budget::new(5.0);
        assert_eq!(b.charge(secs(1.5), secs(5.0)), Duration::ZERO);
    }

    #[test]
    fn sustained_overuse_sleeps_to_the_budget() {
        let mut b = Budget::new(5.0);
        // A tick of 5 s wall that used 1 s CPU, over and over: after the
        // burst is gone each tick must be stretched to 20 s of wall time.
        let mut wall = 0.0;
        let mut cpu = 0.0;
        for _ in 0..200 {
            let pause = b.charge(secs(1.0), secs(5.0)).as_secs_f64();
            wall += 5.0 + pause;
            cpu += 1.0;
        }
        let mean = cpu / wall * 100.0;
        assert!((4.5..=5.5).contains(&mean), "mean CPU {mean:.2} %");
    }

    #[test]
    fn a_pause_is_capped() {
        let mut b = Budget::new(1.0);
        let pause = b.charge(secs(100.0), secs(1.0));
        assert_eq!(pause, secs(Budget::MAX_PAUSE));
    }
}

/// The agent's CPU budget, as a bucket: it fills at `percent` of a core of
/// wall time up to [`Budget::BURST`] of CPU time, and each tick takes out the
/// CPU time it used. Only an empty bucket makes the agent sleep, for as long
/// as refilling takes: the mean stays within the budget over minutes, while
/// one heavy tick (a suspect's memory scan, the host checks) costs no
/// detection latency.
#[derive(Debug, Clone)]
struct Budget {
    percent: f64,
    /// CPU seconds we may still use; negative when overdrawn.
    credit: f64,
}

impl Budget {
    /// CPU time the bucket holds at most.
    const BURST: f64 = 2.0;
    /// Longest single sleep (the watchdog is fed meanwhile).
    const MAX_PAUSE: f64 = 30.0;

    fn new(percent: f64) -> Self {
        Budget {
            percent,
            credit: Self::BURST,
        }
    }

    /// Takes out `used` CPU time after `wall` time; returns how long to sleep.
    fn charge(&mut self, used: Duration, wall: Duration) -> Duration {
        let rate = self.percent / 100.0;
        self.credit = (self.credit + wall.as_secs_f64() * rate).min(Self::BURST);
        self.credit -= used.as_secs_f64();
        if self.credit >= 0.0 {
            return Duration::ZERO;
        }
        let pause = (-self.credit / rate).min(Self::MAX_PAUSE);
        // The sleep refills the bucket.
        self.credit += pause * rate;
        Duration::from_secs_f64(pause)
    }
}

/// `[contain] freeze_on_miner`: each new `miner` finding (allow rules have
/// capped the allowed ones already) frozen, its bundle written, one
/// `contained` event each.
fn auto_contain(
    config: &Config,
    snap: &crate::snapshot::HostSnapshot,
    report: &judge::Report,
    contained: &mut HashSet<(i32, u64)>,
) -> Vec<Event> {
    let opts = crate::respond::bundle::CollectOptions {
        proc_root: config.agent.proc_root.clone(),
        root: config.agent.root.clone(),
        ..Default::default()
    };
    let mut out = Vec::new();
    for f in &report.findings {
        if f.level != judge::Level::Miner || !contained.insert((f.pid, f.start_time)) {
            continue;
        }
        let done = crate::respond::contain::freeze_and_collect(
            snap,
            report,
            f.pid,
            f.start_time,
            &opts,
            &config.contain.evidence_dir,
        );
        let bundle = done.bundle.as_ref().map(|b| b.display().to_string());
        let time = now();
        out.push(Event::contained(&crate::report::event::Contained {
            schema: judge::REPORT_SCHEMA,
            kind: "contained",
            time: &time,
            host: &report.host.hostname,
            pid: f.pid,
            start_time: f.start_time,
            process: &f.process.name,
            frozen: &done.frozen,
            method: &done.method,
            bundle: bundle.as_deref(),
            error: done.error.as_deref(),
        }));
    }
    out
}

fn reload_failed(error: &str) -> Event {
    let error = crate::report::escape_lines(error);
    tracing::warn!("reload failed, keeping the last good rules and config: {error}");
    Event::rules_error(&error, &now())
}
