//! Report: renders a [`Report`] in the asked format. It never decides.
//!
//! Each format implements [`Render`]; adding one never touches the scan.

mod text;

use std::io::{self, Write};

use serde::Serialize;

use crate::judge::{Finding, HostFinding, Level, Report};

pub use text::Text;

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

#[derive(Serialize)]
struct Summary<'a> {
    host: &'a crate::snapshot::HostInfo,
    started_at: &'a str,
    window_secs: f64,
    verdict: Level,
    counts: Counts,
    processes_judged: usize,
    scope: &'a [i32],
    coverage: &'a crate::snapshot::Coverage,
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
        let summary = Summary {
            host: &report.host,
            started_at: &report.started_at,
            window_secs: report.window_secs,
            verdict: report.verdict,
            counts: Counts::of(report),
            processes_judged: report.processes_judged,
            scope: &report.scope,
            coverage: &report.coverage,
        };
        line(out, "summary", &report.schema, &summary)
    }
}
