//! The commands: validate settings once, run the pipeline, pick the exit code.
//!
//! Exit codes (as clamscan): 0 nothing at or above `--fail-on`, 1 at least
//! one finding at or above it, 2 the command itself failed.

use std::fs;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use minerwatch::cli::{
    ActionFormat, AnalyzeArgs, Cli, CollectArgs, Command, ConfigCommand, ContainArgs, Format,
    JudgeArgs, OutputArgs, RulesCommand, ScanArgs, SweepArgs,
};
use minerwatch::judge::{self, Level, Report};
use minerwatch::observe::{self, files};
use minerwatch::report::{Ecs, Json, Markdown, Ndjson, Render, Text};
use minerwatch::respond::{bundle, contain as containment};
use minerwatch::settings::{ScanFlags, Settings};
use minerwatch::signatures::Signatures;
use minerwatch::snapshot::{HostSnapshot, SNAPSHOT_SCHEMA};

/// Largest snapshot `analyze` reads.
const MAX_SNAPSHOT_BYTES: u64 = 512 * 1024 * 1024;

/// The outcome of a command that ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing at or above the threshold (exit 0).
    Clean,
    /// A finding at or above the threshold, or a failed rules check (exit 1).
    Found,
    /// Nothing found, but processes in scope could not be read (exit 2, as
    /// ripgrep does for partial errors).
    Incomplete,
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Clean => 0.into(),
            Outcome::Found => 1.into(),
            Outcome::Incomplete => 2.into(),
        }
    }
}

/// Diagnostics go to stderr (coloured on a terminal unless `NO_COLOR` is
/// set); `MINERWATCH_LOG` overrides `-v`.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MINERWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only on a terminal: under systemd stderr is the journal, and
    // escape codes there reach every log shipper as text.
    let ansi = io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Scan(args) => scan(args),
        Command::Analyze(args) => analyze(args),
        Command::Sweep(args) => sweep(args),
        Command::Collect(args) => collect(args),
        Command::Contain(args) => contain(args),
        Command::Rules(RulesCommand::Check { dir }) => rules_check(dir.as_deref()),
        Command::Agent(args) => {
            let overrides = minerwatch::agent::Overrides {
                proc_root: args.proc_root,
                root: args.root,
            };
            minerwatch::agent::run(args.config.as_deref(), args.ticks, &overrides)?;
            Ok(Outcome::Clean)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "minerwatch", &mut buf);
            write_stdout(&buf)?;
            Ok(Outcome::Clean)
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut buf = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
            write_stdout(&buf)?;
            Ok(Outcome::Clean)
        }
        Command::Config(ConfigCommand::Check { config }) => {
            let (_, files) = minerwatch::config::Config::load(config.as_deref())?;
            let shown: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            println!(
                "config OK ({})",
                if shown.is_empty() {
                    "embedded defaults".to_string()
                } else {
                    shown.join(", ")
                }
            );
            Ok(Outcome::Clean)
        }
        Command::Config(ConfigCommand::Show { config }) => {
            let (c, _) = minerwatch::config::Config::load(config.as_deref())?;
            print!("{}", c.to_toml());
            Ok(Outcome::Clean)
        }
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not a failure.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(anyhow!("writing to stdout: {e}")),
        _ => Ok(()),
    }
}

/// The embedded rules and those in `dir`; a rule file that does not compile
/// is a warning naming it, the rest load.
fn load_rules(dir: Option<&Path>) -> Result<Signatures> {
    let rules = Signatures::load(dir)?;
    for f in rules.files() {
        if let Some(e) = &f.error {
            eprintln!(
                "minerwatch: warning: skipped rule file: {}",
                minerwatch::report::escape_file_message(e, &f.path)
            );
        }
    }
    Ok(rules)
}

fn scan(args: ScanArgs) -> Result<Outcome> {
    let settings = Settings::scan(&ScanFlags {
        window: &args.window,
        pids: &args.pids,
        rules: args.rules.as_deref(),
        config: args.config.as_deref(),
        no_memory: args.no_memory,
        no_ptrace: args.no_ptrace,
        host_checks: args.host_checks,
        root: &args.root,
        proc_root: &args.proc_root,
    })?;
    let rules = load_rules(settings.rules_dir.as_deref())?;
    let save = args.save.as_deref().map(PendingFile::create).transpose()?;
    minerwatch::sys::raise_fd_limit();
    let mut snapshot = observe::observe(&settings.observe, &rules)?;
    if args.sweep {
        let h = &snapshot.host_facts;
        let opts = observe::sweep::SweepOptions {
            roots: observe::sweep::default_roots(
                &args.root,
                &h.persistence,
                h.ld_so_preload.as_ref(),
            ),
            root: args.root.clone(),
            max_file_size: observe::sweep::DEFAULT_MAX_FILE_SIZE,
            cross_fs: false,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            hashes: Default::default(),
            cpu_limit: None,
            progress: false,
        };
        snapshot.sweep = Some(observe::sweep::sweep(&opts, &rules));
    }
    if let Some(save) = save {
        let json = serde_json::to_vec_pretty(&snapshot).context("serializing the snapshot")?;
        save.commit(&json)?;
    }
    let report = judge::judge(&snapshot, &settings.policy);
    emit(&report, &args.output)
}

/// `64M` → 67108864: bytes with an optional K, M or G (binary) suffix.
fn parse_size(flag: &str, s: &str) -> Result<u64> {
    let t = s.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| anyhow!("{flag} '{s}' is not a size: give bytes, or e.g. 64M or 1G"))
}

fn sweep(args: SweepArgs) -> Result<Outcome> {
    let max_file_size = parse_size("--max-file-size", &args.max_file_size)?;
    if let Some(pct) = args.cpu_limit
        && !(1..=10_000).contains(&pct)
    {
        bail!("--cpu-limit {pct}: give a percentage of one core from 1 (100 = a whole core)");
    }
    let threads = match args.threads {
        Some(0) => bail!("--threads 0: give at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    for p in &args.paths {
        if fs::symlink_metadata(p).is_err() {
            bail!(
                "sweep path '{}' does not exist: give files or directories to sweep",
                p.display()
            );
        }
    }
    if !args.root.is_dir() {
        bail!(
            "--root '{}' is not a directory: give the host's filesystem root",
            args.root.display()
        );
    }
    let hashes = match &args.hashes {
        None => Default::default(),
        Some(path) => {
            let (bytes, truncated) = files::read_regular(path, 64 << 20, true)
                .with_context(|| format!("cannot read --hashes '{}'", path.display()))?;
            if truncated {
                bail!("--hashes '{}' is larger than 64 MiB", path.display());
            }
            let text = String::from_utf8_lossy(&bytes);
            observe::sweep::parse_hashes(&text)
                .map_err(|e| anyhow!("--hashes '{}': {e}", path.display()))?
        }
    };
    let policy = Settings::analyze(args.config.as_deref())?;
    let rules = load_rules(args.rules.as_deref())?;
    let save = args.save.as_deref().map(PendingFile::create).transpose()?;
    minerwatch::sys::raise_fd_limit();
    let opts = observe::sweep::SweepOptions {
        roots: args.paths.clone(),
        root: args.root.clone(),
        max_file_size,
        cross_fs: args.cross_fs,
        threads,
        hashes,
        cpu_limit: args.cpu_limit,
        progress: io::stdout().is_terminal() && io::stderr().is_terminal(),
    };
    let snapshot = observe::sweep::observe_sweep(&opts, &rules);
    if let Some(save) = save {
        let json = serde_json::to_vec_pretty(&snapshot).context("serializing the snapshot")?;
        save.commit(&json)?;
    }
    let report = judge::judge(&snapshot, &policy);
    emit(&report, &args.output)
}

/// Scans `pids` (and their descendants) as `scan --pid` would, for the
/// judgement `collect` and `contain` act on.
fn judge_pids(
    pids: &[String],
    args: &JudgeArgs,
) -> Result<(HostSnapshot, Report, bundle::CollectOptions)> {
    let settings = Settings::scan(&ScanFlags {
        window: &args.window,
        pids,
        rules: args.rules.as_deref(),
        config: args.config.as_deref(),
        no_memory: false,
        no_ptrace: false,
        host_checks: args.host_checks,
        root: &args.root,
        proc_root: &args.proc_root,
    })?;
    let opts = bundle::CollectOptions {
        proc_root: args.proc_root.clone(),
        root: args.root.clone(),
        max_member: parse_size("--max-member-size", &args.max_member_size)?,
        max_total: parse_size("--max-bundle-size", &args.max_bundle_size)?,
        ..bundle::CollectOptions::default()
    };
    let rules = load_rules(settings.rules_dir.as_deref())?;
    minerwatch::sys::raise_fd_limit();
    let snapshot = observe::observe(&settings.observe, &rules)?;
    let report = judge::judge(&snapshot, &settings.policy);
    Ok((snapshot, report, opts))
}

fn collect(args: CollectArgs) -> Result<Outcome> {
    let pids: Vec<i32> = args
        .pids
        .iter()
        .map(|p| {
            p.parse::<i32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                anyhow!(
                    "invalid --pid '{p}': give a process id, a positive number as `ps` shows it"
                )
            })
        })
        .collect::<Result<_>>()?;
    if fs::symlink_metadata(&args.out).is_ok() {
        bail!(
            "--out '{}' exists: a bundle is never written over a file; give a new name",
            args.out.display()
        );
    }
    check_out_dir(&args.out)?;
    let (snapshot, report, opts) = judge_pids(&args.pids, &args.judge)?;
    // The scope as observed: each pid and its descendants.
    let mut members: Vec<i32> = snapshot.processes.iter().map(|p| p.pid).collect();
    members.sort_unstable();
    for p in &pids {
        if !members.contains(p) {
            members.push(*p);
        }
    }
    let manifest = bundle::collect(&snapshot, &report, &members, &[], &opts, &args.out)?;
    let text = match args.format {
        ActionFormat::Json => serde_json::to_string_pretty(&manifest)? + "\n",
        ActionFormat::Text => {
            let mut t = format!(
                "bundle {}: {} members, {} bytes, verdict {}\n",
                args.out.display(),
                manifest.members.len() + 1,
                manifest.total_bytes,
                report.verdict
            );
            for p in &manifest.processes {
                t.push_str(&format!(
                    "  process {} ({}) exe {} sha256 {}\n",
                    p.pid,
                    minerwatch::report::escape_text(&p.comm),
                    minerwatch::report::escape_text(p.exe.as_deref().unwrap_or("?")),
                    p.exe_sha256.as_deref().unwrap_or("(not read)")
                ));
            }
            for c in &manifest.capped {
                t.push_str(&format!("  cap: {}\n", minerwatch::report::escape_text(c)));
            }
            for e in &manifest.errors {
                t.push_str(&format!(
                    "  not collected: {}\n",
                    minerwatch::report::escape_text(e)
                ));
            }
            t.push_str(&format!(
                "judge it with: minerwatch analyze {}\n",
                args.out.display()
            ));
            t
        }
    };
    write_stdout(text.as_bytes())?;
    Ok(Outcome::Clean)
}

/// Refuses a bundle path whose directory does not exist, before anything
/// is scanned or frozen.
fn check_out_dir(out: &Path) -> Result<()> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        bail!(
            "--out '{}': directory '{}' does not exist: give a path in an existing directory",
            out.display(),
            dir.display()
        );
    }
    Ok(())
}

/// The pids of the `miner` findings of a JSON report.
fn pids_of_report(path: &Path) -> Result<Vec<String>> {
    let (bytes, _) = files::read_regular(path, MAX_SNAPSHOT_BYTES, true)
        .with_context(|| format!("cannot read --report '{}'", path.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        anyhow!(
            "--report '{}' is not JSON ({e}): give a report written by `minerwatch scan --format json`",
            path.display()
        )
    })?;
    let findings = value["findings"].as_array().ok_or_else(|| {
        anyhow!(
            "--report '{}' has no findings list: give a report written by `minerwatch scan --format json`",
            path.display()
        )
    })?;
    Ok(findings
        .iter()
        .filter(|f| f["level"] == "miner")
        .filter_map(|f| f["pid"].as_i64())
        .map(|p| p.to_string())
        .collect())
}

fn contain(args: ContainArgs) -> Result<Outcome> {
    let mut raw = args.pids.clone();
    if let Some(r) = &args.report {
        let from = pids_of_report(r)?;
        if from.is_empty() {
            bail!(
                "--report '{}' has no finding rated miner: nothing to contain",
                r.display()
            );
        }
        raw.extend(from);
    }
    let parse = |p: &String, flag: &str| {
        p.parse::<i32>()
            .ok()
            .filter(|n| *n > 0 || p == "1" || p == "0")
            .ok_or_else(|| {
                anyhow!("invalid {flag} '{p}': give a process id, a number as `ps` shows it")
            })
    };
    let pids: Vec<i32> = raw.iter().map(|p| parse(p, "PID")).collect::<Result<_>>()?;
    let force: Vec<i32> = args
        .force
        .iter()
        .map(|p| parse(p, "--force"))
        .collect::<Result<_>>()?;
    containment::refuse(&args.judge.proc_root, &pids)?;
    let out = match &args.out {
        Some(o) => o.clone(),
        None => PathBuf::from(format!(
            "minerwatch-evidence-{}-{}.tar.gz",
            observe::host_name(&args.judge.root),
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
        )),
    };
    if args.yes && fs::symlink_metadata(&out).is_ok() {
        bail!(
            "--out '{}' exists: a bundle is never written over a file; give a new name",
            out.display()
        );
    }
    if args.yes {
        check_out_dir(&out)?;
    }
    let pid_strings: Vec<String> = pids.iter().map(i32::to_string).collect();
    let (snapshot, report, collect) = judge_pids(&pid_strings, &args.judge)?;
    let req = containment::Request {
        pids,
        force,
        kill: args.kill,
        quarantine: args.quarantine.then(|| args.quarantine_dir.clone()),
        disable_persistence: args.disable_persistence,
        out,
        collect,
    };
    let plan = containment::plan(&snapshot, &report, &req)?;
    if !args.yes {
        let text = match args.format {
            ActionFormat::Json => {
                serde_json::to_string_pretty(&serde_json::json!({
                    "plan": plan, "carried_out": false,
                }))? + "\n"
            }
            ActionFormat::Text => {
                let mut t = String::from("minerwatch contain: the plan\n");
                for (i, s) in plan.steps.iter().enumerate() {
                    t.push_str(&format!(
                        "  {}. {}\n",
                        i + 1,
                        minerwatch::report::escape_text(s)
                    ));
                }
                t.push_str("nothing was changed: add --yes to carry it out\n");
                t
            }
        };
        write_stdout(text.as_bytes())?;
        return Ok(Outcome::Clean);
    }
    let log = containment::execute(&plan, &snapshot, &report, &req);
    let all_ok = log.iter().all(|a| a.ok);
    let text = match args.format {
        ActionFormat::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "plan": plan, "carried_out": true, "actions": log,
            }))? + "\n"
        }
        ActionFormat::Text => {
            let mut t = String::new();
            for a in &log {
                t.push_str(&format!(
                    "{} {}: {}\n    before: {}\n    after:  {}\n",
                    if a.ok { "done  " } else { "FAILED" },
                    a.step,
                    minerwatch::report::escape_text(&a.target),
                    minerwatch::report::escape_text(&a.before),
                    minerwatch::report::escape_text(a.error.as_deref().unwrap_or(&a.after)),
                ));
            }
            t.push_str(&format!(
                "evidence: {} (judge it with: minerwatch analyze {})\n",
                req.out.display(),
                req.out.display()
            ));
            t
        }
    };
    write_stdout(text.as_bytes())?;
    if !all_ok {
        bail!("contain: not every action succeeded (see FAILED above)");
    }
    Ok(Outcome::Clean)
}

fn analyze(args: AnalyzeArgs) -> Result<Outcome> {
    let policy = Settings::analyze(args.config.as_deref())?;
    let snapshot = load_snapshot(&args.file)?;
    let report = judge::judge(&snapshot, &policy);
    emit(&report, &args.output)
}

/// Reads and checks a saved snapshot, or the snapshot of an evidence bundle.
pub fn load_snapshot(path: &Path) -> Result<HostSnapshot> {
    let shown = path.display();
    let mut magic = Vec::new();
    if let Ok((mut f, _)) = files::open_regular(path, true) {
        let _ = files::read_capped(&mut f, 2, &mut magic);
    }
    if bundle::looks_like_bundle(&magic) {
        return Ok(bundle::open(path)?.snapshot);
    }
    let (bytes, truncated) =
        files::read_regular(path, MAX_SNAPSHOT_BYTES, true).with_context(|| {
            format!(
                "cannot read snapshot '{shown}'; give a file written by `minerwatch scan --save`"
            )
        })?;
    if truncated {
        bail!(
            "snapshot '{shown}' is larger than {} MiB; it is not one minerwatch wrote",
            MAX_SNAPSHOT_BYTES >> 20
        );
    }
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        anyhow!("snapshot '{shown}' is not valid JSON ({e}); it is corrupt or not a minerwatch snapshot: write a new one with `minerwatch scan --save FILE`")
    })?;
    match value.get("schema").and_then(|s| s.as_str()) {
        Some(SNAPSHOT_SCHEMA) => {}
        Some(other) => bail!(
            "snapshot '{shown}' has schema '{other}', this minerwatch reads '{SNAPSHOT_SCHEMA}'; save it again with this version (a report from --format json is not a snapshot: use --save)"
        ),
        None => bail!(
            "snapshot '{shown}' has no \"schema\" field: it is not a minerwatch snapshot; write one with `minerwatch scan --save FILE`"
        ),
    }
    serde_json::from_value(value)
        .map_err(|e| anyhow!("snapshot '{shown}' does not match schema {SNAPSHOT_SCHEMA}: {e}; it is corrupt or was edited"))
}

fn emit(report: &Report, output: &OutputArgs) -> Result<Outcome> {
    let renderer: Box<dyn Render> = match output.format {
        Format::Text => Box::new(Text {
            color: io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            verbose: output.all_signals,
        }),
        Format::Json => Box::new(Json),
        Format::Ndjson => Box::new(Ndjson),
        Format::Ecs => Box::new(Ecs),
        Format::Markdown => Box::new(Markdown),
    };
    let threshold: Level = output.fail_on.into();
    let outcome = if report.findings.iter().any(|f| f.level >= threshold)
        || report.host_findings.iter().any(|h| h.level >= threshold)
        || report.file_findings.iter().any(|f| f.level >= threshold)
    {
        Outcome::Found
    } else if let Some(i) = report
        .incomplete
        .as_ref()
        .filter(|_| !output.accept_partial)
    {
        eprintln!(
            "minerwatch: nothing found, but {} of {} processes in scope could not be read: exit 2 (--accept-partial to accept the partial view). To see them: {}",
            i.processes, i.of, i.fix
        );
        Outcome::Incomplete
    } else {
        Outcome::Clean
    };
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = renderer.render(report, &mut out).and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(outcome),
        // A reader that went away (`| head`) is not a failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(outcome),
        Err(e) => Err(anyhow!("writing the report to stdout: {e}")),
    }
}

/// A path for a terminal line, control characters escaped.
fn shown(path: &Path) -> String {
    minerwatch::report::escape_text(&path.display().to_string())
}

fn rules_check(dir: Option<&Path>) -> Result<Outcome> {
    let rules = Signatures::load(dir)?;
    let info = rules.info();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0;
    let mut lines = vec![format!("embedded: {} rules OK", info.embedded)];
    for f in rules.files() {
        match &f.error {
            None => lines.push(format!("{}: {} rules OK", shown(&f.path), f.rules)),
            Some(e) => {
                failed += 1;
                lines.push(format!(
                    "{}: FAILED\n{}",
                    shown(&f.path),
                    minerwatch::report::escape_file_message(e, &f.path)
                ));
            }
        }
        for w in &f.warnings {
            lines.push(format!(
                "{}: warning\n{}",
                shown(&f.path),
                minerwatch::report::escape_file_message(w, &f.path)
            ));
        }
    }
    lines.push(format!(
        "{} user rule files, {} failed; {} rules loaded in all",
        rules.files().len(),
        failed,
        info.embedded + info.user
    ));
    for l in lines {
        if let Err(e) = writeln!(out, "{l}") {
            if e.kind() == io::ErrorKind::BrokenPipe {
                break;
            }
            return Err(e.into());
        }
    }
    Ok(if failed > 0 {
        Outcome::Found
    } else {
        Outcome::Clean
    })
}

/// `--save FILE`: the snapshot, written whole or not at all (mode 0600,
/// never through a symlink); created before the scan so that an unwritable
/// path fails at once.
struct PendingFile(minerwatch::safefs::PendingFile);

impl PendingFile {
    fn create(target: &Path) -> Result<Self> {
        minerwatch::safefs::PendingFile::create(target)
            .map(PendingFile)
            .map_err(|e| {
                anyhow!(
                    "cannot write --save '{}': {e}; choose a file in an existing directory you can write to",
                    target.display()
                )
            })
    }

    fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let shown = self.0.target().display().to_string();
        let file = self.0.file();
        file.write_all(bytes)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| self.0.commit())
            .with_context(|| format!("writing the snapshot to '{shown}'"))
    }
}
