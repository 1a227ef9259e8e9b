//! `--format markdown`: a report for the case file. The verdict and where it
//! was taken, a table of findings, each finding with its process, its
//! process tree and every piece of evidence, the host findings, a timeline
//! and what the scan could not read. Everything from the host is escaped:
//! a command line cannot forge a table row, a heading or a link.

use std::io::{self, Write};

use super::{Counts, Render};
use crate::judge::{Finding, Kind, Report, Strength};

/// `--format markdown`.
pub struct Markdown;

/// A command line is cut after this many characters: one process can pass
/// megabytes of arguments, and a report is read by people.
const COMMAND_LINE_CHARS: usize = 4096;

/// The command line, escaped, cut at [`COMMAND_LINE_CHARS`] with the rest
/// counted (the JSON report and the snapshot keep it whole).
fn command_line(args: &[String]) -> String {
    let line = args.join(" ");
    let total = line.chars().count();
    if total <= COMMAND_LINE_CHARS {
        return md(&line);
    }
    let head: String = line.chars().take(COMMAND_LINE_CHARS).collect();
    format!(
        "{}… ({} more characters; the JSON report has them all)",
        md(&head),
        total - COMMAND_LINE_CHARS
    )
}

/// Text from the host for a table cell or a line: control characters shown
/// escaped (as in the text format), Markdown's own characters backslashed.
fn md(s: &str) -> String {
    super::escape(
        s,
        &[
            '\\', '`', '*', '_', '[', ']', '<', '>', '|', '#', '!', '~', '&',
        ],
    )
}

fn strength(s: Strength) -> &'static str {
    match s {
        Strength::Weak => "weak",
        Strength::Medium => "medium",
        Strength::Strong => "strong",
    }
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Activity => "activity",
        Kind::Capability => "capability",
        Kind::Shape => "shape",
        Kind::Stealth => "stealth",
        Kind::Intent => "intent",
        Kind::Against => "against",
    }
}

/// When a process started, from the boot time and its start in clock
/// ticks since boot; `None` when the report does not say.
fn started_at(report: &Report, start_ticks: u64) -> Option<jiff::Timestamp> {
    let boot: jiff::Timestamp = report.host.boot_time.parse().ok()?;
    let hz = report.host.clock_ticks.max(1);
    let secs = i64::try_from(start_ticks / hz).ok()?;
    let nanos = i64::try_from((start_ticks % hz) * 1_000_000_000 / hz).ok()?;
    boot.checked_add(jiff::SignedDuration::new(secs, nanos as i32))
        .ok()
}

fn when(t: Option<jiff::Timestamp>) -> String {
    t.map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

impl Markdown {
    fn finding(&self, report: &Report, f: &Finding, out: &mut dyn Write) -> io::Result<()> {
        let p = &f.process;
        writeln!(
            out,
            "### PID {} {}: {} (score {})\n",
            f.pid,
            md(&p.name),
            f.level,
            f.score
        )?;
        let user = p.user.as_deref().map(md).unwrap_or_default();
        let mut rows: Vec<(&str, String)> = vec![
            ("started", when(started_at(report, f.start_time))),
            (
                "executable",
                p.exe.as_deref().map(md).unwrap_or_else(|| "unknown".into()),
            ),
            (
                "executable SHA-256",
                p.exe_sha256.clone().unwrap_or_else(|| "not read".into()),
            ),
            ("command line", command_line(&p.cmdline)),
            ("user", format!("{user} (uid {})", p.uid)),
            (
                "CPU",
                format!("{:.1} % of a core, {} threads", p.cpu_percent, p.threads),
            ),
        ];
        if let Some(cwd) = &p.cwd {
            rows.push(("working directory", md(cwd)));
        }
        if let Some(c) = &p.container {
            rows.push(("container", md(c)));
        }
        let mut tree: Vec<String> = p
            .ancestry
            .iter()
            .rev()
            .map(|a| format!("{} ({})", md(&a.name), a.pid))
            .collect();
        tree.push(format!("**{} ({})**", md(&p.name), f.pid));
        rows.push(("process tree", tree.join(" → ")));
        if let Some(reason) = &f.allowed {
            rows.push(("allowed", md(reason)));
        }
        writeln!(out, "| | |\n|---|---|")?;
        for (k, v) in rows {
            writeln!(out, "| {k} | {v} |")?;
        }
        writeln!(
            out,
            "\n| signal | strength | kind | weight | evidence |\n|---|---|---|---|---|"
        )?;
        for s in &f.signals {
            let weight = if s.kind == Kind::Against {
                "–".to_string()
            } else {
                format!("+{}", s.weight)
            };
            writeln!(
                out,
                "| `{}` | {} | {} | {weight} | {} |",
                s.id.replace('`', "'"),
                strength(s.strength),
                kind(s.kind),
                md(&s.evidence)
            )?;
        }
        writeln!(out)
    }
}

impl Render for Markdown {
    fn render(&self, report: &Report, out: &mut dyn Write) -> io::Result<()> {
        let c = Counts::of(report);
        let cov = &report.coverage;
        let host = &report.host;
        writeln!(
            out,
            "# minerwatch report: {}, {}\n",
            md(&host.hostname),
            report.verdict
        )?;
        let scope = if report.scope.is_empty() {
            "the whole host".to_string()
        } else {
            let pids: Vec<String> = report.scope.iter().map(i32::to_string).collect();
            let host = if report.scoped_host_checks {
                " (host-wide checks: only those about them; `--host-checks` for all)"
            } else {
                ""
            };
            format!("--pid {} and descendants{host}", pids.join(", "))
        };
        writeln!(out, "| | |\n|---|---|")?;
        let sweep_only = report.sweep.is_some() && report.processes_judged == 0;
        if sweep_only {
            let n = |l| report.file_findings.iter().filter(|f| f.level == l).count();
            writeln!(
                out,
                "| verdict | **{}**: {} miner, {} suspicious, {} notice among the files swept |",
                report.verdict,
                n(crate::judge::Level::Miner),
                n(crate::judge::Level::Suspicious),
                n(crate::judge::Level::Notice)
            )?;
        } else {
            writeln!(
                out,
                "| verdict | **{}**: {} miner, {} suspicious, {} notice among {} processes |",
                report.verdict, c.miner, c.suspicious, c.notice, report.processes_judged
            )?;
        }
        writeln!(
            out,
            "| host | {}, kernel {}, {} CPUs, booted {} |",
            md(&host.hostname),
            md(&host.kernel),
            host.cpus,
            md(&host.boot_time)
        )?;
        if sweep_only {
            writeln!(out, "| sweep | started {} |", md(&report.started_at))?;
        } else {
            writeln!(
                out,
                "| scan | started {}, {:.1} s window, scope: {scope} |",
                md(&report.started_at),
                report.window_secs
            )?;
        }
        writeln!(
            out,
            "| coverage | {} processes, {} inaccessible, {} vanished, {} read errors |",
            cov.processes,
            cov.inaccessible,
            cov.vanished,
            cov.errors.len()
        )?;
        if let Some(i) = &report.incomplete {
            writeln!(
                out,
                "| **incomplete** | {} of {} processes in scope could not be read (refused: {}); the verdict covers only what was read. To see them: {} |",
                i.processes,
                i.of,
                md(&i.refused.join(", ")),
                md(&i.fix)
            )?;
        }
        writeln!(out, "| report schema | {} |\n", md(&report.schema))?;

        writeln!(out, "## Findings\n")?;
        if report.findings.is_empty() {
            writeln!(out, "No process at `notice` or above.\n")?;
        } else {
            writeln!(
                out,
                "| level | score | pid | user | CPU % | process | executable |\n|---|---|---|---|---|---|---|"
            )?;
            for f in &report.findings {
                let p = &f.process;
                writeln!(
                    out,
                    "| **{}** | {} | {} | {} | {:.1} | {} | {} |",
                    f.level,
                    f.score,
                    f.pid,
                    p.user
                        .as_deref()
                        .map(md)
                        .unwrap_or_else(|| p.uid.to_string()),
                    p.cpu_percent,
                    md(&p.name),
                    p.exe.as_deref().map(md).unwrap_or_default()
                )?;
            }
            writeln!(out)?;
            for f in &report.findings {
                self.finding(report, f, out)?;
            }
        }

        writeln!(out, "## Host findings\n")?;
        if report.host_findings.is_empty() {
            writeln!(out, "None.\n")?;
        } else {
            writeln!(out, "| level | finding | evidence |\n|---|---|---|")?;
            for h in &report.host_findings {
                writeln!(
                    out,
                    "| **{}** | `{}` | {} |",
                    h.level,
                    h.id.replace('`', "'"),
                    md(&h.evidence)
                )?;
            }
            writeln!(out)?;
        }

        if let Some(sw) = &report.sweep {
            writeln!(out, "## Files\n")?;
            let skipped: u64 = sw.skipped.values().sum();
            writeln!(
                out,
                "Swept {} ({} files read, {:.1} MiB, at most {} bytes of each; {} not read or read in part).\n",
                sw.roots
                    .iter()
                    .map(|r| md(r))
                    .collect::<Vec<_>>()
                    .join(", "),
                sw.files_read,
                sw.bytes_read as f64 / (1024.0 * 1024.0),
                sw.max_file_size,
                skipped
            )?;
            if report.file_findings.is_empty() {
                writeln!(out, "No file at `notice` or above.\n")?;
            } else {
                writeln!(
                    out,
                    "| level | score | file | size | modified | uid | mode | SHA-256 | launched by |\n|---|---|---|---|---|---|---|---|---|"
                )?;
                for f in &report.file_findings {
                    writeln!(
                        out,
                        "| **{}** | {} | {} | {}{} | {} | {} | {:04o} | `{}` | {} |",
                        f.level,
                        f.score,
                        md(&f.file.path),
                        f.file.size,
                        if f.file.truncated {
                            " (read in part)"
                        } else {
                            ""
                        },
                        md(&f.file.mtime),
                        f.file.uid,
                        f.file.mode,
                        f.file.sha256,
                        f.launched_by
                            .iter()
                            .map(|l| md(l))
                            .collect::<Vec<_>>()
                            .join("; ")
                    )?;
                }
                writeln!(out)?;
                for f in &report.file_findings {
                    writeln!(
                        out,
                        "### {}: {} (score {})\n",
                        md(&f.file.path),
                        f.level,
                        f.score
                    )?;
                    if let Some(reason) = &f.allowed {
                        writeln!(out, "Allowed: {}\n", md(reason))?;
                    }
                    writeln!(
                        out,
                        "| signal | strength | kind | weight | evidence |\n|---|---|---|---|---|"
                    )?;
                    for s in &f.signals {
                        writeln!(
                            out,
                            "| `{}` | {} | {} | +{} | {} |",
                            s.id.replace('`', "'"),
                            strength(s.strength),
                            kind(s.kind),
                            s.weight,
                            md(&s.evidence)
                        )?;
                    }
                    writeln!(out)?;
                }
            }
            if !sw.skipped.is_empty() {
                writeln!(out, "| not read | files |\n|---|---|")?;
                for (reason, n) in &sw.skipped {
                    writeln!(out, "| {} | {n} |", md(reason))?;
                }
                writeln!(out)?;
            }
        }

        writeln!(out, "## Timeline (UTC)\n")?;
        let mut events: Vec<(Option<jiff::Timestamp>, String)> = Vec::new();
        events.push((host.boot_time.parse().ok(), "host booted".to_string()));
        for f in &report.findings {
            events.push((
                started_at(report, f.start_time),
                format!(
                    "PID {} {} started ({}, now {})",
                    f.pid,
                    md(&f.process.name),
                    f.process
                        .exe
                        .as_deref()
                        .map(md)
                        .unwrap_or_else(|| "executable unknown".into()),
                    f.level
                ),
            ));
        }
        for f in &report.file_findings {
            events.push((
                f.file.mtime.parse().ok(),
                format!("{} last modified (now {})", md(&f.file.path), f.level),
            ));
        }
        events.push((
            report.started_at.parse().ok(),
            if report.sweep.is_some() && report.processes_judged == 0 {
                "sweep started".to_string()
            } else {
                format!("scan started ({:.1} s window)", report.window_secs)
            },
        ));
        // Unknown times first; equal ones keep the order above.
        events.sort_by_key(|(t, _)| *t);
        writeln!(out, "| time | event |\n|---|---|")?;
        for (t, e) in &events {
            writeln!(out, "| {} | {e} |", when(*t))?;
        }
        writeln!(out)?;

        if !cov.errors.is_empty() {
            writeln!(out, "## What could not be read\n")?;
            writeln!(out, "| pid | what | error |\n|---|---|---|")?;
            for e in &cov.errors {
                writeln!(
                    out,
                    "| {} | {} | {} |",
                    e.pid.map(|p| p.to_string()).unwrap_or_else(|| "–".into()),
                    md(&e.what),
                    md(&e.error)
                )?;
            }
            writeln!(out)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::md;

    #[test]
    fn host_text_cannot_forge_markdown() {
        assert_eq!(md("a|b\n# x"), "a\\|b\\n\\# x");
        assert_eq!(
            md("[l](http://x) `c` <b>"),
            "\\[l\\](http://x) \\`c\\` \\<b\\>"
        );
        assert_eq!(md("\x1b[31m"), "\\x1b\\[31m");
    }
}
