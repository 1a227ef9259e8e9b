#![no_main]
// cargo +nightly fuzz run net_tcp
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::net_tcp(data));
