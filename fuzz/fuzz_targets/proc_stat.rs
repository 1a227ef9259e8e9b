#![no_main]
// cargo +nightly fuzz run proc_stat
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::proc_stat(data));
