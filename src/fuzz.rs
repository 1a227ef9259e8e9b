//! Entry points for fuzzing every parser of untrusted input: the text an
//! intruder's host hands us (/proc files, crontabs, units, rc.local,
//! miner configs, hash lists) and what a user hands us (the agent's TOML,
//! snapshots and bundles for `analyze`). Each takes raw bytes, runs them
//! through the same code a scan runs, and must return without panicking,
//! whatever the bytes.
//!
//! `fuzz/` holds a `cargo fuzz` target per entry (nightly); the property
//! tests below run the same entries on stable with a bounded case count
//! (256 cases per entry and kind), so CI exercises them too. A crash found
//! becomes a regression test named after what it was.

use std::io::Cursor;

use procfs::prelude::*;

use crate::observe;
use crate::observe::procread;

/// The system facts procfs needs for some tables: this machine's, fixed.
const SYSTEM: procfs::ExplicitSystemInfo = procfs::ExplicitSystemInfo {
    boot_time_secs: 1_700_000_000,
    ticks_per_second: 100,
    page_size: 4096,
    is_little_endian: true,
};

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// `/proc/PID/stat`: comm with spaces, parentheses and newlines included.
pub fn proc_stat(data: &[u8]) {
    if let Ok(stat) = procread::stat_from_bytes(data) {
        let _ = (stat.comm.len(), stat.starttime, procread::cpu_ticks(&stat));
    }
    let t = text(data);
    let _ = observe::fpu::parse_stat_state(&t);
    let _ = observe::fpu::parse_stat_cpu_ticks(&t);
}

/// `/proc/PID/status`, and `cmdline` split into arguments.
pub fn proc_status(data: &[u8]) {
    let _ = procread::cmdline_from_bytes(data);
    if let Ok(status) = procread::status_from_bytes(data) {
        let _ = (status.vmrss, status.hugetlbpages, status.ruid);
    }
    let _ = observe::fpu::parse_tracer_pid(&text(data));
}

/// `/proc/PID/maps`, summarized as a scan does.
pub fn proc_maps(data: &[u8]) {
    for cut in [false, true] {
        if let Ok(maps) = procread::maps_from_bytes(data, cut) {
            let _ = observe::memory::summarize(&maps, 1 << 20, 0);
        }
    }
}

/// `/proc/PID/net/tcp` and `tcp6`, turned into connections.
pub fn net_tcp(data: &[u8]) {
    if let Ok(t) = procread::guarded("net/tcp", || {
        procfs::net::TcpNetEntries::from_read(Cursor::new(data), &SYSTEM)
    }) {
        for e in &t.0 {
            let _ = observe::tcp_connection(e);
        }
    }
}

/// `/proc/self/mountinfo` (mounts over /proc/PID, hidepid, /proc itself).
pub fn mountinfo(data: &[u8]) {
    let _ = observe::host::mountinfo_facts(&text(data), "/proc");
}

/// `/proc/PID/cgroup`, and the container id drawn from it.
pub fn cgroup(data: &[u8]) {
    if let Ok(groups) = procread::guarded("cgroup", || {
        procfs::ProcessCGroups::from_read(Cursor::new(data))
    }) {
        let paths: Vec<String> = groups.into_iter().map(|g| g.pathname).collect();
        if let Some(re) = observe::container_re() {
            let _ = observe::container_id(&paths, re);
        }
    }
}

/// An XMRig-style config file.
pub fn miner_config(data: &[u8]) {
    let _ = observe::miner_config::parse("/tmp/.x/config.json", data);
}

/// A system crontab (/etc/crontab, /etc/cron.d/*).
pub fn crontab(data: &[u8]) {
    let _ = observe::host::persistence_entries("cron", "/etc/cron.d/x", data);
}

/// A systemd unit or drop-in.
pub fn systemd_unit(data: &[u8]) {
    let _ = observe::host::persistence_entries("systemd", "/etc/systemd/system/x.service", data);
}

/// /etc/rc.local (a shell script).
pub fn rc_local(data: &[u8]) {
    let _ = observe::host::persistence_entries("rc.local", "/etc/rc.local", data);
}

/// A `--hashes` list.
pub fn hashes(data: &[u8]) {
    let _ = observe::sweep::parse_hashes(&text(data));
}

/// One agent config file, as `config check` reads it.
pub fn agent_config(data: &[u8]) {
    if let Ok(t) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse_file_text(t);
    }
}

/// A snapshot for `analyze`: parsed, judged and rendered in every format.
pub fn snapshot(data: &[u8]) {
    let Ok(snap) = serde_json::from_slice::<crate::snapshot::HostSnapshot>(data) else {
        return;
    };
    let report = crate::judge::judge(&snap, &crate::judge::Policy::default());
    render_all(&report);
}

fn render_all(report: &crate::judge::Report) {
    use crate::report::{Ecs, Json, Markdown, Ndjson, Render, Text};
    let renderers: [Box<dyn Render>; 6] = [
        Box::new(Text {
            color: false,
            verbose: true,
        }),
        Box::new(Text {
            color: true,
            verbose: false,
        }),
        Box::new(Json),
        Box::new(Ndjson),
        Box::new(Ecs),
        Box::new(Markdown),
    ];
    for r in renderers {
        let mut out = Vec::new();
        let _ = r.render(report, &mut out);
    }
}

/// An evidence bundle for `analyze`: opened (its manifest checked) and, when
/// it opens, its snapshot judged and rendered.
pub fn bundle(data: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "minerwatch-fuzz-{}-{}.tar.gz",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, data));
    if written.is_ok()
        && let Ok(b) = crate::respond::bundle::open(&path)
    {
        let report = crate::judge::judge(&b.snapshot, &crate::judge::Policy::default());
        render_all(&report);
    }
    let _ = std::fs::remove_file(&path);
}

/// A fuzz entry: bytes in, nothing out, never a panic.
pub type Entry = fn(&[u8]);

/// Every entry by name, for the fuzz targets and the property tests.
pub const ENTRIES: &[(&str, Entry)] = &[
    ("proc_stat", proc_stat),
    ("proc_status", proc_status),
    ("proc_maps", proc_maps),
    ("net_tcp", net_tcp),
    ("mountinfo", mountinfo),
    ("cgroup", cgroup),
    ("miner_config", miner_config),
    ("crontab", crontab),
    ("systemd_unit", systemd_unit),
    ("rc_local", rc_local),
    ("hashes", hashes),
    ("agent_config", agent_config),
    ("snapshot", snapshot),
    ("bundle", bundle),
];

#[cfg(test)]
mod props;
