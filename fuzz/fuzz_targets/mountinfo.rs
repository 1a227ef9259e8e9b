#![no_main]
// cargo +nightly fuzz run mountinfo
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::mountinfo(data));
