//! A static-key tunnel endpoint for benchmarks (`scripts/bench-tunnel.sh`):
//! one dataplane, one Child SA with fixed test keys, no IKE.
//!
//! ```text
//! wisp-static <a|b> <aes128gcm|aes256gcm|chacha20poly1305> <peer-ip> <tun-addr> <local-cidr> <remote-cidr> [offload|plain|tokio-tun]
//! ```
//! The last argument picks the TUN device (default `offload`, see
//! `wisp_gateway::dataplane::tun`).
//! Side `a` sends with SPI 0xa000000b and receives on 0xb000000a; side `b`
//! the reverse. Runs until killed; prints its counters every 10 s on stderr.
//! The keys are public test constants: never use this outside a benchmark.

use std::net::IpAddr;
use std::time::Duration;

use wisp_esp::{Aead, Keymat, Limits};
use wisp_gateway::dataplane::{ChildSaSpec, Dataplane, DataplaneConfig, TunKind};
use wisp_policy_api::TrafficSelector;

fn cidr(s: &str) -> Result<TrafficSelector, String> {
    let (a, l) = s.split_once('/').ok_or_else(|| format!("{s}: expected ADDR/LEN"))?;
    let a: IpAddr = a.parse().map_err(|e| format!("{s}: {e}"))?;
    let l: u32 = l.parse().map_err(|e| format!("{s}: {e}"))?;
    let (start, end) = match a {
        IpAddr::V4(v) => {
            let m = if l == 0 { 0 } else { u32::MAX << (32 - l.min(32)) };
            (IpAddr::from((u32::from(v) & m).to_be_bytes()), IpAddr::from((u32::from(v) | !m).to_be_bytes()))
        }
        IpAddr::V6(v) => {
            let m = if l == 0 { 0 } else { u128::MAX << (128 - l.min(128)) };
            (IpAddr::from((u128::from(v) & m).to_be_bytes()), IpAddr::from((u128::from(v) | !m).to_be_bytes()))
        }
    };
    Ok(TrafficSelector { ip_protocol: 0, start_port: 0, end_port: 0xffff, start_address: start, end_address: end })
}

fn key(aead: Aead, dir: u8) -> Keymat {
    Keymat::new(&(0..aead.keymat_len()).map(|i| (i as u8).wrapping_mul(17) ^ dir).collect::<Vec<_>>())
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(6..=7).contains(&args.len()) {
        return Err("usage: wisp-static <a|b> <aead> <peer-ip> <tun-addr> <local-cidr> <remote-cidr> [offload|plain|tokio-tun]".into());
    }
    let tun_kind: TunKind = args.get(6).map(|s| s.parse()).transpose()?.unwrap_or_default();
    let a = match args[0].as_str() {
        "a" => true,
        "b" => false,
        o => return Err(format!("side {o}: a or b")),
    };
    let aead = match args[1].as_str() {
        "aes128gcm" => Aead::AesGcm128,
        "aes256gcm" => Aead::AesGcm256,
        "chacha20poly1305" => Aead::ChaCha20Poly1305,
        o => return Err(format!("aead {o}")),
    };
    let peer: IpAddr = args[2].parse().map_err(|e| format!("peer: {e}"))?;
    let tun_addr: IpAddr = args[3].parse().map_err(|e| format!("tun addr: {e}"))?;
    let (ab, ba) = (0xa000_000b, 0xb000_000a);
    let (k_ab, k_ba) = (key(aead, 0xab), key(aead, 0xba));
    let spec = ChildSaSpec {
        spi_in: if a { ba } else { ab },
        spi_out: if a { ab } else { ba },
        aead,
        esn: true,
        key_in: if a { k_ba.clone() } else { k_ab.clone() },
        key_out: if a { k_ab } else { k_ba },
        local_ts: vec![cidr(&args[4])?],
        remote_ts: vec![cidr(&args[5])?],
        peer: (peer, wisp_esp::NAT_T_PORT).into(),
        limits: Limits::default(),
    };
    let cfg = DataplaneConfig {
        tun_name: "wisp%d".into(),
        tun_addrs: vec![(tun_addr, if tun_addr.is_ipv4() { 32 } else { 128 })],
        tun_kind,
        ..DataplaneConfig::default()
    };
    let dp = Dataplane::start(cfg, Box::new(|_, _, _| {}), Box::new(|e| eprintln!("event: {e:?}"))).map_err(|e| format!("start: {e}"))?;
    dp.install_child(spec).map_err(|e| format!("install: {e}"))?;
    let (tun_offload, udp_gro) = dp.offloads();
    println!("ready {} tun={tun_kind:?} tun_offload={tun_offload} udp_gro={udp_gro}", dp.tun_name());
    loop {
        std::thread::sleep(Duration::from_secs(10));
        let c = dp.counters();
        eprintln!("{:?}", c.global);
    }
}
