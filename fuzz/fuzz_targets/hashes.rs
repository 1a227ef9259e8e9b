#![no_main]
// cargo +nightly fuzz run hashes
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::hashes(data));
