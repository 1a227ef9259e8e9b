#![no_main]
// cargo +nightly fuzz run cgroup
libfuzzer_sys::fuzz_target!(|data: &[u8]| minerwatch::fuzz::cgroup(data));
