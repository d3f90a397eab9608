//! IKE message decode (and encode round trip) on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wisp_ike::codec::fuzz::decode(data);
});
