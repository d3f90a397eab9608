//! The cost of decoding hostile datagrams (issue 10, item 1): a counting
//! global allocator measures the bytes allocated while one thread decodes,
//! which must stay within a small multiple of the datagram's length, and the
//! time per datagram must stay small.
//!
//! The finding: an IKE_SA_INIT of 2,076 bytes holding 256 Delete payloads with
//! SPI size 0 and 65,535 SPIs each drove a responder to 409 MB of RSS and
//! 1.3 s of CPU for 20 datagrams (a `resize` to 65,535 empty vectors per
//! payload).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_ike::codec::sk::{decrypt_fragment, decrypt_message, encrypt_message, Reassembler};
use wisp_ike::codec::*;
use wisp_ike::crypto::{EncrAlg, SkCipher};

struct Counting;

thread_local! {
    /// Bytes allocated by this thread since the counter was reset (realloc
    /// counts the new size), and the peak of live bytes.
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(add: usize, free: usize) {
    let _ = ALLOCATED.try_with(|a| a.set(a.get() + add));
    let _ = LIVE.try_with(|l| {
        let v = l.get() + add as isize - free as isize;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting on the side never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 0);
        // SAFETY: the caller's contract, passed on to System as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(0, layout.size());
        // SAFETY: the caller's contract, passed on to System as is.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size(), 0);
        // SAFETY: the caller's contract, passed on to System as is.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size, layout.size());
        // SAFETY: the caller's contract, passed on to System as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Cost of running `f` on this thread: (bytes allocated, peak live bytes above the start).
fn cost<R>(f: impl FnOnce() -> R) -> (usize, usize, R) {
    ALLOCATED.with(|a| a.set(0));
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    let r = f();
    let total = ALLOCATED.with(|a| a.get());
    let peak = PEAK.with(|p| p.get()).max(0) as usize;
    (total, peak, r)
}

/// The bound every hostile datagram must meet: a small multiple of its length
/// (the decode budget is 8 bytes per input byte + 4 KiB of kept structures;
/// vector growth and the copy of the input can double that).
fn bound(len: usize) -> usize {
    24 * len + 16 * 1024
}

fn message(first: PayloadType, body: &[u8]) -> Vec<u8> {
    let h = Header::new(0x1111_2222_3333_4444, 0, ExchangeType::IKE_SA_INIT, Flags::new(true, false), 0);
    let mut out = Vec::new();
    h.encode_into(first, (Header::LEN + body.len()) as u32, &mut out);
    out.extend_from_slice(body);
    out
}

/// `n` copies of one payload body, chained.
fn repeated(t: PayloadType, body: &[u8], n: usize) -> Vec<u8> {
    let mut chain = Vec::new();
    for i in 0..n {
        chain.push(if i + 1 == n { 0 } else { t.0 });
        chain.push(0);
        chain.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
        chain.extend_from_slice(body);
    }
    message(t, &chain)
}

/// The datagram of the finding: 256 Deletes, SPI size 0, 65,535 SPIs each.
fn zero_size_spi_deletes() -> Vec<u8> {
    repeated(PayloadType::DELETE, &[1, 0, 0xff, 0xff], 256)
}

#[test]
fn delete_with_65535_zero_size_spis_allocates_nothing() {
    let d = zero_size_spi_deletes();
    assert_eq!(d.len(), 2076, "the datagram of the finding");
    let (total, peak, r) = cost(|| Message::decode(&d));
    assert_eq!(r, Err(DecodeError::Malformed("Delete SPIs of size zero")));
    // nothing is kept: the payload vector is the only allocation
    assert!(total <= 1024, "decoding the hostile datagram allocated {total} bytes (peak {peak})");

    // and through a responder engine, 20 datagrams as in the review
    let (cfg, policy) = responder();
    let mut e = wisp_ike::engine::Engine::new(cfg, policy, [3; 32]).unwrap();
    let local: SocketAddr = "10.0.0.2:500".parse().unwrap();
    let remote: SocketAddr = "10.0.0.1:500".parse().unwrap();
    let now = Duration::from_secs(1);
    let start = Instant::now();
    let (total, peak, ()) = cost(|| {
        for _ in 0..20 {
            e.handle_datagram(now, local, remote, &d);
        }
    });
    let took = start.elapsed();
    assert!(total <= 20 * bound(d.len()), "20 datagrams allocated {total} bytes");
    assert!(peak <= bound(d.len()), "peak live {peak} bytes");
    assert!(took < Duration::from_millis(200), "20 datagrams took {took:?}");
    assert!(e.poll_transmit().is_none(), "no answer to a malformed IKE_SA_INIT");
    assert_eq!(e.half_open_count(), 0);
}

fn responder() -> (wisp_ike::config::Config, Arc<dyn wisp_policy_api::Policy>) {
    use wisp_ike::config::*;
    let mut c =
        ConnectionConfig::new("ba", identity("b.example"), Some(identity("a.example")), b"psk", &["aes256gcm16-prfsha256-x25519"]).unwrap();
    c.children.push(
        ChildConfig::new("net", vec![selector("10.2.0.0/24").unwrap()], vec![selector("10.1.0.0/24").unwrap()], &["aes256gcm16"]).unwrap(),
    );
    let cfg = Config { connections: vec![c], ..Config::default() };
    let p: Arc<dyn wisp_policy_api::Policy> = Arc::new(wisp_ike::native_policy::ConfigPolicy::new(&cfg));
    (cfg, p)
}

/// Hostile datagrams of every shape, each near a limit.
fn hostile() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = vec![("256 zero-size-SPI Deletes", zero_size_spi_deletes())];
    // one Delete of 1-byte SPIs filling a 64 KiB datagram
    let n = 65_535 - Header::LEN - 8;
    let mut b = vec![0, 0, 0, 0, 3, 1];
    b.extend_from_slice(&(n as u16).to_be_bytes());
    b.extend(std::iter::repeat_n(1u8, n));
    let l = b.len() as u16;
    b[2..4].copy_from_slice(&l.to_be_bytes());
    v.push(("Delete of 65,499 one-byte SPIs", message(PayloadType::DELETE, &b)));
    // the largest accepted Delete (4-byte SPIs)
    let n = (65_535 - Header::LEN - 8) / 4;
    let mut b = vec![0, 0, 0, 0, 3, 4];
    b.extend_from_slice(&(n as u16).to_be_bytes());
    b.extend(std::iter::repeat_n(1u8, n * 4));
    let l = b.len() as u16;
    b[2..4].copy_from_slice(&l.to_be_bytes());
    v.push(("Delete of 16,374 SPIs", message(PayloadType::DELETE, &b)));
    // TS payloads claiming 255 selectors each, holding none
    v.push(("TS claiming 255 selectors", repeated(PayloadType::TSI, &[255, 0, 0, 0], 128)));
    // SA proposals claiming 255 transforms in 8 bytes
    let mut sa = Vec::new();
    for p in 0..255 {
        sa.extend_from_slice(&[if p == 254 { 0 } else { 2 }, 0, 0, 8, p as u8 + 1, 1, 0, 255]);
    }
    v.push(("SA with 255 proposals claiming 255 transforms", repeated(PayloadType::SA, &sa, 1)));
    // SA with 255 proposals x 255 transforms is too big for one payload; the densest: attributes
    let mut tr = vec![0, 0, 0, 0, 1, 0, 0, 20];
    for _ in 0..MAX_ATTRIBUTES {
        tr.extend_from_slice(&[0x80, 14, 1, 0]);
    }
    let tl = tr.len() as u16;
    tr[2..4].copy_from_slice(&tl.to_be_bytes());
    let mut prop = vec![0, 0, 0, 0, 1, 1, 0, 1];
    prop.extend_from_slice(&tr);
    let pl = prop.len() as u16;
    prop[2..4].copy_from_slice(&pl.to_be_bytes());
    v.push(("SA payloads of 128 TV attributes", repeated(PayloadType::SA, &prop, 120)));
    // CP with the most empty attributes, many times
    let mut cp = vec![1, 0, 0, 0];
    for _ in 0..MAX_ATTRIBUTES {
        cp.extend_from_slice(&[0, 1, 0, 0]);
    }
    v.push(("CP payloads of 128 empty attributes", repeated(PayloadType::CP, &cp, 120)));
    // the most empty payloads, and one too many
    v.push(("128 empty Vendor IDs", repeated(PayloadType::VENDOR_ID, &[], MAX_PAYLOADS)));
    v.push(("129 empty Vendor IDs", repeated(PayloadType::VENDOR_ID, &[], MAX_PAYLOADS + 1)));
    v.push(("128 empty TS", repeated(PayloadType::TSR, &[0, 0, 0, 0], MAX_PAYLOADS)));
    v.push(("128 empty unknown payloads", repeated(PayloadType(222), &[], MAX_PAYLOADS)));
    v.push(("notify with 255-byte SPI", repeated(PayloadType::NOTIFY, &[0; 259].map(|_| 255u8), 100)));
    v
}

#[test]
fn hostile_datagrams_allocate_in_proportion_to_their_length() {
    for (what, d) in hostile() {
        let start = Instant::now();
        let (total, peak, r) = cost(|| Message::decode(&d).map(|m| m.payloads.len()));
        let took = start.elapsed();
        println!("{what}: {} bytes -> {r:?}, allocated {total}, peak {peak}, {took:?}", d.len());
        assert!(total <= bound(d.len()), "{what}: {} bytes allocated {total}", d.len());
        assert!(took < Duration::from_millis(100), "{what}: took {took:?}");
    }
}

#[test]
fn hostile_inner_chains_allocate_in_proportion_to_their_length() {
    // the same chains behind a valid ICV (authenticated peer), opened with decrypt_message
    let mut c = SkCipher::new(EncrAlg::AesGcm16_128, &[9u8; 20]).unwrap();
    let h = Header::new(1, 2, ExchangeType::INFORMATIONAL, Flags::new(true, false), 1);
    for (what, d) in hostile() {
        let Ok(m) = Message::decode(&d) else { continue };
        if m.payloads.len() >= MAX_PAYLOADS {
            continue; // the SK payload would be one too many
        }
        let Ok(enc) = encrypt_message(&h, &m.payloads, &mut c) else { continue };
        if enc.len() > DecodeLimits::DEFAULT.max_len {
            continue; // over the input limit once encrypted
        }
        let (total, _, r) = cost(|| decrypt_message(&enc, &c).map(|m| m.payloads.len()));
        // near the budget's edge the SK copy can tip it over: then a clean error
        assert!(r.is_ok() || matches!(r, Err(sk::SkError::Decode(DecodeError::OverBudget(_)))), "{what}: {r:?}");
        assert!(total <= bound(enc.len()), "{what}: {} bytes allocated {total}", enc.len());
    }
}

#[test]
fn fragment_sets_are_bounded() {
    // an authenticated peer sending fragments of one huge message: the set
    // is dropped at MAX_BYTES, whatever the announced count
    let mut c = SkCipher::new(EncrAlg::AesGcm16_128, &[9u8; 20]).unwrap();
    let h = Header::new(1, 2, ExchangeType::IKE_AUTH, Flags::new(true, false), 1);
    let inner = vec![Payload::Cert(CertPayload { encoding: CertEncoding::X509_SIGNATURE, data: vec![5; 50_000] }); 4];
    let frags = wisp_ike::codec::sk::encrypt_fragments(&h, &inner, &mut c, 4000).unwrap();
    assert!(frags.len() <= Reassembler::MAX_FRAGMENTS as usize);
    let mut r = Reassembler::new();
    let (_, peak, res) = cost(|| {
        for f in &frags {
            let f = decrypt_fragment(f, &c).unwrap();
            r.add(f)?;
        }
        Ok::<(), wisp_ike::codec::sk::SkError>(())
    });
    assert!(res.is_err(), "a 200 kB message must not be reassembled");
    assert!(peak <= 2 * Reassembler::MAX_BYTES + 64 * 1024, "peak {peak}");
}
