//! Report: renders a [`Report`] in the asked format. It never decides.
//!
//! Each format implements [`Render`]; adding one never touches the scan.

pub mod ecs;
pub mod event;
mod markdown;
mod text;

use std::io::{self, Write};

use serde::Serialize;

use crate::judge::{Finding, HostFinding, Level, Report};

pub use markdown::Markdown;
pub use text::Text;

/// Makes text from the host safe to print: control characters (newlines,
/// ANSI escapes) in a command line or file name could otherwise forge lines
/// of a report or drive the terminal, so they are shown escaped (`\n`,
/// `\x1b`); each character of `special` (a format's own syntax) is
/// backslashed.
fn escape(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if special.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// [`escape`] for plain text lines (the summaries of `collect` and
/// `contain`): control characters shown escaped, nothing else changed.
pub fn escape_text(s: &str) -> String {
    escape(s, &[])
}

/// A multi-line message about a file the host handed us (a rule file's
/// compile error): `path` shown escaped wherever it appears, then every
/// line escaped on its own, so the message keeps its lines but a newline
/// or escape in a file name or its source cannot forge or drive anything.
pub fn escape_file_message(message: &str, path: &std::path::Path) -> String {
    let shown = path.display().to_string();
    if shown.is_empty() {
        return escape_lines(message);
    }
    escape_lines(&message.replace(&shown, &escape_text(&shown)))
}

/// Every line of `message` escaped on its own (its newlines kept).
pub fn escape_lines(message: &str) -> String {
    message
        .split('\n')
        .map(escape_text)
        .collect::<Vec<_>>()
        .join("\n")
}

/// An output format.
pub trait Render {
    /// Writes the whole report to `out`.
    fn render(&self, report: &Report, out: &mut dyn Write) -> io::Result<()>;
}

/// `--format json`: one document, schema `minerwatch/1`.
pub struct Json;

impl Render for Json {
    fn render(&self, report: &Report, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)
    }
}

/// `--format ndjson`: one line per finding, then one summary line.
pub struct Ndjson;

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: &'a str,
    #[serde(flatten)]
    body: &'a T,
}

/// Counts of findings per level.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub miner: usize,
    pub suspicious: usize,
    pub notice: usize,
}

impl Counts {
    /// Counts the findings of a report.
    pub fn of(report: &Report) -> Self {
        let mut c = Counts::default();
        for f in &report.findings {
            match f.level {
                Level::Miner => c.miner += 1,
                Level::Suspicious => c.suspicious += 1,
                Level::Notice => c.notice += 1,
                Level::Clean => {}
            }
        }
        c
    }
}

/// What a scan found, in numbers: the NDJSON summary line and the ECS
/// summary event.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub host: &'a crate::snapshot::HostInfo,
    pub started_at: &'a str,
    pub window_secs: f64,
    pub verdict: Level,
    pub counts: Counts,
    pub processes_judged: usize,
    pub scope: &'a [i32],
    pub coverage: &'a crate::snapshot::Coverage,
    /// Files at each level, when a sweep ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_counts: Option<Counts>,
    /// What the sweep read and skipped, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sweep: Option<&'a crate::judge::files::SweepCoverage>,
}

/// `--format ecs`: one Elastic Common Schema document per line, the same
/// mapping as the agent's `fields = "ecs"`: an alert-shaped event for each
/// finding and host finding (at its level's severity), then a summary event.
pub struct Ecs;

impl Render for Ecs {
    fn render(&self, report: &Report, out: &mut dyn Write) -> io::Result<()> {
        let time = &report.started_at;
        let host = &report.host.hostname;
        let mut line = |e: &event::Event| -> io::Result<()> {
            writeln!(out, "{}", event::render_line(e, event::Fields::Ecs))
        };
        for f in &report.findings {
            line(&event::Event::process_alert(f, None, time, host))?;
        }
        for h in &report.host_findings {
            line(&event::Event::host_alert(h, time, host))?;
        }
        for f in &report.file_findings {
            line(&event::Event::swept_file(f, time, host))?;
        }
        line(&event::Event::scan_summary(&summary(report)))
    }
}

fn summary(report: &Report) -> Summary<'_> {
    Summary {
        host: &report.host,
        started_at: &report.started_at,
        window_secs: report.window_secs,
        verdict: report.verdict,
        counts: Counts::of(report),
        processes_judged: report.processes_judged,
        scope: &report.scope,
        coverage: &report.coverage,
        file_counts: report.sweep.as_ref().map(|_| {
            let n = |l: Level| report.file_findings.iter().filter(|f| f.level == l).count();
            Counts {
                miner: n(Level::Miner),
                suspicious: n(Level::Suspicious),
                notice: n(Level::Notice),
            }
        }),
        sweep: report.sweep.as_ref(),
    }
}

impl Render for Ndjson {
    fn render(&self, report: &Report, out: &mut dyn Write) -> io::Result<()> {
        fn line<T: Serialize>(
            out: &mut dyn Write,
            kind: &'static str,
            schema: &str,
            body: &T,
        ) -> io::Result<()> {
            serde_json::to_writer(&mut *out, &Line { kind, schema, body })?;
            writeln!(out)
        }
        for f in &report.findings {
            line::<Finding>(out, "finding", &report.schema, f)?;
        }
        for h in &report.host_findings {
            line::<HostFinding>(out, "host_finding", &report.schema, h)?;
        }
        for f in &report.file_findings {
            line(out, "file_finding", &report.schema, f)?;
        }
        line(out, "summary", &report.schema, &summary(report))
    }
}
