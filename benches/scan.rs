//! Benchmarks (run with `cargo bench --bench scan`; numbers go to benches/RESULTS.md).
//!
//! 1. `scan` overhead: the release binary scans a host with 150+ processes
//!    (we start sleepers to get there); its own time beyond the sampling window
//!    and its peak RSS, from wait4's rusage.
//! 2. File-scanning throughput of our yara-x path against Debian's `yara` CLI
//!    (YARA 4.2) on the same files with the same rule files, as a ratio
//!    measured in one run.
//! 3. Deep signals on a real librandomx worker (light mode, config on its
//!    heap): the time to a rounding-mode verdict and the stop time a sampled
//!    thread sees, hashing flat out, held to 25 % of a core by a cgroup
//!    CPU quota, and throttling itself to 25 % in bursts; the time to clear a benign busy thread (8 samples taken
//!    while it ran, all round-to-nearest); the time and bytes of one process
//!    memory scan.
//!
//! Parts 1 and 3 run a RandomX worker (tests/support/rxworker.c, needs
//! librandomx-dev and libssl-dev), so the whole-host scan exercises every
//! path. The bench runs itself in a fresh PID namespace (`unshare --pid
//! --fork --mount-proc`, as root), so that "the whole host" is the processes
//! it started: a scan that ptraces and reads memory never touches anyone
//! else's.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use minerwatch::observe::files;
use minerwatch::signatures::{FileContext, Signatures};

const BIN: &str = env!("CARGO_BIN_EXE_minerwatch");
const WINDOW: f64 = 5.0;
const RUNS: usize = 3;

struct Kill(Vec<Child>);
impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0)
}

/// Runs `cmd` and returns (wall, user+sys CPU, max RSS in KiB) from wait4.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives its rusage
fn measure(cmd: &mut Command) -> (Duration, Duration, u64) {
    let start = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = i32::try_from(child.id()).expect("pid");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child with valid pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4");
    let wall = start.elapsed();
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    (wall, tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64)
}

/// Compiles and starts the test RandomX worker with `extra` arguments;
/// returns it once it hashes.
fn worker(extra: &[&str]) -> Child {
    let dir = std::env::temp_dir().join(format!("mw-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let bin = dir.join("rxworker");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/rxworker.c");
    let ok = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(src)
        .args(["-lrandomx", "-lpthread", "-lssl", "-lcrypto"])
        .status()
        .expect("cc");
    assert!(
        ok.success(),
        "building rxworker (apt-get install librandomx-dev libssl-dev)"
    );
    let wallet = "4ApM6hUHyYx16547k5sn3zRND22RhkaWd4JdemFQyTKQ36ixnHzMV4LRzyFP6XEdkjMTZqHsQA5DhDZWLchXHcKf4dKqcj7";
    let mut child = Command::new(&bin)
        .args([
            "--mode",
            "light",
            "--seconds",
            "300",
            "-u",
            wallet,
            "--config-in-memory",
            "pool.example.net:3333",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start rxworker");
    let mut line = String::new();
    if let Some(out) = child.stdout.as_mut() {
        use std::io::BufRead;
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    assert_eq!(line.trim(), "hashing");
    let _ = std::fs::remove_dir_all(&dir);
    child
}

/// One sampling configuration measured over `N` runs: how often a verdict
/// came (two modes for a RandomX thread; 8 samples taken while it ran, all
/// round-to-nearest, for a benign one), the sampling time and the stops.
fn sampling_runs(
    what: &str,
    pid: i32,
    opts: &minerwatch::observe::fpu::SampleOptions,
    benign: bool,
) {
    use minerwatch::observe::fpu;
    let mut elapsed = Vec::new();
    let mut stops = Vec::new();
    let mut verdicts = 0;
    // A RandomX thread's samples that would clear it as not hashing.
    let mut cleared = 0;
    const N: usize = 20;
    for _ in 0..N {
        let f = fpu::sample(Path::new("/proc"), pid, &[pid], opts);
        elapsed.push(f.elapsed_ms);
        stops.push(f.max_stop_us);
        let ran: usize = f.threads.iter().map(fpu::ThreadFpu::ran_samples).sum();
        let all_nearest = f.non_default == 0 && ran >= 8;
        let verdict = if benign {
            all_nearest
        } else {
            f.modes.len() >= 2
        };
        verdicts += usize::from(verdict);
        cleared += usize::from(!benign && all_nearest);
    }
    elapsed.sort_unstable();
    stops.sort_unstable();
    let (wanted, wrong) = if benign {
        (
            "8 samples taken while it ran, all round-to-nearest",
            String::new(),
        )
    } else {
        (
            ">= 2 modes",
            format!(", wrongly cleared (8 samples at work, all nearest) in {cleared}/{N}"),
        )
    };
    println!(
        "- {what}: {N} runs of up to {} samples {} ms apart: verdict ({wanted}) in {verdicts}/{N}{wrong}; sampling time median {} ms, max {} ms (budget {} ms); longest stop of a run: median {} µs, 90th percentile {} µs, max {} µs",
        opts.samples,
        opts.interval.as_millis(),
        elapsed[N / 2],
        elapsed[N - 1],
        opts.budget.as_millis(),
        stops[N / 2],
        stops[N * 9 / 10],
        stops[N - 1]
    );
}

/// A cgroup of the bench's own with a CPU quota of 25 % of a core (cgroup v2
/// `cpu.max`, else v1 `cpu.cfs_quota_us`), holding `pid`; removed on drop.
struct Quota(PathBuf);

impl Quota {
    fn hold(pid: i32) -> Option<Quota> {
        let name = format!("mw-bench-{}", std::process::id());
        let v2 = Path::new("/sys/fs/cgroup");
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let (dir, file, value) = if v2.join("cgroup.controllers").exists() {
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
            (v2.join(&name), "cpu.max", "25000 100000")
        } else {
            (v1.join(&name), "cpu.cfs_quota_us", "25000")
        };
        std::fs::create_dir(&dir).ok()?;
        let quota = Quota(dir);
        std::fs::write(quota.0.join(file), value).ok()?;
        std::fs::write(quota.0.join("cgroup.procs"), pid.to_string()).ok()?;
        Some(quota)
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        // Its members go back to the root group first.
        if let Ok(pids) = std::fs::read_to_string(self.0.join("cgroup.procs"))
            && let Some(root) = self.0.parent()
        {
            for pid in pids.lines() {
                let _ = std::fs::write(root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn deep_signals(pid: i32) {
    use minerwatch::observe::{fpu, memscan};
    println!("## deep signals on one librandomx worker (1 hashing thread)");
    sampling_runs(
        "rounding-mode sampling, hashing flat out",
        pid,
        &fpu::SampleOptions::default(),
        false,
    );
    match Quota::hold(pid) {
        Some(q) => {
            std::thread::sleep(Duration::from_millis(500));
            sampling_runs(
                "the same worker held to 25 % of a core by a cgroup CPU quota, low-duty pace",
                pid,
                &fpu::SampleOptions::low_duty(),
                false,
            );
            drop(q);
        }
        None => {
            println!("- no cgroup with a CPU quota could be made: quota-held sampling not measured")
        }
    }
    // A worker that throttles itself: it hashes in bursts and sleeps
    // between them, back at round-to-nearest (RandomX restores it after each
    // hash), where a quota-held one waits for a CPU mid-hash.
    let bursts = Kill(vec![worker(&["--throttle", "25"])]);
    sampling_runs(
        "a second worker throttling itself to 25 % (hashing in bursts, asleep between them), low-duty pace",
        i32::try_from(bursts.0[0].id()).expect("pid"),
        &fpu::SampleOptions::low_duty(),
        false,
    );
    drop(bursts);
    let py = Kill(vec![
        Command::new("python3")
            .args(["-c", "x = 0.0\nwhile True:\n    x = x * 1.0000001 + 0.5\n"])
            .spawn()
            .expect("python3"),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let py_pid = i32::try_from(py.0[0].id()).expect("pid");
    sampling_runs(
        "a benign busy thread (a Python float loop), until cleared",
        py_pid,
        &fpu::SampleOptions::default(),
        true,
    );
    drop(py);
    let sigs = Signatures::load(None).expect("rules");
    let budget = memscan::Budget::default();
    let maps: Vec<_> = procfs::process::Process::new(pid)
        .and_then(|p| p.maps())
        .expect("maps")
        .into_iter()
        .collect();
    let start = Instant::now();
    let scan = memscan::scan(Path::new("/proc"), pid, None, &maps, sigs.rules(), &budget)
        .expect("memory scan");
    println!(
        "- memory scan: {} regions, {:.1} MiB in {:.0} ms (budget {} MiB per region, {} MiB per process, {} s), rules matched: {}\n",
        scan.regions_scanned,
        scan.bytes_scanned as f64 / 1048576.0,
        start.elapsed().as_secs_f64() * 1000.0,
        budget.per_region >> 20,
        budget.per_process >> 20,
        budget.time.as_secs(),
        scan.matches
            .iter()
            .map(|m| m.rule.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

fn scan_overhead() {
    let mut sleepers = Kill(Vec::new());
    while process_count() < 160 {
        sleepers
            .0
            .push(Command::new("sleep").arg("600").spawn().expect("sleep"));
    }
    let procs = process_count();
    println!(
        "## scan overhead ({procs} processes in the bench's PID namespace, one of them a hashing RandomX worker, --window {WINDOW})"
    );
    println!("| run | wall s | beyond window s | CPU s | peak RSS MiB |");
    println!("|---|---|---|---|---|");
    let mut worst_beyond: f64 = 0.0;
    let mut worst_rss = 0;
    for run in 1..=RUNS {
        let (wall, cpu, rss) =
            measure(Command::new(BIN).args(["scan", "--window", "5", "--format", "json"]));
        let beyond = wall.as_secs_f64() - WINDOW;
        worst_beyond = worst_beyond.max(beyond);
        worst_rss = worst_rss.max(rss);
        println!(
            "| {run} | {:.2} | {beyond:.2} | {:.2} | {:.1} |",
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            rss as f64 / 1024.0
        );
    }
    println!(
        "\nworst: {worst_beyond:.2} s beyond the window (target < 1 s), peak RSS {:.1} MiB (target < 150 MiB)\n",
        worst_rss as f64 / 1024.0
    );
}

fn corpus(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn throughput() {
    let dir = Path::new("/usr/bin");
    let files = corpus(dir);
    let bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let rules_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/yara");
    let rule_files: Vec<String> = ["randomx.yar", "xmrig.yar", "miners.yar"]
        .iter()
        .map(|f| format!("{rules_dir}/{f}"))
        .collect();
    println!(
        "## file scanning: {} files, {:.1} MiB in {}",
        files.len(),
        bytes as f64 / 1048576.0,
        dir.display()
    );
    println!("| engine | run | seconds | MiB/s | matches |");
    println!("|---|---|---|---|---|");
    let sigs = Signatures::load(None).expect("rules");
    let mut ours = f64::MAX;
    let mut theirs = f64::MAX;
    for run in 1..=RUNS {
        let start = Instant::now();
        let mut scanner = sigs.scanner();
        let mut matches = 0;
        for f in &files {
            let Ok((data, _)) = files::read_regular(f, files::MAX_BINARY_BYTES, true) else {
                continue;
            };
            let path = f.to_string_lossy();
            matches += scanner
                .scan(
                    &data,
                    &FileContext {
                        path: &path,
                        owner: "root",
                    },
                )
                .map(|m| m.len())
                .unwrap_or(0);
        }
        let t = start.elapsed().as_secs_f64();
        ours = ours.min(t);
        println!(
            "| minerwatch (yara-x) | {run} | {t:.2} | {:.0} | {matches} |",
            bytes as f64 / 1048576.0 / t
        );

        let start = Instant::now();
        let out = Command::new("yara")
            .args(["-p", "1", "--no-warnings"])
            .args(&rule_files)
            .arg(dir)
            .output()
            .expect("Debian's yara CLI (apt-get install yara)");
        let t = start.elapsed().as_secs_f64();
        theirs = theirs.min(t);
        let n = String::from_utf8_lossy(&out.stdout).lines().count();
        println!(
            "| yara 4.2 CLI, 1 thread | {run} | {t:.2} | {:.0} | {n} |",
            bytes as f64 / 1048576.0 / t
        );
    }
    println!(
        "\nbest of {RUNS}: minerwatch {ours:.2} s, yara {theirs:.2} s: minerwatch takes {:.2}× yara's time\n",
        ours / theirs
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if std::env::var_os("MW_BENCH_IN_NAMESPACE").is_none() {
        let me = std::env::current_exe().expect("own path");
        let status = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(me)
            .args(std::env::args().skip(1))
            .env("MW_BENCH_IN_NAMESPACE", "1")
            .status()
            .expect("unshare (util-linux; run as root)");
        std::process::exit(status.code().unwrap_or(1));
    }
    let w = Kill(vec![worker(&[])]);
    let pid = i32::try_from(w.0[0].id()).expect("pid");
    deep_signals(pid);
    scan_overhead();
    drop(w);
    throughput();
}
