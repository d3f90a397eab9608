#![no_main]
//! `cargo +nightly fuzz run open` (from host/esp): ESP open on raw and
//! mutated packets; the same body runs on random inputs in
//! `tests/esp.rs::fuzz_body_on_random_inputs` on stable.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wisp_esp::fuzz_open(data);
});
