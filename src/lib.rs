//! minerwatch finds covert Monero miners on Linux hosts.
//!
//! The pipeline is observe → judge → report:
//!
//! - [`observe`] reads /proc, files and the rules' matches into a
//!   [`snapshot::HostSnapshot`]: plain, serializable data; all I/O lives there.
//! - [`judge::judge`] is a pure function from a snapshot and a
//!   [`judge::Policy`] to a [`judge::Report`], with levels miner, suspicious,
//!   notice and clean, each finding carrying its evidence.
//! - [`report`] renders a report as text, JSON or NDJSON.
//!
//! ```no_run
//! use minerwatch::{judge, observe, signatures::Signatures};
//! let rules = Signatures::load(None)?;
//! let snapshot = observe::observe(&observe::Options::default(), &rules)?;
//! let report = judge::judge(&snapshot, &judge::Policy::default());
//! println!("{}", report.verdict);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod agent;
pub mod app;
pub mod cli;
pub mod embedded;
pub mod indicators;
pub mod judge;
pub mod observe;
pub mod report;
pub mod signatures;
pub mod snapshot;
