//! A responder engine fed sequences of valid (from a real initiator engine),
//! mutated and raw datagrams on a virtual clock (see `wisp_ike::engine_fuzz`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wisp_ike::engine_fuzz::engine_sequence(data);
});
