//! Command-line definitions (clap). Raw flags are turned into validated
//! settings in [`crate::settings`]; nothing deeper sees unchecked strings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::judge::Level;

/// Finds covert Monero (RandomX/XMRig) miners and reports the evidence.
#[derive(Debug, Parser)]
#[command(name = "minerwatch", version, about, long_about = None)]
pub struct Cli {
    /// More diagnostics on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan this host's processes once and report suspected miners.
    Scan(ScanArgs),
    /// Judge a snapshot saved with `scan --save`, or an evidence bundle (on this or another machine).
    Analyze(AnalyzeArgs),
    /// Sweep files on disk for miners, miner configs and known-bad hashes:
    /// the miner that is not running.
    Sweep(SweepArgs),
    /// Write the evidence bundle of running processes: one .tar.gz (mode
    /// 0600) with snapshot, report, /proc files, executables, libraries,
    /// matched memory, configs, persistence files and a SHA-256 manifest.
    Collect(CollectArgs),
    /// Stop a running miner and keep the evidence: prints the plan, and with
    /// --yes freezes the process tree, collects the bundle, then (as asked)
    /// kills, quarantines the executable and disables its persistence.
    Contain(ContainArgs),
    /// Work with rule files.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Run as an always-on service: scan every tick, send alerts to the outputs.
    Agent(AgentArgs),
    /// Check or show the agent's configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) to stdout.
    Man,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The config file; conf.d/*.toml beside it is read too
    /// [default: /etc/minerwatch/minerwatch.toml, optional].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Stop after this many ticks (for trials; the service runs until SIGTERM).
    #[arg(long, value_name = "N")]
    pub ticks: Option<u64>,
    /// Where the host's procfs is (e.g. /host/proc in a Kubernetes pod);
    /// overrides agent.proc_root.
    #[arg(long, value_name = "DIR")]
    pub proc_root: Option<PathBuf>,
    /// The host's filesystem root (e.g. /host/root); overrides agent.root.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load the configuration and report the first problem (exit 2) or OK (exit 0).
    Check {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the effective configuration (defaults, file and conf.d merged).
    Show {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table for humans.
    Text,
    /// One JSON document (schema minerwatch/1).
    Json,
    /// One JSON line per finding, then a summary line.
    Ndjson,
    /// One Elastic Common Schema document per line (as the agent's
    /// `fields = "ecs"`): each finding, each host finding, a summary.
    Ecs,
    /// A report for the case file: verdict, findings with their evidence and
    /// process tree, host findings, a timeline, what could not be read.
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Miner,
    Suspicious,
    Notice,
}

impl From<FailOn> for Level {
    fn from(f: FailOn) -> Level {
        match f {
            FailOn::Miner => Level::Miner,
            FailOn::Suspicious => Level::Suspicious,
            FailOn::Notice => Level::Notice,
        }
    }
}

/// Options shared by `scan` and `analyze`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Exit with 1 when a finding reaches this level.
    #[arg(long, value_enum, default_value = "suspicious", value_name = "LEVEL")]
    pub fail_on: FailOn,
    /// Show every signal of every finding in the text table.
    #[arg(long)]
    pub all_signals: bool,
    /// Exit 0, not 2, when nothing was found but some processes in scope
    /// could not be read (the report still says which).
    #[arg(long)]
    pub accept_partial: bool,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// CPU sampling window in seconds.
    #[arg(
        long,
        default_value = "5",
        value_name = "SECS",
        allow_negative_numbers = true
    )]
    pub window: String,
    /// Limit the scan to this process and its descendants (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<String>,
    /// With --pid: also run and judge the host-wide checks that do not
    /// concern the scope (hidden processes, huge pages and other leftovers,
    /// persistence that launches nothing in scope); a whole-host scan runs
    /// them always.
    #[arg(long)]
    pub host_checks: bool,
    /// Also load the .yar/.yara rule files in DIR (each in its own namespace).
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Apply the [[allow]] rules and [scan] settings of this agent config
    /// (and its conf.d/), as the agent would.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Write the observed snapshot to FILE (JSON, mode 0600) for `analyze`.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Do not read process memory (by default the memory of busy, RandomX-shaped
    /// or binary-less processes is scanned with the rules).
    #[arg(long)]
    pub no_memory: bool,
    /// Do not ptrace anything (by default the busy threads of busy, RandomX-shaped
    /// or disguised processes are stopped for microseconds to read their FPU
    /// rounding mode).
    #[arg(long)]
    pub no_ptrace: bool,
    /// Read host files (/etc/ld.so.preload, crontabs, systemd units, sysctl
    /// files, /sys) under DIR instead of / (a mounted disk image, a container's
    /// root, a test fixture).
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Where procfs is mounted (the host's /proc when run in a container).
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    pub proc_root: PathBuf,
    /// Also sweep the files on disk (as `minerwatch sweep` without paths,
    /// under --root) into the same report: files are linked to the
    /// processes that run them.
    #[arg(long)]
    pub sweep: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Files or directories to sweep (default: where miners are dropped and
    /// launched from: /tmp, /var/tmp, /dev/shm, hidden entries of home
    /// directories, /usr/local, /opt, /var/lib, cron, systemd units,
    /// rc.local, and what persistence entries and ld.so.preload name).
    pub paths: Vec<PathBuf>,
    /// The host's filesystem root: default paths, persistence entries and
    /// ld.so.preload are read under DIR (a mounted disk image, a container's root).
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Also load the .yar/.yara rule files in DIR (each in its own namespace).
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Apply the [[allow]] rules of this agent config (and its conf.d/) to
    /// the files: those giving only exe, path or sha256.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Known-bad SHA-256 hashes, one per line (64 hex digits, then an optional comment).
    #[arg(long, value_name = "FILE")]
    pub hashes: Option<PathBuf>,
    /// Read at most this many bytes of each file (K, M, G suffixes).
    #[arg(long, default_value = "64M", value_name = "BYTES")]
    pub max_file_size: String,
    /// Enter other filesystems mounted below a swept directory.
    #[arg(long)]
    pub cross_fs: bool,
    /// Reading threads [default: the number of CPUs].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Keep the sweep under PERCENT of one core on average (for shared
    /// production hosts), e.g. 25.
    #[arg(long, value_name = "PERCENT")]
    pub cpu_limit: Option<u32>,
    /// Write the observed snapshot to FILE (JSON, mode 0600) for `analyze`.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How the processes are judged before `collect` and `contain` act.
#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// CPU sampling window of the scan that judges them, in seconds.
    #[arg(
        long,
        default_value = "5",
        value_name = "SECS",
        allow_negative_numbers = true
    )]
    pub window: String,
    /// Also load the .yar/.yara rule files in DIR.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Apply the [[allow]] rules and [scan] settings of this agent config.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The host's filesystem root (persistence files, ld.so.preload; where
    /// quarantined originals and disabled persistence entries are).
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Where procfs is mounted.
    #[arg(long, default_value = "/proc", value_name = "DIR")]
    pub proc_root: PathBuf,
    /// With --pid: also run and judge the host-wide checks that do not
    /// concern the scope (hidden processes, huge pages and other leftovers,
    /// persistence that launches nothing in scope); a whole-host scan runs
    /// them always.
    #[arg(long)]
    pub host_checks: bool,
    /// Cap on the bytes of one bundle member (K, M, G suffixes).
    #[arg(long, default_value = "256M", value_name = "BYTES")]
    pub max_member_size: String,
    /// Cap on the bytes of all bundle members together.
    #[arg(long, default_value = "1G", value_name = "BYTES")]
    pub max_bundle_size: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActionFormat {
    /// Lines for humans.
    Text,
    /// One JSON document.
    Json,
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// A process to collect, with its descendants (repeatable).
    #[arg(long = "pid", value_name = "PID", required = true)]
    pub pids: Vec<String>,
    /// The bundle to write (.tar.gz); it must not exist.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Output format of the summary (the manifest, as JSON).
    #[arg(long, value_enum, default_value = "text")]
    pub format: ActionFormat,
}

#[derive(Debug, Args)]
pub struct ContainArgs {
    /// The processes to contain (each with its descendants).
    pub pids: Vec<String>,
    /// Take the pids of the `miner` findings of this report
    /// (`scan --format json`); they are judged again before anything is done.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Carry the plan out (without it nothing is changed).
    #[arg(long)]
    pub yes: bool,
    /// Kill the frozen trees once the evidence is collected.
    #[arg(long)]
    pub kill: bool,
    /// Copy each executable into the quarantine directory (mode 0000, with a
    /// record of its hash and origin) and remove the original.
    #[arg(long)]
    pub quarantine: bool,
    /// The quarantine directory (made 0700 if missing).
    #[arg(
        long,
        default_value = "/var/lib/minerwatch/quarantine",
        value_name = "DIR"
    )]
    pub quarantine_dir: PathBuf,
    /// Comment out the cron lines, systemd units and rc.local lines that
    /// launch the processes, and drop their libraries from ld.so.preload
    /// (the originals are in the bundle).
    #[arg(long)]
    pub disable_persistence: bool,
    /// Contain PID although the current judgement does not rate it `miner`
    /// (repeatable). Never overrides the refusal of PID 1, kernel threads,
    /// minerwatch and its ancestors.
    #[arg(long, value_name = "PID")]
    pub force: Vec<String>,
    /// The evidence bundle [default: ./minerwatch-evidence-HOST-TIME.tar.gz].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Output format of the plan and the log of actions.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ActionFormat,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// A snapshot written by `minerwatch scan --save`, or an evidence bundle
    /// written by `collect` or `contain`.
    pub file: PathBuf,
    /// Apply the [[allow]] rules of this agent config (and its conf.d/).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Compile the embedded rules and those in DIR; exit 0 if all compile, 1 if any fails.
    Check {
        /// A directory of .yar/.yara files.
        dir: Option<PathBuf>,
    },
}
