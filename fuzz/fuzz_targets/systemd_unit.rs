#![no_main]
// cargo +nightly fuzz run systemd_unit
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::systemd_unit(data));
