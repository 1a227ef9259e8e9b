#![no_main]
// cargo +nightly fuzz run proc_maps
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::proc_maps(data));
