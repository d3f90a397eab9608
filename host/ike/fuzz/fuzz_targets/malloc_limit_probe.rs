//! Not a real target: checks that `-malloc_limit_mb` is effective in this
//! build (see ../FUZZING.md). An input starting with "BIG" allocates 32 MiB,
//! which libFuzzer must report as out-of-memory under -malloc_limit_mb=16.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"BIG") {
        let v = vec![1u8; 32 << 20];
        std::hint::black_box(&v);
    }
});
