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
pub mod cli;
pub mod config;
pub mod embedded;
#[doc(hidden)]
pub mod fuzz;
pub mod indicators;
pub mod judge;
pub mod observe;
pub mod report;
pub mod respond;
pub mod safefs;
pub mod settings;
pub mod signatures;
pub mod snapshot;
pub mod sys;

/// The folders are the architecture: data flows observe → snapshot → judge
/// → report, and nothing flows back. These tests fail when a module names
/// one it must not depend on.
#[cfg(test)]
mod layering {
    use std::path::Path;

    /// Every `.rs` file under `src/<dir>` (or the file `src/<dir>.rs`).
    fn sources(dir: &str) -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut out = Vec::new();
        let mut todo = vec![root.join(dir)];
        let file = root.join(format!("{dir}.rs"));
        if file.is_file() {
            todo.push(file);
        }
        while let Some(p) = todo.pop() {
            if p.is_dir() {
                for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                    todo.push(e.path());
                }
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                out.push((p.display().to_string(), text));
            }
        }
        out
    }

    fn assert_never_names(dirs: &[&str], forbidden: &[&str]) {
        for dir in dirs {
            let files = sources(dir);
            assert!(!files.is_empty(), "no sources under src/{dir}");
            for (path, text) in files {
                for f in forbidden {
                    assert!(
                        !text.contains(f),
                        "{path} names {f}: it must depend only on what flows into it"
                    );
                }
            }
        }
    }

    #[test]
    fn judge_report_and_snapshot_never_name_observe_or_agent() {
        assert_never_names(
            &["judge", "report", "snapshot"],
            &["crate::observe", "crate::agent"],
        );
    }

    #[test]
    fn only_the_agent_acts_through_respond() {
        assert_never_names(
            &[
                "observe",
                "judge",
                "report",
                "snapshot",
                "safefs",
                "signatures",
            ],
            &["crate::respond"],
        );
        assert_never_names(&["respond"], &["crate::agent", "crate::settings"]);
    }

    /// The top-level modules each file under `src/` names (`crate::x`).
    fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        let mut todo = vec![root.clone()];
        while let Some(p) = todo.pop() {
            if p.is_dir() {
                for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                    todo.push(e.path());
                }
                continue;
            }
            let Ok(rel) = p.strip_prefix(&root) else {
                continue;
            };
            let top = rel
                .components()
                .next()
                .map(|c| {
                    c.as_os_str()
                        .to_string_lossy()
                        .trim_end_matches(".rs")
                        .to_string()
                })
                .unwrap_or_default();
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for (i, _) in text.match_indices("crate::") {
                let name: String = text[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    graph.entry(top.clone()).or_default().insert(name);
                }
            }
        }
        graph
    }

    #[test]
    fn no_module_depends_on_one_that_depends_on_it() {
        let graph = module_graph();
        // Depth-first search for a cycle of any length.
        fn visit(
            n: &str,
            graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
            path: &mut Vec<String>,
        ) {
            if let Some(at) = path.iter().position(|p| p == n) {
                panic!("import cycle: {} -> {n}", path[at..].join(" -> "));
            }
            path.push(n.to_string());
            for m in graph.get(n).into_iter().flatten() {
                visit(m, graph, path);
            }
            path.pop();
        }
        for n in graph.keys() {
            visit(n, &graph, &mut Vec::new());
        }
        assert!(graph.contains_key("judge") && graph.contains_key("observe"));
    }

    #[test]
    fn the_foundations_name_none_of_the_pipeline() {
        assert_never_names(
            &["safefs", "sys", "indicators", "signatures", "embedded"],
            &[
                "crate::observe",
                "crate::judge",
                "crate::report",
                "crate::agent",
                "crate::settings",
            ],
        );
    }
}
