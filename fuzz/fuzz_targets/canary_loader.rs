//! The Canary loader (`coalmine_core::validate::load`: YAML or JSON, then
//! structure, then the checks) on arbitrary text: problems, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = coalmine_core::validate::load(text);
    }
});
