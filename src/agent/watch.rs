//! Drop-directory watching: a file that lands (or changes) in /tmp, /var/tmp,
//! /dev/shm or a configured directory is scanned at once, so a miner binary
//! is reported when it lands, before it runs. The rules directory and the
//! config file are watched too: a change there asks for a reload.
//!
//! Never blocks on a FIFO or a device (only regular files are opened, with
//! O_NONBLOCK and O_NOFOLLOW) and reads at most the binary cap of a file.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, mpsc};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher as _};

use super::output::Event;
use crate::report::event::LandedFile;
use crate::safefs as files;
use crate::signatures::{FileContext, Signatures};

/// What the watcher needs from the agent.
pub struct Shared {
    pub sigs: RwLock<Arc<Signatures>>,
    /// The outputs, each behind its queue.
    pub outputs: super::deliver::Outputs,
    pub reload: AtomicBool,
    /// The agent's one rate cap.
    pub cap: super::alerts::SharedCap,
    pub hostname: String,
    /// The `[[allow]]` rules of the config in force (those about files
    /// apply to what lands).
    pub allow: RwLock<Arc<Vec<crate::judge::AllowRule>>>,
    /// The host's root (`agent.root`): landed paths as the host names them.
    pub root: PathBuf,
}

/// A file that lands again at the same path matching the same rules within
/// this time is not alerted on again.
const DROP_ALERT_QUIET: Duration = Duration::from_secs(30);

/// Keeps the inotify watches alive; dropping it stops watching.
pub struct Watching {
    _watcher: notify::RecommendedWatcher,
}

/// What asks for a reload when it changes.
#[derive(Debug, Clone, Default)]
pub struct ReloadOn {
    /// Any file in this directory (the rules).
    pub rules_dir: Option<PathBuf>,
    /// These files (the config and its conf.d files).
    pub config_files: Vec<PathBuf>,
}

impl ReloadOn {
    fn matches(&self, path: &Path) -> bool {
        self.rules_dir
            .as_deref()
            .is_some_and(|d| path.parent() == Some(d))
            || self.config_files.iter().any(|f| f == path)
            // A Kubernetes ConfigMap volume updates its files by swapping its
            // `..data` symlink: the files themselves see no event.
            || path.file_name() == Some(std::ffi::OsStr::new("..data"))
                && self
                    .config_files
                    .iter()
                    .any(|f| f.parent() == path.parent())
    }

    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.rules_dir.iter().cloned().collect();
        for f in &self.config_files {
            if let Some(p) = f.parent().filter(|p| !dirs.iter().any(|d| d == p)) {
                dirs.push(p.to_path_buf());
            }
        }
        dirs
    }
}

/// Starts watching `drop_dirs` (scan new files) and what `reload` names (ask
/// for a reload). Directories that do not exist are skipped with a warning.
pub fn start(
    drop_dirs: &[PathBuf],
    reload: ReloadOn,
    shared: Arc<Shared>,
) -> notify::Result<Watching> {
    let (tx, rx) = mpsc::channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            let _ = tx.send(ev);
        }
    })?;
    let drops: Vec<PathBuf> = drop_dirs.iter().filter(|d| d.is_dir()).cloned().collect();
    for d in drop_dirs.iter().filter(|d| !d.is_dir()) {
        tracing::warn!("watch dir {} does not exist; not watched", d.display());
    }
    for d in &drops {
        watcher.watch(d, RecursiveMode::NonRecursive)?;
    }
    for p in reload.dirs().iter().filter(|p| p.is_dir()) {
        watcher.watch(p, RecursiveMode::NonRecursive)?;
    }
    std::thread::spawn(move || handle(rx, &drops, &reload, &shared));
    Ok(Watching { _watcher: watcher })
}

fn handle(
    rx: mpsc::Receiver<notify::Event>,
    drops: &[PathBuf],
    reload: &ReloadOn,
    shared: &Shared,
) {
    let mut seen: HashSet<files::FileKey> = HashSet::new();
    // path -> (when, what) of recent alerts: a file scanned while still
    // being written and again when closed, or changed in place, is one drop.
    let mut recent: HashMap<PathBuf, (Instant, String)> = HashMap::new();
    let mut buf = Vec::new();
    while let Ok(ev) = rx.recv() {
        // A write in progress is not looked at: its close (IN_CLOSE_WRITE)
        // follows. Creation (a link, a fast writer), a move into the
        // directory and a chmod are.
        let interesting = matches!(
            ev.kind,
            EventKind::Create(_)
                | EventKind::Modify(
                    notify::event::ModifyKind::Name(_)
                        | notify::event::ModifyKind::Metadata(_)
                        | notify::event::ModifyKind::Any
                )
                | EventKind::Access(notify::event::AccessKind::Close(
                    notify::event::AccessMode::Write
                ))
        );
        if !interesting {
            continue;
        }
        for path in &ev.paths {
            if reload.matches(path) {
                shared.reload.store(true, Ordering::Relaxed);
                continue;
            }
            if !drops.iter().any(|d| path.parent() == Some(d.as_path())) {
                continue;
            }
            if let Some(event) = scan(path, shared, &mut seen, &mut buf) {
                recent.retain(|_, (t, _)| t.elapsed() < DROP_ALERT_QUIET);
                let rules = event.body["file"]["matches"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .map(|x| x["rule"].to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default();
                if recent.get(path).is_some_and(|(_, r)| *r == rules) {
                    continue;
                }
                recent.insert(path.clone(), (Instant::now(), rules));
                if !super::alerts::lock(&shared.cap).admit(Instant::now()) {
                    continue;
                }
                shared.outputs.send(&[event]);
            }
        }
    }
}

/// Scans one landed file; an event when the rules match it.
fn scan(
    path: &Path,
    shared: &Shared,
    seen: &mut HashSet<files::FileKey>,
    buf: &mut Vec<u8>,
) -> Option<Event> {
    use std::os::unix::fs::MetadataExt;
    let (mut file, key) = files::open_regular(path, true).ok()?;
    let meta = file.metadata().ok()?;
    if key.size == 0 || !seen.insert(key) {
        return None;
    }
    let truncated = files::read_capped(&mut file, files::MAX_BINARY_BYTES, buf).ok()?;
    let executable = meta.mode() & 0o111 != 0 || buf.starts_with(b"\x7fELF");
    if !executable {
        seen.remove(&key);
        return None;
    }
    let sigs = match shared.sigs.read() {
        Ok(s) => s.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let shown = path.to_string_lossy().into_owned();
    let matches = sigs
        .scanner()
        .scan(
            buf,
            &FileContext {
                path: &shown,
                owner: &meta.uid().to_string(),
            },
        )
        .ok()?;
    if matches.is_empty() {
        return None;
    }
    let sha256 = crate::safefs::sha256_hex(buf);
    let allow = match shared.allow.read() {
        Ok(a) => a.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let host_path = match path.strip_prefix(&shared.root) {
        Ok(rest) => Path::new("/").join(rest),
        Err(_) => path.to_path_buf(),
    };
    let meta_for_allow = crate::snapshot::FileMeta {
        path: shown.clone(),
        host_path: host_path.to_string_lossy().into_owned(),
        sha256: sha256.clone(),
        truncated,
        ..Default::default()
    };
    let (level, allowed) = crate::judge::landed_file(&matches, &meta_for_allow, &allow)?;
    let file = LandedFile {
        path: shown,
        size: key.size,
        sha256,
        truncated,
        uid: meta.uid(),
        mode: format!("{:o}", meta.mode() & 0o7777),
        matches,
        allowed,
    };
    let time = jiff::Timestamp::now().to_string();
    Some(Event::file_alert(&file, level, &time, &shared.hostname))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_on_rules_config_files_and_a_configmap_swap() {
        let on = ReloadOn {
            rules_dir: Some(PathBuf::from("/etc/minerwatch/rules.d")),
            config_files: vec![
                PathBuf::from("/etc/minerwatch/minerwatch.toml"),
                PathBuf::from("/etc/minerwatch/conf.d/10-site.toml"),
            ],
        };
        assert!(on.matches(Path::new("/etc/minerwatch/rules.d/new.yar")));
        assert!(on.matches(Path::new("/etc/minerwatch/minerwatch.toml")));
        assert!(on.matches(Path::new("/etc/minerwatch/conf.d/10-site.toml")));
        assert!(on.matches(Path::new("/etc/minerwatch/..data")));
        assert!(!on.matches(Path::new("/etc/minerwatch/other.toml")));
        assert!(!on.matches(Path::new("/tmp/..data")));
        assert!(!on.matches(Path::new("/etc/minerwatch/rules.d/sub/x.yar")));
    }
}
