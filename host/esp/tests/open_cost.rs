//! ESP open allocates nothing, whatever the packet (issue 10, item 1: no
//! allocation driven by packet contents). A counting global allocator checks
//! it for valid, forged, truncated, replayed and random packets.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use wisp_esp::{Aead, InboundSa, Keymat, Limits, OutboundSa, NEXT_HEADER_IPV4};

struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting on the side never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract, passed on to System as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on to System as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: the caller's contract, passed on to System as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    ALLOCS.with(|a| a.set(0));
    f();
    ALLOCS.with(|a| a.get())
}

#[test]
fn esp_open_allocates_nothing_for_any_packet() {
    for alg in [Aead::AesGcm128, Aead::AesGcm256, Aead::ChaCha20Poly1305] {
        let km = Keymat::new(&[0x42u8; 36][..alg.keymat_len()]);
        let out = OutboundSa::new(7, alg, &km, true, Limits::default()).unwrap();
        let inb = InboundSa::new(7, alg, &km, true, Limits::default()).unwrap();
        let inner = vec![0x45u8; 1400];
        let mut valid = vec![0u8; OutboundSa::sealed_len(inner.len())];
        let s = out.seal(&inner, NEXT_HEADER_IPV4, &mut valid).unwrap();
        valid.truncate(s.len);
        let mut forged = valid.clone();
        forged[40] ^= 1;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut random: Vec<Vec<u8>> = (0..200)
            .map(|i| {
                (0..i * 7)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect();
        for r in random.iter_mut().filter(|r| r.len() >= 4) {
            r[..4].copy_from_slice(&7u32.to_be_bytes()); // our SPI: reach the ICV check
        }
        let mut packets = vec![valid.clone(), valid.clone(), forged, valid[..20].to_vec(), Vec::new()];
        packets.extend(random);
        let mut opened = 0;
        let n = allocations(|| {
            for p in &mut packets {
                if inb.open(p).is_ok() {
                    opened += 1;
                }
            }
        });
        assert_eq!(opened, 1, "{alg:?}: only the first valid copy opens (the second is a replay)");
        assert_eq!(n, 0, "{alg:?}: open allocated {n} times");
    }
}
