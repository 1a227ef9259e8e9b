//! `minerwatch sweep`: the files on disk, for the miner that is not running.
//!
//! A walk safe on a hostile tree: every directory is opened with
//! `openat(O_NOFOLLOW | O_DIRECTORY)` relative to its parent, so no symlink
//! is ever followed and a symlink loop cannot exist for us; one filesystem
//! per root unless `cross_fs`; /proc, /sys, /dev and pseudo filesystems are
//! never entered; every file is opened with `O_NOFOLLOW | O_NONBLOCK`,
//! checked with fstat to be a regular file, and read up to `max_file_size`
//! bytes (a FIFO, socket or device is never opened, a sparse 10 GiB file
//! costs one cap). Directories are opened when their turn comes, so the
//! open descriptors are bounded by the depth (capped at [`MAX_DEPTH`]), not
//! the width of the tree. Everything not read is counted by reason.
//!
//! One thread walks; `threads` workers read, hash (SHA-256), match the rules
//! and parse XMRig-style configs. Only files that matched something are
//! kept; the rest are counted.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use rustix::fs::{FileType, OFlags};

use crate::safefs::tree::{DIR_FLAGS, FILE_FLAGS, fstat_fd, getdents, mode_kind, open_at};
use crate::signatures::{FileContext, Signatures};
use crate::snapshot::{FileMeta, PersistenceEntry, PreloadFile, SweepFacts, SweepSkip, SweptFile};

/// Bytes read per file unless `--max-file-size` says otherwise (64 MiB).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 20;
/// Directory levels below a root that are walked.
pub const MAX_DEPTH: usize = 4096;
/// Entries taken from one directory.
const MAX_ENTRIES: usize = 1_000_000;
/// Skips kept with their path for the report.
const EXAMPLES: usize = 100;
/// A file larger than this is not parsed as a miner config.
const MAX_CONFIG: usize = 1 << 20;
/// Files waiting for a worker.
const QUEUE: usize = 256;

/// Where miners are dropped and launched from, relative to the root.
pub const DEFAULT_DIRS: &[&str] = &[
    "tmp",
    "var/tmp",
    "dev/shm",
    "usr/local",
    "opt",
    "var/lib",
    "etc/cron.d",
    "etc/cron.hourly",
    "etc/cron.daily",
    "etc/cron.weekly",
    "etc/cron.monthly",
    "etc/crontab",
    "var/spool/cron",
    "etc/systemd/system",
    "lib/systemd/system",
    "usr/lib/systemd/system",
    "etc/rc.local",
];

/// How to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// What to sweep: host paths, already under `root`.
    pub roots: Vec<PathBuf>,
    /// The host's filesystem root (`--root`), stripped for host paths.
    pub root: PathBuf,
    /// Bytes read per file at most.
    pub max_file_size: u64,
    /// Enter other filesystems below a root.
    pub cross_fs: bool,
    /// Reading threads.
    pub threads: usize,
    /// Known-bad SHA-256 (lowercase hex) → the comment of its line.
    pub hashes: HashMap<String, String>,
    /// Keep the whole process under this percentage of one core, on
    /// average since the sweep started (`--cpu-limit`); `None`: no limit.
    pub cpu_limit: Option<u32>,
    /// Draw a progress line on stderr (files, bytes, rate, the directory
    /// being walked): only when stdout and stderr are terminals.
    pub progress: bool,
}

/// The progress line: files read and their rate, bytes, where the walk is.
struct Progress {
    bar: indicatif::ProgressBar,
    bytes: std::sync::atomic::AtomicU64,
}

impl Progress {
    fn new(on: bool) -> Option<Progress> {
        on.then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr_with_hz(4),
            );
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} {human_pos} files, {msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(250));
            Progress {
                bar,
                bytes: Default::default(),
            }
        })
    }

    fn file(&self, bytes: u64) {
        self.bytes
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        self.bar.inc(1);
    }

    fn dir(&self, path: &str) {
        let mib = self.bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1048576.0;
        let shown: String = path
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .take(100)
            .collect();
        let secs = self.bar.elapsed().as_secs_f64().max(0.001);
        let rate = self.bar.position() as f64 / secs;
        self.bar
            .set_message(format!("{mib:.1} MiB, {rate:.0} files/s, in {shown}"));
    }
}

/// Holds the process to `limit` % of one core on average: after each file a
/// reader sleeps until the process's CPU time (getrusage, every thread and
/// the rule compilation before the start included) is within the budget of
/// the wall time since `start`.
struct CpuLimit {
    limit: f64,
    start: std::time::Instant,
}

impl CpuLimit {
    fn pace(&self) {
        let used = crate::sys::self_cpu_time().as_secs_f64();
        let wall = self.start.elapsed().as_secs_f64();
        let due = used / self.limit - wall;
        if due > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(due.min(5.0)));
        }
    }
}

/// The default roots under `root`: [`DEFAULT_DIRS`], the hidden entries of
/// every home directory (`/root`, `/home/*`: `.cache`, `.local`, `.config`
/// and every other dot-directory or dot-file), and every absolute path a
/// persistence entry launches or ld.so.preload lists. Only those that exist.
pub fn default_roots(
    root: &Path,
    persistence: &[PersistenceEntry],
    preload: Option<&PreloadFile>,
) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = DEFAULT_DIRS.iter().map(|d| root.join(d)).collect();
    let mut homes = vec![root.join("root")];
    if let Ok(rd) = std::fs::read_dir(root.join("home")) {
        homes.extend(rd.flatten().map(|e| e.path()));
    }
    for home in homes {
        let Ok(rd) = std::fs::read_dir(&home) else {
            continue;
        };
        out.extend(
            rd.flatten()
                .filter(|e| e.file_name().as_encoded_bytes().starts_with(b"."))
                .map(|e| e.path()),
        );
    }
    let named = persistence
        .iter()
        .flat_map(|e| e.programs.iter())
        .chain(preload.into_iter().flat_map(|p| p.entries.iter()));
    for p in named {
        if let Some(rel) = p.strip_prefix('/') {
            out.push(root.join(rel));
        }
    }
    out.retain(|p| std::fs::symlink_metadata(p).is_ok());
    out.sort();
    out.dedup();
    // A root inside another root is swept with it.
    let all = out.clone();
    out.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
    out
}

/// Parses a `--hashes` file: one SHA-256 per line (64 hex digits), then
/// optional whitespace and a comment; blank lines and `#` lines ignored.
pub fn parse_hashes(text: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (hash, comment) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(h, c)| (h, c.trim()));
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "line {}: '{}' is not a SHA-256 (64 hex digits, then an optional comment)",
                n + 1,
                hash.chars().take(80).collect::<String>()
            ));
        }
        out.insert(hash.to_ascii_lowercase(), comment.to_string());
    }
    Ok(out)
}

/// Filesystems that hold no files a miner is dropped as: never entered.
fn pseudo_fs(magic: rustix::fs::FsWord) -> Option<&'static str> {
    const PSEUDO: &[(u64, &str)] = &[
        (0x9fa0, "proc"),
        (0x6265_6572, "sysfs"),
        (0x0027_e0eb, "cgroup"),
        (0x6367_7270, "cgroup2"),
        (0x1cd1, "devpts"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0x7363_6673, "securityfs"),
        (0xcafe_4a11, "bpf"),
        (0x6165_676c, "pstore"),
        (0x6265_6570, "configfs"),
        (0x6573_5543, "fusectl"),
        (0x4249_4e4d, "binfmt_misc"),
        (0x1980_0202, "mqueue"),
        (0x6e73_6673, "nsfs"),
        (0x9584_58f6, "hugetlbfs"),
    ];
    // f_type's width and sign differ between targets: compare its bits.
    let magic = magic as u64 & 0xffff_ffff;
    PSEUDO.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n)
}

/// What the walk and the workers count.
#[derive(Default)]
struct Tally {
    skipped: BTreeMap<String, u64>,
    examples: Vec<SweepSkip>,
    files_read: u64,
    bytes_read: u64,
    found: Vec<SweptFile>,
}

impl Tally {
    fn skip(&mut self, path: &str, reason: impl Into<String>) {
        let reason = reason.into();
        *self.skipped.entry(reason.clone()).or_default() += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(SweepSkip {
                path: path.to_string(),
                reason,
            });
        }
    }
}

fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// A regular file waiting for a worker: its directory and name.
struct Job {
    dir: Arc<OwnedFd>,
    name: Vec<u8>,
    path: String,
}

/// A snapshot of a sweep alone: who the host is, the persistence entries
/// and ld.so.preload under `opts.root` (to link files to what launches
/// them), and the files. `roots` empty: the [`default_roots`].
pub fn observe_sweep(opts: &SweepOptions, sigs: &Signatures) -> crate::snapshot::HostSnapshot {
    let started_at = jiff::Timestamp::now().to_string();
    let clock_ticks = procfs::ticks_per_second().max(1);
    let (host_facts, gaps) = super::host::observe_launchers(&opts.root);
    let mut opts = opts.clone();
    if opts.roots.is_empty() {
        opts.roots = default_roots(
            &opts.root,
            &host_facts.persistence,
            host_facts.ld_so_preload.as_ref(),
        );
    }
    let facts = sweep(&opts, sigs);
    crate::snapshot::HostSnapshot {
        schema: crate::snapshot::SNAPSHOT_SCHEMA.to_string(),
        host: super::host_info::host_info(clock_ticks, &opts.root),
        started_at,
        window_secs: 0.0,
        host_cpu: Default::default(),
        processes: Vec::new(),
        binaries: Vec::new(),
        rules: sigs.info().clone(),
        scope: Vec::new(),
        scoped_host_checks: false,
        coverage: crate::snapshot::Coverage {
            errors: gaps
                .into_iter()
                .map(|(what, error)| crate::snapshot::CoverageError {
                    pid: None,
                    what,
                    error,
                })
                .collect(),
            ..Default::default()
        },
        host_facts,
        preload_binaries: Vec::new(),
        sweep: Some(facts),
    }
}

/// Sweeps `opts.roots` with the rules of `sigs`.
pub fn sweep(opts: &SweepOptions, sigs: &Signatures) -> SweepFacts {
    let tally = Mutex::new(Tally::default());
    let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
    let rx = Mutex::new(rx);
    let progress = Progress::new(opts.progress);
    let limit = opts.cpu_limit.map(|pct| CpuLimit {
        limit: f64::from(pct.max(1)) / 100.0,
        start: std::time::Instant::now(),
    });
    std::thread::scope(|scope| {
        for _ in 0..opts.threads.max(1) {
            let (rx, tally, limit, progress) = (&rx, &tally, &limit, &progress);
            scope.spawn(move || {
                let mut scanner = sigs.scanner();
                loop {
                    let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                        Ok(j) => j,
                        Err(_) => return,
                    };
                    read_one(&job, opts, &mut scanner, tally, progress.as_ref());
                    if let Some(l) = limit {
                        l.pace();
                    }
                }
            });
        }
        for root in &opts.roots {
            walk_root(root, opts, &tx, &tally, progress.as_ref());
        }
        drop(tx);
    });
    if let Some(p) = progress {
        p.bar.finish_and_clear();
    }
    let mut t = tally.into_inner().unwrap_or_else(|p| p.into_inner());
    t.found.sort_by(|a, b| a.meta.path.cmp(&b.meta.path));
    SweepFacts {
        roots: opts.roots.iter().map(|r| r.display().to_string()).collect(),
        files: t.found,
        files_read: t.files_read,
        bytes_read: t.bytes_read,
        max_file_size: opts.max_file_size,
        skipped: t.skipped,
        skipped_examples: t.examples,
        known_hashes: opts.hashes.len(),
    }
}

/// Walks one root (a directory or a single file), feeding regular files to
/// the workers.
fn walk_root(
    root: &Path,
    opts: &SweepOptions,
    tx: &mpsc::SyncSender<Job>,
    tally: &Mutex<Tally>,
    progress: Option<&Progress>,
) {
    let shown = root.display().to_string();
    let (parent, name) = match (root.parent(), root.file_name()) {
        (Some(p), Some(n)) => (p, n.as_encoded_bytes().to_vec()),
        _ => (Path::new("/"), b".".to_vec()),
    };
    // The root's parent may be reached through symlinks (the caller named
    // it); the root itself is opened without following one.
    let parent_fd = match crate::safefs::tree::open_dir_path(parent) {
        Ok(fd) => Arc::new(fd),
        Err(e) => return lock(tally).skip(&shown, format!("unreadable: {e}")),
    };
    let st = match crate::safefs::tree::lstat_at(&parent_fd, &name) {
        Ok(st) => st,
        Err(e) => return lock(tally).skip(&shown, format!("unreadable: {e}")),
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {}
        FileType::RegularFile => {
            let _ = tx.send(Job {
                dir: parent_fd,
                name,
                path: shown,
            });
            return;
        }
        FileType::Symlink => return lock(tally).skip(&shown, "symlink (not followed)"),
        other => return lock(tally).skip(&shown, mode_kind(other.as_raw_mode())),
    }
    let Ok(dir) = open_at(&parent_fd, &name, DIR_FLAGS) else {
        return lock(tally).skip(&shown, "unreadable directory");
    };
    let dev = st.st_dev;
    // Directories still to list: (parent, name, path, depth); opened when popped.
    let mut todo: Vec<(Arc<OwnedFd>, Vec<u8>, String, usize)> = Vec::new();
    list_dir(Arc::new(dir), &shown, 0, dev, opts, tx, tally, &mut todo);
    while let Some((parent, name, path, depth)) = todo.pop() {
        let dir = match open_at(&parent, &name, DIR_FLAGS) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                lock(tally).skip(&path, "vanished while swept");
                continue;
            }
            Err(e) => {
                lock(tally).skip(&path, format!("unreadable directory: {e}"));
                continue;
            }
        };
        drop(parent);
        if let Some(p) = progress {
            p.dir(&path);
        }
        list_dir(Arc::new(dir), &path, depth, dev, opts, tx, tally, &mut todo);
    }
}

#[allow(clippy::too_many_arguments)]
fn list_dir(
    dir: Arc<OwnedFd>,
    path: &str,
    depth: usize,
    dev: u64,
    opts: &SweepOptions,
    tx: &mpsc::SyncSender<Job>,
    tally: &Mutex<Tally>,
    todo: &mut Vec<(Arc<OwnedFd>, Vec<u8>, String, usize)>,
) {
    if let Ok(st) = fstat_fd(&dir)
        && !opts.cross_fs
        && st.st_dev != dev
    {
        return lock(tally).skip(path, "another filesystem (--cross-fs enters it)");
    }
    if let Ok(sfs) = rustix::fs::fstatfs(&*dir)
        && let Some(kind) = pseudo_fs(sfs.f_type)
    {
        return lock(tally).skip(path, format!("{kind} (a pseudo filesystem)"));
    }
    let host = host_path(path, &opts.root);
    if ["/proc", "/sys", "/dev"].contains(&host.as_str()) {
        return lock(tally).skip(path, "pseudo filesystem directory (not entered)");
    }
    let (entries, truncated) = match getdents(&dir, MAX_ENTRIES) {
        Ok(r) => r,
        Err(e) => return lock(tally).skip(path, format!("unlistable directory: {e}")),
    };
    if truncated {
        lock(tally).skip(path, format!("more than {MAX_ENTRIES} entries: the rest"));
    }
    for entry in entries {
        let child = format!(
            "{}/{}",
            path.trim_end_matches('/'),
            String::from_utf8_lossy(&entry.name)
        );
        let kind = match entry.kind {
            FileType::Unknown => match crate::safefs::tree::lstat_at(&dir, &entry.name) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => {
                    lock(tally).skip(&child, "vanished while swept");
                    continue;
                }
            },
            k => k,
        };
        match kind {
            FileType::Directory if depth + 1 > MAX_DEPTH => {
                lock(tally).skip(&child, format!("deeper than {MAX_DEPTH} levels"))
            }
            FileType::Directory => todo.push((Arc::clone(&dir), entry.name, child, depth + 1)),
            FileType::RegularFile => {
                let job = Job {
                    dir: Arc::clone(&dir),
                    name: entry.name,
                    path: child,
                };
                if tx.send(job).is_err() {
                    return;
                }
            }
            FileType::Symlink => lock(tally).skip(&child, "symlink (not followed)"),
            other => lock(tally).skip(&child, mode_kind(other.as_raw_mode())),
        }
    }
}

/// `path` as the host names it: without the `--root` prefix.
fn host_path(path: &str, root: &Path) -> String {
    let root = root.display().to_string();
    if root == "/" {
        return path.to_string();
    }
    match path.strip_prefix(root.trim_end_matches('/')) {
        Some("") => "/".to_string(),
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => path.to_string(),
    }
}

/// Reads, hashes and matches one file; keeps it when it matched something.
fn read_one(
    job: &Job,
    opts: &SweepOptions,
    scanner: &mut crate::signatures::FileScanner<'_>,
    tally: &Mutex<Tally>,
    progress: Option<&Progress>,
) {
    let fd = match open_at(&job.dir, &job.name, FILE_FLAGS.union(OFlags::NOATIME)) {
        Ok(fd) => fd,
        // O_NOATIME is only ours to ask on our own files.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            match open_at(&job.dir, &job.name, FILE_FLAGS) {
                Ok(fd) => fd,
                Err(e) => return lock(tally).skip(&job.path, format!("unreadable: {e}")),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return lock(tally).skip(&job.path, "vanished while swept");
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return lock(tally).skip(&job.path, "symlink (not followed)");
        }
        Err(e) => return lock(tally).skip(&job.path, format!("unreadable: {e}")),
    };
    let st = match fstat_fd(&fd) {
        Ok(st) => st,
        Err(e) => return lock(tally).skip(&job.path, format!("unreadable: {e}")),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        // Swapped for something else between the listing and the open.
        return lock(tally).skip(&job.path, mode_kind(st.st_mode));
    }
    let mut data = Vec::new();
    let cap = opts.max_file_size;
    if let Err(e) = std::fs::File::from(fd)
        .take(cap.saturating_add(1))
        .read_to_end(&mut data)
    {
        return lock(tally).skip(&job.path, format!("read failed: {e}"));
    }
    let truncated = data.len() as u64 > cap;
    data.truncate(usize::try_from(cap).unwrap_or(usize::MAX));
    let sha256 = crate::safefs::sha256_hex(&data);
    let host = host_path(&job.path, &opts.root);
    let owner = st.st_uid.to_string();
    let rules = scanner
        .scan(
            &data,
            &FileContext {
                path: &host,
                owner: &owner,
            },
        )
        .unwrap_or_else(|e| {
            lock(tally).skip(&job.path, format!("rules failed: {e}"));
            Vec::new()
        });
    let known_bad = (!truncated)
        .then(|| opts.hashes.get(&sha256).cloned())
        .flatten();
    let looks_json = data.len() <= MAX_CONFIG
        && data
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{');
    let miner_config = looks_json
        .then(|| super::miner_config::parse(&host, &data))
        .flatten();
    let randomx_api = links_randomx(&data);
    if let Some(p) = progress {
        p.file(data.len() as u64);
    }
    let mut t = lock(tally);
    t.files_read += 1;
    t.bytes_read += data.len() as u64;
    if truncated {
        let first = if cap >= 1 << 20 && cap.is_multiple_of(1 << 20) {
            format!("{} MiB", cap >> 20)
        } else {
            format!("{cap} bytes")
        };
        t.skip(
            &job.path,
            format!("larger than --max-file-size: only its first {first} read"),
        );
    }
    if rules.is_empty() && known_bad.is_none() && miner_config.is_none() && !randomx_api {
        return;
    }
    let mtime = jiff::Timestamp::from_second(st.st_mtime)
        .map(|t| t.to_string())
        .unwrap_or_default();
    t.found.push(SweptFile {
        meta: FileMeta {
            path: job.path.clone(),
            host_path: host,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mtime,
            uid: st.st_uid,
            mode: st.st_mode & 0o7777,
            sha256,
            truncated,
        },
        rules,
        known_bad,
        miner_config,
        randomx_api,
    });
}

/// The RandomX library's API names, NUL-terminated as in an ELF string table.
static RANDOMX_API: std::sync::LazyLock<[regex::bytes::Regex; 2]> =
    std::sync::LazyLock::new(|| {
        ["randomx_create_vm", "randomx_calculate_hash"].map(|name| {
            regex::bytes::Regex::new(&format!(r"(?-u)\x00{name}\x00"))
                .unwrap_or_else(|e| unreachable!("a fixed pattern: {e}"))
        })
    });

/// An ELF program that names the RandomX API among its strings.
fn links_randomx(data: &[u8]) -> bool {
    data.starts_with(b"\x7fELF") && RANDOMX_API.iter().all(|re| re.is_match(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_file_lines_are_checked() {
        let h = "a".repeat(64);
        let m = parse_hashes(&format!(
            "# known bad\n\n{h}  xmrig 6.21 static\n{}\n",
            "B".repeat(64)
        ))
        .expect("parses");
        assert_eq!(m.get(&h).map(String::as_str), Some("xmrig 6.21 static"));
        assert_eq!(m.get(&"b".repeat(64)).map(String::as_str), Some(""));
        let err = parse_hashes(&format!("{h}\nnot-a-hash here\n")).expect_err("bad line");
        assert!(err.starts_with("line 2: 'not-a-hash'"), "{err}");
    }

    #[test]
    fn host_paths_drop_the_root() {
        let root = Path::new("/mnt/host");
        assert_eq!(host_path("/mnt/host/tmp/x", root), "/tmp/x");
        assert_eq!(host_path("/mnt/host", root), "/");
        assert_eq!(host_path("/mnt/hostile/x", root), "/mnt/hostile/x");
        assert_eq!(host_path("/tmp/x", Path::new("/")), "/tmp/x");
    }
}
