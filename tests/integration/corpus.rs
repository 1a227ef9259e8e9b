//! The CI subset of the benign corpus (tests/support/corpus/): at least
//! one program of every class, with packages cheap to install (the README's
//! test command installs them), each made busy on one core and scanned with
//! `scan --pid` (default window): at most `notice`, and busy. The full
//! corpus, also a minute under the agent, is `cargo bench --bench benign`.

use crate::support::corpus::{self, Class, Run, Status};
use crate::support::{self};

/// Runs the corpus entry `name`; panics unless it ran busy and was scanned.
fn scan(name: &str) -> Run {
    let _heavy = support::heavy_lock();
    let _stable = support::host_state_stable();
    let entry = corpus::entry(name).unwrap_or_else(|| panic!("no corpus entry {name}"));
    let missing = corpus::missing(&entry);
    assert!(
        missing.is_empty(),
        "{name} needs {missing:?}: run the test command from the README, which installs {:?}",
        entry.debs
    );
    let run = corpus::scan_entry(&entry, corpus::pick_cpu());
    assert_eq!(run.status, Status::Scanned, "{}", run.context());
    assert!(
        run.busy_percent >= corpus::BUSY_PERCENT,
        "{}",
        run.context()
    );
    run
}

/// Runs `name`: at most notice.
fn at_most_notice(name: &str) -> Run {
    let run = scan(name);
    assert!(
        run.rank() <= 1,
        "benign {name} rated above notice: {}",
        run.context()
    );
    run
}

/// The finding of a busy JVM carries the evidence against hashing: a busy
/// thread sampled while running stayed at round-to-nearest.
fn assert_not_hashing(run: &Run) {
    let evidence: Vec<&str> = run
        .signals_with_id("rx.not_hashing")
        .into_iter()
        .filter_map(|s| s["evidence"].as_str())
        .collect();
    assert!(
        evidence.iter().any(|e| e.contains("round-to-nearest")),
        "no rx.not_hashing signal with round-to-nearest evidence ({evidence:?}): {}",
        run.context()
    );
}

#[test]
fn jvm_with_a_256_mib_heap_is_at_most_notice_and_not_hashing() {
    let run = at_most_notice("java-256m");
    assert_not_hashing(&run);
}

#[test]
fn jvm_with_a_2_gib_pretouched_heap_is_at_most_notice_and_not_hashing() {
    let run = at_most_notice("java-2g-pretouch");
    assert_not_hashing(&run);
}

/// PHP's opcache JIT with a 256 MiB buffer: RandomX's cache size beside JIT
/// code, busy.
#[test]
fn php_with_a_256_mib_jit_buffer_is_at_most_notice_and_not_hashing() {
    let run = at_most_notice("php-opcache-jit");
    assert_not_hashing(&run);
}

/// Argon2 over 256 MiB: the algorithm and size of a RandomX cache.
#[test]
fn argon2_with_256_mib_is_at_most_notice() {
    at_most_notice("argon2-256m");
}

/// A Monero node answering wallets: the RandomX engine and a busy thread,
/// which its samples clear.
#[test]
fn monero_node_serving_wallets_is_at_most_notice_and_not_hashing() {
    let run = at_most_notice("monerod-node");
    assert_not_hashing(&run);
}

#[test]
fn node_jit_float_loop_is_not_a_miner() {
    at_most_notice("node-jit-float");
}

#[test]
fn xz_9e_is_not_a_miner() {
    at_most_notice("xz-9e");
}

#[test]
fn openssl_speed_is_not_a_miner() {
    at_most_notice("openssl-speed");
}

#[test]
fn sha256sum_of_a_long_stream_is_not_a_miner() {
    at_most_notice("sha256sum");
}

#[test]
fn flac_encoder_is_not_a_miner() {
    at_most_notice("flac");
}

#[test]
fn gcc_o2_build_is_not_a_miner() {
    at_most_notice("gcc-O2");
}

#[test]
fn rustc_build_is_not_a_miner() {
    at_most_notice("rustc");
}

#[test]
fn numpy_openblas_matmul_is_not_a_miner() {
    at_most_notice("numpy-openblas");
}

#[test]
fn stress_ng_cpu_is_not_a_miner() {
    at_most_notice("stress-ng-cpu");
}

#[test]
fn python_float_loop_is_not_a_miner() {
    at_most_notice("python3-float");
}

#[test]
fn yes_is_not_a_miner() {
    at_most_notice("yes");
}

/// The subset above covers every class.
#[test]
fn the_ci_subset_covers_every_class() {
    let subset = [
        "java-256m",
        "java-2g-pretouch",
        "php-opcache-jit",
        "argon2-256m",
        "monerod-node",
        "node-jit-float",
        "xz-9e",
        "openssl-speed",
        "sha256sum",
        "flac",
        "gcc-O2",
        "rustc",
        "numpy-openblas",
        "stress-ng-cpu",
        "python3-float",
        "yes",
    ];
    let entries = corpus::entries();
    for class in Class::ALL {
        assert!(
            entries
                .iter()
                .any(|e| e.class == class && subset.contains(&e.name)),
            "no {} in the CI subset",
            class.name()
        );
    }
    // Names are unique (the bench filters by them).
    let mut names: Vec<&str> = entries.iter().map(|e| e.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), entries.len());
    assert!(entries.len() >= 30, "{} entries", entries.len());
}

/// The hand-assembled wasm module is well-formed enough for node to run.
#[test]
fn the_wasm_module_is_valid() {
    if !corpus::have("node") {
        panic!("node is missing: run the test command from the README");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let wasm = dir.path().join("m.wasm");
    std::fs::write(&wasm, corpus::wasm_module()).expect("write");
    let out = std::process::Command::new("node")
        .arg("-e")
        .arg(format!(
            "const m = new WebAssembly.Module(require('fs').readFileSync('{}')); \
             const i = new WebAssembly.Instance(m, {{}}); \
             console.log(i.exports.run(1000), i.exports.mem.buffer.byteLength)",
            wasm.display()
        ))
        .output()
        .expect("node runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.trim().ends_with(" 268435456"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
