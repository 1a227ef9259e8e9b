//! The benign corpus: real programs that look like RandomX (a 256 MiB or
//! ~2 GiB anonymous area, JIT code in executable anonymous memory, huge
//! pages, a busy core) and are not mining. Shared by the CI subset
//! (tests/integration/corpus.rs, `scan --pid` only) and the full run
//! (`cargo bench --bench benign`, also a minute under the agent).
//!
//! Each [`Entry`] names the Debian packages it needs, prepares what it needs
//! in a fresh temporary directory (a compiled Java class, a generated C file,
//! a wasm module, a PostgreSQL cluster with huge pages reserved for it …) and
//! writes a bash script that makes it busy on one core with the settings
//! people really use. The runner pins that script to one core
//! (`taskset -c N bash prog.sh`), checks that the process tree is busy
//! (≥ 50 % of a core over 1.5 s, from /proc/PID/stat of it and its
//! descendants), then scans it with `minerwatch scan --pid PID --format json`
//! (default window). [`agent_minute`] runs the same script for a minute
//! inside a fresh PID namespace beside `minerwatch agent`.
//!
//! Whatever minerwatch says is recorded as it is: a program that is missing,
//! fails to start or is not busy is a [`Status`] of its own and never a pass.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Child, WALLET, free_port};

mod entries;
mod run;
mod setup;

pub use entries::entries;
pub use run::*;
// The CI subset checks the module; the bench does not name it.
#[allow(unused_imports)]
pub use setup::wasm_module;

/// The minerwatch binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_minerwatch");

/// The line a script prints (with `echo`) once its data is loaded and its
/// load generator starts.
pub const READY: &str = "mw-ready";

/// Share of one core (in %) the tree must use before it is scanned.
pub const BUSY_PERCENT: f64 = 50.0;

/// How long the busy check measures.
pub const BUSY_WINDOW: Duration = Duration::from_millis(1500);

/// Busy checks before a program is given up as not busy.
pub const BUSY_TRIES: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Jit,
    BigMemory,
    Crypto,
    Encoder,
    Compiler,
    Numeric,
    Other,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Jit => "JIT runtime",
            Class::BigMemory => "big-memory engine",
            Class::Crypto => "hash/crypto",
            Class::Encoder => "encoder",
            Class::Compiler => "compiler",
            Class::Numeric => "numeric",
            Class::Other => "other",
        }
    }

    pub const ALL: [Class; 7] = [
        Class::Jit,
        Class::BigMemory,
        Class::Crypto,
        Class::Encoder,
        Class::Compiler,
        Class::Numeric,
        Class::Other,
    ];
}

/// What an entry's setup hands the runner.
pub struct Prepared {
    /// The bash script (`prog.sh`) that makes the program busy. Its process
    /// tree is the program: `exec` the busy process where there is one.
    pub script: String,
    /// Wait this long at most for [`READY`] on stdout (None: no such line).
    pub ready: Option<Duration>,
    /// Kept while the program runs, dropped after it is killed (e.g. a
    /// huge-page reservation to give back).
    pub guard: Option<Box<dyn std::any::Any>>,
}

impl Prepared {
    fn script(script: String) -> Result<Prepared, String> {
        Ok(Prepared {
            script,
            ready: None,
            guard: None,
        })
    }

    fn ready(script: String, secs: u64) -> Result<Prepared, String> {
        Ok(Prepared {
            script,
            ready: Some(Duration::from_secs(secs)),
            guard: None,
        })
    }
}

/// Where an entry's setup works.
pub struct Ctx {
    /// A fresh directory, removed after the run.
    pub dir: PathBuf,
}

impl Ctx {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn write(&self, name: &str, text: impl AsRef<[u8]>) -> Result<String, String> {
        let path = self.dir.join(name);
        fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path.display().to_string())
    }
}

pub struct Entry {
    pub name: &'static str,
    pub class: Class,
    /// The Debian packages it needs (installed by the full run when one of
    /// `needs` is missing).
    pub debs: &'static [&'static str],
    /// Commands (looked up in PATH, /usr/sbin, /usr/games) or absolute paths
    /// that must exist.
    pub needs: &'static [&'static str],
    /// How it is made busy, for the report.
    pub busy: &'static str,
    /// Time after start (or after [`READY`]) before the busy check: JIT
    /// warm-up, a heap being touched.
    pub warmup: Duration,
    pub prepare: fn(&Ctx) -> Result<Prepared, String>,
}

/// The entry called `name`.
pub fn entry(name: &str) -> Option<Entry> {
    entries().into_iter().find(|e| e.name == name)
}
