//! The evidence bundle: one gzip-compressed tar, written whole or not at all
//! (mode 0600), for the next analyst and for `minerwatch analyze`.
//!
//! Layout (schema [`BUNDLE_SCHEMA`]):
//!
//! ```text
//! snapshot.json               what was observed (as `scan --save` writes it)
//! report.json, report.md      the judgement, as --format json and markdown
//! proc/PID/status, stat, maps, smaps_rollup, cmdline, environ, limits,
//!          cgroup, mountinfo   copied from procfs
//! proc/PID/fd.txt             every fd and what it points to (sockets too)
//! proc/PID/net/tcp, tcp6, udp, udp6, unix   its network namespace's sockets
//! proc/PID/exe                the executable, read through /proc/PID/exe
//!                             (also when deleted or a memfd)
//! proc/PID/libs/PATH          mapped libraries outside the system directories
//! proc/PID/memory/START-END.bin   the memory regions a rule matched in
//! files/PATH                  miner configs, persistence files, ld.so.preload
//!                             and the libraries it lists
//! contain/plan.json           when `contain` made it: what it was asked to do
//! manifest.json               last: SHA-256 and size of every member above,
//!                             where it came from, caps reached, what failed
//! ```
//!
//! Caps: each member at most `max_member` bytes (a longer file is cut and the
//! manifest says so), the members together at most `max_total` (later
//! members are left out, each named in the manifest), each memory region at
//! most `max_region`. A RandomX dataset is never copied: only regions a rule
//! matched are, and those are code and heap, not the 2 GiB dataset.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use procfs::process::{MMapPath, MemoryMap};
use serde::{Deserialize, Serialize};

use super::RespondError;
use crate::judge::Report;
use crate::observe::memory::exec_files;
use crate::report::{Json, Markdown, Render};
use crate::safefs::{self, PendingFile};
use crate::snapshot::{HostSnapshot, ProcessFacts};

mod read;
pub use read::{Bundle, looks_like_bundle, open, verify};

/// The manifest's schema.
pub const BUNDLE_SCHEMA: &str = "minerwatch-bundle/1";

/// The /proc files copied for every process.
pub const PROC_FILES: &[&str] = &[
    "status",
    "stat",
    "maps",
    "smaps_rollup",
    "cmdline",
    "environ",
    "limits",
    "cgroup",
    "mountinfo",
];
const NET_FILES: &[&str] = &["tcp", "tcp6", "udp", "udp6", "unix"];
/// Library directories whose files come from the distribution: not copied.
const SYSTEM_LIB_DIRS: &[&str] = &["/usr/lib/", "/lib/", "/usr/lib64/", "/lib64/"];

/// What to collect and how much.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// Where procfs is.
    pub proc_root: PathBuf,
    /// The host's filesystem root (persistence files, ld.so.preload).
    pub root: PathBuf,
    /// Bytes of one member at most.
    pub max_member: u64,
    /// Bytes of all members together at most.
    pub max_total: u64,
    /// Bytes of one matched memory region at most.
    pub max_region: u64,
}

impl Default for CollectOptions {
    fn default() -> Self {
        CollectOptions {
            proc_root: PathBuf::from("/proc"),
            root: PathBuf::from("/"),
            max_member: 256 << 20,
            max_total: 1 << 30,
            max_region: 16 << 20,
        }
    }
}

/// The bundle's table of contents, its last member.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Manifest {
    /// [`BUNDLE_SCHEMA`].
    pub schema: String,
    /// The minerwatch version that wrote it.
    pub tool_version: String,
    pub hostname: String,
    /// `/proc/sys/kernel/random/boot_id`: which boot of the host.
    pub boot_id: String,
    pub kernel: String,
    /// When the scan that judged the processes started (RFC 3339, UTC).
    pub scan_started_at: String,
    /// When collection started and ended.
    pub collect_started_at: String,
    pub collect_finished_at: String,
    /// The processes collected.
    pub processes: Vec<BundleProcess>,
    pub max_member_bytes: u64,
    pub max_total_bytes: u64,
    pub max_region_bytes: u64,
    /// Bytes of all members.
    pub total_bytes: u64,
    pub members: Vec<Member>,
    /// Every cap that was reached, in words: a member cut, members left out.
    pub capped: Vec<String>,
    /// What could not be read, and why.
    pub errors: Vec<String>,
}

/// A process in the bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BundleProcess {
    pub pid: i32,
    /// Field 22 of /proc/PID/stat: with the pid, which process it was.
    pub start_time: u64,
    pub comm: String,
    pub exe: Option<String>,
    /// SHA-256 of the executable as read through /proc/PID/exe.
    pub exe_sha256: Option<String>,
}

/// One member of the tar.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Member {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// Where it was read from.
    pub source: String,
    /// Cut at `max_member_bytes` (or `max_region_bytes`).
    pub truncated: bool,
}

struct Writer {
    tar: tar::Builder<GzEncoder<std::fs::File>>,
    manifest: Manifest,
    mtime: u64,
    names: BTreeSet<String>,
}

impl Writer {
    fn room(&self) -> u64 {
        self.manifest
            .max_total_bytes
            .saturating_sub(self.manifest.total_bytes)
    }

    /// Adds a member; past the total cap it is left out and named.
    fn add(&mut self, name: &str, source: &str, data: &[u8], truncated: bool) -> io::Result<()> {
        let name = member_name(name);
        if !self.names.insert(name.clone()) {
            return Ok(());
        }
        let len = data.len() as u64;
        if len > self.room() {
            self.manifest.capped.push(format!(
                "{name} ({len} bytes, from {source}) left out: the bundle reached its cap of {} bytes",
                self.manifest.max_total_bytes
            ));
            return Ok(());
        }
        if truncated {
            self.manifest.capped.push(format!(
                "{name} cut at {len} bytes (the member cap); {source} is longer"
            ));
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o600);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar.append_data(&mut header, &name, data)?;
        self.manifest.total_bytes += len;
        self.manifest.members.push(Member {
            name,
            size: len,
            sha256: safefs::sha256_hex(data),
            source: source.to_string(),
            truncated,
        });
        Ok(())
    }

    /// Adds the regular file at `path` (capped); a failure is recorded.
    fn add_file(
        &mut self,
        name: &str,
        path: &Path,
        nofollow: bool,
        source: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        let cap = self.manifest.max_member_bytes.min(self.room().max(1));
        match safefs::read_regular(path, cap, nofollow) {
            Ok((bytes, truncated)) => {
                self.add(name, source, &bytes, truncated)?;
                Ok(Some(bytes))
            }
            Err(e) => {
                self.manifest
                    .errors
                    .push(format!("{source}: {e} (not in the bundle)"));
                Ok(None)
            }
        }
    }
}

/// A tar member name from a host path: relative, no `.` or `..`.
fn member_name(name: &str) -> String {
    name.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(|c| if c == ".." { "%2e%2e" } else { c })
        .collect::<Vec<_>>()
        .join("/")
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Writes the evidence bundle for `pids` (processes of `snapshot`) to `out`.
///
/// `extra` members (name, bytes) go in before the manifest. Processes that
/// are gone, or whose pid now names another process, are recorded in the
/// manifest's errors; nothing of a reused pid is copied.
pub fn collect(
    snapshot: &HostSnapshot,
    report: &Report,
    pids: &[i32],
    extra: &[(String, Vec<u8>)],
    opts: &CollectOptions,
    out: &Path,
) -> Result<Manifest, RespondError> {
    let shown = out.display().to_string();
    let mut pending = PendingFile::create(out).map_err(RespondError::io(format!(
        "cannot write the bundle '{shown}' (choose a file in an existing directory you can write to)"
    )))?;
    let started = now();
    let mtime = jiff::Timestamp::now().as_second().max(0) as u64;
    let boot_id = safefs::read_regular(&opts.proc_root.join("sys/kernel/random/boot_id"), 64, true)
        .map(|(b, _)| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let manifest = Manifest {
        schema: BUNDLE_SCHEMA.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        hostname: snapshot.host.hostname.clone(),
        boot_id,
        kernel: snapshot.host.kernel.clone(),
        scan_started_at: snapshot.started_at.clone(),
        collect_started_at: started,
        max_member_bytes: opts.max_member,
        max_total_bytes: opts.max_total,
        max_region_bytes: opts.max_region,
        ..Manifest::default()
    };
    let file = pending
        .file()
        .try_clone()
        .map_err(RespondError::io(format!("writing the bundle '{shown}'")))?;
    let mut w = Writer {
        tar: tar::Builder::new(GzEncoder::new(file, Compression::default())),
        manifest,
        mtime,
        names: BTreeSet::new(),
    };
    let io_err = RespondError::io(format!("writing the bundle '{shown}'"));
    let result: io::Result<()> = (|| {
        let json = serde_json::to_vec_pretty(snapshot).map_err(io::Error::other)?;
        w.add("snapshot.json", "the scan's snapshot", &json, false)?;
        let mut buf = Vec::new();
        Json.render(report, &mut buf)?;
        w.add("report.json", "the report (--format json)", &buf, false)?;
        buf.clear();
        Markdown.render(report, &mut buf)?;
        w.add("report.md", "the report (--format markdown)", &buf, false)?;
        for pid in pids {
            match snapshot.processes.iter().find(|p| p.pid == *pid) {
                Some(p) => collect_process(&mut w, p, opts)?,
                None => w.manifest.errors.push(format!(
                    "process {pid}: not in the snapshot (it exited before the scan observed it)"
                )),
            }
        }
        collect_host(&mut w, snapshot, pids, opts)?;
        for (name, bytes) in extra {
            w.add(name, "minerwatch", bytes, false)?;
        }
        w.manifest.collect_finished_at = now();
        let manifest = serde_json::to_vec_pretty(&w.manifest).map_err(io::Error::other)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(manifest.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(w.mtime);
        w.tar
            .append_data(&mut header, "manifest.json", manifest.as_slice())?;
        Ok(())
    })();
    let manifest = w.manifest.clone();
    result
        .and_then(|()| w.tar.into_inner())
        .and_then(|gz| gz.finish())
        .map_err(io_err)?;
    pending.commit().map_err(RespondError::io(format!(
        "moving the bundle into place at '{shown}'"
    )))?;
    Ok(manifest)
}

/// The start time (field 22 of stat) of `pid`, if it exists.
pub(crate) fn start_time(proc_root: &Path, pid: i32) -> Option<u64> {
    super::freeze::stat(proc_root, pid).map(|s| s.start_time)
}

fn collect_process(w: &mut Writer, p: &ProcessFacts, opts: &CollectOptions) -> io::Result<()> {
    let pid = p.pid;
    let dir = opts.proc_root.join(pid.to_string());
    if start_time(&opts.proc_root, pid) != Some(p.start_time) {
        w.manifest.errors.push(format!(
            "process {pid} ({}): exited, or its pid now names another process, before collection",
            p.comm
        ));
        return Ok(());
    }
    for f in PROC_FILES {
        w.add_file(
            &format!("proc/{pid}/{f}"),
            &dir.join(f),
            true,
            &format!("/proc/{pid}/{f}"),
        )?;
    }
    let mut fds = String::new();
    match std::fs::read_dir(dir.join("fd")) {
        Ok(entries) => {
            let mut list: Vec<(u64, String)> = entries
                .flatten()
                .filter_map(|e| {
                    let n: u64 = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path())
                        .map(|t| t.to_string_lossy().into_owned())
                        .unwrap_or_else(|e| format!("(unreadable: {e})"));
                    Some((n, target))
                })
                .collect();
            list.sort();
            for (n, t) in list.iter().take(100_000) {
                fds.push_str(&format!("{n} -> {t}\n"));
            }
        }
        Err(e) => w.manifest.errors.push(format!(
            "/proc/{pid}/fd: {e} (fd listing not in the bundle)"
        )),
    }
    w.add(
        &format!("proc/{pid}/fd.txt"),
        &format!("/proc/{pid}/fd"),
        fds.as_bytes(),
        false,
    )?;
    for f in NET_FILES {
        w.add_file(
            &format!("proc/{pid}/net/{f}"),
            &dir.join("net").join(f),
            true,
            &format!("/proc/{pid}/net/{f}"),
        )?;
    }
    let exe_link = p.exe.clone().unwrap_or_else(|| "?".into());
    if let Some(bytes) = w.add_file(
        &format!("proc/{pid}/exe"),
        &dir.join("exe"),
        false,
        &format!("/proc/{pid}/exe -> {exe_link}"),
    )? {
        w.manifest.processes.push(BundleProcess {
            pid,
            start_time: p.start_time,
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            exe_sha256: Some(safefs::sha256_hex(&bytes)),
        });
    } else {
        w.manifest.processes.push(BundleProcess {
            pid,
            start_time: p.start_time,
            comm: p.comm.clone(),
            exe: p.exe.clone(),
            exe_sha256: None,
        });
    }
    let maps: Vec<MemoryMap> = match procfs::process::Process::new_with_root(dir.clone())
        .and_then(|proc| crate::observe::procread::maps(&proc))
    {
        Ok((m, cut)) => {
            if cut {
                w.manifest.errors.push(format!(
                    "/proc/{pid}/maps: longer than {} MiB; mappings past that not bundled",
                    crate::observe::procread::MAPS_CAP >> 20
                ));
            }
            m
        }
        Err(e) => {
            w.manifest.errors.push(format!(
                "/proc/{pid}/maps: {e} (no libraries or memory in the bundle)"
            ));
            return Ok(());
        }
    };
    let exe_path = p.exe.as_deref().map(|e| e.trim_end_matches(" (deleted)"));
    let mut seen = BTreeSet::new();
    for lib in exec_files(&maps) {
        let plain = lib.path.trim_end_matches(" (deleted)");
        if Some(plain) == exe_path
            || SYSTEM_LIB_DIRS.iter().any(|d| plain.starts_with(d))
            || !seen.insert(lib.path.clone())
        {
            continue;
        }
        w.add_file(
            &format!("proc/{pid}/libs/{plain}"),
            &dir.join("map_files")
                .join(format!("{:x}-{:x}", lib.start, lib.end)),
            false,
            &format!("/proc/{pid}/map_files ({})", lib.path),
        )?;
    }
    collect_memory(w, p, &dir, &maps, opts)?;
    let root = dir.join("root");
    for c in &p.configs {
        w.add_file(
            &format!("files/{}", c.path),
            &root.join(c.path.trim_start_matches('/')),
            true,
            &format!("{} (miner config, in the root of process {pid})", c.path),
        )?;
    }
    Ok(())
}

/// The regions a rule matched in, as `0xSTART perms …`, copied whole up to
/// the region cap.
fn collect_memory(
    w: &mut Writer,
    p: &ProcessFacts,
    dir: &Path,
    maps: &[MemoryMap],
    opts: &CollectOptions,
) -> io::Result<()> {
    let Some(scan) = &p.memory_scan else {
        return Ok(());
    };
    let mut wanted: Vec<(u64, Vec<String>)> = Vec::new();
    for m in &scan.matches {
        for r in &m.regions {
            let Some(start) = r
                .split_whitespace()
                .next()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
            else {
                continue;
            };
            match wanted.iter_mut().find(|(s, _)| *s == start) {
                Some((_, rules)) => rules.push(m.rule.clone()),
                None => wanted.push((start, vec![m.rule.clone()])),
            }
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let mem = match std::fs::File::open(dir.join("mem")) {
        Ok(f) => f,
        Err(e) => {
            w.manifest.errors.push(format!(
                "/proc/{}/mem: {e} (matched memory not in the bundle)",
                p.pid
            ));
            return Ok(());
        }
    };
    for (start, rules) in wanted {
        let Some(m) = maps.iter().find(|m| m.address.0 == start) else {
            w.manifest.errors.push(format!(
                "process {}: the region at {start:#x} that {} matched is no longer mapped",
                p.pid,
                rules.join(", ")
            ));
            continue;
        };
        let size = m.address.1.saturating_sub(m.address.0);
        let want = size.min(opts.max_region).min(w.room());
        let mut buf = vec![0u8; usize::try_from(want).unwrap_or(0)];
        let mut got = 0usize;
        while got < buf.len() {
            match mem.read_at(&mut buf[got..], start + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    w.manifest.errors.push(format!(
                        "process {}: reading the region at {:#x} at offset {got}: {e}",
                        p.pid, start
                    ));
                    break;
                }
            }
        }
        buf.truncate(got);
        let what = match &m.pathname {
            MMapPath::Path(path) => path.display().to_string(),
            MMapPath::Heap => "[heap]".into(),
            _ => "anonymous".into(),
        };
        w.add(
            &format!(
                "proc/{}/memory/{:x}-{:x}.bin",
                p.pid, m.address.0, m.address.1
            ),
            &format!(
                "/proc/{}/mem {:#x}-{:#x} {what}, matched by {}",
                p.pid,
                m.address.0,
                m.address.1,
                rules.join(", ")
            ),
            &buf,
            (got as u64) < size,
        )?;
    }
    Ok(())
}

/// Persistence files, ld.so.preload and the libraries it lists.
fn collect_host(
    w: &mut Writer,
    snapshot: &HostSnapshot,
    _pids: &[i32],
    opts: &CollectOptions,
) -> io::Result<()> {
    let h = &snapshot.host_facts;
    let root = opts
        .root
        .to_string_lossy()
        .trim_end_matches('/')
        .to_string();
    let host_path = |p: &str| -> String {
        p.strip_prefix(root.as_str())
            .filter(|_| !root.is_empty())
            .unwrap_or(p)
            .to_string()
    };
    let mut paths: BTreeSet<&str> = BTreeSet::new();
    for e in &h.persistence {
        paths.insert(e.path.as_str());
    }
    for p in paths {
        w.add_file(
            &format!("files/{}", host_path(p)),
            Path::new(p),
            true,
            &format!("{p} (persistence)"),
        )?;
    }
    if let Some(pre) = &h.ld_so_preload {
        w.add_file(
            &format!("files/{}", host_path(&pre.path)),
            Path::new(&pre.path),
            true,
            &format!("{} (the loader's preload list)", pre.path),
        )?;
        for lib in &pre.entries {
            let full = opts.root.join(lib.trim_start_matches('/'));
            w.add_file(
                &format!("files/{lib}"),
                &full,
                true,
                &format!("{lib} (listed in ld.so.preload)"),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SNAPSHOT_SCHEMA;

    #[test]
    fn member_names_stay_inside_the_archive() {
        assert_eq!(
            member_name("files//etc/../cron.d/x"),
            "files/etc/%2e%2e/cron.d/x"
        );
        assert_eq!(member_name("/proc/1/./maps"), "proc/1/maps");
    }

    fn snapshot() -> HostSnapshot {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/snapshots/xmrig-light.json"
        ))
        .expect("fixture");
        serde_json::from_str(&text).expect("fixture parses")
    }

    #[test]
    fn a_bundle_round_trips_and_an_edit_is_caught() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("b.tar.gz");
        let snap = snapshot();
        let report = crate::judge::judge(&snap, &crate::judge::Policy::default());
        let opts = CollectOptions {
            proc_root: dir.path().join("no-proc"),
            root: dir.path().to_path_buf(),
            ..CollectOptions::default()
        };
        let m = collect(&snap, &report, &[4242], &[], &opts, &out).expect("collect");
        assert!(
            m.errors.iter().any(|e| e.contains("4242")),
            "{:?}",
            m.errors
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = open(&out).expect("open");
        assert_eq!(b.manifest.schema, BUNDLE_SCHEMA);
        assert_eq!(b.snapshot.schema, SNAPSHOT_SCHEMA);
        assert!(verify(&out).expect("verify").is_empty());
        // Not a bundle: a clear error.
        std::fs::write(dir.path().join("x"), b"\x1f\x8bnot gzip").expect("write");
        let err = open(&dir.path().join("x")).expect_err("garbage");
        assert!(err.to_string().contains("bundle"), "{err}");
    }

    #[test]
    fn the_total_cap_leaves_members_out_and_says_so() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().join("b.tar.gz");
        let snap = snapshot();
        let report = crate::judge::judge(&snap, &crate::judge::Policy::default());
        let opts = CollectOptions {
            proc_root: dir.path().join("no-proc"),
            root: dir.path().to_path_buf(),
            max_total: 1 << 20,
            ..CollectOptions::default()
        };
        let extra = vec![("contain/big.bin".to_string(), vec![0u8; 2 << 20])];
        let m = collect(&snap, &report, &[], &extra, &opts, &out).expect("collect");
        assert!(
            m.capped
                .iter()
                .any(|c| c.contains("contain/big.bin") && c.contains("cap")),
            "{:?}",
            m.capped
        );
        assert!(m.total_bytes <= 1 << 20);
    }
}
