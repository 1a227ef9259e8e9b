#![no_main]
// cargo +nightly fuzz run rc_local
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::rc_local(data));
