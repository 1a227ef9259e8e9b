#![no_main]
// cargo +nightly fuzz run crontab
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::crontab(data));
