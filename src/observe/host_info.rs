//! Who the host is: its name (also when its root is mounted elsewhere),
//! kernel, CPUs and boot time.

use std::path::Path;

use crate::safefs as files;
use crate::snapshot::HostInfo;

/// The name events and reports carry for this host: `$MINERWATCH_HOSTNAME`
/// when set (a Kubernetes DaemonSet passes the node's name), the first line
/// of `<root>/etc/hostname` when the host's filesystem is mounted elsewhere
/// (`--root`: we run in a container and our own name is the pod's), else
/// ours.
pub fn host_name(root: &Path) -> String {
    if let Some(n) = std::env::var_os("MINERWATCH_HOSTNAME").filter(|n| !n.is_empty()) {
        return n.to_string_lossy().into_owned();
    }
    if root != Path::new("/")
        && let Ok((bytes, _)) = files::read_regular(&root.join("etc/hostname"), 256, true)
        && let Some(name) = String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
    {
        return name.to_string();
    }
    sysinfo::System::host_name().unwrap_or_default()
}

pub(super) fn host_info(clock_ticks: u64, root: &Path) -> HostInfo {
    let boot = sysinfo::System::boot_time().unwrap_or(0);
    let boot_time = i64::try_from(boot)
        .ok()
        .and_then(|b| jiff::Timestamp::from_second(b).ok())
        .map(|t| t.to_string())
        .unwrap_or_default();
    HostInfo {
        hostname: host_name(root),
        kernel: sysinfo::System::kernel_version().unwrap_or_default(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        boot_time,
        clock_ticks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_comes_from_the_hosts_root_when_mounted_elsewhere() {
        if std::env::var_os("MINERWATCH_HOSTNAME").is_some() {
            return; // set by whoever runs the tests: it wins, as documented
        }
        let root = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(root.path().join("etc")).expect("mkdir");
        std::fs::write(
            root.path().join("etc/hostname"),
            "# node\n\nnode-7.example\n",
        )
        .expect("write");
        assert_eq!(host_name(root.path()), "node-7.example");
        // No file there: our own name.
        let empty = tempfile::tempdir().expect("tmp");
        let own = sysinfo::System::host_name().unwrap_or_default();
        assert_eq!(host_name(empty.path()), own);
        assert_eq!(host_name(Path::new("/")), own);
    }
}
