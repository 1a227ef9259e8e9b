//! What a scan could not see, as it goes: each failure with what failed,
//! and the processes we were refused or that vanished. It becomes the
//! snapshot's [`Coverage`].

use std::collections::BTreeSet;

use procfs::ProcError;

use crate::snapshot::{Coverage, CoverageError};

/// Records what could not be observed.
#[derive(Default)]
pub(super) struct CoverageLog {
    pub(super) errors: Vec<CoverageError>,
    pub(super) inaccessible: BTreeSet<i32>,
    pub(super) vanished: BTreeSet<i32>,
}

impl CoverageLog {
    pub(super) fn record(&mut self, pid: Option<i32>, what: &str, error: &ProcError) {
        if let Some(pid) = pid {
            match error {
                ProcError::PermissionDenied(_) => {
                    self.inaccessible.insert(pid);
                }
                ProcError::NotFound(_) => {
                    self.vanished.insert(pid);
                }
                _ => {}
            }
        }
        self.note(pid, what, error.to_string());
    }

    pub(super) fn note(&mut self, pid: Option<i32>, what: &str, error: String) {
        tracing::debug!(?pid, what, %error, "coverage gap");
        self.errors.push(CoverageError {
            pid,
            what: what.to_string(),
            error,
        });
    }

    pub(super) fn io(&mut self, pid: i32, what: &str, error: &std::io::Error) {
        match error.kind() {
            std::io::ErrorKind::PermissionDenied => {
                self.inaccessible.insert(pid);
            }
            std::io::ErrorKind::NotFound => {}
            _ => {}
        }
        self.note(Some(pid), what, error.to_string());
    }
}

impl CoverageLog {
    /// The snapshot's coverage of `processes` in scope.
    pub(super) fn into_coverage(self, processes: usize) -> Coverage {
        Coverage {
            processes,
            inaccessible: self.inaccessible.len(),
            vanished: self.vanished.len(),
            errors: self.errors,
        }
    }
}
