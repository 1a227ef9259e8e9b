//! Process memory scanning with yara-x's block scanner.
//!
//! yara-x cannot scan a process by pid, so we read `/proc/PID/mem` region by
//! region and feed each region to `yara_x::blocks::Scanner` with its address
//! as base. Which regions: anonymous executable ones (where RandomX JIT code
//! lives), the executable mappings of the program itself (its code as
//! loaded: unpacked, patched, or with no file left on disk), and bounded windows of the heap and anonymous
//! writable memory (pool login JSON, wallets, compiled-in configs). Never a
//! RandomX dataset or cache: they are large and random, and we skip every
//! anonymous region of 256 MiB or more.
//!
//! Limits: matches never cross region (block) boundaries; at most
//! [`Budget::per_region`] bytes of each region, [`Budget::per_process`] per
//! process, within [`Budget::time`]; reads that fail partway keep what was read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

pub use crate::snapshot::{MemoryMatch, MemoryScan};
use procfs::process::{MMPermissions, MMapPath, MemoryMap};
use yara_x::Rules;

use super::memory::{is_anonymous, perms};

/// How much memory one process scan may read, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub per_region: u64,
    pub per_process: u64,
    pub time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            per_region: 16 * 1024 * 1024,
            per_process: 96 * 1024 * 1024,
            time: Duration::from_secs(2),
        }
    }
}

/// Anonymous regions from this size up are RandomX datasets, caches or other
/// bulk data: never read.
const SKIP_ANON_BYTES: u64 = 256 * 1024 * 1024;
/// Read chunk: a failed read loses at most this much.
const CHUNK: usize = 1024 * 1024;

/// Why a region is scanned, in priority order: JIT code, the program's own
/// code (as loaded: unpacked, patched), the heap, anonymous writable memory.
/// Shared libraries' code is left out: their files are scanned on disk.
fn priority(m: &MemoryMap, exe: Option<&str>) -> Option<u8> {
    let exec = m.perms.contains(MMPermissions::EXECUTE);
    let write = m.perms.contains(MMPermissions::WRITE);
    let read = m.perms.contains(MMPermissions::READ);
    let size = m.address.1.saturating_sub(m.address.0);
    if !read && !exec {
        return None;
    }
    let anon = is_anonymous(m);
    match &m.pathname {
        _ if anon && exec => Some(0),
        MMapPath::Path(p) if exec => {
            let p = p.to_string_lossy();
            (exe == Some(p.as_ref()) || p.ends_with(" (deleted)") || p.starts_with("/memfd:"))
                .then_some(1)
        }
        MMapPath::Heap => Some(2),
        _ if anon && write && size < SKIP_ANON_BYTES => Some(3),
        _ => None,
    }
}

fn describe(m: &MemoryMap) -> String {
    let perms = perms(m);
    match &m.pathname {
        MMapPath::Path(path) => format!("{:#x} {perms} {}", m.address.0, path.display()),
        MMapPath::Heap => format!("{:#x} {perms} [heap]", m.address.0),
        _ => format!("{:#x} {perms} anonymous", m.address.0),
    }
}

/// Scans the memory of process `pid` (maps already read, `exe` its
/// executable as /proc/PID/exe names it) with `rules`.
pub fn scan(
    proc_root: &Path,
    pid: i32,
    exe: Option<&str>,
    maps: &[MemoryMap],
    rules: &Rules,
    budget: &Budget,
) -> std::io::Result<MemoryScan> {
    let start = Instant::now();
    let mem = File::open(proc_root.join(pid.to_string()).join("mem"))?;
    let mut chosen: Vec<(u8, &MemoryMap)> = maps
        .iter()
        .filter_map(|m| priority(m, exe).map(|p| (p, m)))
        .collect();
    chosen.sort_by_key(|(p, m)| (*p, m.address.0));

    let mut scanner = yara_x::blocks::Scanner::new(rules);
    scanner.set_timeout(budget.time);
    scanner.max_matches_per_pattern(64);
    scanner.match_context_size(0);
    let mut out = MemoryScan::default();
    let mut buf = vec![0u8; CHUNK];
    let mut block: Vec<u8> = Vec::new();
    let mut scanned: Vec<&MemoryMap> = Vec::new();
    for (_, m) in chosen {
        if out.bytes_scanned >= budget.per_process || start.elapsed() >= budget.time {
            out.truncated = true;
            break;
        }
        let size = m.address.1.saturating_sub(m.address.0);
        let want = size
            .min(budget.per_region)
            .min(budget.per_process - out.bytes_scanned);
        if want < size {
            out.truncated = true;
        }
        block.clear();
        let mut failed = false;
        while (block.len() as u64) < want {
            let n = CHUNK.min((want - block.len() as u64) as usize);
            match mem.read_at(&mut buf[..n], m.address.0 + block.len() as u64) {
                Ok(0) => break,
                Ok(got) => block.extend_from_slice(&buf[..got]),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            out.read_errors += 1;
        }
        if block.is_empty() {
            continue;
        }
        let base = usize::try_from(m.address.0).unwrap_or(usize::MAX);
        let scanned_block = catch_unwind(AssertUnwindSafe(|| {
            scanner
                .scan(base, &block)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|_| Err("the rule engine panicked".to_string()));
        if let Err(e) = scanned_block {
            tracing::debug!(pid, error = %e, "memory block scan failed");
            out.truncated = true;
            break;
        }
        out.regions_scanned += 1;
        out.bytes_scanned += block.len() as u64;
        scanned.push(m);
    }
    if out.regions_scanned == 0 {
        // Nothing could be read (the process exec'd or exited after its
        // maps were read): no rules to evaluate. yara-x 1.22 panics when a
        // block scanner that saw no block is finished.
        out.elapsed_ms = start.elapsed().as_millis() as u64;
        return Ok(out);
    }
    let finishing = &mut scanner;
    let results = catch_unwind(AssertUnwindSafe(move || {
        let scanner = finishing;
        scanner.finish()
    }))
    .map_err(|_| std::io::Error::other("the rule engine panicked finishing the scan"))?
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    for rule in results.matching_rules() {
        let meta = crate::signatures::RuleMeta::of(&rule);
        let mut regions: Vec<String> = Vec::new();
        for pattern in rule.patterns() {
            for mat in pattern.matches() {
                let at = mat.range().start as u64;
                if let Some(m) = scanned
                    .iter()
                    .find(|m| m.address.0 <= at && at < m.address.1)
                {
                    let d = describe(m);
                    if !regions.contains(&d) {
                        regions.push(d);
                    }
                }
            }
        }
        regions.truncate(8);
        out.matches.push(MemoryMatch {
            rule: rule.identifier().to_string(),
            namespace: rule.namespace().to_string(),
            category: meta.category,
            description: meta.description,
            regions,
        });
    }
    out.elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_whose_memory_cannot_be_read_scans_empty_instead_of_panicking() {
        // Found by tests/integration/hostile.rs: a process that exec'd
        // after its maps were read left no readable block, and finishing
        // the yara-x block scanner with no block panicked the whole scan.
        let sigs = crate::signatures::Signatures::load(None).expect("embedded rules");
        let me = procfs::process::Process::myself().expect("self");
        let mut maps: Vec<MemoryMap> = me.maps().expect("maps").into_iter().collect();
        // Mappings of the right kind whose addresses are not mapped (now).
        for m in &mut maps {
            m.address = (0x10, 0x1000);
        }
        let scan = scan(
            Path::new("/proc"),
            i32::try_from(std::process::id()).expect("pid"),
            None,
            &maps,
            sigs.rules(),
            &Budget::default(),
        )
        .expect("scans");
        assert_eq!((scan.regions_scanned, scan.matches.len()), (0, 0));
        let nothing = scan_nothing(&sigs);
        assert_eq!(nothing.regions_scanned, 0);
    }

    fn scan_nothing(sigs: &crate::signatures::Signatures) -> MemoryScan {
        scan(
            Path::new("/proc"),
            i32::try_from(std::process::id()).expect("pid"),
            None,
            &[],
            sigs.rules(),
            &Budget::default(),
        )
        .expect("scans")
    }
}
