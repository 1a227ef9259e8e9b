//! Contain's steps 4 and 5, the ones that change files on the host:
//! [`quarantine`] moves an executable read while frozen into a root-only
//! directory (mode 0000, with a JSON record of its hash and origin) and
//! removes the original only when it is still the same file;
//! [`disable_entry`] comments out the cron, systemd and rc.local lines that
//! launch a miner (and removes a unit's enablement symlinks);
//! [`remove_preload`] takes its libraries out of ld.so.preload. Every write
//! goes through [`crate::safefs::write`] below `--root`: no symlink
//! followed, written whole or not at all.

use std::path::Path;

use super::contain::Action;
use crate::safefs::{self, write, write::private_dir};
use crate::snapshot::{HostSnapshot, PersistenceEntry};

/// The marker of every line `contain` comments out.
pub const MARKER: &str = "# minerwatch contain";
/// Largest persistence file rewritten.
const MAX_EDIT_BYTES: u64 = 4 << 20;

/// An executable read while frozen, for quarantine.
pub(super) struct Held {
    pub pid: i32,
    pub link: String,
    pub bytes: Vec<u8>,
    pub truncated: bool,
    pub dev: u64,
    pub ino: u64,
}

pub(super) fn ok(step: &str, target: String, before: String, after: String) -> Action {
    Action {
        step: step.into(),
        target,
        before,
        after,
        ok: true,
        error: None,
    }
}

pub(super) fn failed(step: &str, target: String, before: String, error: String) -> Action {
    Action {
        step: step.into(),
        target,
        before,
        after: "unchanged".into(),
        ok: false,
        error: Some(error),
    }
}

pub(super) fn quarantine(
    dir: &Path,
    h: &Held,
    snapshot: &HostSnapshot,
    root: &Path,
) -> Vec<Action> {
    let mut log = Vec::new();
    let sha = safefs::sha256_hex(&h.bytes);
    let target = format!("{} (pid {})", h.link, h.pid);
    if let Err(e) = private_dir(dir) {
        log.push(failed(
            "quarantine",
            target,
            h.link.clone(),
            format!("quarantine directory '{}': {e}", dir.display()),
        ));
        return log;
    }
    let base: String = h
        .link
        .trim_end_matches(" (deleted)")
        .rsplit('/')
        .next()
        .unwrap_or("exe")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = format!("{}-{}-{}", &sha[..16], h.pid, base);
    let p = snapshot.processes.iter().find(|p| p.pid == h.pid);
    let record = serde_json::json!({
        "sha256": sha,
        "size": h.bytes.len(),
        "truncated": h.truncated,
        "origin": h.link,
        "pid": h.pid,
        "start_time": p.map(|p| p.start_time),
        "comm": p.map(|p| p.comm.clone()),
        "cmdline": p.map(|p| p.cmdline.clone()),
        "user": p.and_then(|p| p.user.clone()),
        "host": snapshot.host.hostname,
        "quarantined_at": jiff::Timestamp::now().to_string(),
    });
    let written = write::open_parent(dir, Path::new(&name)).and_then(|(fd, file)| {
        write::create_new_at(&fd, &file, 0o000, &h.bytes)?;
        let rec = serde_json::to_vec_pretty(&record).unwrap_or_default();
        write::create_new_at(&fd, format!("{name}.json").as_bytes(), 0o600, &rec)
    });
    match written {
        Ok(()) => log.push(ok(
            "quarantine",
            target,
            format!("{} (SHA-256 {sha})", h.link),
            format!(
                "{}/{name} mode 0000, record {}/{name}.json",
                dir.display(),
                dir.display()
            ),
        )),
        Err(e) => {
            log.push(failed("quarantine", target, h.link.clone(), e.to_string()));
            return log;
        }
    }
    // The original, when one is still on disk.
    if h.link.ends_with(" (deleted)") || h.link.starts_with("/memfd:") || !h.link.starts_with('/') {
        log.push(ok(
            "remove-original",
            h.link.clone(),
            "no file on disk (deleted, or a memfd)".into(),
            "nothing to remove".into(),
        ));
        return log;
    }
    let removed = write::open_parent(root, Path::new(&h.link))
        .and_then(|(fd, file)| write::unlink_if_same(&fd, &file, h.dev, h.ino));
    let shown = root
        .join(h.link.trim_start_matches('/'))
        .display()
        .to_string();
    match removed {
        Ok(()) => log.push(ok(
            "remove-original",
            shown,
            format!("present (SHA-256 {sha})"),
            "removed".into(),
        )),
        Err(e) => log.push(failed(
            "remove-original",
            shown,
            "present".into(),
            e.to_string(),
        )),
    }
    log
}

/// Path of `full` (a `--root`-prefixed host path) below `root`.
fn below_root<'a>(root: &Path, full: &'a str) -> &'a Path {
    Path::new(full)
        .strip_prefix(root)
        .unwrap_or(Path::new(full))
}

/// Comments out the entry's line (and its continuation lines).
pub(super) fn disable_entry(e: &PersistenceEntry, root: &Path) -> Vec<Action> {
    let mut log = Vec::new();
    let target = format!("{} {}:{}", e.kind, e.path, e.line);
    let edited = (|| -> Result<(String, String), String> {
        if e.line == 0 {
            return Err(
                "the entry is the file as a whole, not a line: left for a person to judge".into(),
            );
        }
        let (bytes, truncated) = safefs::read_regular(Path::new(&e.path), MAX_EDIT_BYTES, true)
            .map_err(|err| format!("cannot read it: {err}"))?;
        if truncated {
            return Err(format!("larger than {MAX_EDIT_BYTES} bytes: not edited"));
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
        let i = (e.line - 1) as usize;
        let line = lines
            .get(i)
            .ok_or_else(|| {
                "the file no longer has that line: it changed since the scan".to_string()
            })?
            .clone();
        if line.trim_start().starts_with('#') {
            return Err(format!("line {} is already commented out", e.line));
        }
        let probe: String = e.command.chars().take(40).collect();
        if !line.contains(probe.trim()) && !e.text.starts_with(line.trim_end()) {
            return Err(format!(
                "line {} now reads `{}`, not the entry: it changed since the scan",
                e.line,
                line.trim_end()
            ));
        }
        let stamp = format!(
            "{MARKER} {}: disabled: ",
            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
        );
        let mut j = i;
        while let Some(l) = lines.get_mut(j) {
            let continued = l.trim_end().ends_with('\\');
            *l = format!("{stamp}{l}");
            if !continued {
                break;
            }
            j += 1;
        }
        let after = lines[i].trim_end().to_string();
        let (dir, name) =
            write::open_parent(root, below_root(root, &e.path)).map_err(|err| err.to_string())?;
        write::replace_at(&dir, &name, lines.concat().as_bytes()).map_err(|err| err.to_string())?;
        Ok((line.trim_end().to_string(), after))
    })();
    match edited {
        Ok((before, after)) => log.push(ok("disable-persistence", target, before, after)),
        Err(err) => log.push(failed("disable-persistence", target, e.text.clone(), err)),
    }
    if e.kind == "systemd" {
        log.extend(remove_enablement(e, root));
    }
    log
}

/// Removes the `*.wants/` and `*.requires/` symlinks that enable the unit.
fn remove_enablement(e: &PersistenceEntry, root: &Path) -> Vec<Action> {
    let mut log = Vec::new();
    let Some(unit) = e.path.rsplit('/').next() else {
        return log;
    };
    for base in [
        "etc/systemd/system",
        "usr/lib/systemd/system",
        "lib/systemd/system",
    ] {
        let dir = root.join(base);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for d in entries.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if !(name.ends_with(".wants") || name.ends_with(".requires")) {
                continue;
            }
            let link = d.path().join(unit);
            let Ok(meta) = std::fs::symlink_metadata(&link) else {
                continue;
            };
            if !meta.file_type().is_symlink() {
                continue;
            }
            let shown = link.display().to_string();
            let before = std::fs::read_link(&link)
                .map(|t| format!("symlink to {}", t.display()))
                .unwrap_or_default();
            let rel = Path::new(base).join(&name).join(unit);
            match write::open_parent(root, &rel).and_then(|(fd, n)| write::unlink_symlink(&fd, &n))
            {
                Ok(()) => log.push(ok("disable-persistence", shown, before, "removed".into())),
                Err(err) => log.push(failed(
                    "disable-persistence",
                    shown,
                    before,
                    err.to_string(),
                )),
            }
        }
    }
    log
}

/// Removes `libs` from ld.so.preload, keeping every other entry.
pub(super) fn remove_preload(snapshot: &HostSnapshot, libs: &[String], root: &Path) -> Action {
    let Some(pre) = &snapshot.host_facts.ld_so_preload else {
        return failed(
            "disable-persistence",
            "ld.so.preload".into(),
            String::new(),
            "no ld.so.preload was read".into(),
        );
    };
    let target = pre.path.clone();
    let result = (|| -> Result<(String, String), String> {
        let (bytes, _) = safefs::read_regular(Path::new(&pre.path), MAX_EDIT_BYTES, true)
            .map_err(|e| format!("cannot read it: {e}"))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let kept: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || c == ':')
            .filter(|w| !w.is_empty() && !libs.iter().any(|l| l == w))
            .collect();
        let after = if kept.is_empty() {
            String::new()
        } else {
            format!("{}\n", kept.join("\n"))
        };
        let (dir, name) =
            write::open_parent(root, below_root(root, &pre.path)).map_err(|e| e.to_string())?;
        write::replace_at(&dir, &name, after.as_bytes()).map_err(|e| e.to_string())?;
        Ok((
            text.trim().replace('\n', " "),
            after.trim().replace('\n', " "),
        ))
    })();
    match result {
        Ok((before, after)) => ok(
            "disable-persistence",
            target,
            before,
            if after.is_empty() {
                "(empty)".into()
            } else {
                after
            },
        ),
        Err(e) => failed("disable-persistence", target, pre.entries.join(" "), e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cron_line_is_commented_with_the_marker_and_others_kept() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc/cron.d")).expect("mkdir");
        let file = root.join("etc/cron.d/x");
        std::fs::write(
            &file,
            "SHELL=/bin/sh\n@reboot root /var/tmp/.x/kworker -c c.json\n* * * * * root true\n",
        )
        .expect("write");
        let e = PersistenceEntry {
            kind: "cron".into(),
            path: file.display().to_string(),
            line: 2,
            text: "@reboot root /var/tmp/.x/kworker -c c.json".into(),
            command: "/var/tmp/.x/kworker -c c.json".into(),
            programs: vec!["/var/tmp/.x/kworker".into()],
            ..PersistenceEntry::default()
        };
        let log = disable_entry(&e, root);
        assert!(log.iter().all(|a| a.ok), "{log:?}");
        let now = std::fs::read_to_string(&file).expect("read");
        let lines: Vec<&str> = now.lines().collect();
        assert_eq!(lines[0], "SHELL=/bin/sh");
        assert!(
            lines[1].starts_with(MARKER) && lines[1].ends_with(&e.text),
            "{now}"
        );
        assert_eq!(lines[2], "* * * * * root true");
        // Done twice: the line no longer matches, nothing is changed.
        let again = disable_entry(&e, root);
        assert!(!again[0].ok);
    }
}
