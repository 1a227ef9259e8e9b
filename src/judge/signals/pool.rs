//! What a process says about a pool: its command line (pool URLs, miner
//! options, wallets), its miner configs, and its connections (to the pool
//! it names, to a pool port, to a local proxy).

use super::{Kind, Signal, Strength, basename};
use crate::judge::Policy;
use crate::snapshot::ProcessFacts;

/// A pool endpoint named by a command line or config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PoolRef {
    text: String,
    host: String,
    port: u16,
}

fn parse_pool(text: &str) -> Option<PoolRef> {
    let rest = text.split_once("://").map_or(text, |(_, r)| r);
    let rest = rest.split(['/', '?']).next()?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let (host, port) = rest.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| PoolRef {
        text: text.to_string(),
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// The arguments as the program saw them. A process that rewrote its
/// command line (setproctitle) shows one string with spaces: split it.
pub(super) fn args(p: &ProcessFacts) -> Vec<String> {
    match p.cmdline.as_slice() {
        [one] if one.trim().contains(' ') => one.split_whitespace().map(String::from).collect(),
        all => all.to_vec(),
    }
}

pub(super) fn pools_named(p: &ProcessFacts, policy: &Policy) -> Vec<PoolRef> {
    let ind = &policy.indicators;
    let mut pools = Vec::new();
    let args = &args(p);
    for (i, a) in args.iter().enumerate() {
        if ind.stratum_schemes.iter().any(|s| a.contains(s.as_str())) {
            if let Some(pos) = ind
                .stratum_schemes
                .iter()
                .filter_map(|s| a.find(s.as_str()))
                .min()
            {
                pools.extend(parse_pool(&a[pos..]));
            }
        } else if a == "-o" || a == "--url" {
            if let Some(v) = args.get(i + 1) {
                pools.extend(parse_pool(v));
            }
        } else if let Some(v) = a.strip_prefix("--url=").or_else(|| a.strip_prefix("-o=")) {
            pools.extend(parse_pool(v));
        }
    }
    for c in &p.configs {
        for pool in &c.pools {
            if let Some(url) = &pool.url {
                pools.extend(parse_pool(url));
            }
        }
    }
    pools.dedup();
    pools
}

pub(super) fn cmdline(p: &ProcessFacts, policy: &Policy, out: &mut Vec<Signal>) {
    let ind = &policy.indicators;
    let args = &args(p);
    let mut found: Vec<String> = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if let Some(s) = ind.stratum_schemes.iter().find(|s| a.contains(s.as_str())) {
            found.push(format!("pool URL '{a}' ({s})"));
        }
        let flag = a.split('=').next().unwrap_or(a);
        if ind.miner_flags.iter().any(|f| f == a || f == flag) {
            found.push(format!("miner option '{a}'"));
        }
        let algo = if a == "-a" || a == "--algo" {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix("--algo=")
        };
        if let Some(algo) = algo.filter(|v| ind.algorithms.iter().any(|x| x == v)) {
            found.push(format!("mining algorithm '{algo}'"));
        }
        if (a == "-o" || a == "--url")
            && i + 1 < args.len()
            && let Some(pool) = parse_pool(&args[i + 1])
            && (ind
                .pool_domains
                .iter()
                .any(|d| pool.host.ends_with(d.as_str()))
                || ind.pool_ports.contains(&pool.port))
        {
            found.push(format!("pool '{}'", pool.text));
        }
    }
    found.dedup();
    if !found.is_empty() {
        out.push(Signal::new(
            "cmd.miner_args",
            Strength::Medium,
            Kind::Intent,
            format!("command line has {}", found.join(", ")),
        ));
    }
    let joined = args.join(" ");
    if let Some(w) = ind.find_wallet(&joined) {
        out.push(Signal::new(
            "cmd.wallet",
            Strength::Medium,
            Kind::Intent,
            format!("command line holds the Monero address {w}"),
        ));
    }
}

pub(super) fn configs(p: &ProcessFacts, out: &mut Vec<Signal>) {
    let useful: Vec<String> = p
        .configs
        .iter()
        .filter(|c| !c.pools.is_empty() || c.has_randomx_section || c.donate_level.is_some())
        .map(|c| {
            let pools: Vec<String> = c
                .pools
                .iter()
                .map(|pool| {
                    format!(
                        "{} as {}",
                        pool.url.as_deref().unwrap_or("?"),
                        pool.user.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            let mut s = format!("miner config {}", c.path);
            if !pools.is_empty() {
                s.push_str(&format!(" names pool {}", pools.join(", ")));
            }
            if let Some(d) = c.donate_level {
                s.push_str(&format!(", donate-level {d}"));
            }
            if c.has_randomx_section {
                s.push_str(", has a \"randomx\" section");
            }
            s
        })
        .collect();
    if !useful.is_empty() {
        out.push(Signal::new(
            "config.miner",
            Strength::Medium,
            Kind::Intent,
            useful.join("; "),
        ));
    }
}

pub(super) fn network(
    p: &ProcessFacts,
    pools: &[PoolRef],
    shaped: bool,
    policy: &Policy,
    out: &mut Vec<Signal>,
) {
    let ind = &policy.indicators;
    let mut stratum = Vec::new();
    let mut pool_port = Vec::new();
    let mut proxy = Vec::new();
    for c in &p.connections {
        let named = pools.iter().find(|pool| {
            pool.port == c.remote_port
                && (pool.host == c.remote_ip
                    || pool.host.parse::<std::net::IpAddr>().is_err()
                    || (pool.host == "localhost"
                        && (c.remote_ip == "127.0.0.1" || c.remote_ip == "::1")))
        });
        if let Some(pool) = named {
            stratum.push(format!(
                "connected to {}:{}, the pool its command line or config names ({})",
                c.remote_ip, c.remote_port, pool.text
            ));
        } else if ind.pool_ports.contains(&c.remote_port) {
            pool_port.push(format!("{}:{}", c.remote_ip, c.remote_port));
        } else if shaped && let Some(what) = local_proxy(c, ind) {
            proxy.push(what);
        }
    }
    if !proxy.is_empty() {
        out.push(Signal::new(
            "net.local_proxy",
            Strength::Weak,
            Kind::Stealth,
            format!(
                "RandomX-shaped and connected to a local proxy: {} (a miner behind a proxy shows no pool connection of its own)",
                proxy.join(", ")
            ),
        ));
    }
    if !stratum.is_empty() {
        out.push(Signal::new(
            "net.stratum",
            Strength::Strong,
            Kind::Activity,
            stratum.join("; "),
        ));
    }
    if !pool_port.is_empty() {
        out.push(Signal::new(
            "net.pool_port",
            Strength::Weak,
            Kind::Intent,
            format!(
                "connected to {}, a common mining-pool port",
                pool_port.join(", ")
            ),
        ));
    }
}

/// A loopback connection to a proxy: a listener whose program or port is
/// one proxies use.
fn local_proxy(
    c: &crate::snapshot::Connection,
    ind: &crate::indicators::Indicators,
) -> Option<String> {
    let loopback = c
        .remote_ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return None;
    }
    let at = format!("{}:{}", c.remote_ip, c.remote_port);
    let program = c.peer.as_ref().filter(|peer| {
        let exe = peer
            .exe
            .as_deref()
            .map(|e| basename(e.trim_end_matches(" (deleted)")));
        ind.proxy_programs
            .iter()
            .any(|n| n == &peer.comm || Some(n.as_str()) == exe)
    });
    match (program, ind.proxy_ports.contains(&c.remote_port)) {
        (Some(peer), _) => Some(format!("{at}, served by {} (pid {})", peer.comm, peer.pid)),
        (None, true) => Some(format!("{at}, a port local proxies listen on")),
        (None, false) => None,
    }
}
