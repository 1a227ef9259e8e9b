//! Embeds the detection content (rules/) in the binary *masked*, so the
//! minerwatch binary itself does not carry the plain XMRig strings and
//! indicator lists that its own rules (or anyone else's) look for.

use std::{env, fs, path::Path};

/// Files embedded from rules/, unmasked at start-up by `minerwatch::embedded`.
const FILES: &[&str] = &[
    "yara/randomx.yar",
    "yara/xmrig.yar",
    "yara/miners.yar",
    "indicators.toml",
];
/// The mask; `src/embedded.rs` holds the same value.
const MASK: u8 = 0xA5;

fn main() {
    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    for f in FILES {
        let src = Path::new("rules").join(f);
        println!("cargo:rerun-if-changed={}", src.display());
        let bytes = fs::read(&src).unwrap_or_else(|e| panic!("reading {}: {e}", src.display()));
        let masked: Vec<u8> = bytes.iter().map(|b| b ^ MASK).collect();
        let name = f.replace('/', "_") + ".masked";
        fs::write(Path::new(&out).join(name), masked).expect("writing to OUT_DIR");
    }
}
