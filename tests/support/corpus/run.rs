//! Running a corpus entry: the process tree and its CPU, the busy check, the
//! scan, the minute under the agent, and the results.

use super::*;

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// (pid, ppid, utime + stime + cutime + cstime) of every process now.
fn all_stats() -> Vec<(i32, i32, u64)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        // rest starts at field 3 (state): ppid is field 4, utime..cstime 14..17.
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |field: usize| f.get(field - 3).and_then(|v| v.parse::<u64>().ok());
        let (Some(ppid), Some(u), Some(s), Some(cu), Some(cs)) =
            (num(4), num(14), num(15), num(16), num(17))
        else {
            continue;
        };
        out.push((pid, ppid as i32, u + s + cu + cs));
    }
    out
}

/// `root` and its descendants now.
pub fn tree_pids(root: i32) -> Vec<i32> {
    let stats = all_stats();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            stats
                .iter()
                .filter(|(pid, ppid, _)| *ppid == parent && *pid != parent)
                .map(|(pid, _, _)| *pid),
        );
        i += 1;
    }
    tree
}

/// CPU ticks used by `root`'s tree: each live member's own and its reaped
/// children's.
pub fn tree_ticks(root: i32) -> u64 {
    let tree = tree_pids(root);
    all_stats()
        .iter()
        .filter(|(pid, _, _)| tree.contains(pid))
        .map(|(_, _, t)| t)
        .sum()
}

/// % of one core `root`'s tree used over `over`.
pub fn tree_cpu_percent(root: i32, over: Duration) -> f64 {
    let start = Instant::now();
    let a = tree_ticks(root);
    std::thread::sleep(over);
    let b = tree_ticks(root);
    b.saturating_sub(a) as f64 / clock_ticks() / start.elapsed().as_secs_f64() * 100.0
}

/// SIGKILLs `root`'s whole tree, also members that left its process group
/// (a postmaster): stops them all first so that none forks meanwhile.
pub fn kill_tree(root: i32) {
    let mut stopped: Vec<i32> = Vec::new();
    for _ in 0..10 {
        let fresh: Vec<i32> = tree_pids(root)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for pid in fresh {
            // SAFETY: plain syscall on a descendant of a child we started.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
            stopped.push(pid);
        }
    }
    for pid in stopped {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The program's process, its tree killed on drop (then the [`Child`]
/// guard kills its group and reaps it).
struct Program(Child);

impl Drop for Program {
    fn drop(&mut self) {
        if self.0.is_running() {
            kill_tree(self.0.pid());
        }
    }
}

/// Names of `entry.needs` that are not there.
pub fn missing(entry: &Entry) -> Vec<String> {
    entry
        .needs
        .iter()
        .filter(|n| !have(n))
        .map(|n| n.to_string())
        .collect()
}

/// An absolute path that exists, or a command in PATH (or /usr/sbin,
/// /sbin, /usr/games).
pub fn have(need: &str) -> bool {
    if need.starts_with('/') {
        return Path::new(need).exists();
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/games"])
        .filter(|d| !d.is_empty())
        .any(|d| Path::new(d).join(need).is_file())
}

/// The core to pin programs to: `$MW_CORPUS_CPU`, else the last one this
/// process may run on.
pub fn pick_cpu() -> usize {
    if let Some(n) = std::env::var("MW_CORPUS_CPU")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer and size for our own thread.
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } == 0;
    let mut last = 0;
    if ok {
        for cpu in 0..libc::CPU_SETSIZE as usize {
            // SAFETY: cpu < CPU_SETSIZE.
            if unsafe { libc::CPU_ISSET(cpu, &set) } {
                last = cpu;
            }
        }
    }
    last
}

// ------------------------------------------------------------------ results

#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    /// Ran busy and was scanned.
    Scanned,
    /// Needed commands or files are not there.
    Missing(Vec<String>),
    /// Setup failed, it exited or never got ready.
    FailedToStart(String),
    /// Its tree used less than [`BUSY_PERCENT`] of a core.
    NotBusy(f64),
    /// minerwatch itself failed.
    ScanFailed(String),
}

impl Status {
    /// A short word for the table.
    pub fn word(&self) -> String {
        match self {
            Status::Scanned => "scanned".into(),
            Status::Missing(what) => format!("missing ({})", what.join(", ")),
            Status::FailedToStart(_) => "failed to start".into(),
            Status::NotBusy(pct) => format!("not busy ({pct:.0} % of a core)"),
            Status::ScanFailed(_) => "scan failed".into(),
        }
    }
}

/// One entry's scan.
#[derive(Clone, Debug)]
pub struct Run {
    pub name: String,
    pub status: Status,
    pub pid: i32,
    /// % of a core its tree used in the busy check.
    pub busy_percent: f64,
    /// % of a core its tree used during the scan.
    pub scan_cpu_percent: f64,
    /// The highest level among its tree's findings ("clean" without any).
    pub level: String,
    /// The signal ids of the highest finding (its tree's worst process).
    pub top_signals: Vec<String>,
    /// pid and name of that process.
    pub top_process: String,
    /// The whole report.
    pub report: Value,
}

impl Run {
    fn new(name: &str) -> Run {
        Run {
            name: name.into(),
            status: Status::Scanned,
            pid: 0,
            busy_percent: 0.0,
            scan_cpu_percent: 0.0,
            level: "clean".into(),
            top_signals: Vec::new(),
            top_process: String::new(),
            report: Value::Null,
        }
    }

    fn fail(mut self, status: Status) -> Run {
        self.status = status;
        self
    }

    /// 0 clean, 1 notice, 2 suspicious, 3 miner.
    pub fn rank(&self) -> u8 {
        level_rank(&self.level)
    }

    /// The findings of the tree (all processes with a finding).
    pub fn findings(&self) -> Vec<&Value> {
        self.report["findings"]
            .as_array()
            .map(|f| f.iter().collect())
            .unwrap_or_default()
    }

    /// Signals with id `id` in any finding of the tree.
    pub fn signals_with_id(&self, id: &str) -> Vec<&Value> {
        self.findings()
            .into_iter()
            .filter_map(|f| f["signals"].as_array())
            .flatten()
            .filter(|s| s["id"] == id)
            .collect()
    }

    /// Everything about the run, for assertion messages.
    pub fn context(&self) -> String {
        format!(
            "{}: {} (busy {:.0} %, scan CPU {:.0} %), level {} from {} {:?}\nreport: {}",
            self.name,
            self.status.word(),
            self.busy_percent,
            self.scan_cpu_percent,
            self.level,
            self.top_process,
            self.top_signals,
            serde_json::to_string_pretty(&self.report).unwrap_or_default()
        )
    }
}

/// 0 clean, 1 notice, 2 suspicious, 3 miner.
pub fn level_rank(level: &str) -> u8 {
    match level {
        "notice" => 1,
        "suspicious" => 2,
        "miner" => 3,
        _ => 0,
    }
}

/// Fills `run`'s level, top process and signals from a scan report.
pub fn judge_report(run: &mut Run, report: Value) {
    let worst = report["findings"].as_array().and_then(|f| {
        f.iter().max_by_key(|x| {
            (
                level_rank(x["level"].as_str().unwrap_or("")),
                x["score"].as_u64(),
            )
        })
    });
    if let Some(f) = worst {
        run.level = f["level"].as_str().unwrap_or("clean").to_string();
        run.top_process = format!(
            "{} {}",
            f["pid"],
            f["process"]["name"].as_str().unwrap_or("?")
        );
        run.top_signals = f["signals"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|x| x["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
    }
    run.report = report;
}

/// `minerwatch scan --pid PID --format json` (default window); the report,
/// and the % of a core `pid`'s tree used meanwhile.
pub fn scan_tree(pid: i32) -> Result<(Value, f64), String> {
    let t0 = tree_ticks(pid);
    let start = Instant::now();
    let out = Command::new(BIN)
        .args(["scan", "--pid", &pid.to_string(), "--format", "json"])
        .env("NO_COLOR", "1")
        .output()
        .map_err(|e| format!("running {BIN}: {e}"))?;
    let cpu =
        tree_ticks(pid).saturating_sub(t0) as f64 / clock_ticks() / start.elapsed().as_secs_f64()
            * 100.0;
    if !matches!(out.status.code(), Some(0 | 1)) {
        return Err(format!(
            "minerwatch scan exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "minerwatch scan printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    Ok((report, cpu))
}

/// Scans the running tree of `pid` (a miner fixture): no busy check.
pub fn scan_running(name: &str, pid: i32) -> Run {
    let mut run = Run::new(name);
    run.pid = pid;
    match scan_tree(pid) {
        Ok((report, cpu)) => {
            run.scan_cpu_percent = cpu;
            judge_report(&mut run, report);
            run
        }
        Err(e) => run.fail(Status::ScanFailed(e)),
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

fn workdir(name: &str) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix(&format!("mw-corpus-{name}-"))
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))
}

/// Sets `entry` up, starts it pinned to `cpu`, checks it is busy and scans
/// its tree. Everything it started is killed and removed before it returns
/// (also on panic).
pub fn scan_entry(entry: &Entry, cpu: usize) -> Run {
    let run = Run::new(entry.name);
    let missing = missing(entry);
    if !missing.is_empty() {
        return run.fail(Status::Missing(missing));
    }
    let dir = match workdir(entry.name) {
        Ok(d) => d,
        Err(e) => return run.fail(Status::FailedToStart(e)),
    };
    let ctx = Ctx {
        dir: dir.path().to_path_buf(),
    };
    let prepared = match (entry.prepare)(&ctx) {
        Ok(p) => p,
        Err(e) => return run.fail(Status::FailedToStart(format!("setup: {e}"))),
    };
    let script = match ctx.write("prog.sh", &prepared.script) {
        Ok(s) => s,
        Err(e) => return run.fail(Status::FailedToStart(e)),
    };
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string(), "bash", &script])
        .current_dir(&ctx.dir);
    let program = match Child::spawn(cmd) {
        Ok(c) => Program(c),
        Err(e) => return run.fail(Status::FailedToStart(format!("taskset bash: {e}"))),
    };
    let run = watch_and_scan(run, program, &prepared, entry.warmup);
    // Program (killed) drops before `prepared` (its guard) and `dir`.
    drop(prepared);
    drop(dir);
    run
}

fn watch_and_scan(
    mut run: Run,
    mut program: Program,
    prepared: &Prepared,
    warmup: Duration,
) -> Run {
    let pid = program.0.pid();
    run.pid = pid;
    if let Some(timeout) = prepared.ready
        && !program.0.wait_for_line(READY, timeout)
    {
        let why = format!(
            "no '{READY}' within {timeout:?}; stderr: {}",
            tail(&program.0.stderr_so_far())
        );
        return run.fail(Status::FailedToStart(why));
    }
    std::thread::sleep(warmup);
    if !program.0.is_running() {
        let why = format!("exited; stderr: {}", tail(&program.0.stderr_so_far()));
        return run.fail(Status::FailedToStart(why));
    }
    // Up to BUSY_TRIES windows: a slow start-up (hashcat's pocl set-up)
    // may idle for a moment. Never scanned unless one window was busy.
    for _ in 0..BUSY_TRIES {
        run.busy_percent = tree_cpu_percent(pid, BUSY_WINDOW);
        if run.busy_percent >= BUSY_PERCENT || !program.0.is_running() {
            break;
        }
    }
    if run.busy_percent < BUSY_PERCENT {
        let pct = run.busy_percent;
        return run.fail(Status::NotBusy(pct));
    }
    match scan_tree(pid) {
        Ok((report, cpu)) => {
            run.scan_cpu_percent = cpu;
            judge_report(&mut run, report);
            run
        }
        Err(e) => run.fail(Status::ScanFailed(e)),
    }
}

// -------------------------------------------------------------- the agent

/// One entry's minute under the agent.
#[derive(Clone, Debug, Default)]
pub struct AgentMinute {
    /// Alerts about processes at `suspicious` or `miner`.
    pub alerts: Vec<Value>,
    /// Host alerts (no pid), whatever their level.
    pub host_alerts: Vec<Value>,
    /// % of a core the program used over the minute.
    pub cpu_percent: f64,
    /// The program was still running at the end.
    pub alive: bool,
    /// Why the run did not complete, if it did not.
    pub error: Option<String>,
}

impl AgentMinute {
    /// "level name: signal ids" per alert.
    pub fn describe(&self) -> Vec<String> {
        self.alerts
            .iter()
            .map(|a| {
                let ids: Vec<String> = a["signals"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(|x| x["id"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "{} {}: {}",
                    a["level"].as_str().unwrap_or("?"),
                    a["process"]["name"].as_str().unwrap_or("?"),
                    ids.join(", ")
                )
            })
            .collect()
    }
}

/// Runs `entry` (set up anew, pinned to `cpu`) for `secs` seconds beside
/// `minerwatch agent` (tick 1 s, cpu_budget_percent = 100, NDJSON events to
/// a file) inside a fresh PID namespace (`unshare --pid --fork
/// --mount-proc`), both started inside it; returns its alerts.
pub fn agent_minute(entry: &Entry, cpu: usize, secs: u32) -> AgentMinute {
    let mut res = AgentMinute::default();
    let dir = match workdir(entry.name) {
        Ok(d) => d,
        Err(e) => {
            res.error = Some(e);
            return res;
        }
    };
    let ctx = Ctx {
        dir: dir.path().to_path_buf(),
    };
    let prepared = match (entry.prepare)(&ctx) {
        Ok(p) => p,
        Err(e) => {
            res.error = Some(format!("setup: {e}"));
            return res;
        }
    };
    let events = dir.path().join("events.ndjson");
    let written = ctx.write("prog.sh", &prepared.script).and_then(|_| {
        ctx.write(
            "agent.toml",
            format!(
                "[agent]\ntick_secs = 1\ncpu_budget_percent = 100\nheartbeat_secs = 10\n\n\
                 [[output]]\nkind = \"file\"\npath = \"{}\"\n",
                events.display()
            ),
        )
    });
    if let Err(e) = written {
        res.error = Some(e);
        return res;
    }
    let ready_wait = prepared.ready.map(|d| d.as_secs()).unwrap_or(0) * 10;
    let warmup_ms = entry.warmup.as_millis();
    let warmup = format!("{}.{:03}", warmup_ms / 1000, warmup_ms % 1000);
    let script = format!(
        r#"set -u
d={d}
ev=$d/events.ndjson
ticks() {{ cat /proc/[0-9]*/stat 2>/dev/null | awk -v a="$A" '{{ if ($1 == 1 || $1 == a) next; s = $0; sub(/^.*\) /, "", s); split(s, f, " "); t += f[12] + f[13] + f[14] + f[15] }} END {{ print t + 0 }}'; }}
{bin} agent --config $d/agent.toml 2> $d/agent.err &
A=$!
for i in $(seq 600); do grep -q '"heartbeat"' $ev 2>/dev/null && break; sleep 0.1; done
grep -q '"heartbeat"' $ev 2>/dev/null || {{ echo "error=no heartbeat from the agent"; exit 0; }}
cd $d
setsid taskset -c {cpu} bash $d/prog.sh > $d/prog.out 2> $d/prog.err < /dev/null &
P=$!
for i in $(seq {ready_wait}); do grep -q {READY} $d/prog.out && break; kill -0 $P 2>/dev/null || break; sleep 0.1; done
sleep {warmup}
t0=$(ticks); n0=$(date +%s%N)
sleep {secs}
kill -0 $P 2>/dev/null && echo alive=1
t1=$(ticks); n1=$(date +%s%N)
echo "ticks=$((t1 - t0))"
echo "ms=$(( (n1 - n0) / 1000000 ))"
kill -KILL -- -$P 2>/dev/null; wait $P 2>/dev/null
sleep 1.5
kill -TERM $A; wait $A
echo "agent_exit=$?"
"#,
        d = dir.path().display(),
        bin = BIN,
    );
    let mut cmd = Command::new("timeout");
    cmd.args([
        &(secs + 240).to_string(),
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "bash",
        "-c",
        &script,
    ]);
    let ns = match Child::spawn(cmd) {
        Ok(c) => c,
        Err(e) => {
            res.error = Some(format!("unshare: {e}"));
            return res;
        }
    };
    let mut ns = Program(ns);
    let deadline = Instant::now() + Duration::from_secs(u64::from(secs) + 250);
    while ns.0.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let stdout = ns.0.stdout_so_far();
    drop(ns);
    let number = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    res.alive = number("alive").is_some();
    if let (Some(t), Some(ms)) = (number("ticks"), number("ms"))
        && ms > 0.0
    {
        res.cpu_percent = t / clock_ticks() / (ms / 1000.0) * 100.0;
    }
    for line in fs::read_to_string(&events).unwrap_or_default().lines() {
        let Ok(ev) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if ev["type"] != "alert" {
            continue;
        }
        if ev["pid"].is_null() {
            res.host_alerts.push(ev);
        } else if level_rank(ev["level"].as_str().unwrap_or("")) >= 2 {
            res.alerts.push(ev);
        }
    }
    let agent_err = fs::read_to_string(dir.path().join("agent.err")).unwrap_or_default();
    let prog_err = fs::read_to_string(dir.path().join("prog.err")).unwrap_or_default();
    if let Some(e) = stdout.lines().find_map(|l| l.strip_prefix("error=")) {
        res.error = Some(format!("{e}; agent stderr: {}", tail(&agent_err)));
    } else if number("agent_exit") != Some(0.0) {
        res.error = Some(format!(
            "agent did not stop cleanly ({}); agent stderr: {}",
            stdout.trim(),
            tail(&agent_err)
        ));
    } else if !res.alive {
        res.error = Some(format!("the program exited early: {}", tail(&prog_err)));
    }
    drop(prepared);
    drop(dir);
    res
}
