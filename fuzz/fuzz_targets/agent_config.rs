#![no_main]
// cargo +nightly fuzz run agent_config
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::agent_config(data));
