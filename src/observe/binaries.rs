//! Executables and libraries scanned with the rules, once per content
//! identity (device, inode, size, mtime) and run, or across the agent's
//! ticks.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::coverage::CoverageLog;
use super::memory;
use super::process::{User, Watched};
use crate::safefs::{self as files, FileKey};
use crate::signatures::{FileContext, FileScanner, Signatures};
use crate::snapshot::{BinaryFacts, HostFacts, PreloadBinary};

/// The scan's cache of scanned files, keyed by content identity.
pub(super) struct BinaryCache<'r, 'c> {
    pub(super) sigs: &'r Signatures,
    /// Made on the first file to scan: an unchanged host needs none.
    pub(super) scanner: Option<FileScanner<'r>>,
    /// Every file scanned so far, this run or (for the agent) earlier ones.
    pub(super) known: &'c mut HashMap<FileKey, BinaryFacts>,
    /// The files this run referred to, in order.
    pub(super) used: Vec<FileKey>,
    pub(super) buf: Vec<u8>,
}

impl<'r, 'c> BinaryCache<'r, 'c> {
    pub(super) fn new(sigs: &'r Signatures, known: &'c mut HashMap<FileKey, BinaryFacts>) -> Self {
        BinaryCache {
            sigs,
            scanner: None,
            known,
            used: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// The files this run referred to.
    pub(super) fn binaries(&self) -> Vec<BinaryFacts> {
        self.used
            .iter()
            .filter_map(|k| self.known.get(k).cloned())
            .collect()
    }

    /// Whether any of the files `ids` matched a rule of `category`.
    pub(super) fn has_category<'a>(
        &self,
        mut ids: impl Iterator<Item = &'a String>,
        category: &str,
    ) -> bool {
        ids.any(|id| {
            self.known
                .values()
                .any(|b| &b.id == id && b.matches.iter().any(|m| m.category == category))
        })
    }

    /// Records that this run refers to a file scanned on an earlier run.
    pub(super) fn touch(&mut self, key: FileKey) {
        if self.known.contains_key(&key) && !self.used.contains(&key) {
            self.used.push(key);
        }
    }

    /// Scans an opened file once per content identity and returns its id.
    pub(super) fn scan(
        &mut self,
        mut file: std::fs::File,
        key: FileKey,
        path: &str,
        owner: &str,
    ) -> String {
        if !self.used.contains(&key) {
            self.used.push(key);
        }
        if let Some(b) = self.known.get(&key) {
            return b.id.clone();
        }
        let id = key.to_string();
        let mut facts = BinaryFacts {
            id: id.clone(),
            path: path.to_string(),
            size: key.size,
            ..BinaryFacts::default()
        };
        match files::read_capped(&mut file, files::MAX_BINARY_BYTES, &mut self.buf) {
            Err(e) => facts.error = Some(format!("read: {e}")),
            Ok(truncated) => {
                facts.truncated = truncated;
                facts.sha256 = Some(files::sha256_hex(&self.buf));
                let scanner = self.scanner.get_or_insert_with(|| self.sigs.scanner());
                match scanner.scan(&self.buf, &FileContext { path, owner }) {
                    Ok(m) => facts.matches = m,
                    Err(e) => facts.error = Some(format!("scan: {e}")),
                }
            }
        }
        self.known.insert(key, facts);
        // Give back the memory of a large file at once.
        if self.buf.capacity() > 8 * 1024 * 1024 {
            self.buf = Vec::new();
        }
        id
    }
}

/// Scans the file-backed executable mappings (shared libraries) of a candidate.
pub(super) fn scan_libraries(
    t: &mut Watched,
    users: &HashMap<u32, User>,
    cache: &mut BinaryCache<'_, '_>,
    proc_root: &Path,
    gaps: &mut CoverageLog,
) {
    let pid = t.facts.pid;
    let mut seen: HashSet<u64> = HashSet::new();
    for memory::ExecFile {
        start,
        end,
        inode,
        path,
    } in &t.exec_files
    {
        if t.exe_key.is_some_and(|k| k.ino == *inode) || !seen.insert(*inode) {
            continue;
        }
        // map_files names the mapped file itself, even deleted or replaced.
        let link = proc_root
            .join(pid.to_string())
            .join("map_files")
            .join(format!("{start:x}-{end:x}"));
        let opened = files::open_regular(&link, false).or_else(|_| {
            let clean = path.trim_end_matches(" (deleted)");
            let full = proc_root
                .join(pid.to_string())
                .join("root")
                .join(clean.trim_start_matches('/'));
            files::open_regular(&full, true).and_then(|(f, k)| {
                if k.ino == *inode {
                    Ok((f, k))
                } else {
                    Err(std::io::Error::other("file on disk is not the mapped one"))
                }
            })
        });
        match opened {
            Ok((file, key)) => {
                let owner = file
                    .metadata()
                    .ok()
                    .and_then(|m| {
                        users
                            .get(&std::os::unix::fs::MetadataExt::uid(&m))
                            .map(|u| u.name.clone())
                    })
                    .unwrap_or_default();
                let id = cache.scan(file, key, path, &owner);
                if !t.facts.library_binaries.contains(&id) {
                    t.facts.library_binaries.push(id);
                }
            }
            Err(e) => gaps.io(pid, &format!("library scan {path}"), &e),
        }
    }
}

/// The libraries `/etc/ld.so.preload` names (under `root`) and those
/// preloaded into minerwatch itself, scanned with the rules like any binary.
pub(super) fn scan_preloads(
    host_facts: &HostFacts,
    root: &Path,
    cache: &mut BinaryCache<'_, '_>,
    gaps: &mut CoverageLog,
) -> Vec<PreloadBinary> {
    let mut paths: Vec<(String, PathBuf)> = Vec::new();
    if let Some(f) = &host_facts.ld_so_preload {
        for e in &f.entries {
            paths.push((e.clone(), root.join(e.trim_start_matches('/'))));
        }
    }
    for lib in &host_facts.self_preloaded {
        if !paths.iter().any(|(p, _)| p == lib) {
            // Mapped into us: read it through our own view of the filesystem.
            paths.push((lib.clone(), PathBuf::from(lib)));
        }
    }
    let mut out = Vec::new();
    for (path, full) in paths {
        let binary = match files::open_regular(&full, true) {
            Ok((file, key)) => Some(cache.scan(file, key, &path, "")),
            Err(e) => {
                gaps.note(None, &format!("preloaded library {path}"), e.to_string());
                None
            }
        };
        out.push(PreloadBinary { path, binary });
    }
    out
}
