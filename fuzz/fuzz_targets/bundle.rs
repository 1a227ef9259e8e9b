#![no_main]
// cargo +nightly fuzz run bundle
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::bundle(data));
