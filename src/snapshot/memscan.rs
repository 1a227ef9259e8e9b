//! A yara-x scan of a process's memory, as `observe::memscan` reads it from
//! `/proc/PID/mem` region by region.

use serde::{Deserialize, Serialize};

/// A rule that matched in process memory, with the regions it matched in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryMatch {
    /// The rule's name.
    pub rule: String,
    /// Its namespace: one per rule file.
    pub namespace: String,
    /// Its `category` metadata (randomx, xmrig, miner, stratum; user).
    pub category: String,
    /// Its `description` metadata.
    pub description: Option<String>,
    /// Regions holding the matches, as `0xSTART perms [path]`.
    pub regions: Vec<String>,
}

/// What one process memory scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryScan {
    /// Regions of `/proc/PID/maps` read from `/proc/PID/mem`.
    pub regions_scanned: u32,
    /// Bytes read.
    pub bytes_scanned: u64,
    /// Regions (or parts) that could not be read.
    pub read_errors: u32,
    /// True when a budget (bytes or time) cut the scan short.
    pub truncated: bool,
    /// Wall time of the scan, milliseconds.
    pub elapsed_ms: u64,
    /// Rules that matched, with their regions.
    pub matches: Vec<MemoryMatch>,
}
