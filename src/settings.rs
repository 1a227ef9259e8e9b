//! Flags and config, validated once into what the pipeline runs with, the
//! same for `scan`, `analyze` and the agent (ripgrep's way): the code past
//! this point never sees an unchecked string.
//!
//! `scan --config FILE` and `analyze --config FILE` read the agent's config
//! file (and its `conf.d/`): its `[[allow]]` rules cap or suppress findings
//! exactly as in the agent, and its `[scan]` section can turn off ptrace or
//! memory reads; flags win over it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, ConfigError};
use crate::judge::Policy;
use crate::observe;

/// Longest accepted `--window`.
pub const MAX_WINDOW_SECS: f64 = 3600.0;

/// A flag or config value that cannot be used, named with how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// `--window` is not a number of seconds in range.
    #[error(
        "invalid --window '{0}': give seconds between 0 and {MAX_WINDOW_SECS}, e.g. --window 5 or --window 0.5"
    )]
    Window(String),
    /// `--pid` is not a process id.
    #[error("invalid --pid '{0}': give a process id, a positive number as `ps` shows it")]
    Pid(String),
    /// A root or procfs directory that is not a directory.
    #[error(
        "{flag} '{}' is not a directory; give the directory a filesystem (or procfs) is mounted on",
        path.display()
    )]
    NotADirectory { flag: &'static str, path: PathBuf },
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What one scan (or one agent tick) runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How to observe.
    pub observe: observe::Options,
    /// How to judge: indicators, busy threshold, allow rules.
    pub policy: Policy,
    /// Extra rules, beside the embedded ones.
    pub rules_dir: Option<PathBuf>,
}

/// The raw flags of `scan`.
#[derive(Debug, Clone)]
pub struct ScanFlags<'a> {
    pub window: &'a str,
    pub pids: &'a [String],
    pub rules: Option<&'a Path>,
    pub config: Option<&'a Path>,
    pub no_memory: bool,
    pub no_ptrace: bool,
    /// `--host-checks`: a `--pid` scan runs every host check.
    pub host_checks: bool,
    pub root: &'a Path,
    pub proc_root: &'a Path,
}

impl Settings {
    /// For `minerwatch scan`.
    pub fn scan(flags: &ScanFlags<'_>) -> Result<Settings, SettingsError> {
        let window = parse_window(flags.window)?;
        let pids = flags
            .pids
            .iter()
            .map(|p| parse_pid(p))
            .collect::<Result<Vec<_>, _>>()?;
        for (flag, dir) in [("--root", flags.root), ("--proc-root", flags.proc_root)] {
            if !dir.is_dir() {
                return Err(SettingsError::NotADirectory {
                    flag,
                    path: dir.to_path_buf(),
                });
            }
        }
        let config = load(flags.config)?;
        Ok(Settings {
            observe: observe::Options {
                window,
                pids,
                proc_root: flags.proc_root.to_path_buf(),
                root: flags.root.to_path_buf(),
                memory: !flags.no_memory && config.scan.memory,
                ptrace: !flags.no_ptrace && config.scan.ptrace,
                scoped_host_checks: !flags.host_checks,
                ..observe::Options::default()
            },
            policy: policy(&config),
            rules_dir: flags
                .rules
                .map(Path::to_path_buf)
                .or(config.agent.rules_dir),
        })
    }

    /// For `minerwatch analyze`: only the policy matters.
    pub fn analyze(config: Option<&Path>) -> Result<Policy, SettingsError> {
        Ok(policy(&load(config)?))
    }

    /// For one tick of the agent, from its (validated) config.
    pub fn agent_tick(config: &Config, host_checks: bool, slices: u32) -> Settings {
        Settings {
            observe: observe::Options {
                window: Duration::from_secs_f64(config.agent.tick_secs),
                pids: Vec::new(),
                proc_root: config.agent.proc_root.clone(),
                root: config.agent.root.clone(),
                memory: config.scan.memory,
                ptrace: config.scan.ptrace,
                host_checks,
                recheck: Duration::from_secs(config.scan.recheck_secs),
                pid_sweep_slices: slices,
                ..observe::Options::default()
            },
            policy: policy(config),
            rules_dir: config.agent.rules_dir.clone(),
        }
    }
}

/// The judge's policy a config asks for: its allow rules.
pub fn policy(config: &Config) -> Policy {
    Policy {
        allow: config.allow.clone(),
        ..Policy::default()
    }
}

/// The config at `path` (and its conf.d), or the defaults without one.
fn load(path: Option<&Path>) -> Result<Config, SettingsError> {
    match path {
        Some(p) => Ok(Config::load(Some(p))?.0),
        None => Ok(Config::default()),
    }
}

fn parse_window(s: &str) -> Result<Duration, SettingsError> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| SettingsError::Window(s.to_string()))?;
    if !secs.is_finite() || secs <= 0.0 || secs > MAX_WINDOW_SECS {
        return Err(SettingsError::Window(s.to_string()));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_pid(s: &str) -> Result<i32, SettingsError> {
    match s.trim().parse::<i32>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(SettingsError::Pid(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags<'a>(window: &'a str, pids: &'a [String]) -> ScanFlags<'a> {
        ScanFlags {
            window,
            pids,
            rules: None,
            config: None,
            no_memory: false,
            no_ptrace: false,
            host_checks: false,
            root: Path::new("/"),
            proc_root: Path::new("/proc"),
        }
    }

    #[test]
    fn bad_flags_are_named_with_the_fix() {
        let e = Settings::scan(&flags("-1", &[]))
            .expect_err("window")
            .to_string();
        assert!(
            e.contains("--window '-1'") && e.contains("e.g. --window 5"),
            "{e}"
        );
        let pids = vec!["abc".to_string()];
        let e = Settings::scan(&flags("5", &pids))
            .expect_err("pid")
            .to_string();
        assert!(e.contains("--pid 'abc'"), "{e}");
        let mut f = flags("5", &[]);
        f.root = Path::new("/nonexistent-root");
        let e = Settings::scan(&f).expect_err("root").to_string();
        assert!(
            e.contains("--root '/nonexistent-root' is not a directory"),
            "{e}"
        );
    }

    #[test]
    fn a_config_gives_scan_the_agents_allow_rules_and_scan_section() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("mw.toml");
        std::fs::write(
            &path,
            "[scan]\nptrace = false\n\n[[allow]]\nexe = \"/usr/bin/monerod\"\nmax_level = \"notice\"\nreason = \"our node\"\n",
        )
        .expect("write");
        let mut f = flags("2", &[]);
        f.config = Some(&path);
        let s = Settings::scan(&f).expect("settings");
        assert!(!s.observe.ptrace && s.observe.memory);
        assert_eq!(s.policy.allow.len(), 1);
        assert_eq!(s.policy.allow[0].reason, "our node");
        // The same rules as the agent's tick.
        let (config, _) = Config::load(Some(&path)).expect("config");
        assert_eq!(
            Settings::agent_tick(&config, true, 12).policy.allow,
            s.policy.allow
        );
        // --no-memory turns memory reads off over the config.
        f.no_memory = true;
        assert!(!Settings::scan(&f).expect("settings").observe.memory);
    }
}
