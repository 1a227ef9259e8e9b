//! What a file sweep (`minerwatch sweep`) observed: the files that matched
//! something, and what it read and skipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MinerConfig, RuleMatch};

/// One sweep of files on disk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepFacts {
    /// The roots swept, as host paths (`--root` prefixed).
    pub roots: Vec<String>,
    /// Files that matched a rule, a known-bad hash or look like a miner
    /// config; files that matched nothing are only counted.
    pub files: Vec<SweptFile>,
    /// Regular files read.
    pub files_read: u64,
    /// Bytes read (at most `max_file_size` per file).
    pub bytes_read: u64,
    /// The cap on bytes read per file.
    pub max_file_size: u64,
    /// What was not read, by reason ("symlink (not followed)", "fifo",
    /// "other filesystem", "truncated at the size cap" …): counts.
    pub skipped: BTreeMap<String, u64>,
    /// The first skips with their paths (at most 100), for the report.
    pub skipped_examples: Vec<SweepSkip>,
    /// Hashes given with `--hashes`: how many were loaded.
    pub known_hashes: usize,
}

/// Where a file is and what it is on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileMeta {
    /// Its path on the host (`--root` prefixed), control characters kept.
    pub path: String,
    /// The same path as the host itself names it (without `--root`): what
    /// persistence entries and command lines say.
    pub host_path: String,
    /// `st_size` from fstat.
    pub size: u64,
    /// `st_mtime`, RFC 3339 UTC.
    pub mtime: String,
    /// `st_uid`.
    pub uid: u32,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    /// SHA-256 of the bytes read (of the whole file unless `truncated`).
    pub sha256: String,
    /// Only the first `max_file_size` bytes were read.
    pub truncated: bool,
}

/// One file that matched.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SweptFile {
    #[serde(flatten)]
    pub meta: FileMeta,
    /// Rules that matched its contents.
    pub rules: Vec<RuleMatch>,
    /// The comment of its line in `--hashes` when its SHA-256 is listed.
    pub known_bad: Option<String>,
    /// Set when it parses as an XMRig-style miner config.
    pub miner_config: Option<MinerConfig>,
    /// An ELF program whose dynamic symbols name the RandomX library's API
    /// (`randomx_create_vm` and `randomx_calculate_hash`): it links
    /// librandomx, as a miner built on it or a Monero node does.
    pub randomx_api: bool,
}

/// One thing the sweep did not read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepSkip {
    pub path: String,
    pub reason: String,
}
