//! The host checks' listings, brute force and mounts against real
//! processes this test starts (a `sleep`), an LD_PRELOAD hider compiled at
//! test time and a bind mount over /proc/PID, through minerwatch's library
//! API; and what needs root (chattr +i). Moved out of the unit tests: they
//! start processes, compile C and need root.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::time::Instant;

use minerwatch::observe::host::{
    HostFacts, Sweep, brute_force_pids, brute_force_sweep, hidden_pids, list_pids_raw,
    list_pids_readdir, observe_host,
};

use crate::support;

const GETDENTS: &str = "getdents64";
const READDIR: &str = "readdir";
const BRUTE: &str = "kill(0)/stat";
const FS_IMMUTABLE_FL: libc::c_long = 0x10;

fn rolling(last_pid: Option<i32>, cursor: i32, slices: u32) -> Sweep {
    Sweep::Rolling {
        last_pid,
        cursor,
        slices,
        also: Vec::new(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    proc: PathBuf,
}

/// A fixture root and a fake proc root (pid_max 64, no pids).
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    let proc = dir.path().join("proc");
    std::fs::create_dir_all(&root).expect("mkdir root");
    let fx = Fixture {
        root,
        proc,
        _dir: dir,
    };
    put(&fx.proc, "sys/kernel/pid_max", "64\n");
    fx
}

fn put(base: &Path, rel: &str, content: &str) -> PathBuf {
    let path = base.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, content).expect("write fixture");
    path
}

#[test]
fn a_rolling_sweep_finds_a_process_started_since_the_last_one() {
    // The allocator's last pid, the fifth field of /proc/loadavg.
    let before: i32 = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().nth(4)?.parse().ok())
        .expect("/proc/loadavg");
    let kid = Kid::sleep();
    let pid_max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .expect("pid_max");
    // The slice sits at the very end of the range, away from the kid.
    let sweep = rolling(Some(before), pid_max, 1_000_000);
    let (found, swept) = brute_force_sweep(Path::new("/proc"), false, &sweep);
    assert!(found.contains(&kid.pid()), "{swept:?}");
    assert!(swept.probed(kid.pid()));
    assert!(swept.count() < u64::try_from(pid_max).unwrap_or(0));
    assert_eq!(swept.next_slice, 1);
    // A pid found hidden before is asked about on its own.
    let sweep = Sweep::Rolling {
        last_pid: Some(kid.pid()),
        cursor: pid_max,
        slices: 1_000_000,
        also: vec![kid.pid()],
    };
    let (found, swept) = brute_force_sweep(Path::new("/proc"), false, &sweep);
    assert!(found.contains(&kid.pid()), "{swept:?}");
    assert_eq!(swept.pids, vec![kid.pid()]);
}

// ---- guards ----------------------------------------------------------

/// A child we started: killed and reaped on drop.
struct Kid(Child);
impl Kid {
    fn sleep() -> Kid {
        Kid(Proc::new("sleep")
            .arg("60")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sleep"))
    }
    fn pid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("pid fits i32")
    }
}
impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A mount we made: detached on drop.
struct Mounted(CString);
impl Drop for Mounted {
    fn drop(&mut self) {
        // SAFETY: a NUL-terminated path we mounted on.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

/// chattr +i on a file we made; cleared on drop (before the tempdir goes).
struct Immutable(PathBuf);
impl Immutable {
    fn set(path: &Path) -> io::Result<Immutable> {
        set_immutable(path, true)?;
        Ok(Immutable(path.to_path_buf()))
    }
}
impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = set_immutable(&self.0, false);
    }
}
fn set_immutable(path: &Path, on: bool) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut attr: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS/SETFLAGS read and write one long.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut attr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if on {
        attr |= FS_IMMUTABLE_FL;
    } else {
        attr &= !FS_IMMUTABLE_FL;
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &attr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn immutable_file_is_reported() {
    let fx = fixture();
    let benign = put(
        &fx.root,
        "etc/cron.d/sync",
        "0 3 * * * root /usr/sbin/logrotate /etc/logrotate.conf\n",
    );
    let placeholder = put(&fx.root, "etc/cron.d/kthreaddk", "");
    let _g1 = Immutable::set(&benign).expect("chattr +i (needs root and ext4/xfs/btrfs)");
    let _g2 = Immutable::set(&placeholder).expect("chattr +i");
    let (facts, _) = observe_host(&fx.root, &fx.proc);
    let sync = facts
        .persistence
        .iter()
        .find(|e| e.path.ends_with("cron.d/sync"))
        .expect("immutable file recorded");
    assert!(sync.immutable);
    assert_eq!(sync.line, 1);
    assert_eq!(sync.program(), Some("/usr/sbin/logrotate"));
    // An empty placeholder is one entry for the file as a whole.
    let ph = facts
        .persistence
        .iter()
        .find(|e| e.path.ends_with("cron.d/kthreaddk"))
        .expect("placeholder");
    assert!(ph.immutable);
    assert_eq!((ph.line, ph.text.as_str()), (0, ""));
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn raw_listing_matches_readdir() {
    let kid = Kid::sleep();
    let proc = Path::new("/proc");
    let raw = list_pids_raw(proc).expect("getdents64");
    let rd = list_pids_readdir(proc).expect("readdir");
    assert!(raw.contains(&kid.pid()) && rd.contains(&kid.pid()));
    let (raw2, rd2) = (
        list_pids_raw(proc).expect("getdents64"),
        list_pids_readdir(proc).expect("readdir"),
    );
    for h in hidden_pids(
        &raw,
        &rd,
        &raw.iter().chain(&rd).copied().collect::<Vec<_>>(),
    ) {
        // only races: gone now, or in both listings the second time
        let again = raw2.contains(&h.pid) && rd2.contains(&h.pid);
        assert!(!alive(h.pid) || again, "{h:?} differs between listings");
    }
}

#[test]
fn brute_force_finds_leaders_only() {
    let kid = Kid::sleep();
    let started = Instant::now();
    let brute = brute_force_pids(Path::new("/proc"));
    let took = started.elapsed();
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap_or_default();
    eprintln!(
        "brute_force_pids: pid_max {} in {took:?}, {} pids",
        pid_max.trim(),
        brute.len()
    );
    assert!(brute.contains(&kid.pid()));
    assert!(brute.contains(&1));
    // our own test threads are not thread-group leaders
    let me = i32::try_from(std::process::id()).expect("pid");
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{me}/task"))
        .expect("task dir")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&t| t != me)
        .collect();
    for tid in tids {
        assert!(
            !brute.contains(&tid) || !alive(tid),
            "thread {tid} listed as a process"
        );
    }
    assert!(took.as_secs_f64() < 5.0, "brute force took {took:?}");
    assert!(hidden_pids(&brute, &brute, &brute).is_empty());
}

fn build_hider(dir: &Path) -> PathBuf {
    let src = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/hider.c"
    ));
    let so = dir.join("hider.so");
    let status = Proc::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(src)
        .arg("-ldl")
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed");
    so
}

fn ls_proc(preload: Option<(&Path, i32)>) -> Vec<i32> {
    let mut cmd = Proc::new("ls");
    cmd.arg("/proc").env_remove("LD_PRELOAD");
    if let Some((so, pid)) = preload {
        cmd.env("LD_PRELOAD", so)
            .env("MW_HIDE_PID", pid.to_string());
    }
    let out = cmd.output().expect("ls /proc");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn ld_preload_hider_is_seen_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let so = build_hider(dir.path());
    let kid = Kid::sleep();
    let pid = kid.pid();
    assert!(
        ls_proc(None).contains(&pid),
        "ls sees the sleep without the hider"
    );
    assert!(
        !ls_proc(Some((&so, pid))).contains(&pid),
        "the hider hides it from ls"
    );

    // Re-run this test binary, hider preloaded, to run `hider_child` alone.
    let name = format!(
        "{}::hider_child",
        module_path!()
            .split_once("::")
            .map_or(module_path!(), |(_, rest)| rest)
    );
    let out = Proc::new(std::env::current_exe().expect("current_exe"))
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env("LD_PRELOAD", &so)
        .env("MW_HIDE_PID", pid.to_string())
        .env("MW_HIDER_CHILD", pid.to_string())
        .output()
        .expect("re-run test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("MW_HIDER_CHILD_OK"),
        "child test did not run:\n{stdout}\n{stderr}"
    );
}

/// Runs only inside the re-executed binary of `ld_preload_hider_is_seen_through`.
#[test]
fn hider_child() {
    let Some(pid) = std::env::var("MW_HIDER_CHILD")
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return;
    };
    // The hider's libc hooks are live in this process: a probe through
    // libc, or through libc's syscall(), does not find the pid ...
    // SAFETY: signal 0 and getpgid only ask whether the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, -1, "kill() is hooked");
    // SAFETY: as above, through libc's syscall() wrapper.
    assert_eq!(
        unsafe { libc::syscall(libc::SYS_getpgid, libc::c_long::from(pid)) },
        -1,
        "syscall() is hooked"
    );
    // ... while ours go to the kernel without libc (rustix).
    let proc = Path::new("/proc");
    let rd = list_pids_readdir(proc).expect("readdir");
    let raw = list_pids_raw(proc).expect("getdents64");
    let brute = brute_force_pids(proc);
    assert!(!rd.contains(&pid), "readdir is hooked in this process");
    assert!(raw.contains(&pid), "getdents64 sees it");
    assert!(brute.contains(&pid), "brute force sees it");
    let hidden = hidden_pids(&raw, &rd, &brute);
    let h = hidden
        .iter()
        .find(|h| h.pid == pid)
        .expect("reported hidden");
    assert_eq!(h.missing_from, [READDIR]);
    assert_eq!(h.seen_by, [GETDENTS, BRUTE]);

    let (facts, _) = observe_host(Path::new("/"), proc);
    assert!(
        facts.hidden_pids.iter().any(|h| h.pid == pid),
        "{:?}",
        facts.hidden_pids
    );
    assert!(
        facts
            .self_preloaded
            .iter()
            .any(|l| l.ends_with("/hider.so")),
        "{:?}",
        facts.self_preloaded
    );
    println!("MW_HIDER_CHILD_OK");
}

#[test]
fn bind_mount_over_proc_pid() {
    // Every scan running meanwhile would see the mount.
    let _host = support::host_state_change();
    let kid = Kid::sleep();
    let pid = kid.pid();
    let empty = tempfile::tempdir().expect("tempdir");
    let target = CString::new(format!("/proc/{pid}")).expect("path");
    let source = CString::new(empty.path().as_os_str().as_bytes()).expect("path");
    // SAFETY: NUL-terminated paths; a plain bind mount.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "mount --bind: {}", io::Error::last_os_error());
    let _mounted = Mounted(target);

    let proc = Path::new("/proc");
    let fx = fixture();
    let (facts, _) = observe_host(&fx.root, proc);
    assert!(
        facts.proc_pid_mounts.contains(&format!("/proc/{pid}")),
        "{:?}",
        facts.proc_pid_mounts
    );
    // What the bind mount hides: the contents, not the directory entry.
    assert!(list_pids_raw(proc).expect("getdents64").contains(&pid));
    assert!(list_pids_readdir(proc).expect("readdir").contains(&pid));
    assert!(brute_force_pids(proc).contains(&pid));
    assert!(!facts.hidden_pids.iter().any(|h| h.pid == pid));
    assert!(
        std::fs::metadata(format!("/proc/{pid}/status")).is_err(),
        "status is hidden"
    );
    assert_eq!(
        std::fs::read_dir(format!("/proc/{pid}"))
            .expect("dir")
            .count(),
        0
    );
}

#[test]
fn real_host_observes_cleanly() {
    let started = Instant::now();
    let (facts, gaps) = observe_host(Path::new("/"), Path::new("/proc"));
    eprintln!("observe_host(/, /proc) in {:?}", started.elapsed());
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&facts).unwrap_or_default()
    );
    eprintln!("gaps: {gaps:?}");
    assert!(facts.hugepages.size_kib > 0);
    let round: HostFacts =
        serde_json::from_str(&serde_json::to_string(&facts).expect("json")).expect("json");
    assert_eq!(round, facts);
}
