//! yara-x: compile the embedded and user rules, scan file contents.
//!
//! The embedded rules (`rules/yara/*.yar`) are compiled into the binary, so the
//! default needs no files. `--rules DIR` adds a user's `.yar`/`.yara` files:
//! each compiles in its own namespace, and a file that fails to compile is
//! reported with its path and line and skipped while the rest still load.
//! The externals that Loki/THOR-style community rule sets use (`filename`,
//! `filepath`, `extension`, `filetype`, `owner`) are defined, so such sets
//! compile unchanged.
//!
//! Limits: rules see at most the bytes the caller read (see
//! `safefs::MAX_BINARY_BYTES`); module-based conditions (`pe`, `elf`,
//! `hash`) work on files but this module does not scan process memory.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use yara_x::{Compiler, MetaValue, Rules, Scanner, SourceCode};

use crate::snapshot::{RuleMatch, RulesInfo};

/// The externals defined for community rule sets, all strings.
pub const EXTERNALS: &[&str] = &["filename", "filepath", "extension", "filetype", "owner"];

/// Namespace prefix of user rules; embedded rules live in `minerwatch_*`.
const USER_NAMESPACE: &str = "user";
/// Largest rule file read from a user directory.
const MAX_RULE_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Directory levels searched below `--rules DIR`.
const MAX_RULE_DEPTH: usize = 4;
/// Longest a single scan may take before it is abandoned.
const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors that stop rules from loading at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RulesError {
    /// The `--rules` directory does not exist or cannot be read.
    #[error(
        "cannot read rules directory '{path}': {source}; give an existing, readable directory of .yar/.yara files to --rules"
    )]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--rules` names something that is not a directory.
    #[error("--rules '{0}' is not a directory; give a directory of .yar/.yara files")]
    NotDir(PathBuf),
    /// The embedded rules failed to compile: a build defect.
    #[error("embedded rule file {file} does not compile: {error}")]
    Embedded { file: String, error: String },
}

/// The outcome of loading one user rule file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleFileStatus {
    pub path: PathBuf,
    /// Rules the file added (0 when it failed).
    pub rules: usize,
    /// The compiler's message, naming file and line, when the file was skipped.
    pub error: Option<String>,
    /// Warnings the compiler gave for the file.
    pub warnings: Vec<String>,
}

/// Compiled rules and what went into them.
pub struct Signatures {
    rules: Rules,
    info: RulesInfo,
    files: Vec<RuleFileStatus>,
}

impl std::fmt::Debug for Signatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signatures")
            .field("info", &self.info)
            .finish()
    }
}

fn define_externals(c: &mut Compiler<'_>) {
    for name in EXTERNALS {
        // Defining a fresh string global cannot fail for these fixed names.
        if let Err(e) = c.define_global(name, "") {
            tracing::warn!("cannot define external {name}: {e}");
        }
    }
}

/// Lists rule files below `dir`, sorted, following no symlinks.
fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, RulesError> {
    let meta = fs::symlink_metadata(dir).map_err(|source| RulesError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(RulesError::NotDir(dir.to_path_buf()));
    }
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let entries = fs::read_dir(&d).map_err(|source| RulesError::Dir {
            path: d.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() && depth < MAX_RULE_DEPTH {
                stack.push((path, depth + 1));
            } else if ft.is_file()
                && path.extension().is_some_and(|e| {
                    e.eq_ignore_ascii_case("yar") || e.eq_ignore_ascii_case("yara")
                })
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

impl Signatures {
    /// Compiles the embedded rules and, if given, every rule file below `user_dir`.
    pub fn load(user_dir: Option<&Path>) -> Result<Self, RulesError> {
        let user_files = match user_dir {
            Some(d) => rule_files(d)?,
            None => Vec::new(),
        };
        let mut hasher = Sha256::new();
        let mut compiler = Compiler::new();
        define_externals(&mut compiler);
        let mut embedded = 0;
        let sources = crate::embedded::yara_rules();
        for (name, src) in &sources {
            let stem = name.trim_end_matches(".yar");
            compiler.new_namespace(&format!("minerwatch_{stem}"));
            let before = count_rules_in(src);
            compiler
                .add_source(
                    SourceCode::from(src.as_str()).with_origin(format!("rules/yara/{name}")),
                )
                .map_err(|e| RulesError::Embedded {
                    file: name.to_string(),
                    error: e.to_string(),
                })?;
            embedded += before;
            hasher.update(src.as_bytes());
        }
        let mut files = Vec::new();
        let mut user = 0;
        for (i, path) in user_files.iter().enumerate() {
            let status = match read_rule_file(path) {
                Err(error) => RuleFileStatus {
                    path: path.clone(),
                    rules: 0,
                    error: Some(error),
                    warnings: Vec::new(),
                },
                Ok(text) => {
                    let origin = path.display().to_string();
                    // yara-x keeps the good rules of a file with errors; we skip
                    // the whole file instead, so a trial compile decides first.
                    let mut trial = Compiler::new();
                    define_externals(&mut trial);
                    let checked = trial
                        .add_source(SourceCode::from(text.as_str()).with_origin(origin.as_str()))
                        .map(|c| {
                            c.warnings()
                                .iter()
                                .map(|w| w.to_string())
                                .collect::<Vec<_>>()
                        })
                        .map_err(|e| e.to_string());
                    let added = checked.and_then(|warnings| {
                        compiler.new_namespace(&format!("{USER_NAMESPACE}{i}"));
                        compiler
                            .add_source(
                                SourceCode::from(text.as_str()).with_origin(origin.as_str()),
                            )
                            .map(|_| warnings)
                            .map_err(|e| e.to_string())
                    });
                    match added {
                        Ok(warnings) => {
                            let n = count_rules_in(&text);
                            user += n;
                            hasher.update(text.as_bytes());
                            RuleFileStatus {
                                path: path.clone(),
                                rules: n,
                                error: None,
                                warnings,
                            }
                        }
                        Err(error) => RuleFileStatus {
                            path: path.clone(),
                            rules: 0,
                            error: Some(error),
                            warnings: Vec::new(),
                        },
                    }
                }
            };
            files.push(status);
        }
        let rules = compiler.build();
        // The unmasked sources must not linger in our heap, where a memory
        // scan by another minerwatch would find XMRig strings.
        for (_, src) in sources {
            let mut bytes = src.into_bytes();
            bytes.fill(0);
            std::hint::black_box(&bytes);
        }
        let hash = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Signatures {
            rules,
            info: RulesInfo {
                embedded,
                user,
                hash,
            },
            files,
        })
    }

    /// The compiled rules, for the memory block scanner.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// What the rule set holds.
    pub fn info(&self) -> &RulesInfo {
        &self.info
    }

    /// The outcome of each user rule file.
    pub fn files(&self) -> &[RuleFileStatus] {
        &self.files
    }

    /// A scanner for many files; reuse it across scans.
    pub fn scanner(&self) -> FileScanner<'_> {
        let mut scanner = Scanner::new(&self.rules);
        scanner.set_timeout(SCAN_TIMEOUT);
        FileScanner { scanner }
    }
}

/// Counts top-level `rule` declarations, for reporting only.
fn count_rules_in(src: &str) -> usize {
    src.lines()
        .filter(|l| {
            let t = l.trim_start();
            let t = t.strip_prefix("private ").unwrap_or(t);
            let t = t.strip_prefix("global ").unwrap_or(t);
            t.starts_with("rule ")
        })
        .count()
}

fn read_rule_file(path: &Path) -> Result<String, String> {
    let (bytes, truncated) = crate::safefs::read_regular(path, MAX_RULE_FILE_BYTES, true)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    if truncated {
        return Err(format!(
            "{}: larger than {} MiB, skipped",
            path.display(),
            MAX_RULE_FILE_BYTES >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8 text, skipped", path.display()))
}

/// What minerwatch reads from a matching rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMeta {
    /// The `category` metadata of an embedded rule (randomx, xmrig, miner,
    /// stratum; `miner` when missing); always `user` for a `--rules` rule.
    pub category: String,
    pub description: Option<String>,
    /// From `--rules`, not embedded.
    pub user: bool,
}

impl RuleMeta {
    /// Reads a matching rule's namespace and metadata.
    pub fn of(rule: &yara_x::Rule<'_, '_>) -> Self {
        let mut category = None;
        let mut description = None;
        for (key, value) in rule.metadata() {
            if let MetaValue::String(s) = value {
                match key {
                    "category" => category = Some(s.to_string()),
                    "description" => description = Some(s.to_string()),
                    _ => {}
                }
            }
        }
        let user = rule.namespace().starts_with(USER_NAMESPACE);
        RuleMeta {
            category: match (user, category) {
                (false, Some(c)) => c,
                (false, None) => "miner".to_string(),
                (true, _) => "user".to_string(),
            },
            description,
            user,
        }
    }
}

/// What the externals describe about the scanned file.
#[derive(Debug, Clone, Default)]
pub struct FileContext<'a> {
    pub path: &'a str,
    pub owner: &'a str,
}

/// Scans file contents; one per scanning thread.
pub struct FileScanner<'r> {
    scanner: Scanner<'r>,
}

impl FileScanner<'_> {
    /// Scans `data` (the contents of the file at `ctx.path`).
    pub fn scan(&mut self, data: &[u8], ctx: &FileContext<'_>) -> Result<Vec<RuleMatch>, String> {
        let path = ctx.path;
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let extension = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        let filetype = if data.starts_with(b"\x7fELF") {
            "ELF"
        } else if data.starts_with(b"MZ") {
            "EXE"
        } else {
            ""
        };
        for (k, v) in [
            ("filename", name),
            ("filepath", dir),
            ("extension", extension),
            ("filetype", filetype),
            ("owner", ctx.owner),
        ] {
            self.scanner
                .set_global(k, v)
                .map_err(|e| format!("setting external {k}: {e}"))?;
        }
        let results = self.scanner.scan(data).map_err(|e| e.to_string())?;
        Ok(results
            .matching_rules()
            .map(|r| {
                let meta = RuleMeta::of(&r);
                RuleMatch {
                    rule: r.identifier().to_string(),
                    namespace: r.namespace().to_string(),
                    category: meta.category,
                    description: meta.description,
                    user: meta.user,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_rules_compile() {
        let s = Signatures::load(None).expect("embedded rules compile");
        assert!(s.info().embedded >= 3, "{:?}", s.info());
        assert_eq!(s.info().user, 0);
    }

    #[test]
    fn bad_user_file_is_reported_with_line_and_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("good.yar"),
            "rule good_one { strings: $a = \"minerwatch-test-marker\" condition: $a and filename != \"\" }",
        )
        .expect("write");
        std::fs::write(
            dir.path().join("bad.yara"),
            "rule ok_too { condition: true }\n\nrule broken {\n condition: $nope }\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a rule").expect("write");
        let s = Signatures::load(Some(dir.path())).expect("loads despite bad file");
        let files = s.files();
        assert_eq!(files.len(), 2, "{files:?}");
        let bad = files
            .iter()
            .find(|f| f.path.ends_with("bad.yara"))
            .expect("bad listed");
        let err = bad.error.as_deref().expect("bad has error");
        assert!(
            err.contains("bad.yara:4"),
            "error must name file:line: {err}"
        );
        let good = files
            .iter()
            .find(|f| f.path.ends_with("good.yar"))
            .expect("good listed");
        assert!(good.error.is_none());
        let mut scanner = s.scanner();
        let m = scanner
            .scan(
                b"xx minerwatch-test-marker xx",
                &FileContext {
                    path: "/tmp/a.bin",
                    owner: "root",
                },
            )
            .expect("scan");
        assert!(
            m.iter()
                .any(|m| m.rule == "good_one" && m.user && m.category == "user"),
            "{m:?}"
        );
        // The bad file's valid rule was skipped with it.
        assert!(!m.iter().any(|m| m.rule == "ok_too"));
    }

    #[test]
    fn missing_dir_is_an_error_naming_the_path() {
        let err = Signatures::load(Some(Path::new("/nonexistent/minerwatch-rules")))
            .expect_err("must fail");
        assert!(
            err.to_string().contains("/nonexistent/minerwatch-rules"),
            "{err}"
        );
    }
}
