//! Agent configuration: `/etc/minerwatch/minerwatch.toml` plus
//! `conf.d/*.toml` beside it, over embedded defaults, so no file is needed.
//!
//! Unknown keys are rejected with the key named. Later files override
//! earlier ones key by key; `[[output]]` and `[[allow]]` lists from every
//! file are concatenated.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::judge::AllowRule;
use crate::report::event::Fields;

/// The default config file.
pub const DEFAULT_PATH: &str = "/etc/minerwatch/minerwatch.toml";
/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The effective configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub scan: ScanConfig,
    pub contain: ContainConfig,
    /// Where events go; stdout alone when none is configured.
    #[serde(rename = "output")]
    pub outputs: Vec<OutputConfig>,
    /// Findings to suppress or cap.
    #[serde(rename = "allow")]
    pub allow: Vec<AllowRule>,
}

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Seconds per tick: CPU is measured over one tick.
    pub tick_secs: f64,
    /// Seconds between heartbeat events.
    pub heartbeat_secs: u64,
    /// Events per minute at most; the rest are counted as dropped.
    pub max_events_per_minute: u32,
    /// The agent's own CPU budget, percent of one core; it sleeps to keep it.
    pub cpu_budget_percent: f64,
    /// Seconds between host-wide checks (hidden processes, leftovers, persistence).
    pub host_check_secs: u64,
    /// Extra yara rules directory, reloaded on change and on SIGHUP.
    pub rules_dir: Option<PathBuf>,
    /// Directories whose new or changed executable files are scanned at once
    /// (under `root`).
    pub watch_dirs: Vec<PathBuf>,
    pub proc_root: PathBuf,
    pub root: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            tick_secs: 5.0,
            heartbeat_secs: 300,
            max_events_per_minute: 60,
            cpu_budget_percent: 5.0,
            host_check_secs: 300,
            rules_dir: None,
            watch_dirs: ["/tmp", "/var/tmp", "/dev/shm"]
                .iter()
                .map(PathBuf::from)
                .collect(),
            proc_root: PathBuf::from("/proc"),
            root: PathBuf::from("/"),
        }
    }
}

/// `[scan]`: the expensive checks, run for candidates only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    pub ptrace: bool,
    pub memory: bool,
    /// Seconds before a candidate's memory and rounding mode are checked again.
    pub recheck_secs: u64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            ptrace: true,
            memory: true,
            recheck_secs: 300,
        }
    }
}

/// `[contain]`: what the agent does itself when a process is rated `miner`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainConfig {
    /// Freeze the process tree of each new `miner` finding (allow rules
    /// apply: an allowed finding is never `miner`) and write its evidence
    /// bundle into `evidence_dir`. Off by default: a frozen false positive
    /// is an outage. The tree stays frozen for a person to decide
    /// (`minerwatch contain --force PID --kill`, or thaw it).
    pub freeze_on_miner: bool,
    /// Where the bundles go (made 0700 if missing; refused if a symlink, not
    /// ours, or open to others).
    pub evidence_dir: PathBuf,
}

impl Default for ContainConfig {
    fn default() -> Self {
        ContainConfig {
            freeze_on_miner: false,
            evidence_dir: PathBuf::from("/var/lib/minerwatch/evidence"),
        }
    }
}

/// One `[[output]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum OutputConfig {
    /// NDJSON to a file, rotated by size, mode 0600.
    File {
        path: PathBuf,
        #[serde(default = "default_max_bytes")]
        max_bytes: u64,
        #[serde(default = "default_keep")]
        keep: u32,
        #[serde(default)]
        fields: Fields,
    },
    /// NDJSON on standard output.
    Stdout {
        #[serde(default)]
        fields: Fields,
    },
    /// RFC 5424 syslog; `transport` udp or tcp with `address` IP:PORT, or
    /// unix with `address` a socket path such as /dev/log.
    Syslog {
        transport: Transport,
        address: String,
        #[serde(default)]
        fields: Fields,
    },
    /// systemd-journald's native protocol.
    Journald {
        #[serde(default = "default_journal")]
        socket: PathBuf,
    },
}

/// How a syslog output reaches its collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Transport {
    Udp,
    Tcp,
    /// The local socket (`/dev/log`).
    Unix,
}

impl TryFrom<String> for Transport {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            "unix" => Ok(Transport::Unix),
            other => Err(format!(
                "transport = \"{other}\": a syslog output's transport is udp, tcp or unix"
            )),
        }
    }
}

impl Transport {
    /// The socket address of a udp or tcp `address`, checked; `None` for unix.
    pub fn socket_addr(self, address: &str) -> Result<Option<std::net::SocketAddr>, String> {
        match self {
            Transport::Unix => Ok(None),
            Transport::Udp | Transport::Tcp => address.parse().map(Some).map_err(|_| {
                format!("syslog address '{address}' is not IP:PORT: give e.g. \"127.0.0.1:514\"")
            }),
        }
    }
}

fn default_journal() -> PathBuf {
    PathBuf::from("/run/systemd/journal/socket")
}

fn default_max_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_keep() -> u32 {
    5
}

/// A config problem, naming the file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config '{path}': {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config '{path}': {message}")]
    Invalid { path: PathBuf, message: String },
}

fn invalid(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl Config {
    /// Loads `path` and `conf.d/*.toml` beside it. A missing file at the
    /// default path means the embedded defaults; a missing file the user
    /// named is an error.
    pub fn load(path: Option<&Path>) -> Result<(Config, Vec<PathBuf>), ConfigError> {
        let (main, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        let mut files = Vec::new();
        if main.exists() || explicit {
            files.push(main.clone());
        }
        let confd = main.parent().map(|d| d.join("conf.d"));
        if let Some(d) = confd.filter(|d| d.is_dir()) {
            let mut extra: Vec<PathBuf> = std::fs::read_dir(&d)
                .map_err(|source| ConfigError::Read {
                    path: d.clone(),
                    source,
                })?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            extra.sort();
            files.extend(extra);
        }
        let mut merged = toml::Table::new();
        let mut outputs = Vec::new();
        let mut allow = Vec::new();
        for f in &files {
            // The admin names these files (a Kubernetes ConfigMap mounts them
            // as symlinks): follow a symlink, but read only a regular file.
            let (bytes, truncated) = crate::safefs::read_regular(f, MAX_CONFIG_BYTES, false)
                .map_err(|source| ConfigError::Read {
                    path: f.clone(),
                    source,
                })?;
            if truncated {
                return Err(invalid(f, "larger than 1 MiB"));
            }
            let text = String::from_utf8(bytes).map_err(|_| invalid(f, "not UTF-8 text"))?;
            let mut table: toml::Table =
                toml::from_str(&text).map_err(|e| invalid(f, e.to_string()))?;
            // Check this file alone, so errors name the file they are in.
            let alone: Config = toml::Value::Table(table.clone())
                .try_into()
                .map_err(|e: toml::de::Error| invalid(f, e.to_string()))?;
            outputs.extend(alone.outputs);
            allow.extend(alone.allow);
            table.remove("output");
            table.remove("allow");
            for (k, v) in table {
                match (merged.get_mut(&k), v) {
                    (Some(toml::Value::Table(old)), toml::Value::Table(new)) => old.extend(new),
                    (_, v) => {
                        merged.insert(k, v);
                    }
                }
            }
        }
        let mut config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| invalid(&main, e.to_string()))?;
        config.outputs = outputs;
        config.allow = allow;
        config.validate().map_err(|m| invalid(&main, m))?;
        Ok((config, files))
    }

    /// One config file's text, parsed and validated as `load` checks a
    /// file alone: the error names the key and what is wrong.
    pub fn parse_file_text(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let a = &self.agent;
        if !(a.tick_secs.is_finite() && (0.5..=3600.0).contains(&a.tick_secs)) {
            return Err(format!(
                "agent.tick_secs = {} must be between 0.5 and 3600",
                a.tick_secs
            ));
        }
        if !(a.cpu_budget_percent.is_finite()
            && a.cpu_budget_percent > 0.0
            && a.cpu_budget_percent <= 100.0)
        {
            return Err(format!(
                "agent.cpu_budget_percent = {} must be above 0 and at most 100",
                a.cpu_budget_percent
            ));
        }
        if a.max_events_per_minute == 0 {
            return Err("agent.max_events_per_minute must be at least 1".into());
        }
        for (i, o) in self.outputs.iter().enumerate() {
            if let OutputConfig::Syslog {
                transport, address, ..
            } = o
            {
                transport
                    .socket_addr(address)
                    .map_err(|m| format!("output[{i}]: {m}"))?;
            }
        }
        for (i, r) in self.allow.iter().enumerate() {
            if r.exe.is_none()
                && r.sha256.is_none()
                && r.path.is_none()
                && r.user.is_none()
                && r.name.is_none()
                && r.container.is_none()
            {
                return Err(format!(
                    "allow[{i}] ({}) matches nothing: give exe, path, sha256, user, name or container",
                    r.reason
                ));
            }
            if r.name.is_some() && r.exe.is_none() && r.sha256.is_none() && r.path.is_none() {
                return Err(format!(
                    "allow[{i}] ({}) allows by process name alone, which any miner can take: add exe, path or sha256",
                    r.reason
                ));
            }
            if let Some(p) = &r.path
                && (!p.starts_with('/') || p.trim_end_matches('/').is_empty())
            {
                return Err(format!(
                    "allow[{i}] ({}) path '{p}' must be an absolute file, or a directory ending in '/', other than /",
                    r.reason
                ));
            }
        }
        Ok(())
    }

    /// The effective config as TOML (`minerwatch config show`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn no_file_means_defaults() {
        let dir = tempfile::tempdir().expect("tmp");
        // An explicit path that does not exist is an error...
        let missing = dir.path().join("none.toml");
        assert!(Config::load(Some(&missing)).is_err());
        // ...the default one is not: it is optional.
        assert_eq!(Config::default().agent.tick_secs, 5.0);
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name_and_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(
            dir.path(),
            "m.toml",
            "[agent]\ntick_secs = 2\ntick_sex = 3\n",
        );
        let e = Config::load(Some(&p)).expect_err("unknown key").to_string();
        assert!(e.contains("tick_sex") && e.contains("m.toml"), "{e}");
    }

    #[test]
    fn a_syslog_transport_or_address_out_of_its_set_is_rejected_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = |transport: &str, address: &str| {
            format!(
                "[[output]]\nkind = \"syslog\"\ntransport = \"{transport}\"\naddress = \"{address}\"\n"
            )
        };
        let p = write(
            dir.path(),
            "t.toml",
            &out("carrier-pigeon", "127.0.0.1:514"),
        );
        let e = Config::load(Some(&p))
            .expect_err("bad transport")
            .to_string();
        assert!(
            e.contains("transport = \"carrier-pigeon\"") && e.contains("udp, tcp or unix"),
            "{e}"
        );
        let p = write(dir.path(), "a.toml", &out("tcp", "loghost:514"));
        let e = Config::load(Some(&p)).expect_err("bad address").to_string();
        assert!(
            e.contains("output[0]") && e.contains("'loghost:514' is not IP:PORT"),
            "{e}"
        );
        let p = write(dir.path(), "u.toml", &out("unix", "/dev/log"));
        assert!(Config::load(Some(&p)).is_ok());
    }

    #[test]
    fn conf_d_overrides_and_lists_concatenate() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(
            dir.path(),
            "minerwatch.toml",
            "[agent]\ntick_secs = 2\nheartbeat_secs = 60\n[[output]]\nkind = \"stdout\"\n",
        );
        write(
            dir.path(),
            "conf.d/10-node.toml",
            "[agent]\ntick_secs = 3\n[[allow]]\nexe = \"/usr/bin/monerod\"\nmax_level = \"notice\"\nreason = \"our node\"\n",
        );
        let bad = write(
            dir.path(),
            "conf.d/20-bad.toml",
            "[[allow]]\nname = \"xmrig\"\nreason = \"lazy\"\n",
        );
        let e = Config::load(Some(&p))
            .expect_err("name-only allow")
            .to_string();
        assert!(e.contains("process name alone"), "{e}");
        for (path, why) in [("\"/\"", "other than /"), ("\"opt/\"", "absolute")] {
            std::fs::write(&bad, format!("[[allow]]\npath = {path}\nreason = \"x\"\n")).expect("w");
            let e = Config::load(Some(&p)).expect_err("bad path").to_string();
            assert!(e.contains("allow[1]") && e.contains(why), "{e}");
        }
        std::fs::remove_file(bad).expect("rm");
        let (c, files) = Config::load(Some(&p)).expect("loads");
        assert_eq!(files.len(), 2);
        assert_eq!(c.agent.tick_secs, 3.0);
        assert_eq!(c.agent.heartbeat_secs, 60);
        assert_eq!(c.outputs.len(), 1);
        assert_eq!(c.allow[0].max_level, crate::judge::Level::Notice);
        // What show prints loads back the same.
        let again: Config = toml::from_str(&c.to_toml()).expect("round trip");
        assert_eq!(again, c);
    }

    #[test]
    fn bad_values_are_explained() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(dir.path(), "m.toml", "[agent]\ntick_secs = 0\n");
        let e = Config::load(Some(&p)).expect_err("tick 0").to_string();
        assert!(e.contains("agent.tick_secs = 0"), "{e}");
        let p = write(
            dir.path(),
            "m.toml",
            "[[output]]\nkind = \"carrier-pigeon\"\n",
        );
        let e = Config::load(Some(&p)).expect_err("kind").to_string();
        assert!(e.contains("carrier-pigeon"), "{e}");
    }
}
