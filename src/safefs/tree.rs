//! Reading a hostile tree: openat walks that never follow a symlink, regular
//! files only, capped reads, raw getdents64 listings.

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self, AtFlags, FileType, Mode, OFlags, RawDir, Stat};

/// A small procfs or sysfs value is read up to this many bytes.
pub(crate) const VALUE_CAP: usize = 64 << 10;
/// Files read from one scanned tree.
pub(crate) const MAX_TREE_FILES: usize = 20_000;
/// Entries taken from one directory listing.
pub(crate) const MAX_DIR_ENTRIES: usize = 200_000;
/// Opening a file to read: never through a symlink, never blocking on a
/// FIFO, never taking a terminal.
pub(crate) const FILE_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);
/// Opening a directory to walk: the same, and only a directory.
pub(crate) const DIR_FLAGS: OFlags = FILE_FLAGS.union(OFlags::DIRECTORY);

// ---------------------------------------------------------------------------
// Safe filesystem access
// ---------------------------------------------------------------------------

/// What the host checks could not read, and why: (path or what, error),
/// each once. It becomes coverage errors of the snapshot.
#[derive(Default)]
pub(crate) struct Unread(pub(crate) Vec<(String, String)>);

impl Unread {
    pub(crate) fn add(&mut self, what: impl Into<String>, error: impl Into<String>) {
        let gap = (what.into(), error.into());
        if !self.0.contains(&gap) {
            self.0.push(gap);
        }
    }
}

pub(crate) struct FileRead {
    pub(crate) data: Vec<u8>,
    pub(crate) truncated: bool,
    pub(crate) immutable: bool,
}

pub(crate) enum Got {
    File(FileRead),
    /// A symlink (target text); never followed.
    Symlink(String),
    /// Absent, or an error already recorded as a gap.
    Skip,
}

pub(crate) enum ReadError {
    Missing,
    Symlink(String),
    NotRegular(&'static str),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Missing => write!(f, "not found"),
            ReadError::Symlink(t) => write!(f, "symlink to {t}: not followed"),
            ReadError::NotRegular(k) => write!(f, "{k}, not a regular file: not opened"),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

pub(crate) enum WalkError {
    Missing,
    /// A merged-/usr alias (`/lib -> usr/lib`): the real tree is read anyway.
    Alias,
    Symlink {
        at: String,
        target: String,
    },
    NotDir {
        at: String,
        kind: &'static str,
    },
    Io {
        at: String,
        error: io::Error,
    },
}

/// A directory we read below, without following symlinks under it.
pub(crate) struct Tree {
    pub(crate) base: PathBuf,
    pub(crate) fd: Option<OwnedFd>,
}

impl Tree {
    pub(crate) fn open(base: &Path, gaps: &mut Unread) -> Tree {
        let fd = match open_dir_path(base) {
            Ok(fd) => Some(fd),
            Err(e) => {
                gaps.add(base.display().to_string(), e.to_string());
                None
            }
        };
        Tree {
            base: base.to_path_buf(),
            fd,
        }
    }

    pub(crate) fn display(&self, rel: &str) -> String {
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            self.base.display().to_string()
        } else {
            self.base.join(rel).display().to_string()
        }
    }

    /// Opens `rel` (a directory) one component at a time, never following a symlink.
    pub(crate) fn walk(&self, rel: &str) -> Result<OwnedFd, WalkError> {
        let base = self.fd.as_ref().ok_or(WalkError::Missing)?;
        let mut cur = base.try_clone().map_err(|error| WalkError::Io {
            at: self.display(""),
            error,
        })?;
        let mut so_far = String::new();
        for (index, comp) in rel
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .enumerate()
        {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(comp);
            match open_at(&cur, comp.as_bytes(), DIR_FLAGS) {
                Ok(fd) => cur = fd,
                Err(error) => {
                    if error.kind() == io::ErrorKind::NotFound {
                        return Err(WalkError::Missing);
                    }
                    let at = self.display(&so_far);
                    return Err(match lstat_at(&cur, comp.as_bytes()) {
                        Ok(st) if kind_of(&st) == FileType::Symlink => {
                            let target = read_link_at(&cur, comp.as_bytes()).unwrap_or_default();
                            let alias = index == 0
                                && matches!(comp, "lib" | "lib64" | "lib32" | "bin" | "sbin")
                                && target.trim_matches('/') == format!("usr/{comp}");
                            if alias {
                                WalkError::Alias
                            } else {
                                WalkError::Symlink { at, target }
                            }
                        }
                        Ok(st) if kind_of(&st) != FileType::Directory => WalkError::NotDir {
                            at,
                            kind: mode_kind(st.st_mode),
                        },
                        _ => WalkError::Io { at, error },
                    });
                }
            }
        }
        Ok(cur)
    }

    pub(crate) fn walk_gap(gaps: &mut Unread, e: WalkError) {
        match e {
            WalkError::Missing | WalkError::Alias => {}
            WalkError::Symlink { at, target } => {
                gaps.add(at, format!("symlink to {target}: not followed"))
            }
            WalkError::NotDir { at, kind } => gaps.add(at, format!("{kind}, not a directory")),
            WalkError::Io { at, error } => gaps.add(at, error.to_string()),
        }
    }

    /// Reads the regular file `rel`.
    pub(crate) fn read(&self, gaps: &mut Unread, rel: &str, cap: usize, flags: bool) -> Got {
        let rel = rel.trim_matches('/');
        let (dir_rel, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let dir = match self.walk(dir_rel) {
            Ok(d) => d,
            Err(e) => {
                Tree::walk_gap(gaps, e);
                return Got::Skip;
            }
        };
        self.read_in(gaps, &dir, rel, name.as_bytes(), cap, flags)
    }

    pub(crate) fn read_in(
        &self,
        gaps: &mut Unread,
        dir: &OwnedFd,
        rel: &str,
        name: &[u8],
        cap: usize,
        flags: bool,
    ) -> Got {
        match read_at(dir, name, cap, flags) {
            Ok(f) => {
                if f.truncated {
                    gaps.add(
                        self.display(rel),
                        format!("truncated: read only the first {cap} bytes"),
                    );
                }
                Got::File(f)
            }
            Err(ReadError::Missing) => Got::Skip,
            Err(ReadError::Symlink(t)) => Got::Symlink(t),
            Err(e) => {
                gaps.add(self.display(rel), e.to_string());
                Got::Skip
            }
        }
    }

    /// Regular files and symlinks in `rel_dir`, `depth` levels of subdirectories
    /// deep, sorted by path. FIFOs, sockets and devices are recorded as gaps.
    pub(crate) fn list(
        &self,
        gaps: &mut Unread,
        rel_dir: &str,
        depth: usize,
        cap: usize,
        flags: bool,
    ) -> Vec<(String, Got)> {
        let dir = match self.walk(rel_dir) {
            Ok(d) => d,
            Err(e) => {
                Tree::walk_gap(gaps, e);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        let mut budget = MAX_TREE_FILES;
        self.list_in(
            gaps,
            &dir,
            rel_dir.trim_matches('/'),
            depth,
            cap,
            flags,
            &mut budget,
            &mut out,
        );
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn list_in(
        &self,
        gaps: &mut Unread,
        dir: &OwnedFd,
        rel_dir: &str,
        depth: usize,
        cap: usize,
        flags: bool,
        budget: &mut usize,
        out: &mut Vec<(String, Got)>,
    ) {
        let entries = match getdents(dir, MAX_DIR_ENTRIES) {
            Ok((entries, truncated)) => {
                if truncated {
                    gaps.add(
                        self.display(rel_dir),
                        format!("more than {MAX_DIR_ENTRIES} entries; rest not read"),
                    );
                }
                entries
            }
            Err(e) => {
                gaps.add(self.display(rel_dir), e.to_string());
                return;
            }
        };
        for entry in entries {
            let rel = format!("{rel_dir}/{}", String::from_utf8_lossy(&entry.name));
            let kind = match entry.kind {
                k @ (FileType::Directory | FileType::RegularFile | FileType::Symlink) => k,
                _ => match lstat_at(dir, &entry.name) {
                    Ok(st) => kind_of(&st),
                    Err(e) => {
                        gaps.add(self.display(&rel), e.to_string());
                        continue;
                    }
                },
            };
            match kind {
                FileType::Directory => {
                    if depth == 0 {
                        continue;
                    }
                    match open_at(dir, &entry.name, DIR_FLAGS) {
                        Ok(sub) => {
                            self.list_in(gaps, &sub, &rel, depth - 1, cap, flags, budget, out)
                        }
                        Err(e) => gaps.add(self.display(&rel), e.to_string()),
                    }
                }
                FileType::Symlink => {
                    let target = read_link_at(dir, &entry.name).unwrap_or_default();
                    out.push((rel, Got::Symlink(target)));
                }
                FileType::RegularFile => {
                    if *budget == 0 {
                        gaps.add(
                            self.display(rel_dir),
                            format!("more than {MAX_TREE_FILES} files; rest not read"),
                        );
                        return;
                    }
                    *budget -= 1;
                    let got = self.read_in(gaps, dir, &rel, &entry.name, cap, flags);
                    if !matches!(got, Got::Skip) {
                        out.push((rel, got));
                    }
                }
                other => gaps.add(
                    self.display(&rel),
                    format!(
                        "{}, not a regular file: not opened",
                        mode_kind(other.as_raw_mode())
                    ),
                ),
            }
        }
    }

    /// Subdirectories of `rel_dir` (not symlinks to one: those are gaps).
    pub(crate) fn list_dirs(&self, gaps: &mut Unread, rel_dir: &str) -> Vec<String> {
        let dir = match self.walk(rel_dir) {
            Ok(d) => d,
            Err(e) => {
                Tree::walk_gap(gaps, e);
                return Vec::new();
            }
        };
        let entries = match getdents(&dir, MAX_DIR_ENTRIES) {
            Ok((e, _)) => e,
            Err(e) => {
                gaps.add(self.display(rel_dir), e.to_string());
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let rel = format!(
                "{}/{}",
                rel_dir.trim_matches('/'),
                String::from_utf8_lossy(&entry.name)
            );
            match lstat_at(&dir, &entry.name) {
                Ok(st) if kind_of(&st) == FileType::Directory => out.push(rel),
                Ok(st) if kind_of(&st) == FileType::Symlink => {
                    let target = read_link_at(&dir, &entry.name).unwrap_or_default();
                    gaps.add(
                        self.display(&rel),
                        format!("symlink to {target}: not followed"),
                    );
                }
                Ok(_) => {}
                Err(e) => gaps.add(self.display(&rel), e.to_string()),
            }
        }
        out.sort();
        out
    }
}

/// A small text value at `rel` below `dir` (procfs/sysfs), without following symlinks.
pub(crate) fn read_value_at(dir: &OwnedFd, rel: &str) -> Option<String> {
    let rel = rel.trim_matches('/');
    let (dir_rel, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let mut cur = dir.try_clone().ok()?;
    for comp in dir_rel.split('/').filter(|c| !c.is_empty()) {
        cur = open_at(&cur, comp.as_bytes(), DIR_FLAGS).ok()?;
    }
    let f = read_at(&cur, name.as_bytes(), VALUE_CAP, false).ok()?;
    Some(String::from_utf8_lossy(&f.data).into_owned())
}

/// Reads a regular file without following a symlink or opening anything else.
pub(crate) fn read_at(
    dir: &OwnedFd,
    name: &[u8],
    cap: usize,
    flags: bool,
) -> Result<FileRead, ReadError> {
    let st = match lstat_at(dir, name) {
        Ok(st) => st,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(ReadError::Missing);
        }
        Err(e) => return Err(ReadError::Io(e)),
    };
    match kind_of(&st) {
        FileType::RegularFile => {}
        FileType::Symlink => {
            return Err(ReadError::Symlink(
                read_link_at(dir, name).unwrap_or_default(),
            ));
        }
        _ => return Err(ReadError::NotRegular(mode_kind(st.st_mode))),
    }
    let fd = match open_at(dir, name, FILE_FLAGS) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(ReadError::Symlink(
                read_link_at(dir, name).unwrap_or_default(),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let st = fstat_fd(&fd).map_err(ReadError::Io)?;
    if kind_of(&st) != FileType::RegularFile {
        return Err(ReadError::NotRegular(mode_kind(st.st_mode)));
    }
    let immutable = flags && is_immutable(&fd);
    let mut data = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    std::fs::File::from(fd)
        .take(limit)
        .read_to_end(&mut data)
        .map_err(ReadError::Io)?;
    let truncated = data.len() > cap;
    data.truncate(cap);
    Ok(FileRead {
        data,
        truncated,
        immutable,
    })
}

/// FS_IMMUTABLE_FL through FS_IOC_GETFLAGS (false where unsupported).
pub(crate) fn is_immutable(fd: &OwnedFd) -> bool {
    fs::ioctl_getflags(fd).is_ok_and(|f| f.contains(fs::IFlags::IMMUTABLE))
}

pub(crate) fn mode_kind(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode) {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "unknown file type",
    }
}

fn kind_of(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Opens a directory given by the caller (the root itself may be reached through symlinks).
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    Ok(fs::open(
        path,
        DIR_FLAGS.difference(OFlags::NOFOLLOW),
        Mode::empty(),
    )?)
}

pub(crate) fn open_at(dir: &OwnedFd, name: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    Ok(fs::openat(dir, name, flags, Mode::empty())?)
}

pub(crate) fn lstat_at(dir: &OwnedFd, name: &[u8]) -> io::Result<Stat> {
    Ok(fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

pub(crate) fn fstat_fd(fd: &OwnedFd) -> io::Result<Stat> {
    Ok(fs::fstat(fd)?)
}

pub(crate) fn read_link_at(dir: &OwnedFd, name: &[u8]) -> io::Result<String> {
    let target = fs::readlinkat(dir, name, Vec::new())?;
    Ok(String::from_utf8_lossy(target.as_bytes()).into_owned())
}

pub(crate) struct DirEntry {
    pub(crate) name: Vec<u8>,
    pub(crate) kind: FileType,
}

/// All entries but `.` and `..`, read with the raw getdents64 syscall
/// (rustix's `RawDir`, never glibc's readdir, which an LD_PRELOAD rootkit
/// hooks). The bool says the listing stopped at `max`.
pub(crate) fn getdents(dir: &OwnedFd, max: usize) -> io::Result<(Vec<DirEntry>, bool)> {
    let mut buf = Vec::with_capacity(64 << 10);
    let mut raw = RawDir::new(dir, buf.spare_capacity_mut());
    let mut out = Vec::new();
    while let Some(entry) = raw.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if out.len() >= max {
            return Ok((out, true));
        }
        out.push(DirEntry {
            name: name.to_vec(),
            kind: entry.file_type(),
        });
    }
    Ok((out, false))
}
