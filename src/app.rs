//! The commands: validate settings once, run the pipeline, pick the exit code.
//!
//! Exit codes (as clamscan): 0 nothing at or above `--fail-on`, 1 at least
//! one finding at or above it, 2 the command itself failed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use minerwatch::cli::{
    AnalyzeArgs, Cli, Command, ConfigCommand, Format, OutputArgs, RulesCommand, ScanArgs, SweepArgs,
};
use minerwatch::judge::{self, Level, Report};
use minerwatch::observe::{self, files};
use minerwatch::report::{Ecs, Json, Markdown, Ndjson, Render, Text};
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
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Clean => 0.into(),
            Outcome::Found => 1.into(),
        }
    }
}

/// Diagnostics go to stderr; `MINERWATCH_LOG` overrides `-v`.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MINERWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Scan(args) => scan(args),
        Command::Analyze(args) => analyze(args),
        Command::Sweep(args) => sweep(args),
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
            eprintln!("minerwatch: warning: skipped rule file: {e}");
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
fn parse_size(s: &str) -> Result<u64> {
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
        .ok_or_else(|| {
            anyhow!("--max-file-size '{s}' is not a size: give bytes, or e.g. 64M or 1G")
        })
}

fn sweep(args: SweepArgs) -> Result<Outcome> {
    let max_file_size = parse_size(&args.max_file_size)?;
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
    let report = judge::judge(&snapshot, &judge::Policy::default());
    emit(&report, &args.output)
}

fn analyze(args: AnalyzeArgs) -> Result<Outcome> {
    let policy = Settings::analyze(args.config.as_deref())?;
    let snapshot = load_snapshot(&args.file)?;
    let report = judge::judge(&snapshot, &policy);
    emit(&report, &args.output)
}

/// Reads and checks a saved snapshot.
pub fn load_snapshot(path: &Path) -> Result<HostSnapshot> {
    let shown = path.display();
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

fn rules_check(dir: Option<&Path>) -> Result<Outcome> {
    let rules = Signatures::load(dir)?;
    let info = rules.info();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0;
    let mut lines = vec![format!("embedded: {} rules OK", info.embedded)];
    for f in rules.files() {
        match &f.error {
            None => lines.push(format!("{}: {} rules OK", f.path.display(), f.rules)),
            Some(e) => {
                failed += 1;
                lines.push(format!("{}: FAILED\n{e}", f.path.display()));
            }
        }
        for w in &f.warnings {
            lines.push(format!("{}: warning\n{w}", f.path.display()));
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

/// An output file written whole or not at all: created (mode 0600, never
/// through a symlink) as a hidden temporary beside the target before the scan,
/// so an unwritable path fails at once, and renamed into place at the end.
struct PendingFile {
    tmp: PathBuf,
    target: PathBuf,
    file: Option<File>,
}

impl PendingFile {
    fn create(target: &Path) -> Result<Self> {
        let shown = target.display();
        if target.as_os_str().is_empty() {
            bail!("--save needs a file name");
        }
        if let Ok(meta) = fs::symlink_metadata(target)
            && meta.is_dir()
        {
            bail!(
                "cannot write --save '{shown}': it is a directory; give a file name, e.g. {shown}/snapshot.json"
            );
        }
        let name = target.file_name().ok_or_else(|| {
            anyhow!("cannot write --save '{shown}': give a file name, e.g. host.json")
        })?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| {
                anyhow!(
                    "cannot write --save '{shown}': {e} (in directory '{}'); choose a path in an existing directory you can write to",
                    dir.display()
                )
            })?;
        Ok(PendingFile {
            tmp,
            target: target.to_path_buf(),
            file: Some(file),
        })
    }

    fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| anyhow!("snapshot file already written"))?;
        file.write_all(bytes)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing snapshot to '{}'", self.tmp.display()))?;
        fs::rename(&self.tmp, &self.target).with_context(|| {
            format!(
                "moving the snapshot into place at '{}'",
                self.target.display()
            )
        })?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
