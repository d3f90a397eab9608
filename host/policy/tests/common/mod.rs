//! Shared helpers for wisp-policy's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use wisp_policy::api::*;

/// `build/plugins/<name>.wasm` at the repository root; panics with the fix
/// when it is missing (CI builds them first).
pub fn plugin(name: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/plugins").join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-plugins.sh (or plugins/hostile/build.sh)",
        p.display()
    );
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
        Proposal {
            number: 1,
            protocol: Protocol::Esp,
            transforms: vec![t(TransformType::Encryption, 20, Some(256)), esn.clone()],
        },
        Proposal {
            number: 2,
            protocol: Protocol::Esp,
            transforms: vec![t(TransformType::Encryption, 28, None), esn.clone()],
        },
        Proposal {
            number: 3,
            protocol: Protocol::Esp,
            transforms: vec![t(TransformType::Encryption, 20, Some(128)), esn],
        },
    ]
}

pub fn auth(id: &str) -> AuthInfo {
    AuthInfo {
        peer_identity: Identity { kind: IdType::Fqdn, value: id.into() },
        method: AuthMethod::Psk,
        certificate_subject: None,
        key_fingerprint: None,
    }
}

pub fn ts(a: &str, b: &str) -> TrafficSelector {
    TrafficSelector {
        ip_protocol: 0,
        start_port: 0,
        end_port: 65535,
        start_address: a.parse().unwrap(),
        end_address: b.parse().unwrap(),
    }
}

pub fn selector_request() -> SelectorRequest {
    SelectorRequest {
        remote_proposed: vec![ts("10.99.1.0", "10.99.1.255")],
        local_proposed: vec![ts("10.99.0.0", "10.99.0.255")],
        remote_configured: vec![ts("10.99.1.0", "10.99.1.255")],
        local_configured: vec![ts("10.99.0.0", "10.99.0.255")],
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
