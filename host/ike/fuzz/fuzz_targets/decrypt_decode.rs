//! SK decrypt-then-decode on arbitrary bytes (see `wisp_ike::codec::fuzz`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wisp_ike::codec::fuzz::decrypt_decode(data);
});
