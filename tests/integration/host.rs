//! Host findings, with real processes hidden from minerwatch's view.

use std::process::Command;

use crate::BIN;
use crate::support;

/// A busy process outside a fresh PID namespace, and minerwatch inside it
/// with the namespace's own /proc: the kernel's /proc/stat still counts the
/// outside CPU, which no process minerwatch can see accounts for.
#[test]
fn cpu_of_processes_we_cannot_see_is_a_host_finding() {
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
    assert!(
        out.status.code() == Some(1),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let hf = r["host_findings"].as_array().expect("host findings");
    let hidden = hf
        .iter()
        .find(|h| h["id"] == "host.hidden_cpu")
        .unwrap_or_else(|| panic!("no hidden CPU finding: {r}"));
    assert_eq!(hidden["level"], "suspicious", "{hidden}");
    assert!(
        hidden["evidence"]
            .as_str()
            .is_some_and(|e| e.contains("ran in processes we cannot see"))
    );
}
