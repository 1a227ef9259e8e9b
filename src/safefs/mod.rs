//! Careful file reading for a tool that runs as root on hostile hosts: one
//! file by path here, whole trees walked with openat and raw getdents64 in
//! [`tree`].
//!
//! Every read opens with `O_NOFOLLOW` (where the path is not a kernel magic
//! link), `O_NONBLOCK` and `O_NOCTTY`, refuses anything but a regular file
//! (never a FIFO, socket or device), and stops at a byte cap.

pub mod tree;
pub mod write;

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The SHA-256 of bytes read, in lowercase hex: what reports, events and
/// `--hashes` lists name a file's contents by.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Bytes of one executable or library read for scanning.
pub const MAX_BINARY_BYTES: u64 = 48 * 1024 * 1024;
/// Bytes of one configuration file read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Identity of a file's content for the once-per-run scan cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
}

impl std::fmt::Display for FileKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}:{}", self.dev, self.ino, self.size, self.mtime)
    }
}

/// Opens `path` for reading as a regular file.
///
/// `nofollow` must be true for every path an attacker could plant; it is
/// false only for kernel magic links such as `/proc/PID/exe` and
/// `/proc/PID/map_files/…`, which name the mapped file itself.
pub fn open_regular(path: &Path, nofollow: bool) -> io::Result<(File, FileKey)> {
    let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    if nofollow {
        flags |= libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, socket, device or directory is never read)",
        ));
    }
    let key = FileKey {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: meta.mtime(),
    };
    Ok((file, key))
}

/// Reads at most `cap` bytes of `file`; the flag says whether more remained.
pub fn read_capped(file: &mut File, cap: u64, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.clear();
    file.by_ref().take(cap).read_to_end(buf)?;
    let mut probe = [0u8; 1];
    let more = file.read(&mut probe)? > 0;
    Ok(more)
}

/// Opens and reads a regular file, at most `cap` bytes.
pub fn read_regular(path: &Path, cap: u64, nofollow: bool) -> io::Result<(Vec<u8>, bool)> {
    let (mut file, _) = open_regular(path, nofollow)?;
    let mut buf = Vec::new();
    let truncated = read_capped(&mut file, cap, &mut buf)?;
    Ok((buf, truncated))
}

/// An output file written whole or not at all: a hidden temporary beside the
/// target, created with mode 0600, `O_EXCL` and `O_NOFOLLOW` (never through a
/// symlink, never over an existing file), renamed onto the target by
/// [`PendingFile::commit`] after an fsync and removed if dropped before.
#[derive(Debug)]
pub struct PendingFile {
    tmp: std::path::PathBuf,
    target: std::path::PathBuf,
    file: File,
}

impl PendingFile {
    /// Creates the temporary for `target`. Fails at once when the directory
    /// is not writable, so a long scan does not end in a lost result.
    pub fn create(target: &Path) -> io::Result<Self> {
        let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_string());
        if target.as_os_str().is_empty() {
            return Err(invalid("an empty file name"));
        }
        if std::fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
            return Err(invalid("it is a directory; give a file name in it"));
        }
        if std::fs::symlink_metadata(target).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(invalid(
                "it is a symlink; outputs are never written through one",
            ));
        }
        let name = target
            .file_name()
            .ok_or_else(|| invalid("it names no file; give a file name"))?;
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        Ok(PendingFile {
            tmp,
            target: target.to_path_buf(),
            file,
        })
    }

    /// The temporary, to write into.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Where it will land.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// fsyncs the temporary and renames it onto the target.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.target)?;
        self.tmp = std::path::PathBuf::new();
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifo_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let err = read_regular(&fifo, 10, true).expect_err("fifo must be refused");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn refuses_symlink_and_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("t");
        std::fs::write(&target, b"x").expect("write");
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert!(read_regular(&link, 10, true).is_err());
        assert!(read_regular(Path::new("/dev/zero"), 10, true).is_err());
    }

    #[test]
    fn caps_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("big");
        std::fs::write(&f, vec![7u8; 1000]).expect("write");
        let (buf, truncated) = read_regular(&f, 100, true).expect("read");
        assert_eq!(buf.len(), 100);
        assert!(truncated);
        let (buf, truncated) = read_regular(&f, 1000, true).expect("read");
        assert_eq!(buf.len(), 1000);
        assert!(!truncated);
    }
}
