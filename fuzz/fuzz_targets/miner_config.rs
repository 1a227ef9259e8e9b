#![no_main]
// cargo +nightly fuzz run miner_config
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::miner_config(data));
