#![no_main]
// cargo +nightly fuzz run snapshot
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::snapshot(data));
