//! Events: what the agent (and `--format ecs`) sends, each a typed body
//! serialized to minerwatch's native JSON (schema `minerwatch/1`), with a
//! severity and a one-line message; [`render`] gives the native or the ECS
//! shape.

use serde::Serialize;
use serde_json::Value;

pub use super::ecs::to_ecs;
use crate::judge::{Finding, HostFinding, Level, ProcessSummary, REPORT_SCHEMA, Signal};

/// How urgent an event is (the RFC 5424 severities minerwatch uses).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// 1: a miner was found; act now.
    Alert,
    /// 3: something in minerwatch itself failed (e.g. rules failed to load).
    Error,
    /// 4: a suspicious process.
    Warning,
    /// 5: worth knowing, not alarming.
    Notice,
    /// 6: a finding resolved, a heartbeat.
    Info,
}

impl Severity {
    /// The RFC 5424 / syslog(3) severity number (also journald's PRIORITY).
    pub fn code(self) -> u8 {
        match self {
            Severity::Alert => 1,
            Severity::Error => 3,
            Severity::Warning => 4,
            Severity::Notice => 5,
            Severity::Info => 6,
        }
    }

    /// The lowercase name, as serialized ("alert", "error", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Alert => "alert",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, built from one of the typed bodies below.
#[derive(Debug, Clone)]
pub struct Event {
    /// "alert", "resolved", "heartbeat", "rules_error", "dropped".
    pub kind: String,
    pub severity: Severity,
    /// One line for humans, e.g. "miner: pid 4242 kdevtmpfsi (/dev/shm/x (deleted)) score 100: rx.rounding_modes, rx.memory_layout".
    pub message: String,
    /// The full event as minerwatch's native JSON (at least "type", "time"
    /// (RFC 3339), "host" (hostname); alerts also "level", "pid", "process"
    /// {name, exe, cmdline [..], user, cpu_percent, container, ancestry, ...},
    /// "score", "signals" [{id, weight, evidence}]).
    pub body: Value,
}

/// Field names: minerwatch's own, or Elastic Common Schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fields {
    #[default]
    Native,
    Ecs,
}

/// The ECS version [`to_ecs`] follows.
pub const ECS_VERSION: &str = "8.11.0";

/// Syslog facility used for every message: daemon (3).
pub const SYSLOG_FACILITY: u8 = 3;

/// The event as a JSON value in the asked shape: the native body, or [`to_ecs`].
pub fn render(event: &Event, fields: Fields) -> Value {
    match fields {
        Fields::Native => event.body.clone(),
        Fields::Ecs => to_ecs(event),
    }
}

/// The event as one compact JSON line, without the trailing newline. Compact
/// JSON escapes control characters, so the line never contains a newline
/// whatever a process calls itself.
pub fn render_line(event: &Event, fields: Fields) -> String {
    match fields {
        Fields::Native => event.body.to_string(),
        Fields::Ecs => to_ecs(event).to_string(),
    }
}

/// An alert about a process: it first reached `suspicious` or `miner`, or
/// its level rose.
#[derive(Debug, Serialize)]
pub struct ProcessAlert<'a> {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: &'a str,
    pub host: &'a str,
    pub level: Level,
    pub previous_level: Option<Level>,
    pub pid: i32,
    pub start_time: u64,
    pub score: u32,
    pub process: &'a ProcessSummary,
    pub signals: &'a [Signal],
    pub allowed: &'a Option<String>,
}

/// An alert about the host (hidden processes, persistence, …).
#[derive(Debug, Serialize)]
pub struct HostAlert<'a> {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: &'a str,
    pub host: &'a str,
    pub level: Level,
    pub host_finding: &'a HostFinding,
}

/// An alerted process has exited.
#[derive(Debug, Serialize)]
pub struct Resolved<'a> {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: &'a str,
    pub host: &'a str,
    pub pid: i32,
    pub start_time: u64,
    pub name: &'a str,
    pub last_level: Level,
}

/// A file that landed in a watched directory and matches the rules.
#[derive(Debug, Serialize)]
pub struct FileAlert<'a> {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: &'a str,
    pub host: &'a str,
    pub level: Level,
    pub file: &'a LandedFile,
}

/// A file on disk that a sweep judged `notice` or above.
#[derive(Debug, Serialize)]
pub struct SweptFileAlert<'a> {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: &'a str,
    pub host: &'a str,
    pub level: Level,
    pub score: u32,
    pub file: &'a crate::judge::files::FileFinding,
    pub signals: &'a [crate::judge::signals::Signal],
}

/// The file of a [`FileAlert`].
#[derive(Debug, Clone, Serialize)]
pub struct LandedFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Read only up to the per-file cap.
    pub truncated: bool,
    pub uid: u32,
    /// Octal permission bits, e.g. "755".
    pub mode: String,
    pub matches: Vec<crate::snapshot::RuleMatch>,
    /// Set when an allow rule capped the alert: the rule's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<String>,
}

/// The agent's own figures, every `agent.heartbeat_secs`.
#[derive(Debug, Serialize)]
pub struct Heartbeat<'a> {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: &'a str,
    pub host: &'a str,
    pub ticks: u64,
    pub processes: usize,
    pub tick_ms: u64,
    pub cpu_percent: f64,
    pub rss_kib: u64,
    pub rules_hash: &'a str,
    pub binaries_cached: usize,
    pub dropped_events: u64,
    /// Every output that failed to take an event since the agent started:
    /// what was lost and where (the outputs that work carry this news).
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub output_losses: &'a [OutputLoss],
}

/// Events an output could not take.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OutputLoss {
    /// The output, e.g. `file /var/log/minerwatch/events.ndjson`.
    pub output: String,
    /// Events it lost since the agent started (they overflowed its queue,
    /// or were still queued when a reload dropped it or the agent stopped).
    pub lost: u64,
    /// Events it holds, waiting to take them.
    pub queued: u64,
    /// Whether its last attempt failed (false: it has recovered).
    pub failing: bool,
    /// Its last error.
    pub last_error: String,
}

/// The agent froze a `miner` process tree and collected its evidence
/// (`[contain] freeze_on_miner`), or tried to.
#[derive(Debug, Serialize)]
pub struct Contained<'a> {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: &'a str,
    pub host: &'a str,
    pub pid: i32,
    pub start_time: u64,
    pub process: &'a str,
    /// The processes frozen.
    pub frozen: &'a [i32],
    /// How: cgroup freezer or SIGSTOP.
    pub method: &'a str,
    /// The evidence bundle written.
    pub bundle: Option<&'a str>,
    /// What failed, if anything.
    pub error: Option<&'a str>,
}

/// A reload of rules or config failed; the last good ones stay.
#[derive(Debug, Serialize)]
pub struct RulesError<'a> {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: &'a str,
    pub error: &'a str,
}

/// How urgent an alert at `level` is.
pub fn severity(level: Level) -> Severity {
    match level {
        Level::Miner => Severity::Alert,
        Level::Suspicious => Severity::Warning,
        Level::Notice => Severity::Notice,
        Level::Clean => Severity::Info,
    }
}

fn event(kind: &str, severity: Severity, message: String, body: impl Serialize) -> Event {
    Event {
        kind: kind.to_string(),
        severity,
        message,
        // Plain structs of strings, numbers and lists: serializing cannot fail.
        body: serde_json::to_value(body).unwrap_or(Value::Null),
    }
}

impl Event {
    /// An alert about the process of `f`, previously alerted at `previous`.
    pub fn process_alert(f: &Finding, previous: Option<Level>, time: &str, host: &str) -> Event {
        let ids: Vec<&str> = f.signals.iter().take(4).map(|s| s.id.as_str()).collect();
        let message = format!(
            "{}: pid {} {} ({}) score {}: {}",
            f.level,
            f.pid,
            f.process.name,
            f.process.exe.as_deref().unwrap_or("no executable"),
            f.score,
            ids.join(", ")
        );
        event(
            "alert",
            severity(f.level),
            message,
            ProcessAlert {
                schema: REPORT_SCHEMA,
                kind: "alert",
                time,
                host,
                level: f.level,
                previous_level: previous,
                pid: f.pid,
                start_time: f.start_time,
                score: f.score,
                process: &f.process,
                signals: &f.signals,
                allowed: &f.allowed,
            },
        )
    }

    /// An alert about a host finding.
    pub fn host_alert(h: &HostFinding, time: &str, host: &str) -> Event {
        event(
            "alert",
            severity(h.level),
            format!("{} {}: {}", h.level, h.id, h.evidence),
            HostAlert {
                schema: REPORT_SCHEMA,
                kind: "alert",
                time,
                host,
                level: h.level,
                host_finding: h,
            },
        )
    }

    /// A swept file judged `notice` or above.
    pub fn swept_file(f: &crate::judge::files::FileFinding, time: &str, host: &str) -> Event {
        let ids: Vec<&str> = f.signals.iter().map(|s| s.id.as_str()).collect();
        event(
            "alert",
            severity(f.level),
            format!(
                "{}: file {} score {}: {}",
                f.level,
                f.file.path,
                f.score,
                ids.join(", ")
            ),
            SweptFileAlert {
                schema: REPORT_SCHEMA,
                kind: "alert",
                time,
                host,
                level: f.level,
                score: f.score,
                file: f,
                signals: &f.signals,
            },
        )
    }

    /// An alerted process (`pid`, `start_time`, named `name`) has exited.
    pub fn resolved(
        pid: i32,
        start_time: u64,
        name: &str,
        last_level: Level,
        time: &str,
        host: &str,
    ) -> Event {
        event(
            "resolved",
            Severity::Info,
            format!("resolved: pid {pid} {name} ({last_level}) has exited"),
            Resolved {
                schema: REPORT_SCHEMA,
                kind: "resolved",
                time,
                host,
                pid,
                start_time,
                name,
                last_level,
            },
        )
    }

    /// A landed file that matches the rules, judged at `level`.
    pub fn file_alert(file: &LandedFile, level: Level, time: &str, host: &str) -> Event {
        let rules: Vec<String> = file
            .matches
            .iter()
            .map(|m| format!("{} ({})", m.rule, m.category))
            .collect();
        event(
            "alert",
            severity(level),
            format!(
                "{level}: file {} landed and matches {}",
                file.path,
                rules.join(", ")
            ),
            FileAlert {
                schema: REPORT_SCHEMA,
                kind: "alert",
                time,
                host,
                level,
                file,
            },
        )
    }

    /// The agent's heartbeat.
    pub fn heartbeat(h: &Heartbeat<'_>) -> Event {
        event(
            "heartbeat",
            Severity::Info,
            format!(
                "heartbeat: {} processes, tick {} ms, {} events dropped",
                h.processes, h.tick_ms, h.dropped_events
            ),
            h,
        )
    }

    /// The summary of a scan (`--format ecs`).
    pub fn scan_summary(summary: &super::Summary<'_>) -> Event {
        #[derive(Serialize)]
        struct Body<'a> {
            schema: &'static str,
            #[serde(rename = "type")]
            kind: &'static str,
            time: &'a str,
            host: &'a str,
            #[serde(flatten)]
            summary: &'a super::Summary<'a>,
        }
        let c = summary.counts;
        event(
            "summary",
            severity(summary.verdict),
            format!(
                "scan: {}: {} miner, {} suspicious, {} notice among {} processes",
                summary.verdict, c.miner, c.suspicious, c.notice, summary.processes_judged
            ),
            Body {
                schema: REPORT_SCHEMA,
                kind: "summary",
                time: summary.started_at,
                host: &summary.host.hostname,
                summary,
            },
        )
    }

    /// A tree frozen and collected by the agent.
    pub fn contained(c: &Contained<'_>) -> Event {
        let message = match (c.error, c.bundle) {
            (None, Some(b)) => format!(
                "contained: pid {} {} frozen ({}, {} processes), evidence in {b}",
                c.pid,
                c.process,
                c.method,
                c.frozen.len()
            ),
            (e, _) => format!(
                "contain failed: pid {} {}: {}",
                c.pid,
                c.process,
                e.unwrap_or("no bundle written")
            ),
        };
        let severity = if c.error.is_some() {
            Severity::Error
        } else {
            Severity::Alert
        };
        event("contained", severity, message, c)
    }

    /// A failed reload.
    pub fn rules_error(error: &str, time: &str) -> Event {
        event(
            "rules_error",
            Severity::Error,
            format!("reload failed, keeping the last good rules and config: {error}"),
            RulesError {
                schema: REPORT_SCHEMA,
                kind: "rules_error",
                time,
                error,
            },
        )
    }
}

/// Events the sinks' tests send.
#[cfg(test)]
pub(crate) mod samples {
    use super::*;
    use serde_json::json;

    pub(crate) fn alert() -> Event {
        Event {
            kind: "alert".into(),
            severity: Severity::Alert,
            message: "miner: pid 4242 kdevtmpfsi (/dev/shm/x (deleted)) score 100: rx.rounding_modes, rx.memory_layout".into(),
            body: json!({
                "type": "alert",
                "time": "2024-05-01T12:00:00.123456789Z",
                "host": "web-01",
                "level": "miner",
                "pid": 4242,
                "start_time": 123456,
                "process": {
                    "name": "kdevtmpfsi",
                    "exe": "/dev/shm/x (deleted)",
                    "cmdline": ["kdevtmpfsi", "-o", "pool.example:3333", "--pass=ü"],
                    "user": "www-data",
                    "cpu_percent": 196.5,
                    "threads": 3,
                    "container": "3f2a9c",
                    "ancestry": [{"pid": 1200, "name": "php-fpm"}, {"pid": 1, "name": "systemd"}]
                },
                "score": 100,
                "signals": [
                    {"id": "rx.rounding_modes", "weight": 60, "evidence": "3 FPU rounding modes seen across 5 samples"},
                    {"id": "rx.memory_layout", "weight": 50, "evidence": "anonymous rw mapping of 2080 MiB at 7f00; RandomX dataset size"}
                ]
            }),
        }
    }

    pub(crate) fn heartbeat(n: u64) -> Event {
        Event {
            kind: "heartbeat".into(),
            severity: Severity::Info,
            message: format!("heartbeat {n}"),
            body: json!({"type": "heartbeat", "time": "2024-05-01T12:00:00Z", "host": "web-01", "seq": n}),
        }
    }
}
