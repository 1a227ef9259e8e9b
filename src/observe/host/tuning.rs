//! Leftover miner tuning: `/etc/ld.so.preload`, the huge page pool, msr
//! `allow_writes`, `nmi_watchdog` and sysctl files.

use super::*;

// ---------------------------------------------------------------------------
// Tuning leftovers
// ---------------------------------------------------------------------------

pub(super) fn read_ld_so_preload(tree: &Tree, gaps: &mut Unread) -> Option<PreloadFile> {
    let rel = "etc/ld.so.preload";
    let path = tree.display(rel);
    match tree.read(gaps, rel, CONFIG_CAP, true) {
        Got::File(f) => Some(PreloadFile {
            path,
            entries: split_preload(&String::from_utf8_lossy(&f.data)),
            immutable: f.immutable,
            symlink_target: None,
        }),
        Got::Symlink(target) => {
            gaps.add(path.clone(), format!("symlink to {target}: not followed"));
            Some(PreloadFile {
                path,
                symlink_target: Some(target),
                ..PreloadFile::default()
            })
        }
        Got::Skip => None,
    }
}

pub(super) fn read_hugepages(tree: &Tree, gaps: &mut Unread) -> HugePages {
    let mut hp = HugePages::default();
    let Got::File(f) = tree.read(gaps, "meminfo", VALUE_CAP, false) else {
        gaps.add(tree.display("meminfo"), "not readable; huge pages unknown");
        return hp;
    };
    for line in String::from_utf8_lossy(&f.data).lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let Some(n) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        match key.trim() {
            "HugePages_Total" => hp.nr_hugepages = n,
            "HugePages_Free" => hp.free = n,
            "HugePages_Rsvd" => hp.reserved = n,
            "HugePages_Surp" => hp.surplus = n,
            "Hugepagesize" => hp.size_kib = n,
            _ => {}
        }
    }
    hp
}

/// A small value file (procfs/sysfs), trimmed; None when absent.
pub(super) fn read_trimmed(tree: &Tree, rel: &str, gaps: &mut Unread) -> Option<String> {
    match tree.read(gaps, rel, VALUE_CAP, false) {
        Got::File(f) => Some(String::from_utf8_lossy(&f.data).trim().to_string()),
        Got::Symlink(target) => {
            gaps.add(
                tree.display(rel),
                format!("symlink to {target}: not followed"),
            );
            None
        }
        Got::Skip => None,
    }
}

pub(super) const SYSCTL_DIRS: &[&str] = &[
    "etc/sysctl.d",
    "run/sysctl.d",
    "usr/lib/sysctl.d",
    "lib/sysctl.d",
];

pub(super) fn scan_sysctl(tree: &Tree, gaps: &mut Unread) -> Vec<SysctlSetting> {
    let covered = |target: &str| {
        target == "/dev/null"
            || target == "/etc/sysctl.conf"
            || SYSCTL_DIRS
                .iter()
                .any(|d| target.starts_with(&format!("/{d}/")))
    };
    let mut files: Vec<(String, Got)> = vec![(
        "etc/sysctl.conf".to_string(),
        tree.read(gaps, "etc/sysctl.conf", CONFIG_CAP, false),
    )];
    for dir in SYSCTL_DIRS {
        let mut listed = tree.list(gaps, dir, 0, CONFIG_CAP, false);
        listed.retain(|(rel, _)| rel.ends_with(".conf"));
        files.extend(listed);
    }
    let mut out = Vec::new();
    for (rel, got) in files {
        match got {
            Got::File(f) => {
                let file = tree.display(&rel);
                for (i, line) in String::from_utf8_lossy(&f.data).lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                        continue;
                    }
                    let Some((key, value)) = line.trim_start_matches('-').split_once('=') else {
                        continue;
                    };
                    let key = key.trim().replace('/', ".");
                    if SYSCTL_KEYS.contains(&key.as_str()) {
                        out.push(SysctlSetting {
                            file: file.clone(),
                            line: line_no(i),
                            key,
                            value: value.trim().to_string(),
                        });
                    }
                }
            }
            Got::Symlink(target) => {
                let resolved = resolve_link(&rel, &target);
                if !covered(&resolved) {
                    gaps.add(
                        tree.display(&rel),
                        format!("symlink to {target}: not followed"),
                    );
                }
            }
            Got::Skip => {}
        }
    }
    out
}

pub(super) fn line_no(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}
