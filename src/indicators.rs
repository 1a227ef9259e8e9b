//! Indicator lists (pool ports, miner flags, the wallet pattern, campaign
//! names, staging directories), embedded from `rules/indicators.toml`.
//!
//! They are data, not code: the judge matches facts against them. The file is
//! parsed once at start-up; a malformed file is a build defect that the unit
//! tests catch.

use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    pool: Pool,
    cmdline: Cmdline,
    wallet: Wallet,
    names: Names,
    paths: Paths,
    proxy: Proxy,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pool {
    ports: Vec<u16>,
    schemes: Vec<String>,
    domains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cmdline {
    miner_flags: Vec<String>,
    algorithms: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wallet {
    pattern: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Names {
    campaign: Vec<String>,
    kernel_thread_prefixes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Paths {
    staging_dirs: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Proxy {
    ports: Vec<u16>,
    programs: Vec<String>,
}

/// Parsed, validated indicators.
#[derive(Debug, Clone)]
pub struct Indicators {
    pub pool_ports: Vec<u16>,
    pub stratum_schemes: Vec<String>,
    pub pool_domains: Vec<String>,
    pub miner_flags: Vec<String>,
    pub algorithms: Vec<String>,
    pub wallet: Regex,
    pub campaign_names: Vec<String>,
    pub kernel_thread_prefixes: Vec<String>,
    pub staging_dirs: Vec<String>,
    /// Loopback ports local SOCKS and HTTP proxies listen on.
    pub proxy_ports: Vec<u16>,
    /// Names of proxy and tunnel programs (comm or executable basename).
    pub proxy_programs: Vec<String>,
}

/// A problem in an indicator file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndicatorError {
    /// The TOML does not parse or has unknown keys.
    #[error("indicator file: {0}")]
    Toml(#[from] toml::de::Error),
    /// The wallet pattern is not a valid regular expression.
    #[error("indicator file: wallet.pattern is not a valid regex: {0}")]
    Regex(#[from] regex::Error),
}

impl Indicators {
    /// Parses an indicator file.
    pub fn parse(text: &str) -> Result<Self, IndicatorError> {
        let f: File = toml::from_str(text)?;
        Ok(Indicators {
            pool_ports: f.pool.ports,
            stratum_schemes: f.pool.schemes,
            pool_domains: f.pool.domains,
            miner_flags: f.cmdline.miner_flags,
            algorithms: f.cmdline.algorithms,
            wallet: Regex::new(&f.wallet.pattern)?,
            campaign_names: f.names.campaign,
            kernel_thread_prefixes: f.names.kernel_thread_prefixes,
            staging_dirs: f.paths.staging_dirs,
            proxy_ports: f.proxy.ports,
            proxy_programs: f.proxy.programs,
        })
    }

    /// The embedded indicators.
    pub fn embedded() -> Self {
        match Self::parse(&crate::embedded::indicators()) {
            Ok(i) => i,
            // The embedded file is fixed at build time and covered by a unit test.
            Err(e) => panic!("embedded rules/indicators.toml is invalid: {e}"),
        }
    }

    /// The first Monero wallet address in `text`, if any.
    pub fn find_wallet<'a>(&self, text: &'a str) -> Option<&'a str> {
        self.wallet
            .captures(text)
            .and_then(|c| c.get(1))
            .map(|m| m.as_str())
    }

    /// Whether `path` lies in a staging directory, or in a hidden (dot)
    /// directory outside home directories (where tool chains such as
    /// `~/.rustup` and `~/.cargo` live legitimately).
    pub fn staging_path(&self, path: &str) -> bool {
        let in_staging = self
            .staging_dirs
            .iter()
            .any(|d| path.starts_with(&format!("{d}/")));
        let in_home = path.starts_with("/root/") || path.starts_with("/home/");
        let hidden = !in_home
            && path
                .split('/')
                .rev()
                .skip(1)
                .any(|c| c.starts_with('.') && c != "." && c != "..");
        in_staging || hidden
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALLET: &str = "4ApM6hUHyYx16547k5sn3zRND22RhkaWd4JdemFQyTKQ36ixnHzMV4LRzyFP6XEdkjMTZqHsQA5DhDZWLchXHcKf4dKqcj7";

    #[test]
    fn embedded_file_parses() {
        let i = Indicators::embedded();
        assert!(i.pool_ports.contains(&3333));
        assert!(i.campaign_names.iter().any(|n| n == "kdevtmpfsi"));
        assert!(i.proxy_ports.contains(&1080));
        assert!(i.proxy_programs.iter().any(|n| n == "microsocks"));
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let text = format!("{}\n[extra]\nx = 1\n", crate::embedded::indicators());
        let err = Indicators::parse(&text).expect_err("unknown table must fail");
        assert!(err.to_string().contains("extra"), "{err}");
    }

    #[test]
    fn wallet_pattern_finds_addresses_and_workers() {
        let i = Indicators::embedded();
        assert_eq!(i.find_wallet(WALLET), Some(WALLET));
        assert_eq!(i.find_wallet(&format!("-u {WALLET}.rig01")), Some(WALLET));
        // One character short: not an address.
        assert_eq!(i.find_wallet(&WALLET[1..]), None);
        // Base58 never holds 0, O, I or l.
        let bad = WALLET.replace('A', "0");
        assert_eq!(i.find_wallet(&bad), None);
    }

    #[test]
    fn staging_paths() {
        let i = Indicators::embedded();
        assert!(i.staging_path("/dev/shm/x"));
        assert!(i.staging_path("/tmp/.X25-unix/.rsync/c/lib64"));
        assert!(i.staging_path("/etc/.sys/kdevtmpfsi"));
        assert!(!i.staging_path("/root/.rustup/toolchains/stable/bin/rustc"));
        assert!(!i.staging_path("/usr/bin/xz"));
        assert!(!i.staging_path("/tmpfoo/x"));
    }
}
