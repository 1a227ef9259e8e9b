//! Reading a hostile tree: openat walks that never follow a symlink, regular
//! files only, capped reads, raw getdents64 listings.

use std::ffi::CString;
use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::c_int;

/// A small procfs or sysfs value is read up to this many bytes.
pub(crate) const VALUE_CAP: usize = 64 << 10;
/// Files read from one scanned tree.
pub(crate) const MAX_TREE_FILES: usize = 20_000;
/// Entries taken from one directory listing.
pub(crate) const MAX_DIR_ENTRIES: usize = 200_000;
pub(crate) const FS_IMMUTABLE_FL: libc::c_long = 0x10;
pub(crate) const FILE_FLAGS: c_int =
    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
pub(crate) const DIR_FLAGS: c_int = libc::O_RDONLY
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_NONBLOCK
    | libc::O_CLOEXEC
    | libc::O_NOCTTY;

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
                    let errno = error.raw_os_error();
                    if errno == Some(libc::ENOENT) {
                        return Err(WalkError::Missing);
                    }
                    let at = self.display(&so_far);
                    return Err(match lstat_at(&cur, comp.as_bytes()) {
                        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
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
                        Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => WalkError::NotDir {
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
            let kind = match entry.d_type {
                libc::DT_DIR => libc::S_IFDIR,
                libc::DT_REG => libc::S_IFREG,
                libc::DT_LNK => libc::S_IFLNK,
                _ => match lstat_at(dir, &entry.name) {
                    Ok(st) => st.st_mode & libc::S_IFMT,
                    Err(e) => {
                        gaps.add(self.display(&rel), e.to_string());
                        continue;
                    }
                },
            };
            match kind {
                libc::S_IFDIR => {
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
                libc::S_IFLNK => {
                    let target = read_link_at(dir, &entry.name).unwrap_or_default();
                    out.push((rel, Got::Symlink(target)));
                }
                libc::S_IFREG => {
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
                    format!("{}, not a regular file: not opened", mode_kind(other)),
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
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => out.push(rel),
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
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
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Err(ReadError::Missing);
        }
        Err(e) => return Err(ReadError::Io(e)),
    };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFLNK => {
            return Err(ReadError::Symlink(
                read_link_at(dir, name).unwrap_or_default(),
            ));
        }
        other => return Err(ReadError::NotRegular(mode_kind(other))),
    }
    let fd = match open_at(dir, name, FILE_FLAGS) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(ReadError::Symlink(
                read_link_at(dir, name).unwrap_or_default(),
            ));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(ReadError::Missing),
        Err(e) => return Err(ReadError::Io(e)),
    };
    let st = fstat_fd(&fd).map_err(ReadError::Io)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
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
    let mut attr: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes at most a long into `attr`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut attr) };
    r == 0 && attr & FS_IMMUTABLE_FL != 0
}

pub(crate) fn mode_kind(mode: libc::mode_t) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "regular file",
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        _ => "unknown file type",
    }
}

pub(crate) fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

pub(crate) fn owned(fd: c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Opens a directory given by the caller (the root itself may be reached through symlinks).
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is NUL-terminated and lives across the call.
    owned(unsafe { libc::open(c.as_ptr(), DIR_FLAGS & !libc::O_NOFOLLOW) })
}

pub(crate) fn open_at(dir: &OwnedFd, name: &[u8], flags: c_int) -> io::Result<OwnedFd> {
    let c = cstring(name)?;
    // SAFETY: `c` is NUL-terminated; `dir` is an open descriptor.
    owned(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) })
}

pub(crate) fn lstat_at(dir: &OwnedFd, name: &[u8]) -> io::Result<libc::stat> {
    let c = cstring(name)?;
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `c` is NUL-terminated; `st` is writable.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn fstat_fd(fd: &OwnedFd) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is writable; `fd` is open.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded and filled `st`.
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn read_link_at(dir: &OwnedFd, name: &[u8]) -> io::Result<String> {
    let c = cstring(name)?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is writable for its length; `c` is NUL-terminated.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(n);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

pub(crate) struct DirEntry {
    pub(crate) name: Vec<u8>,
    pub(crate) d_type: u8,
}

/// All entries but `.` and `..`, read with the raw getdents64 syscall (never
/// glibc readdir). The bool says the listing stopped at `max`.
pub(crate) fn getdents(dir: &OwnedFd, max: usize) -> io::Result<(Vec<DirEntry>, bool)> {
    const HEADER: usize = 19; // d_ino u64, d_off i64, d_reclen u16, d_type u8
    let mut buf = vec![0u64; 8192]; // 64 KiB, 8-byte aligned
    let bytes = buf.len() * std::mem::size_of::<u64>();
    let mut out = Vec::new();
    loop {
        // SAFETY: `buf` is writable for `bytes` bytes; the fd is an open directory.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                libc::c_long::from(dir.as_raw_fd()),
                buf.as_mut_ptr().cast::<u8>(),
                bytes as libc::c_long,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let n = usize::try_from(n).unwrap_or(0).min(bytes);
        if n == 0 {
            return Ok((out, false));
        }
        // SAFETY: the kernel initialised the first `n` bytes of `buf`.
        let raw: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
        let mut off = 0;
        while off + HEADER <= raw.len() {
            let reclen = usize::from(u16::from_ne_bytes([raw[off + 16], raw[off + 17]]));
            if reclen < HEADER || off + reclen > raw.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed getdents64 record",
                ));
            }
            let d_type = raw[off + 18];
            let field = &raw[off + HEADER..off + reclen];
            let name = &field[..field.iter().position(|&b| b == 0).unwrap_or(field.len())];
            if name != b"." && name != b".." {
                if out.len() >= max {
                    return Ok((out, true));
                }
                out.push(DirEntry {
                    name: name.to_vec(),
                    d_type,
                });
            }
            off += reclen;
        }
    }
}
