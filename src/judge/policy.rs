//! What the judge needs besides the snapshot: the indicators, the busy
//! threshold, and the allow rules that cap or suppress findings (the
//! agent's `[[allow]]`, and `scan --config`).

use serde::{Deserialize, Serialize};

use super::{Level, ProcessSummary};
use crate::indicators::Indicators;
use crate::snapshot::{FileMeta, ProcessFacts};

/// What the judge needs besides the snapshot.
#[derive(Debug, Clone)]
pub struct Policy {
    pub indicators: Indicators,
    /// CPU (percent of one core, averaged over the window) from which a
    /// process counts as busy. A miner throttled to 25 % of a core must pass.
    pub busy_percent: f64,
    /// Findings to suppress or cap (the agent's `[[allow]]`).
    pub allow: Vec<AllowRule>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            indicators: Indicators::embedded(),
            busy_percent: 20.0,
            allow: Vec::new(),
        }
    }
}

/// One `[[allow]]`: every given key must match; at least one must be given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRule {
    /// Executable path (a deleted executable never matches).
    pub exe: Option<String>,
    /// SHA-256 of the executable (of a swept file: of the whole file).
    pub sha256: Option<String>,
    /// A file, or with a trailing `/` a directory and everything under it:
    /// the executable of a process, or a swept file, lies there.
    pub path: Option<String>,
    pub user: Option<String>,
    /// Process name (comm); give `exe` too, names are easy to take.
    pub name: Option<String>,
    pub container: Option<String>,
    /// The highest level a matching finding keeps; `clean` suppresses it.
    #[serde(default)]
    pub max_level: Level,
    /// Why, shown in the event.
    pub reason: String,
}

impl AllowRule {
    /// Whether an allow rule matches a process: every key it gives must match.
    pub(super) fn allows(&self, p: &ProcessFacts, s: &ProcessSummary) -> bool {
        let r = self;
        let exe = p.exe.as_deref().filter(|e| !e.ends_with(" (deleted)"));
        r.exe.as_deref().is_none_or(|want| exe == Some(want))
            && r.path
                .as_deref()
                .is_none_or(|want| exe.is_some_and(|e| within(want, e)))
            && r.sha256.as_deref().is_none_or(|want| {
                s.exe_sha256
                    .as_deref()
                    .is_some_and(|h| h.eq_ignore_ascii_case(want))
            })
            && r.user
                .as_deref()
                .is_none_or(|want| p.user.as_deref() == Some(want))
            && r.name.as_deref().is_none_or(|want| p.comm == want)
            && r.container
                .as_deref()
                .is_none_or(|want| p.container.as_deref() == Some(want))
    }

    /// Whether an allow rule matches a swept file. Only rules about files
    /// apply (`exe`, `path`, `sha256`; one naming a user, process name or
    /// container is about processes), and a hash only matches a file read
    /// whole.
    pub(super) fn allows_file(&self, f: &FileMeta) -> bool {
        let r = self;
        let about_files = r.exe.is_some() || r.path.is_some() || r.sha256.is_some();
        about_files
            && r.user.is_none()
            && r.name.is_none()
            && r.container.is_none()
            && r.exe.as_deref().is_none_or(|want| f.host_path == want)
            && r.path
                .as_deref()
                .is_none_or(|want| within(want, &f.host_path))
            && r.sha256
                .as_deref()
                .is_none_or(|want| !f.truncated && f.sha256.eq_ignore_ascii_case(want))
    }

    /// The note a finding capped by this rule carries.
    pub(super) fn note(&self) -> String {
        format!("{} (allow rule caps it at {})", self.reason, self.max_level)
    }
}

/// `path` is the file `rule` names, or lies under it when `rule` ends in `/`.
fn within(rule: &str, path: &str) -> bool {
    match rule.strip_suffix('/') {
        Some(dir) => path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/')),
        None => path == rule,
    }
}
