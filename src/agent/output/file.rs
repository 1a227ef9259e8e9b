//! NDJSON to a file with size-based rotation, mode 0600, never through a
//! symlink, a FIFO or a hard link.

use super::*;

/// NDJSON to a file, one event per line, with size-based rotation.
///
/// - When writing a line would take the file past `max_bytes`, the file is
///   renamed to `PATH.1` (`PATH.1` → `PATH.2` … up to `PATH.<keep>`, the
///   oldest deleted) and a new file is started. `max_bytes == 0` disables
///   rotation; `keep == 0` discards the old file. A single line longer than
///   `max_bytes` is still written, alone in its file.
/// - Files are created with mode 0600 (an existing file keeps its mode) and
///   opened with `O_NOFOLLOW | O_CLOEXEC | O_APPEND | O_NONBLOCK`: a symlink,
///   FIFO, device, directory or a file with more than one hard link at PATH is
///   refused with an error naming the path, and opening never blocks.
/// - If someone else moves or deletes PATH (logrotate), the next event goes
///   to a fresh PATH; the size is read from the open file on every write, so
///   `copytruncate` is also handled.
pub struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    fields: Fields,
    file: File,
}

impl FileSink {
    pub fn open(path: &Path, max_bytes: u64, keep: u32, fields: Fields) -> io::Result<Self> {
        let file = open_log_file(path)?;
        Ok(FileSink {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            fields,
            file,
        })
    }

    /// The path of the `n`th rotated file (`PATH.n`).
    fn rotated(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let ctx = |e: io::Error, what: &Path| {
            with_context(e, format_args!("rotating {}", what.display()))
        };
        if self.keep == 0 {
            remove_if_exists(&self.path).map_err(|e| ctx(e, &self.path))?;
        } else {
            let oldest = self.rotated(self.keep);
            remove_if_exists(&oldest).map_err(|e| ctx(e, &oldest))?;
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                match fs::rename(&from, self.rotated(n + 1)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ctx(e, &from)),
                }
            }
            fs::rename(&self.path, self.rotated(1)).map_err(|e| ctx(e, &self.path))?;
        }
        self.file = open_log_file(&self.path)?;
        Ok(())
    }

    /// Reopens PATH if the file we hold is no longer the one at PATH.
    fn reopen_if_moved(&mut self) -> io::Result<()> {
        let ours = self.file.metadata()?;
        let moved = match fs::symlink_metadata(&self.path) {
            Ok(m) => m.dev() != ours.dev() || m.ino() != ours.ino(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(with_context(e, self.path.display())),
        };
        if moved {
            self.file = open_log_file(&self.path)?;
        }
        Ok(())
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn kind_of(ft: fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "a symlink"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

fn refuse(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "refusing to write events to {}: {why} (expected a regular file)",
            path.display()
        ),
    )
}

fn open_log_file(path: &Path) -> io::Result<File> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "cannot write events to {}: {} is not a directory",
                    path.display(),
                    parent.display()
                ),
            ));
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot write events to {}: directory {} does not exist or is not accessible ({e})",
                    path.display(),
                    parent.display()
                ),
            ));
        }
    }
    // Early, friendly refusal; O_NOFOLLOW and the fstat below close the race.
    if let Ok(m) = fs::symlink_metadata(path)
        && !m.file_type().is_file()
    {
        return Err(refuse(
            path,
            format_args!("it is {}", kind_of(m.file_type())),
        ));
    }
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse(path, "it is a symlink"),
            Some(libc::ENXIO) => refuse(path, "it is a FIFO or socket"),
            _ => with_context(e, format_args!("opening {}", path.display())),
        })?;
    let m = file.metadata()?;
    if !m.file_type().is_file() {
        return Err(refuse(
            path,
            format_args!("it is {}", kind_of(m.file_type())),
        ));
    }
    if m.nlink() > 1 {
        return Err(refuse(
            path,
            format_args!("it has {} hard links", m.nlink()),
        ));
    }
    Ok(file)
}

impl Sink for FileSink {
    fn name(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn send(&mut self, event: &Event) -> io::Result<()> {
        let mut line = super::event_line(event, self.fields);
        line.push('\n');
        self.reopen_if_moved()?;
        let mut size = self.file.metadata()?.len();
        if self.max_bytes > 0 && size > 0 && size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
            size = 0;
        }
        self.file.write_all(line.as_bytes()).map_err(|e| {
            // A line cut short (the disk filled in its middle) is taken
            // back: no reader sees half a line, and the retry writes it
            // whole.
            let _ = self.file.set_len(size);
            with_context(e, format_args!("writing {}", self.path.display()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::event::samples::*;

    fn read_lines(p: &Path) -> Vec<Value> {
        fs::read_to_string(p)
            .expect("read")
            .lines()
            .map(|l| serde_json::from_str(l).expect("valid JSON line"))
            .collect()
    }

    #[test]
    fn file_lines_are_json_and_mode_is_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.ndjson");
        let mut sink = FileSink::open(&path, 0, 3, Fields::Native).expect("open");
        assert_eq!(sink.name(), format!("file {}", path.display()));
        sink.send(&alert()).expect("send");
        sink.send(&heartbeat(1)).expect("send");
        let lines = read_lines(&path);
        assert_eq!(lines, vec![alert().body, heartbeat(1).body]);
        let mode = fs::metadata(&path).expect("meta").mode() & 0o7777;
        assert_eq!(mode, 0o600);

        let mut ecs = FileSink::open(&path, 0, 3, Fields::Ecs).expect("reopen");
        ecs.send(&alert()).expect("send");
        assert_eq!(read_lines(&path)[2]["event"]["kind"], "alert");
    }

    /// A process with a 2 MiB command line makes a 2 MiB alert; a log
    /// shipper drops (or stops following the file at) such a line. The
    /// line is shrunk, still JSON, marked, and keeps the line's start.
    #[test]
    fn an_alert_inflated_by_its_process_stays_a_line_a_shipper_takes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.ndjson");
        let mut big = alert();
        big.body["process"]["cmdline"] =
            serde_json::json!(["/tmp/.x/kworker", "A".repeat(2 << 20)]);
        for fields in [Fields::Native, Fields::Ecs] {
            let mut sink = FileSink::open(&path, 0, 3, fields).expect("open");
            sink.send(&big).expect("send");
            sink.send(&heartbeat(1)).expect("send");
        }
        let text = fs::read_to_string(&path).expect("read");
        for line in text.lines() {
            assert!(line.len() <= MAX_EVENT_LINE, "{} bytes", line.len());
        }
        let lines = read_lines(&path);
        assert_eq!(lines.len(), 4);
        let native = &lines[0];
        assert_eq!(native["truncated"], true);
        assert_eq!(native["level"], "miner");
        assert_eq!(native["process"]["cmdline"][0], "/tmp/.x/kworker");
        assert!(
            native["process"]["cmdline"][1]
                .as_str()
                .is_some_and(|a| a.starts_with("AAAA") && a.ends_with('…'))
        );
        // Small events are written whole, unmarked.
        assert_eq!(lines[1], heartbeat(1).body);
        assert_eq!(lines[2]["minerwatch"]["truncated"], true);
        assert_eq!(lines[2]["event"]["kind"], "alert");
    }

    #[test]
    fn file_rotation_keeps_order_and_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ev.ndjson");
        let line_len = render_line(&heartbeat(10), Fields::Native).len() as u64 + 1;
        // Room for exactly 3 lines (seq 10..=99 all have the same length).
        let max = line_len * 3;
        let mut sink = FileSink::open(&path, max, 2, Fields::Native).expect("open");
        for n in 10..=20 {
            sink.send(&heartbeat(n)).expect("send");
        }
        let seqs = |p: &Path| -> Vec<u64> {
            read_lines(p)
                .iter()
                .map(|v| v["seq"].as_u64().expect("seq"))
                .collect()
        };
        // 11 events, 3 per file: [10 11 12] [13 14 15] [16 17 18] [19 20]
        assert_eq!(seqs(&path), vec![19, 20]);
        assert_eq!(seqs(&sink.rotated(1)), vec![16, 17, 18]);
        assert_eq!(seqs(&sink.rotated(2)), vec![13, 14, 15]);
        assert!(!sink.rotated(3).exists(), "only `keep` old files are kept");
        for p in [path.clone(), sink.rotated(1), sink.rotated(2)] {
            assert!(fs::metadata(&p).expect("meta").len() <= max);
            assert_eq!(fs::metadata(&p).expect("meta").mode() & 0o777, 0o600);
        }

        // keep = 0: the old file is simply discarded.
        let p0 = dir.path().join("zero.ndjson");
        let mut sink0 = FileSink::open(&p0, max, 0, Fields::Native).expect("open");
        for n in 10..=14 {
            sink0.send(&heartbeat(n)).expect("send");
        }
        assert_eq!(seqs(&p0), vec![13, 14]);
        assert!(!sink0.rotated(1).exists());
    }

    #[test]
    fn file_reopens_after_external_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ev.ndjson");
        let mut sink = FileSink::open(&path, 0, 1, Fields::Native).expect("open");
        sink.send(&heartbeat(1)).expect("send");
        fs::rename(&path, dir.path().join("moved")).expect("mv");
        sink.send(&heartbeat(2)).expect("send");
        assert_eq!(read_lines(&path), vec![heartbeat(2).body]);
    }

    #[test]
    fn file_refuses_symlink_and_leaves_target_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious");
        fs::write(&target, "keep me\n").expect("write");
        let path = dir.path().join("events.ndjson");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        let err = FileSink::open(&path, 0, 1, Fields::Native)
            .err()
            .expect("symlink must be refused");
        let msg = err.to_string();
        assert!(msg.contains("symlink"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert_eq!(fs::read_to_string(&target).expect("read"), "keep me\n");

        // A dangling symlink is refused too (and nothing is created).
        let dangling = dir.path().join("dangling");
        let missing = dir.path().join("missing");
        std::os::unix::fs::symlink(&missing, &dangling).expect("symlink");
        assert!(FileSink::open(&dangling, 0, 1, Fields::Native).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn file_refuses_fifo_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.ndjson");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &path,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let r = FileSink::open(&p, 0, 1, Fields::Native).map(drop);
            let _ = tx.send(r);
        });
        let r = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("FileSink::open blocked on a FIFO");
        let msg = r.expect_err("FIFO must be refused").to_string();
        assert!(
            msg.contains("FIFO") && msg.contains(&path.display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn file_refuses_directory_hardlink_and_missing_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).expect("mkdir");
        let msg = FileSink::open(&sub, 0, 1, Fields::Native)
            .err()
            .expect("dir refused")
            .to_string();
        assert!(msg.contains("directory"), "{msg}");

        let a = dir.path().join("a");
        fs::write(&a, "").expect("write");
        let b = dir.path().join("b");
        fs::hard_link(&a, &b).expect("link");
        let msg = FileSink::open(&b, 0, 1, Fields::Native)
            .err()
            .expect("hard link refused")
            .to_string();
        assert!(msg.contains("hard links"), "{msg}");

        let nowhere = dir.path().join("no/such/dir/events.ndjson");
        let msg = FileSink::open(&nowhere, 0, 1, Fields::Native)
            .err()
            .expect("missing dir")
            .to_string();
        assert!(msg.contains("does not exist"), "{msg}");
    }
}
