//! Respond: what an incident responder does once the judge has spoken.
//!
//! [`bundle`] writes the evidence bundle (`minerwatch collect`, also made by
//! `contain`): one compressed tar with the snapshot, the report, the
//! processes' /proc files, executables, libraries, miner configs, matched
//! memory, persistence files and a manifest of SHA-256 hashes; and reads it
//! back for `analyze`. [`freeze`] stops a process tree without letting it
//! respawn (the cgroup freezer, else SIGSTOP through pidfds). [`contain`]
//! plans and carries out freeze → collect → kill → quarantine → disable
//! persistence, refusing what must never be touched; `disarm` holds the
//! two steps that change files (quarantine, disabling persistence).
//!
//! This is the only part of minerwatch that changes the host, and only when
//! asked: every write goes through [`crate::safefs`] (no symlink followed,
//! mode 0600 or 0000, written whole or not at all).

pub mod bundle;
pub mod contain;
mod disarm;
pub mod freeze;

/// Errors of the respond commands: each names what failed and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    /// A request that must be refused (PID 1, ourselves, not a miner …).
    #[error("{0}")]
    Refused(String),
    /// A bundle that cannot be read or does not check out.
    #[error("{0}")]
    Bundle(String),
    /// An I/O failure with what was being done.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl RespondError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RespondError {
        let what = what.into();
        move |source| RespondError::Io { what, source }
    }
}
