//! Memory layout from `/proc/PID/maps` and `status`.
//!
//! What matters for RandomX (SIGNALS.md §2): anonymous mappings of dataset
//! (2080 MiB) or cache (256 MiB) size, executable anonymous regions (JIT
//! code), and huge pages. Huge pages are counted from `HugetlbPages:` and the
//! `/anon_hugepage` mappings, because VmRSS leaves them out: a real XMRig
//! showed 15 MB of RSS and 2.3 GB in huge pages.

use procfs::process::{MMPermissions, MMapPath, MemoryMap};

use crate::snapshot::{MemoryFacts, Region};
pub use crate::snapshot::{RANDOMX_CACHE, RANDOMX_DATASET, randomx_sized};

/// Anonymous mappings from this size up are listed.
pub const LARGE_ANON_BYTES: u64 = 64 * 1024 * 1024;
const MAX_LISTED: usize = 16;

/// The anonymous pseudo-path of hugetlb and shared anonymous mappings.
fn anon_pseudo(path: &str) -> bool {
    path.starts_with("/anon_hugepage") || path.starts_with("/dev/zero") || path.starts_with("/SYSV")
}

/// Whether a mapping has no file behind it.
pub fn is_anonymous(m: &MemoryMap) -> bool {
    match &m.pathname {
        MMapPath::Anonymous => true,
        MMapPath::Other(name) => name.starts_with("anon:"),
        MMapPath::Path(p) => anon_pseudo(&p.to_string_lossy()),
        _ => false,
    }
}

/// Permissions as maps prints them, e.g. `rwxp`.
pub fn perms(m: &MemoryMap) -> String {
    let p = m.perms;
    format!(
        "{}{}{}{}",
        if p.contains(MMPermissions::READ) {
            'r'
        } else {
            '-'
        },
        if p.contains(MMPermissions::WRITE) {
            'w'
        } else {
            '-'
        },
        if p.contains(MMPermissions::EXECUTE) {
            'x'
        } else {
            '-'
        },
        if p.contains(MMPermissions::SHARED) {
            's'
        } else {
            'p'
        },
    )
}

fn path_of(m: &MemoryMap) -> Option<String> {
    match &m.pathname {
        MMapPath::Path(p) => Some(p.to_string_lossy().into_owned()),
        MMapPath::Other(o) => Some(format!("[{o}]")),
        MMapPath::Anonymous => None,
        MMapPath::Heap => Some("[heap]".into()),
        MMapPath::Stack => Some("[stack]".into()),
        other => Some(format!("{other:?}")),
    }
}

/// One mapping as a report region.
pub fn region(m: &MemoryMap) -> Region {
    Region {
        start: format!("{:#x}", m.address.0),
        size: m.address.1.saturating_sub(m.address.0),
        perms: perms(m),
        path: path_of(m),
    }
}

/// Summarises a process's mappings; `rss_kib` and `hugetlb_kib` come from status.
pub fn summarize(maps: &[MemoryMap], rss_kib: u64, hugetlb_kib: u64) -> MemoryFacts {
    let mut facts = MemoryFacts {
        rss_kib,
        hugetlb_kib,
        ..MemoryFacts::default()
    };
    for m in maps {
        let size = m.address.1.saturating_sub(m.address.0);
        let exec = m.perms.contains(MMPermissions::EXECUTE);
        if is_anonymous(m) {
            facts.anon_total_kib += size / 1024;
            if size >= LARGE_ANON_BYTES {
                facts.large_anon.push(region(m));
            }
            if exec {
                facts.exec_anon.push(region(m));
            }
        } else if exec && let MMapPath::Path(p) = &m.pathname {
            let p = p.to_string_lossy();
            if p.ends_with(" (deleted)") || p.starts_with("/memfd:") {
                facts.exec_deleted_files.push(region(m));
            }
        }
    }
    facts.large_anon.sort_by_key(|r| std::cmp::Reverse(r.size));
    facts.large_anon.truncate(MAX_LISTED);
    // Writable-and-executable first: that is what a JIT maps.
    facts
        .exec_anon
        .sort_by_key(|r| (!r.perms.starts_with("rwx"), std::cmp::Reverse(r.size)));
    facts.exec_anon.truncate(MAX_LISTED);
    facts.exec_deleted_files.truncate(MAX_LISTED);
    facts
}

/// A file-backed executable mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecFile {
    pub start: u64,
    pub end: u64,
    pub inode: u64,
    pub path: String,
}

/// File-backed executable mappings (the executable and its libraries).
pub fn exec_files(maps: &[MemoryMap]) -> Vec<ExecFile> {
    maps.iter()
        .filter(|m| m.perms.contains(MMPermissions::EXECUTE) && !is_anonymous(m) && m.inode != 0)
        .filter_map(|m| match &m.pathname {
            MMapPath::Path(p) => Some(ExecFile {
                start: m.address.0,
                end: m.address.1,
                inode: m.inode,
                path: p.to_string_lossy().into_owned(),
            }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::FromRead;
    use procfs::process::{MemoryMaps, Status};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/proc");

    fn load(name: &str) -> MemoryFacts {
        let dir = format!("{FIXTURES}/{name}");
        let maps = MemoryMaps::from_file(format!("{dir}/maps")).expect("maps parse");
        let status = Status::from_file(format!("{dir}/status")).expect("status parse");
        let maps: Vec<MemoryMap> = maps.into_iter().collect();
        summarize(
            &maps,
            status.vmrss.unwrap_or(0),
            status.hugetlbpages.unwrap_or(0),
        )
    }

    #[test]
    fn xmrig_fast_hugepages_dataset_and_cache_are_seen() {
        let m = load("xmrig-fast-hugepages");
        assert_eq!(m.rss_kib, 15672);
        assert_eq!(m.hugetlb_kib, 2_396_160);
        assert_eq!(m.large_anon[0].size, 0x8200_0000, "{:?}", m.large_anon);
        assert_eq!(
            m.large_anon[0].path.as_deref(),
            Some("/anon_hugepage (deleted)")
        );
        assert!(m.large_anon.iter().any(|r| r.size == 256 * 1024 * 1024));
        assert!(
            m.exec_anon.iter().any(|r| r.perms == "rwxp"),
            "{:?}",
            m.exec_anon
        );
    }

    #[test]
    fn xmrig_light_has_cache_and_jit_but_no_dataset() {
        let m = load("xmrig-light");
        assert!(m.large_anon.iter().all(|r| r.size < 2000 * 1024 * 1024));
        assert!(
            m.large_anon
                .iter()
                .any(|r| (256..=264).contains(&(r.size >> 20))),
            "{:?}",
            m.large_anon
        );
        assert!(!m.exec_anon.is_empty());
        assert_eq!(m.hugetlb_kib, 0);
    }

    #[test]
    fn monerod_mining_has_dataset_sized_region_and_rwx() {
        let m = load("monerod-regtest-mining");
        assert!(
            m.large_anon.iter().any(|r| r.size >= 2080 * 1024 * 1024),
            "{:?}",
            m.large_anon
        );
        assert!(m.exec_anon.iter().any(|r| r.perms == "rwxp"));
    }
}
