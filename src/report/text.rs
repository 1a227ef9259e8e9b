//! The human table: one row per finding, its evidence beneath, a summary.

use std::io::{self, Write};

use super::{Counts, Render};
use crate::judge::files::FileFinding;
use crate::judge::{Finding, Kind, Level, Report};

/// `--format text`.
pub struct Text {
    /// Use ANSI colours (only on a TTY, and never with NO_COLOR).
    pub color: bool,
    /// Print every signal of every finding, not only the strongest three.
    pub verbose: bool,
}

const SHOWN_SIGNALS: usize = 3;

impl Text {
    fn paint(&self, level: Level, s: &str) -> String {
        if !self.color {
            return s.to_string();
        }
        let code = match level {
            Level::Miner => "1;31",
            Level::Suspicious => "1;33",
            Level::Notice => "36",
            Level::Clean => "32",
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    }

    fn finding(&self, f: &Finding, out: &mut dyn Write) -> io::Result<()> {
        let p = &f.process;
        let user = p.user.clone().unwrap_or_else(|| p.uid.to_string());
        let level = format!("{:<10}", f.level.as_str().to_uppercase());
        writeln!(
            out,
            "{} {:>5} {:>7}  {:<10} {:>6.1}  {}",
            self.paint(f.level, &level),
            f.score,
            f.pid,
            truncate(&user, 10),
            p.cpu_percent,
            clean(&p.name)
        )?;
        let indent = "      ";
        if let Some(exe) = &p.exe {
            writeln!(out, "{indent}exe      {}", clean(exe))?;
        }
        if !p.cmdline.is_empty() {
            writeln!(
                out,
                "{indent}cmdline  {}",
                truncate(&p.cmdline.join(" "), 160)
            )?;
        }
        if !p.ancestry.is_empty() {
            let chain: Vec<String> = p
                .ancestry
                .iter()
                .map(|a| format!("{}({})", clean(&a.name), a.pid))
                .collect();
            writeln!(out, "{indent}parents  {}", chain.join(" < "))?;
        }
        if let Some(c) = &p.container {
            writeln!(out, "{indent}container {}", clean(c))?;
        }
        if let Some(reason) = &f.allowed {
            writeln!(out, "{indent}allowed  {}", clean(reason))?;
        }
        // Evidence against (it comes first) is always shown, beside the
        // strongest evidence for.
        let against = f
            .signals
            .iter()
            .take_while(|s| s.kind == Kind::Against)
            .count();
        let shown = if self.verbose || f.level >= Level::Suspicious {
            f.signals.len()
        } else {
            (against + SHOWN_SIGNALS).min(f.signals.len())
        };
        let signals = &f.signals;
        for s in &signals[..shown] {
            let weight = if s.kind == Kind::Against {
                "-".to_string()
            } else {
                format!("+{}", s.weight)
            };
            writeln!(
                out,
                "{indent}{weight:<4} {:<24} {}",
                s.id,
                clean(&s.evidence)
            )?;
        }
        if shown < signals.len() {
            writeln!(
                out,
                "{indent}… {} more (--format json shows all)",
                signals.len() - shown
            )?;
        }
        Ok(())
    }
}

impl Text {
    fn file(&self, f: &FileFinding, out: &mut dyn Write) -> io::Result<()> {
        let level = format!("{:<10}", f.level.as_str().to_uppercase());
        writeln!(
            out,
            "{} {:>5}  {}",
            self.paint(f.level, &level),
            f.score,
            clean(&f.file.path)
        )?;
        let indent = "      ";
        writeln!(
            out,
            "{indent}file     {} bytes{}, modified {}, uid {}, mode {:04o}",
            f.file.size,
            if f.file.truncated {
                " (read in part)"
            } else {
                ""
            },
            clean(&f.file.mtime),
            f.file.uid,
            f.file.mode
        )?;
        writeln!(out, "{indent}sha256   {}", f.file.sha256)?;
        if let Some(reason) = &f.allowed {
            writeln!(out, "{indent}allowed  {}", clean(reason))?;
        }
        for s in &f.signals {
            writeln!(
                out,
                "{indent}+{:<3} {:<24} {}",
                s.weight,
                s.id,
                clean(&s.evidence)
            )?;
        }
        Ok(())
    }
}

/// Text from the host for a terminal: control characters escaped.
fn clean(s: &str) -> String {
    super::escape(s, &[])
}

fn truncate(s: &str, n: usize) -> String {
    let s = clean(s);
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

impl Render for Text {
    fn render(&self, report: &Report, out: &mut dyn Write) -> io::Result<()> {
        if !report.findings.is_empty() {
            writeln!(
                out,
                "LEVEL      SCORE     PID  USER           CPU%  PROCESS / EVIDENCE"
            )?;
            for f in &report.findings {
                self.finding(f, out)?;
                writeln!(out)?;
            }
        }
        if !report.file_findings.is_empty() {
            writeln!(out, "LEVEL      SCORE  FILE / EVIDENCE")?;
            for f in &report.file_findings {
                self.file(f, out)?;
                writeln!(out)?;
            }
        }
        for h in &report.host_findings {
            writeln!(
                out,
                "HOST {} {}: {}",
                self.paint(h.level, h.level.as_str()),
                h.id,
                h.evidence
            )?;
        }
        let c = Counts::of(report);
        let cov = &report.coverage;
        let scope = if report.scope.is_empty() {
            String::new()
        } else {
            let pids: Vec<String> = report.scope.iter().map(i32::to_string).collect();
            let host = if report.scoped_host_checks {
                "; host checks about them only"
            } else {
                ""
            };
            format!(" (scope: --pid {} and descendants{host})", pids.join(", "))
        };
        if report.sweep.is_some() && report.processes_judged == 0 {
            let n = |l: Level| report.file_findings.iter().filter(|f| f.level == l).count();
            writeln!(
                out,
                "verdict: {}  ({} miner, {} suspicious, {} notice among the files swept on {})",
                self.paint(report.verdict, report.verdict.as_str()),
                n(Level::Miner),
                n(Level::Suspicious),
                n(Level::Notice),
                clean(&report.host.hostname),
            )?;
        } else {
            writeln!(
                out,
                "verdict: {}  ({} miner, {} suspicious, {} notice among {} processes on {}, {:.1} s window){scope}",
                self.paint(report.verdict, report.verdict.as_str()),
                c.miner,
                c.suspicious,
                c.notice,
                report.processes_judged,
                clean(&report.host.hostname),
                report.window_secs,
            )?;
        }
        if let Some(sw) = &report.sweep {
            let skipped: u64 = sw.skipped.values().sum();
            let reasons: Vec<String> = sw
                .skipped
                .iter()
                .map(|(r, n)| format!("{n} {}", clean(r)))
                .collect();
            let n = |l: Level| report.file_findings.iter().filter(|f| f.level == l).count();
            writeln!(
                out,
                "sweep: {} miner, {} suspicious, {} notice among {} files read ({:.1} MiB) in {} roots; {} not read or read in part{}",
                n(Level::Miner),
                n(Level::Suspicious),
                n(Level::Notice),
                sw.files_read,
                sw.bytes_read as f64 / (1024.0 * 1024.0),
                sw.roots.len(),
                skipped,
                if reasons.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", reasons.join(", "))
                }
            )?;
        }
        writeln!(
            out,
            "coverage: {} processes, {} inaccessible, {} vanished, {} read errors",
            cov.processes,
            cov.inaccessible,
            cov.vanished,
            cov.errors.len()
        )?;
        if let Some(i) = &report.incomplete {
            let refused = if i.refused.is_empty() {
                String::new()
            } else {
                format!(" (refused: {})", clean(&i.refused.join(", ")))
            };
            writeln!(
                out,
                "{}: {} of {} processes in scope could not be read{refused}; the verdict covers only what was read. To see them: {}",
                self.paint(Level::Suspicious, "incomplete"),
                i.processes,
                i.of,
                clean(&i.fix)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("a\nb\x1b[31mc\t"), "a\\nb\\x1b[31mc\\t");
        assert_eq!(clean("plain [kworker/0:1]"), "plain [kworker/0:1]");
    }
}
