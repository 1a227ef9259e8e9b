//! Benign heavy programs: busy, some with big memory, none a miner.

use std::time::Duration;

use crate::support::{self, Child};
use crate::{level_rank, scan_pids};

/// Starts `cmd`, lets it get busy, scans it and its children: at most notice.
fn at_most_notice(mut child: Child) {
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        child.is_running(),
        "benign load exited early: {}",
        child.stderr_so_far()
    );
    let report = scan_pids(&[child.pid()], &[]);
    let worst = report["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|x| level_rank(x["level"].as_str().unwrap_or("")))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    assert!(worst <= 1, "benign load rated above notice: {report}");
    // It was really busy, so the test proves something.
    let busy = report["findings"].as_array().is_some_and(|f| {
        f.iter()
            .any(|x| x["signals"].to_string().contains("cpu.busy"))
    });
    assert!(busy, "benign load was not busy during the window: {report}");
}

#[test]
fn stress_ng_cpu_is_not_a_miner() {
    let _heavy = support::heavy_lock();
    at_most_notice(support::spawn_benign(
        "stress-ng",
        &["--cpu", "1", "--timeout", "30s"],
    ));
}

#[test]
fn xz_9_is_not_a_miner() {
    let _heavy = support::heavy_lock();
    at_most_notice(support::spawn_benign(
        "sh",
        &[
            "-c",
            "head -c 400000000 /dev/urandom | xz -9 -T1 -c > /dev/null",
        ],
    ));
}

#[test]
fn openssl_speed_is_not_a_miner() {
    let _heavy = support::heavy_lock();
    at_most_notice(support::spawn_benign(
        "openssl",
        &["speed", "-seconds", "30", "aes-128-cbc"],
    ));
}

#[test]
fn yes_is_not_a_miner() {
    let _heavy = support::heavy_lock();
    at_most_notice(support::spawn_benign("sh", &["-c", "yes > /dev/null"]));
}

#[test]
fn python_float_loop_is_not_a_miner() {
    let _heavy = support::heavy_lock();
    at_most_notice(support::spawn_benign(
        "python3",
        &["-c", "x = 0.0\nwhile True:\n    x = x * 1.0000001 + 0.5\n"],
    ));
}

#[test]
fn node_jit_float_loop_is_not_a_miner() {
    let _heavy = support::heavy_lock();
    let child = support::spawn_benign(
        "node",
        &[
            "-e",
            "let x = 0.1; for (;;) { x = Math.sqrt(x * 1.0000001 + 0.5) * 1.5; }",
        ],
    );
    at_most_notice(child);
}

#[test]
fn rustc_build_is_not_a_miner() {
    let _heavy = support::heavy_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    // Enough generic code to keep rustc busy for the whole window.
    let mut src = String::from("use std::collections::HashMap;\n");
    for i in 0..800 {
        src.push_str(&format!(
            "pub fn f{i}<T: Clone + std::fmt::Debug>(v: &[T]) -> HashMap<String, Vec<T>> {{ \
             let mut m = HashMap::new(); for (j, x) in v.iter().enumerate() {{ \
             m.entry(format!(\"{{j}}{{:?}}\", x)).or_insert_with(Vec::new).push(x.clone()); }} m }}\n\
             pub fn g{i}() -> usize {{ f{i}(&[1u64, 2, 3]).len() + f{i}(&[\"a\", \"b\"]).len() }}\n"
        ));
    }
    let file = dir.path().join("lib.rs");
    std::fs::write(&file, src).expect("write source");
    let script = format!(
        "while true; do rustc --edition 2021 --crate-type lib -C opt-level=2 -C codegen-units=1 --out-dir {} {}; done",
        dir.path().display(),
        file.display()
    );
    at_most_notice(support::spawn_benign("sh", &["-c", &script]));
}
