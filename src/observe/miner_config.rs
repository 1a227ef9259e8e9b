//! XMRig-style configuration files.
//!
//! XMRig looks for `config.json` beside its binary, then `~/.xmrig.json` and
//! `~/.config/xmrig.json` (SIGNALS.md §4); campaigns also drop one in the
//! working directory. A `config.json` is only kept when it looks like a miner
//! config (pools, a randomx or cpu section, a donate level): plenty of benign
//! programs have a `config.json` of their own.

use serde_json::Value;

use crate::snapshot::{MinerConfig, PoolEntry};

/// Parses `text` read from `path`. Returns `None` for a file that is not a
/// miner config; a file named like XMRig's own that fails to parse is kept
/// with its parse error.
pub fn parse(path: &str, text: &[u8]) -> Option<MinerConfig> {
    let xmrig_named = path.ends_with("xmrig.json");
    let v: Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) if xmrig_named => {
            return Some(MinerConfig {
                path: path.to_string(),
                parse_error: Some(e.to_string()),
                ..MinerConfig::default()
            });
        }
        Err(_) => return None,
    };
    let obj = v.as_object()?;
    let pools: Vec<PoolEntry> = obj
        .get("pools")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_object)
                .map(|p| PoolEntry {
                    url: p.get("url").and_then(Value::as_str).map(str::to_string),
                    user: p.get("user").and_then(Value::as_str).map(str::to_string),
                })
                .filter(|p| p.url.is_some() || p.user.is_some())
                .collect()
        })
        .unwrap_or_default();
    let donate_level = obj.get("donate-level").and_then(Value::as_i64);
    let has_randomx_section = obj.get("randomx").is_some_and(Value::is_object);
    let has_cpu_section = obj.get("cpu").and_then(Value::as_object).is_some_and(|c| {
        c.contains_key("huge-pages") || c.contains_key("max-threads-hint") || c.contains_key("rx")
    });
    let miner_like =
        !pools.is_empty() || donate_level.is_some() || has_randomx_section || has_cpu_section;
    (miner_like || xmrig_named).then(|| MinerConfig {
        path: path.to_string(),
        pools,
        donate_level,
        has_randomx_section,
        has_cpu_section,
        parse_error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xmrig_config_is_parsed() {
        let text = br#"{"autosave":true,"donate-level":1,"cpu":{"huge-pages":true,"max-threads-hint":50},
            "randomx":{"1gb-pages":false,"wrmsr":true,"mode":"auto"},
            "pools":[{"url":"stratum+tcp://pool.supportxmr.com:3333","user":"4Ab.worker","pass":"x"}]}"#;
        let c = parse("/tmp/.x/config.json", text).expect("miner config");
        assert_eq!(c.donate_level, Some(1));
        assert!(c.has_randomx_section && c.has_cpu_section);
        assert_eq!(
            c.pools[0].url.as_deref(),
            Some("stratum+tcp://pool.supportxmr.com:3333")
        );
        assert_eq!(c.pools[0].user.as_deref(), Some("4Ab.worker"));
    }

    #[test]
    fn other_config_json_is_ignored() {
        assert!(parse("/srv/app/config.json", br#"{"port":8080,"debug":false}"#).is_none());
        assert!(parse("/srv/app/config.json", b"not json").is_none());
    }

    #[test]
    fn broken_xmrig_json_is_kept_with_error() {
        let c = parse("/root/.xmrig.json", b"{\"pools\": [").expect("kept");
        assert!(c.parse_error.is_some());
    }
}
