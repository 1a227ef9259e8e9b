//! Alert lifecycle: one alert when a process first reaches `suspicious` or
//! `miner`, another only when its level rises, `resolved` when it exits; host
//! findings alert once while they last, and again only after they have been
//! gone for [`HOST_FORGET`]; an event-rate cap counts what it drops.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::judge::{Level, Report};
use crate::report::event::Event;

/// At most `max_per_minute` events a minute for every sender together (a
/// tick's alerts and resolutions, the watcher's file alerts); the rest are
/// counted, and the heartbeat says how many.
#[derive(Debug)]
pub struct RateCap {
    /// When the events of the last minute were sent.
    sent: VecDeque<Instant>,
    max_per_minute: u32,
    /// Events dropped since the start.
    dropped: u64,
}

/// The one [`RateCap`], shared by the agent's loop and its watcher.
pub type SharedCap = Arc<Mutex<RateCap>>;

impl RateCap {
    pub fn new(max_per_minute: u32) -> Self {
        RateCap {
            sent: VecDeque::new(),
            max_per_minute,
            dropped: 0,
        }
    }

    /// A cap to share.
    pub fn shared(max_per_minute: u32) -> SharedCap {
        Arc::new(Mutex::new(RateCap::new(max_per_minute)))
    }

    /// Changes the cap (config reload).
    pub fn set(&mut self, max_per_minute: u32) {
        self.max_per_minute = max_per_minute;
    }

    /// Events dropped since the start.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether one more event may go out now; counts it either way.
    pub fn admit(&mut self, now: Instant) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.max_per_minute as usize {
            self.dropped += 1;
            false
        } else {
            self.sent.push_back(now);
            true
        }
    }
}

/// The cap, also when a sender panicked while holding it.
pub fn lock(cap: &SharedCap) -> MutexGuard<'_, RateCap> {
    cap.lock().unwrap_or_else(|p| p.into_inner())
}

/// Alert state between ticks.
#[derive(Debug)]
pub struct Tracker {
    /// Processes alerted on: (pid, start time) → (highest level sent, name).
    alerted: HashMap<(i32, u64), (Level, String)>,
    /// Host findings alerted on, by [`host_key`], and when last present.
    host: HashMap<(String, String), Instant>,
    cap: SharedCap,
}

/// A host finding that comes back within this time of its last sighting is
/// the same trouble, not a new alert (a hidden-CPU estimate near its
/// threshold comes and goes from tick to tick).
pub const HOST_FORGET: Duration = Duration::from_secs(600);

/// What identifies a host finding across ticks: its id and evidence, but
/// only its id for a measurement whose evidence holds the numbers of one
/// window.
fn host_key(h: &crate::judge::HostFinding) -> (String, String) {
    if h.id == "host.hidden_cpu" {
        (h.id.clone(), String::new())
    } else {
        (h.id.clone(), h.evidence.clone())
    }
}

impl Tracker {
    /// A tracker with a rate cap of its own.
    pub fn new(max_per_minute: u32) -> Self {
        Tracker::with_cap(RateCap::shared(max_per_minute))
    }

    /// A tracker sending under `cap`.
    pub fn with_cap(cap: SharedCap) -> Self {
        Tracker {
            alerted: HashMap::new(),
            host: HashMap::new(),
            cap,
        }
    }

    /// Events dropped by the cap since the start (all senders).
    pub fn dropped(&self) -> u64 {
        lock(&self.cap).dropped()
    }

    fn admit(&self, now: Instant) -> bool {
        lock(&self.cap).admit(now)
    }

    /// The events one tick's report calls for. `alive` holds every process
    /// observed this tick (pid, start time), judged clean or not.
    pub fn update(
        &mut self,
        report: &Report,
        alive: &HashSet<(i32, u64)>,
        time: &str,
        now: Instant,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        let host = report.host.hostname.clone();
        for f in report
            .findings
            .iter()
            .filter(|f| f.level >= Level::Suspicious)
        {
            let key = (f.pid, f.start_time);
            let previous = self.alerted.get(&key).map(|(l, _)| *l);
            if previous.is_some_and(|p| p >= f.level) {
                continue;
            }
            if !self.admit(now) {
                continue;
            }
            self.alerted.insert(key, (f.level, f.process.name.clone()));
            out.push(Event::process_alert(f, previous, time, &host));
        }
        let gone: Vec<(i32, u64)> = self
            .alerted
            .keys()
            .filter(|k| !alive.contains(k))
            .copied()
            .collect();
        for key in gone {
            if let Some((level, name)) = self.alerted.remove(&key) {
                if !self.admit(now) {
                    continue;
                }
                out.push(Event::resolved(key.0, key.1, &name, level, time, &host));
            }
        }
        for h in report
            .host_findings
            .iter()
            .filter(|h| h.level >= Level::Suspicious)
        {
            let key = host_key(h);
            if let Some(seen) = self.host.get_mut(&key) {
                *seen = now;
                continue;
            }
            if !self.admit(now) {
                continue;
            }
            self.host.insert(key, now);
            out.push(Event::host_alert(h, time, &host));
        }
        self.host
            .retain(|_, seen| now.saturating_duration_since(*seen) < HOST_FORGET);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::{Policy, judge};
    use crate::report::event::Severity;
    use crate::snapshot::HostSnapshot;

    fn report(name: &str) -> Report {
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/snapshots/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture");
        let snap: HostSnapshot = serde_json::from_str(&text).expect("parse");
        judge(&snap, &Policy::default())
    }

    fn key(r: &Report) -> HashSet<(i32, u64)> {
        r.findings.iter().map(|f| (f.pid, f.start_time)).collect()
    }

    /// The events of a recorded tick, as every output writes them (native
    /// and ECS field names), against tests/golden/agent-tick.ndjson
    /// (`MINERWATCH_BLESS=1 cargo test` rewrites it): an alert for the
    /// recorded miner, then, a tick later, its resolution.
    #[test]
    fn a_recorded_tick_gives_the_golden_events() {
        use crate::agent::output::{Fields, render_line};
        let mut t = Tracker::new(60);
        let now = Instant::now();
        let r = report("xmrig-pool");
        let mut events = t.update(&r, &key(&r), "2026-11-01T01:00:05Z", now);
        let mut gone = r.clone();
        gone.findings.clear();
        events.extend(t.update(&gone, &HashSet::new(), "2026-11-01T01:00:10Z", now));
        let mut text = String::new();
        for fields in [Fields::Native, Fields::Ecs] {
            for e in &events {
                text.push_str(&render_line(e, fields));
                text.push('\n');
            }
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/agent-tick.ndjson"
        );
        if std::env::var_os("MINERWATCH_BLESS").is_some() {
            std::fs::write(path, &text).expect("bless");
        }
        let golden = std::fs::read_to_string(path).expect("golden (MINERWATCH_BLESS=1 writes it)");
        assert_eq!(text, golden);
    }

    #[test]
    fn alert_once_again_on_rise_and_resolved_on_exit() {
        let mut t = Tracker::new(60);
        let now = Instant::now();
        let mut r = report("xmrig-light");
        let alive = key(&r);
        // First seen as suspicious.
        r.findings[0].level = Level::Suspicious;
        let e = t.update(&r, &alive, "t1", now);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, "alert");
        assert_eq!(e[0].body["level"], "suspicious");
        // Same level: nothing.
        assert!(t.update(&r, &alive, "t2", now).is_empty());
        // Rises to miner: one more, naming the previous level.
        r.findings[0].level = Level::Miner;
        let e = t.update(&r, &alive, "t3", now);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].body["previous_level"], "suspicious");
        assert_eq!(e[0].severity, Severity::Alert);
        assert!(e[0].message.starts_with("miner: pid"), "{}", e[0].message);
        // Falls back: nothing.
        r.findings[0].level = Level::Suspicious;
        assert!(t.update(&r, &alive, "t4", now).is_empty());
        // Exits: resolved.
        r.findings.clear();
        let e = t.update(&r, &HashSet::new(), "t5", now);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, "resolved");
        assert_eq!(e[0].body["last_level"], "miner");
        assert!(t.update(&r, &HashSet::new(), "t6", now).is_empty());
    }

    #[test]
    fn a_host_finding_alerts_once_while_it_comes_and_goes() {
        let mut t = Tracker::new(60);
        let now = Instant::now();
        let mut r = report("xmrig-light");
        r.findings.clear();
        let hidden = |pct: u32| crate::judge::HostFinding {
            id: "host.hidden_cpu".into(),
            level: Level::Suspicious,
            evidence: format!("{pct} % of a core ran in processes we cannot see"),
        };
        r.host_findings = vec![hidden(60)];
        let e = t.update(&r, &HashSet::new(), "t1", now);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].body["host_finding"]["id"], "host.hidden_cpu");
        // Other numbers next tick, gone for a few minutes, back: the same trouble.
        r.host_findings = vec![hidden(75)];
        assert!(
            t.update(&r, &HashSet::new(), "t2", now + Duration::from_secs(5))
                .is_empty()
        );
        let mut quiet = r.clone();
        quiet.host_findings.clear();
        assert!(
            t.update(&quiet, &HashSet::new(), "t3", now + Duration::from_secs(10))
                .is_empty()
        );
        assert!(
            t.update(&r, &HashSet::new(), "t4", now + Duration::from_secs(300))
                .is_empty()
        );
        // Gone for longer than HOST_FORGET: alerted again when it returns.
        let later = now + Duration::from_secs(300) + HOST_FORGET + Duration::from_secs(1);
        assert!(t.update(&quiet, &HashSet::new(), "t5", later).is_empty());
        assert_eq!(t.update(&r, &HashSet::new(), "t6", later).len(), 1);
        // A different finding alerts at once.
        r.host_findings.push(crate::judge::HostFinding {
            id: "host.ld_so_preload".into(),
            level: Level::Suspicious,
            evidence: "/etc/ld.so.preload names /usr/lib/libhide.so".into(),
        });
        assert_eq!(t.update(&r, &HashSet::new(), "t7", later).len(), 1);
    }

    #[test]
    fn rate_cap_drops_and_counts() {
        let mut t = Tracker::new(2);
        let now = Instant::now();
        let base = report("xmrig-light");
        let mut r = base.clone();
        for i in 1..=5 {
            let mut f = base.findings[0].clone();
            f.pid += i;
            r.findings.push(f);
        }
        let alive = key(&r);
        let e = t.update(&r, &alive, "t", now);
        assert_eq!(e.len(), 2);
        assert_eq!(t.dropped(), 4);
        // A minute later the cap has room again.
        let e = t.update(&r, &alive, "t", now + Duration::from_secs(61));
        assert_eq!(e.len(), 2);
    }
}
