//! Shared helpers for wisp-policy's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use wisp_policy::api::*;

/// `build/plugins/<name>.wasm` at the repository root; panics with the fix
/// when it is missing (CI builds them first).
pub fn plugin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/plugins").join(format!("{name}.wasm"));
    assert!(p.is_file(), "{} is missing: run scripts/build-plugins.sh (or plugins/hostile/build.sh)", p.display());
    p
}

pub fn ctx() -> PeerContext {
    PeerContext {
        connection: "site-a".into(),
        remote_address: "192.0.2.10".parse().unwrap(),
        remote_port: 4500,
        local_address: "192.0.2.1".parse().unwrap(),
        local_port: 4500,
        nat_detected: false,
        local_is_initiator: false,
        peer_identity: Some(Identity { kind: IdType::Fqdn, value: "alice.example.com".into() }),
        trigger: Default::default(),
    }
}

fn t(kind: TransformType, id: u16, key_length: Option<u16>) -> Transform {
    Transform { kind, id, key_length }
}

/// Three ESP proposals: AES-GCM-256, ChaCha20-Poly1305, AES-GCM-128.
pub fn proposals() -> Vec<Proposal> {
    let esn = t(TransformType::Esn, 0, None);
    vec![
        Proposal { number: 1, protocol: Protocol::Esp, transforms: vec![t(TransformType::Encryption, 20, Some(256)), esn.clone()] },
        Proposal { number: 2, protocol: Protocol::Esp, transforms: vec![t(TransformType::Encryption, 28, None), esn.clone()] },
        Proposal { number: 3, protocol: Protocol::Esp, transforms: vec![t(TransformType::Encryption, 20, Some(128)), esn] },
    ]
}

pub fn auth(id: &str) -> AuthInfo {
    AuthInfo::psk(Identity { kind: IdType::Fqdn, value: id.into() })
}

pub fn ts(a: &str, b: &str) -> TrafficSelector {
    TrafficSelector { ip_protocol: 0, start_port: 0, end_port: 65535, start_address: a.parse().unwrap(), end_address: b.parse().unwrap() }
}

pub fn selector_request() -> SelectorRequest {
    SelectorRequest {
        remote_proposed: vec![ts("10.99.1.0", "10.99.1.255")],
        local_proposed: vec![ts("10.99.0.0", "10.99.0.255")],
        remote_configured: vec![ts("10.99.1.0", "10.99.1.255")],
        local_configured: vec![ts("10.99.0.0", "10.99.0.255")],
    }
}

/// A peer `who` asking for an IPv4 address on a connection with the pools
/// rw (10.3.0.0/24) and rw6 (fd00:3::/120).
pub fn address_request(who: &str) -> AddressRequest {
    AddressRequest {
        auth: AuthInfo::psk(Identity { kind: IdType::Fqdn, value: who.into() }),
        requested: vec![AddressWanted { family: AddressFamily::Ipv4, address: None }],
        pools: vec![AddressPool::parse("rw", "10.3.0.0/24").unwrap(), AddressPool::parse("rw6", "fd00:3::/120").unwrap()],
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), for "random bytes" inputs.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(body.len(), out);
    out.extend_from_slice(body);
}

/// `component` with a custom section appended that makes it `total` bytes
/// long (still a valid component: custom sections are skipped): the
/// "oversized component" hostile plugin.
pub fn padded_component(component: &[u8], total: usize) -> Vec<u8> {
    let name = b"wisp-test-padding";
    let mut out = component.to_vec();
    // id + up to 5 bytes of size + name length byte + name.
    let payload = total.saturating_sub(out.len() + 1 + 5 + 1 + name.len());
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.resize(body.len() + payload, 0);
    out.push(0);
    // Fixed 5-byte LEB so the total is exact.
    let mut n = body.len();
    for i in 0..5 {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        out.push(if i < 4 { b | 0x80 } else { b });
    }
    out.extend_from_slice(&body);
    out
}

/// A core module of `funcs` functions with `body_bytes` of arithmetic each:
/// cheap to write, slow to compile.
pub fn slow_core_module(funcs: usize, body_bytes: usize) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut m);
    let mut fsec = Vec::new();
    leb(funcs, &mut fsec);
    fsec.resize(fsec.len() + funcs, 0);
    section(3, &fsec, &mut m);
    // local.get 0; i32.const k; i32.add; local.get 0; i32.mul; local.set 0 (k varies)
    let mut body = vec![1, 1, 0x7f];
    let mut k = 1u8;
    while body.len() + 9 < body_bytes {
        body.extend_from_slice(&[0x20, 0, 0x41, k & 0x3f, 0x6a, 0x20, 0, 0x6c, 0x21, 0]);
        k = k.wrapping_add(7);
    }
    body.push(0x0b);
    let mut code = Vec::new();
    leb(funcs, &mut code);
    for _ in 0..funcs {
        leb(body.len(), &mut code);
        code.extend_from_slice(&body);
    }
    section(10, &code, &mut m);
    m
}

/// `component` with `module` appended as a core module it never
/// instantiates (the engine still compiles it): the "slow to compile"
/// hostile plugin.
pub fn with_extra_core_module(component: &[u8], module: &[u8]) -> Vec<u8> {
    let mut out = component.to_vec();
    section(1, module, &mut out);
    out
}

/// Peak and current resident memory of this process, in KiB (VmHWM, VmRSS).
pub fn memory_kib() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        s.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Runs `body` in a child process of this test binary (running only test
/// `name`), so that memory figures are this test's alone; returns the
/// child's stdout. In the child, runs `body` and returns `None`.
pub fn isolated(name: &str, body: impl FnOnce()) -> Option<String> {
    if std::env::var("WISP_ISOLATED_TEST").as_deref() == Ok(name) {
        body();
        return None;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env("WISP_ISOLATED_TEST", name)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "isolated run of {name} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    Some(stdout)
}
