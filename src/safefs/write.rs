//! Writing on a hostile host: the few changes `contain` makes, each through
//! directory fds opened component by component with `O_NOFOLLOW`, so a
//! symlink an attacker planted anywhere on the path is refused, never
//! followed into a write.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path};

use rustix::fs::{self, AtFlags, Mode, OFlags};

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// The directory holding `rel` (a path below `root`) and the final name:
/// `root` is the caller's (it may be reached through symlinks), every
/// component below it is opened with `O_NOFOLLOW`.
pub fn open_parent(root: &Path, rel: &Path) -> io::Result<(OwnedFd, Vec<u8>)> {
    let mut dir = fs::open(root, DIR.difference(OFlags::NOFOLLOW), Mode::empty())?;
    let parts: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(Ok(n)),
            Component::RootDir | Component::CurDir => None,
            _ => Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a path with '..' is never written",
            ))),
        })
        .collect::<io::Result<_>>()?;
    let (name, dirs) = parts
        .split_last()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    for d in dirs {
        dir = fs::openat(&dir, *d, DIR, Mode::empty()).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "cannot open directory '{}' without following a symlink: {e}",
                    d.to_string_lossy()
                ),
            )
        })?;
    }
    Ok((dir, name.as_bytes().to_vec()))
}

/// Replaces the regular file `name` in `dir` with `bytes` whole: a temporary
/// with the original's mode and owner, fsynced, renamed over it.
pub fn replace_at(dir: &OwnedFd, name: &[u8], bytes: &[u8]) -> io::Result<()> {
    let st = fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if fs::FileType::from_raw_mode(st.st_mode) != fs::FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file: left as it is",
        ));
    }
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(name);
    tmp.extend_from_slice(format!(".minerwatch-{}.tmp", std::process::id()).as_bytes());
    let fd = fs::openat(
        dir,
        tmp.as_slice(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let written = (|| -> io::Result<()> {
        fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(st.st_uid)),
            Some(rustix::fs::Gid::from_raw(st.st_gid)),
        )?;
        fs::fchmod(&fd, Mode::from_raw_mode(st.st_mode & 0o7777))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::renameat(dir, tmp.as_slice(), dir, name)?;
        Ok(())
    })();
    if written.is_err() {
        let _ = fs::unlinkat(dir, tmp.as_slice(), AtFlags::empty());
    }
    written
}

/// Creates `name` in `dir` (never over an existing file or a symlink) with
/// `mode`, writes `bytes` and fsyncs.
pub fn create_new_at(dir: &OwnedFd, name: &[u8], mode: u32, bytes: &[u8]) -> io::Result<()> {
    let fd = fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    // The umask may have taken bits away, never added: set exactly.
    fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(bytes)?;
    f.sync_all()
}

/// Removes `name` from `dir` only when it is the file `(dev, ino)`: the
/// one a process ran, not whatever was put at its path since.
pub fn unlink_if_same(dir: &OwnedFd, name: &[u8], dev: u64, ino: u64) -> io::Result<()> {
    let st = fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if st.st_dev != dev || st.st_ino != ino {
        return Err(io::Error::other(
            "the file at this path is not the one the process ran (device and inode differ): left in place",
        ));
    }
    Ok(fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Removes the symlink `name` from `dir` (a symlink only).
pub fn unlink_symlink(dir: &OwnedFd, name: &[u8]) -> io::Result<()> {
    let st = fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if fs::FileType::from_raw_mode(st.st_mode) != fs::FileType::Symlink {
        return Err(io::Error::other("not a symlink: left in place"));
    }
    Ok(fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// A directory of our own (quarantine, evidence): made 0700 if missing;
/// refused when it is a symlink, not ours, or open to group or others.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other(
            "it is not a directory (a symlink is never followed)",
        ));
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(std::io::Error::other(format!(
            "it belongs to uid {}, not to us (uid {euid})",
            meta.uid()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "it has mode {:o}: group and others can reach it; chmod 700 it",
            meta.permissions().mode() & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlinked_directory_on_the_path_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("real/etc")).expect("mkdir");
        std::fs::write(root.join("real/etc/f"), b"old\n").expect("write");
        std::os::unix::fs::symlink(root.join("real"), root.join("link")).expect("symlink");
        assert!(open_parent(root, Path::new("link/etc/f")).is_err());
        assert!(open_parent(root, Path::new("real/../real/etc/f")).is_err());
        let (dir, name) = open_parent(root, Path::new("/real/etc/f")).expect("open");
        replace_at(&dir, &name, b"new\n").expect("replace");
        assert_eq!(
            std::fs::read(root.join("real/etc/f")).expect("read"),
            b"new\n"
        );
        // A symlink as the file itself is not replaced.
        std::os::unix::fs::symlink("/etc/passwd", root.join("real/etc/l")).expect("symlink");
        assert!(replace_at(&dir, b"l", b"x").is_err());
        assert!(create_new_at(&dir, b"l", 0o600, b"x").is_err());
    }
}
