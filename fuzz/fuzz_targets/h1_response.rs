//! The fast path's answer parser and body decoder (`coalmine_proxy::h1`)
//! on arbitrary upstream bytes, split into arbitrary pieces: never a
//! panic, a hang or unbounded memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    coalmine_proxy::h1::decode_for_fuzzing(data);
});
