//! The benign corpus, all of it (run with `cargo bench --bench benign`, as
//! root; the table goes to benches/BENIGN.md).
//!
//! Installs the corpus's missing Debian packages (one `apt-get install -y`),
//! then for every entry of tests/support/corpus.rs: sets it up, makes it busy
//! on one core, checks it is busy, scans its tree with `minerwatch scan
//! --pid PID --format json` and runs it for a minute under `minerwatch
//! agent` in a fresh PID namespace. Then the miner fixtures (a librandomx
//! worker plain and disguised, throttled, from a memfd, mining monerod, the
//! quiet miner), each scanned and expected `miner`. Prints a table and
//!
//! - false alarms = corpus programs at `suspicious` or above (scan or agent)
//!   / corpus programs run;
//! - misses = miner fixtures below `miner` / miner fixtures run.
//!
//! Programs that are missing, fail to start or are not busy are reported by
//! name and left out of both counts, never counted as passes.
//!
//! Arguments: words filter entries and fixtures by name (`cargo bench
//! --bench benign -- java`); `--no-agent` skips the agent minutes. Only an
//! unfiltered run with the agent writes benches/BENIGN.md.

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Command;
use std::time::{Duration, Instant};

use support::corpus::{self, AgentMinute, Run, Status};
use support::{Disguise, Monerod, WorkerOpts};

const AGENT_SECS: u32 = 60;

struct Args {
    filters: Vec<String>,
    agent: bool,
}

fn args() -> Args {
    let mut a = Args {
        filters: Vec::new(),
        agent: true,
    };
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--no-agent" => a.agent = false,
            // cargo bench passes --bench; other flags are not ours.
            s if s.starts_with("--") => {}
            s => a.filters.push(s.to_string()),
        }
    }
    a
}

impl Args {
    fn selects(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Removes a policy-rc.d we put in place so that installing a server
/// package (redis, memcached) does not start its service.
struct PolicyRcD(bool);

const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

impl PolicyRcD {
    fn install() -> PolicyRcD {
        if std::path::Path::new(POLICY_RC_D).exists() {
            return PolicyRcD(false);
        }
        use std::os::unix::fs::PermissionsExt;
        let ok = std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# minerwatch benign bench: start no services\nexit 101\n",
        )
        .and_then(|()| {
            std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))
        });
        PolicyRcD(ok.is_ok())
    }
}

impl Drop for PolicyRcD {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

/// Installs the Debian packages of selected entries that miss something;
/// returns the lines to report.
fn install_missing(entries: &[&corpus::Entry]) -> Vec<String> {
    let mut wanted: Vec<&str> = Vec::new();
    for e in entries {
        if corpus::missing(e).is_empty() {
            continue;
        }
        for d in e.debs {
            if !dpkg_installed(d) && !wanted.contains(d) {
                wanted.push(d);
            }
        }
    }
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut report = Vec::new();
    if !is_root() {
        report.push(format!(
            "not root: not installing {} (run as root, or apt-get install -y them)",
            wanted.join(" ")
        ));
        return report;
    }
    println!("installing {} ...", wanted.join(" "));
    let _ = Command::new("apt-get")
        .args(["update", "-qq"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    // Packages without an installation candidate would fail the whole call.
    let (installable, unknown): (Vec<&str>, Vec<&str>) = wanted.iter().partition(|p| {
        let policy = sh(&format!("apt-cache policy {p} 2>/dev/null"));
        policy.contains("Candidate:") && !policy.contains("Candidate: (none)")
    });
    if !unknown.is_empty() {
        report.push(format!("no such package here: {}", unknown.join(" ")));
    }
    if !installable.is_empty() {
        let _policy = PolicyRcD::install();
        let out = Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(&installable)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => report.push(format!(
                "apt-get install failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => report.push(format!("apt-get: {e}")),
        }
        let failed: Vec<&str> = installable
            .iter()
            .copied()
            .filter(|p| !dpkg_installed(p))
            .collect();
        if !failed.is_empty() {
            report.push(format!("could not be installed: {}", failed.join(" ")));
        }
        let done: Vec<&str> = installable
            .iter()
            .copied()
            .filter(|p| dpkg_installed(p))
            .collect();
        if !done.is_empty() {
            report.push(format!("installed: {}", done.join(" ")));
        }
    }
    report
}

// ------------------------------------------------------------ miners

struct MinerResult {
    name: &'static str,
    what: &'static str,
    /// Err: it never got to hash (counted out, reported).
    outcome: Result<Run, String>,
}

fn scan_pid(name: &str, pid: i32) -> Run {
    corpus::scan_running(name, pid)
}

fn worker_fixture(name: &'static str, opts: WorkerOpts) -> Result<Run, String> {
    let mut w = support::spawn_worker(&opts);
    if !w.wait_for_line("hashing", Duration::from_secs(90)) {
        return Err(format!("never hashed: {}", w.stderr_so_far()));
    }
    Ok(scan_pid(name, w.pid()))
}

/// A miner fixture: name, what it is, how to start and scan it.
type Fixture = (&'static str, &'static str, fn() -> Result<Run, String>);

fn miner_fixtures() -> Vec<Fixture> {
    vec![
        (
            "miner-plain",
            "librandomx worker, light mode, plain",
            || worker_fixture("miner-plain", WorkerOpts::light()),
        ),
        (
            "miner-shm-kdevtmpfsi",
            "worker run from /dev/shm as kdevtmpfsi, deleted",
            || {
                worker_fixture(
                    "miner-shm-kdevtmpfsi",
                    WorkerOpts {
                        disguise: Disguise::ShmCampaign("kdevtmpfsi".into()),
                        ..WorkerOpts::light()
                    },
                )
            },
        ),
        (
            "miner-kworker-argv0",
            "worker with argv[0] [kworker/0:1]",
            || {
                worker_fixture(
                    "miner-kworker-argv0",
                    WorkerOpts {
                        disguise: Disguise::Argv0("[kworker/0:1]".into()),
                        ..WorkerOpts::light()
                    },
                )
            },
        ),
        (
            "miner-memfd-wiped",
            "worker from a memfd, --config-in-memory, --wipe-argv",
            || {
                worker_fixture(
                    "miner-memfd-wiped",
                    WorkerOpts {
                        disguise: Disguise::Memfd("sshd".into()),
                        extra_args: [
                            "-u",
                            support::WALLET,
                            "--config-in-memory",
                            "pool.example.net:3333",
                            "--wipe-argv",
                            "/usr/sbin/sshd -D",
                        ]
                        .map(String::from)
                        .to_vec(),
                        ..WorkerOpts::light()
                    },
                )
            },
        ),
        (
            "miner-throttled-30",
            "worker throttled to 30 % of a core",
            || {
                worker_fixture(
                    "miner-throttled-30",
                    WorkerOpts {
                        throttle: Some(30),
                        ..WorkerOpts::light()
                    },
                )
            },
        ),
        (
            "miner-monerod",
            "monerod --regtest mining (start_mining, 1 thread)",
            || {
                let mut node = Monerod::start();
                if !node.wait_rpc(Duration::from_secs(60)) {
                    return Err("monerod RPC never came up".into());
                }
                node.start_mining(support::WALLET, 1)?;
                if !node.wait_hashing(Duration::from_secs(300)) {
                    return Err("monerod never hashed".into());
                }
                Ok(scan_pid("miner-monerod", node.pid()))
            },
        ),
        (
            "miner-quiet-25",
            "quiet miner (tests/support/quiet.rs): cgroup quota 25 %, TLS pool through SOCKS5, binary and config deleted",
            || {
                let miner = support::quiet::QuietMiner::start(25);
                Ok(scan_pid("miner-quiet-25", miner.pid()))
            },
        ),
    ]
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

// ------------------------------------------------------------ report

struct Row {
    name: String,
    class: String,
    busy: String,
    run: Run,
    agent: Option<AgentMinute>,
}

fn machine() -> String {
    let cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-");
    let cores = sh("nproc");
    let mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo");
    let kernel = sh("uname -r");
    let debian = sh("cat /etc/debian_version");
    format!("{cpu}, {cores} cores, {mem} RAM, kernel {kernel}, Debian {debian}")
}

/// "name: signal ids" of a run's worst process.
fn top(r: &Run) -> String {
    if r.top_signals.is_empty() {
        return String::new();
    }
    let name = r.top_process.split_once(' ').map_or("", |(_, n)| n);
    format!("{name}: {}", r.top_signals.join(", "))
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let args = args();
    let started = Instant::now();
    let all = corpus::entries();
    let selected: Vec<&corpus::Entry> = all.iter().filter(|e| args.selects(e.name)).collect();
    if !is_root() {
        eprintln!(
            "warning: not root: no package installs, no huge pages, no ptrace of others' children"
        );
    }
    let install_report = install_missing(&selected);
    for l in &install_report {
        println!("{l}");
    }
    let cpu = corpus::pick_cpu();
    println!(
        "benign corpus: {} of {} entries, pinned to CPU {cpu}{}",
        selected.len(),
        all.len(),
        if args.agent {
            format!(", {AGENT_SECS} s under the agent each")
        } else {
            ", no agent".into()
        }
    );

    let mut rows: Vec<Row> = Vec::new();
    for e in &selected {
        let t = Instant::now();
        let run = corpus::scan_entry(e, cpu);
        let mut line = format!(
            "{:<24} {:<8} {:>5.0} % {:<10} {}",
            e.name,
            run.status.word(),
            run.scan_cpu_percent,
            run.level,
            top(&run)
        );
        if let Status::FailedToStart(why) | Status::ScanFailed(why) = &run.status {
            let _ = write!(line, "\n    {}", why.replace('\n', "\n    "));
        }
        let agent = (args.agent && run.status == Status::Scanned).then(|| {
            let a = corpus::agent_minute(e, cpu, AGENT_SECS);
            let _ = write!(
                line,
                "\n    agent: {} alerts at suspicious+ ({:.0} % CPU over the minute){}{}",
                a.alerts.len(),
                a.cpu_percent,
                a.describe()
                    .iter()
                    .map(|d| format!("\n      {d}"))
                    .collect::<String>(),
                a.error
                    .as_ref()
                    .map(|e| format!("\n      error: {e}"))
                    .unwrap_or_default()
            );
            a
        });
        println!("{line}   [{:.0} s]", t.elapsed().as_secs_f64());
        rows.push(Row {
            name: e.name.into(),
            class: e.class.name().into(),
            busy: e.busy.into(),
            run,
            agent,
        });
    }

    let mut miners: Vec<MinerResult> = Vec::new();
    for (name, what, start) in miner_fixtures() {
        if !args.selects(name) {
            continue;
        }
        let t = Instant::now();
        let _ = std::fs::create_dir_all(env!("CARGO_TARGET_TMPDIR"));
        let outcome = match catch_unwind(AssertUnwindSafe(start)) {
            Ok(r) => r,
            Err(p) => Err(panic_text(p)),
        };
        match &outcome {
            Ok(r) => println!(
                "{name:<24} {:<8} {:>5.0} % {:<10} {}   [{:.0} s]",
                r.status.word(),
                r.scan_cpu_percent,
                r.level,
                top(r),
                t.elapsed().as_secs_f64()
            ),
            Err(e) => println!("{name:<24} failed to start: {e}"),
        }
        miners.push(MinerResult {
            name,
            what,
            outcome,
        });
    }

    let md = render(&args, &install_report, &rows, &miners, started.elapsed());
    println!("\n{md}");
    if args.filters.is_empty() && args.agent {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/BENIGN.md");
        match std::fs::write(path, &md) {
            Ok(()) => println!("written to {path}"),
            Err(e) => eprintln!("writing {path}: {e}"),
        }
    } else {
        println!("(a filtered or --no-agent run: benches/BENIGN.md not written)");
    }
}

fn render(
    args: &Args,
    install: &[String],
    rows: &[Row],
    miners: &[MinerResult],
    took: Duration,
) -> String {
    let mut md = String::new();
    let date = jiff::Timestamp::now()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string();
    let _ = writeln!(md, "# minerwatch on a benign corpus\n");
    let _ = writeln!(
        md,
        "`cargo bench --bench benign`{}{} on {date}, {:.0} min. Machine: {}. \
         minerwatch release build, default `scan --pid` window (5 s); agent: tick 1 s, \
         cpu_budget_percent = 100, {AGENT_SECS} s per program in its own PID namespace. \
         Each program is pinned to one core (`taskset`) with one thread where it has a setting, \
         and scanned only once its process tree used ≥ {:.0} % of a core over {:.1} s.\n",
        if args.filters.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.filters.join(" "))
        },
        if args.agent { "" } else { " --no-agent" },
        took.as_secs_f64() / 60.0,
        machine(),
        corpus::BUSY_PERCENT,
        corpus::BUSY_WINDOW.as_secs_f64(),
    );
    let ran: Vec<&Row> = rows
        .iter()
        .filter(|r| r.run.status == Status::Scanned)
        .collect();
    let alarms: Vec<&Row> = ran
        .iter()
        .copied()
        .filter(|r| r.run.rank() >= 2 || r.agent.as_ref().is_some_and(|a| !a.alerts.is_empty()))
        .collect();
    let miners_ran: Vec<(&MinerResult, &Run)> = miners
        .iter()
        .filter_map(|m| m.outcome.as_ref().ok().map(|r| (m, r)))
        .filter(|(_, r)| r.status == Status::Scanned)
        .collect();
    let missed: Vec<&(&MinerResult, &Run)> =
        miners_ran.iter().filter(|(_, r)| r.rank() < 3).collect();
    let _ = writeln!(
        md,
        "**false alarms: {} / {}** corpus programs at `suspicious` or above (scan or agent){}\n",
        alarms.len(),
        ran.len(),
        if alarms.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                alarms
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let _ = writeln!(
        md,
        "**misses: {} / {}** miner fixtures below `miner`{}\n",
        missed.len(),
        miners_ran.len(),
        if missed.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                missed
                    .iter()
                    .map(|(m, r)| format!("{} ({})", m.name, r.level))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let skipped: Vec<&Row> = rows
        .iter()
        .filter(|r| r.run.status != Status::Scanned)
        .collect();
    if !skipped.is_empty() {
        let _ = writeln!(
            md,
            "Skipped, not counted: {}\n",
            skipped
                .iter()
                .map(|r| format!("{} ({})", r.name, r.run.status.word()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for l in install {
        let _ = writeln!(md, "Packages: {l}\n");
    }
    let _ = writeln!(md, "## Corpus\n");
    let _ = writeln!(
        md,
        "| program | class | CPU % (scan) | scan level | worst process: signal ids | agent alerts |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for r in rows {
        let (cpu, level, sigs) = if r.run.status == Status::Scanned {
            (
                format!("{:.0}", r.run.scan_cpu_percent),
                format!("`{}`", r.run.level),
                top(&r.run),
            )
        } else {
            ("–".into(), r.run.status.word(), String::new())
        };
        let agent = match &r.agent {
            None => "–".into(),
            Some(a) => {
                let mut s = a.alerts.len().to_string();
                if !a.alerts.is_empty() {
                    let _ = write!(s, " ({})", a.describe().join("; "));
                }
                let _ = write!(s, ", CPU {:.0} %", a.cpu_percent);
                if let Some(e) = &a.error {
                    let _ = write!(s, "; {e}");
                }
                s
            }
        };
        let _ = writeln!(
            md,
            "| {} | {} | {cpu} | {} | {} | {} |",
            r.name,
            r.class,
            cell(&level),
            cell(&sigs),
            cell(&agent)
        );
    }
    let _ = writeln!(md, "\n## Miner fixtures (each expected `miner`)\n");
    let _ = writeln!(
        md,
        "| fixture | what | CPU % (scan) | scan level | worst process: signal ids |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|");
    for m in miners {
        match &m.outcome {
            Ok(r) if r.status == Status::Scanned => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0} | `{}` | {} |",
                    m.name,
                    cell(m.what),
                    r.scan_cpu_percent,
                    r.level,
                    cell(&top(r))
                );
            }
            Ok(r) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | – | {} | |",
                    m.name,
                    cell(m.what),
                    r.status.word()
                );
            }
            Err(e) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | – | failed to start: {} | |",
                    m.name,
                    cell(m.what),
                    cell(&e.chars().take(200).collect::<String>())
                );
            }
        }
    }
    let _ = writeln!(md, "\n## How each program is made busy\n");
    for r in rows {
        let _ = writeln!(md, "- **{}** ({}): {}", r.name, r.class, r.busy);
    }
    md
}
