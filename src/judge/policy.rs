//! What the judge needs besides the snapshot: the indicators, the busy
//! threshold, and the allow rules that cap or suppress findings (the
//! agent's `[[allow]]`, and `scan --config`).

use serde::{Deserialize, Serialize};

use super::{Level, ProcessSummary};
use crate::indicators::Indicators;
use crate::snapshot::ProcessFacts;

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
    /// SHA-256 of the executable.
    pub sha256: Option<String>,
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
}
