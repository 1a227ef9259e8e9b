//! minerwatch's own view: preloaded libraries in its own maps, mounts over
//! `/proc/PID` and `hidepid=` from its and PID 1's mountinfo.

use super::*;

// ---------------------------------------------------------------------------
// /proc/self: mounts, hidepid, our own mapped libraries
// ---------------------------------------------------------------------------

pub(super) fn read_self(facts: &mut HostFacts, proc_root: &Path, gaps: &mut Unread) {
    let self_fd = match open_proc_self() {
        Ok(fd) => fd,
        Err(e) => {
            gaps.add("/proc/self", e.to_string());
            return;
        }
    };
    match read_at(&self_fd, b"mountinfo", SELF_CAP, false) {
        Ok(f) => {
            if f.truncated {
                gaps.add(
                    "/proc/self/mountinfo",
                    format!("truncated at {SELF_CAP} bytes"),
                );
            }
            let text = String::from_utf8_lossy(&f.data);
            let (mounts, hidepid, covered_by) =
                parse_mountinfo(&text, &proc_root.to_string_lossy());
            facts.proc_pid_mounts = mounts;
            facts.hidepid = hidepid;
            if let Some(fstype) = covered_by {
                gaps.add(
                    proc_root.display().to_string(),
                    format!("the topmost mount there is {fstype}, not procfs"),
                );
            }
        }
        Err(e) => gaps.add("/proc/self/mountinfo", e.to_string()),
    }
    // The host's mounts, as its init sees them. Ours may differ: a service
    // with its own mount namespace and a fresh /proc (systemd's
    // ProtectKernelTunables=) never sees a mount made over /proc/PID after
    // it started.
    let init_mountinfo = proc_root.join("1").join("mountinfo");
    match crate::safefs::read_regular(&init_mountinfo, SELF_CAP as u64, true) {
        Ok((data, _)) => {
            let (mounts, _, _) = parse_mountinfo(
                &String::from_utf8_lossy(&data),
                &proc_root.to_string_lossy(),
            );
            for m in mounts {
                if !facts.proc_pid_mounts.contains(&m) {
                    facts.proc_pid_mounts.push(m);
                }
            }
        }
        // Not ours to read (no CAP_SYS_PTRACE): our own view has to do.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
        Err(e) => gaps.add(init_mountinfo.display().to_string(), e.to_string()),
    }
    match read_at(&self_fd, b"maps", SELF_CAP, false) {
        Ok(f) => {
            if f.truncated {
                gaps.add("/proc/self/maps", format!("truncated at {SELF_CAP} bytes"));
            }
            let exe = read_link_at(&self_fd, b"exe").ok();
            let env_preload: Vec<String> = std::env::var_os("LD_PRELOAD")
                .map(|v| split_preload(&v.to_string_lossy()))
                .unwrap_or_default();
            let file_preload = facts
                .ld_so_preload
                .as_ref()
                .map(|p| p.entries.clone())
                .unwrap_or_default();
            facts.self_preloaded = preloaded_from_maps(
                &String::from_utf8_lossy(&f.data),
                exe.as_deref(),
                &env_preload,
                &file_preload,
            );
        }
        Err(e) => gaps.add("/proc/self/maps", e.to_string()),
    }
}

/// `/proc/self`, following the `self` magic link only on a real procfs.
pub(super) fn open_proc_self() -> io::Result<OwnedFd> {
    let proc_fd = open_dir_path(Path::new("/proc"))?;
    if rustix::fs::fstatfs(&proc_fd)?.f_type != rustix::fs::PROC_SUPER_MAGIC {
        return Err(io::Error::other("/proc is not a procfs mount"));
    }
    open_at(
        &proc_fd,
        b"self",
        DIR_FLAGS.difference(rustix::fs::OFlags::NOFOLLOW),
    )
}

/// Mount points over `<proc mount>/<digits>[/...]`, the /proc mount's
/// hidepid=, and the file system type of the topmost mount on `proc_root`
/// (or /proc) when that is not procfs (something mounted over /proc).
pub(super) fn parse_mountinfo(
    text: &str,
    proc_root: &str,
) -> (Vec<String>, Option<String>, Option<String>) {
    struct Mount {
        point: String,
        fstype: String,
        opts: String,
    }
    let mounts: Vec<Mount> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = 6 + fields.iter().skip(6).position(|f| *f == "-")?;
            Some(Mount {
                point: unescape_mount(fields.get(4)?),
                fstype: (*fields.get(sep + 1)?).to_string(),
                opts: format!("{},{}", fields.get(5)?, fields.get(sep + 3).unwrap_or(&"")),
            })
        })
        .collect();
    let mut proc_points: BTreeSet<String> = mounts
        .iter()
        .filter(|m| m.fstype == "proc")
        .map(|m| m.point.clone())
        .collect();
    proc_points.insert("/proc".to_string());
    let proc_root = proc_root.trim_end_matches('/');
    if !proc_root.is_empty() {
        proc_points.insert(proc_root.to_string());
    }
    let mut pid_mounts = Vec::new();
    for m in &mounts {
        for p in &proc_points {
            let Some(rest) = m
                .point
                .strip_prefix(p.as_str())
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            let first = rest.split('/').next().unwrap_or("");
            if parse_pid(first.as_bytes()).is_some() && !pid_mounts.contains(&m.point) {
                pid_mounts.push(m.point.clone());
            }
        }
    }
    let top = |point: &str| mounts.iter().rev().find(|m| m.point == point);
    let proc_mount = top(proc_root).or_else(|| top("/proc"));
    let covered_by = proc_mount
        .filter(|m| m.fstype != "proc")
        .map(|m| m.fstype.clone());
    let hidepid = proc_mount.filter(|m| m.fstype == "proc").and_then(|m| {
        m.opts
            .split(',')
            .find_map(|o| o.strip_prefix("hidepid="))
            .map(str::to_string)
    });
    (pid_mounts, hidepid, covered_by)
}

/// Undoes mountinfo's octal escapes (`\040` for a space…).
pub(super) fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn split_preload(s: &str) -> Vec<String> {
    s.split(|c: char| c.is_whitespace() || c == ':')
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

/// Executable file mappings of our own process that were preloaded or are
/// not expected (see [`HostFacts::self_preloaded`]).
pub(super) fn preloaded_from_maps(
    maps: &str,
    exe: Option<&str>,
    env_preload: &[String],
    file_preload: &[String],
) -> Vec<String> {
    let exe = exe.map(|e| e.strip_suffix(" (deleted)").unwrap_or(e));
    let mut out: Vec<String> = Vec::new();
    for line in maps.lines() {
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(' ').unwrap_or(rest.len());
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        let path = rest.trim();
        let Some(perms) = fields.get(1) else { continue };
        if !perms.contains('x') || path.is_empty() || path.starts_with('[') {
            continue;
        }
        let clean = path.strip_suffix(" (deleted)").unwrap_or(path);
        if Some(clean) == exe {
            continue;
        }
        let listed = env_preload
            .iter()
            .chain(file_preload)
            .any(|e| e == clean || basename(e) == basename(clean));
        if (listed || !expected_library(clean)) && !out.iter().any(|o| o == path) {
            out.push(path.to_string());
        }
    }
    out
}

pub(super) static TRUSTED_LIB_DIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^/(?:usr/)?lib(?:32|64|x32)?(?:/[a-z0-9_]+-linux-gnu[a-z0-9_]*)?(?:/gconv)?$")
        .expect("static regex")
});
pub(super) static EXPECTED_LIB: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:ld-linux[a-z0-9_.-]*\.so\.\d+|ld64\.so\.\d+|lib(?:c|m|mvec|pthread|dl|rt|util|",
        r"resolv|anl|nsl|BrokenLocale|thread_db|crypt|gcc_s|z|cap|systemd|lzma|zstd|lz4|gcrypt|",
        r"gpg-error|selinux|pcre2-8|idn2|unistring|nss_[a-z0-9_]+)\.so(?:\.\d+)*)$"
    ))
    .expect("static regex")
});

pub(super) fn expected_library(path: &str) -> bool {
    let Some((dir, name)) = path.rsplit_once('/') else {
        return false;
    };
    TRUSTED_LIB_DIR.is_match(dir) && (dir.ends_with("/gconv") || EXPECTED_LIB.is_match(name))
}
