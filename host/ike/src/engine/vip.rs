//! Virtual IPs and the configuration payload (RFC 7296 3.15), both roles.
//!
//! Responder: a connection with `pools` answers a CFG_REQUEST in IKE_AUTH
//! with a CFG_REPLY: an address per family asked for, leased from the
//! daemon-wide [`crate::pool::Pools`] to the peer's authenticated identity,
//! the pool's DNS servers and subnets. The policy's `assign-address` may
//! pick a family's pool or exact address first; the host holds the answer
//! to the connection's pools (a named pool must be one of them and of the
//! family, an address inside them and free or already this identity's,
//! one pick per family asked for) and refuses the address otherwise. The peer's side of every Child SA
//! of that IKE SA is narrowed to its addresses. No address to give: the
//! IKE SA is made without a Child SA, INTERNAL_ADDRESS_FAILURE says why
//! (RFC 7296 3.10.1), and the IKE SA is deleted. Leases go back to the
//! pool when the IKE SA goes (an IKE rekey moves them to the new SA).
//!
//! Initiator: a connection with `vips` sends a CFG_REQUEST (the address
//! it asks for, or none for "any", and DNS) and proposes `0.0.0.0/0` /
//! `::/0` for its own side of the first Child SA until the reply names its
//! addresses, which then are its side of every Child SA.
//!
//! A child's selectors left empty in the configuration are swanctl's
//! `dynamic`: on our side our virtual IPs (else our outer address), on the
//! peer's its virtual IPs (else its outer address).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wisp_policy_api::{AddressFamily, AddressPick, AddressRequest, AddressWanted, AuthInfo, PolicyError, TrafficSelector};

use crate::codec::{CfgType, ConfigAttrType, ConfigAttribute, CpPayload, Payload};
use crate::event::FailureReason;
use crate::pool::{Lease, PoolError};

use super::sa::IkeSa;
use super::Engine;

/// The virtual IPs of an IKE SA.
#[derive(Debug, Clone, Default)]
pub(crate) struct Vips {
    /// True: ours, received in a CFG_REPLY (we initiated). False: the
    /// peer's, leased by us (`leases`).
    pub mine: bool,
    pub addrs: Vec<IpAddr>,
    /// DNS servers received (ours) or sent (the peer's).
    pub dns: Vec<IpAddr>,
    pub leases: Vec<Lease>,
}

/// At most this many attributes of one kind are taken from a CFG_REPLY.
const MAX_REPLY_ADDRS: usize = 8;

pub(crate) fn host_ts(a: IpAddr) -> TrafficSelector {
    TrafficSelector { ip_protocol: 0, start_port: 0, end_port: 65535, start_address: a, end_address: a }
}

fn any_ts(v6: bool) -> TrafficSelector {
    let (s, e) = if v6 {
        (IpAddr::V6(Ipv6Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::from(u128::MAX)))
    } else {
        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V4(Ipv4Addr::BROADCAST))
    };
    TrafficSelector { ip_protocol: 0, start_port: 0, end_port: 65535, start_address: s, end_address: e }
}

fn attr(t: ConfigAttrType, value: Vec<u8>) -> ConfigAttribute {
    ConfigAttribute { attr_type: t, value }
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

fn v4(v: &[u8]) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v.get(..4)?).ok()?)))
}

fn v6(v: &[u8]) -> Option<IpAddr> {
    Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v.get(..16)?).ok()?)))
}

fn cp_of(payloads: &[Payload], t: CfgType) -> Option<&CpPayload> {
    payloads.iter().find_map(|p| match p {
        Payload::Cp(c) if c.cfg_type == t => Some(c),
        _ => None,
    })
}

/// The address families and addresses a CFG_REQUEST asks for: `(v6, wanted)`.
fn requested(cp: &CpPayload) -> Vec<(bool, Option<IpAddr>)> {
    let mut out: Vec<(bool, Option<IpAddr>)> = Vec::new();
    for a in &cp.attributes {
        let (fam, want) = match a.attr_type {
            ConfigAttrType::INTERNAL_IP4_ADDRESS => (false, v4(&a.value).filter(|ip| !ip.is_unspecified())),
            ConfigAttrType::INTERNAL_IP6_ADDRESS => (true, v6(&a.value).filter(|ip| !ip.is_unspecified())),
            _ => continue,
        };
        if !out.iter().any(|(f, _)| *f == fam) {
            out.push((fam, want));
        }
    }
    out
}

impl Engine {
    /// Our side of a child's selectors with `dynamic` (empty) resolved.
    pub(super) fn local_ts_for(&self, sa: &IkeSa, configured: &[TrafficSelector]) -> Vec<TrafficSelector> {
        if !configured.is_empty() {
            return configured.to_vec();
        }
        let conn = &self.config.connections[sa.conn];
        match sa.vip.as_deref() {
            Some(v) if v.mine && !v.addrs.is_empty() => v.addrs.iter().copied().map(host_ts).collect(),
            _ if !conn.vips.is_empty() => {
                let mut fams: Vec<bool> = conn.vips.iter().map(IpAddr::is_ipv6).collect();
                fams.dedup();
                fams.into_iter().map(any_ts).collect()
            }
            _ => vec![host_ts(sa.local.ip())],
        }
    }

    /// The peer's side of a child's selectors: `dynamic` resolved, and
    /// narrowed to the peer's virtual IPs when we leased it some (empty:
    /// none of them lies inside the configured selectors).
    pub(super) fn remote_ts_for(&self, sa: &IkeSa, configured: &[TrafficSelector]) -> Vec<TrafficSelector> {
        let peer_vips: &[IpAddr] = match sa.vip.as_deref() {
            Some(v) if !v.mine => &v.addrs,
            _ => &[],
        };
        if configured.is_empty() {
            if peer_vips.is_empty() {
                return vec![host_ts(sa.remote.ip())];
            }
            return peer_vips.iter().copied().map(host_ts).collect();
        }
        if peer_vips.is_empty() {
            return configured.to_vec();
        }
        let mut out = Vec::new();
        for ts in configured {
            for &a in peer_vips.iter().filter(|a| a.is_ipv4() == ts.start_address.is_ipv4()) {
                if ts.start_address <= a && a <= ts.end_address {
                    out.push(TrafficSelector { start_address: a, end_address: a, ..ts.clone() });
                }
            }
        }
        out
    }

    /// The policy's picks for the families `asked`, held to the
    /// connection's pools. `Err` when the policy refused, failed, deferred
    /// (the caller sees [`super::deferral::Asker::take_deferred`]) or answered
    /// outside the pools.
    fn address_picks(
        &self,
        sa: &IkeSa,
        auth: &AuthInfo,
        asked: &[(bool, Option<IpAddr>)],
    ) -> Result<Vec<(AddressFamily, AddressPick)>, FailureReason> {
        let conn = &self.config.connections[sa.conn];
        let family = |v6: bool| if v6 { AddressFamily::Ipv6 } else { AddressFamily::Ipv4 };
        let request = AddressRequest {
            auth: auth.clone(),
            requested: asked.iter().map(|&(v6, address)| AddressWanted { family: family(v6), address }).collect(),
            pools: conn.pools.iter().filter_map(|n| self.pools.config(n)).map(|p| p.for_policy()).collect(),
        };
        let ctx = self.ctx(sa, sa.conn, false);
        let choice = self.policy.assign_address(&ctx, &request).map_err(|e| match e {
            PolicyError::Refused { decider, reason } => {
                FailureReason::AddressRefused { policy: decider, why: format!("refused an address: {reason}") }
            }
            PolicyError::Failed { decider, detail } => FailureReason::AddressRefused { policy: decider, why: format!("failed: {detail}") },
            PolicyError::Deferred { decider } => FailureReason::AddressRefused { policy: decider, why: "has not decided yet".into() },
        })?;
        request.check(&choice).map_err(|e| FailureReason::AddressRefused { policy: self.policy.describe(), why: e.to_string() })
    }

    /// Responder, IKE_AUTH: lease what a CFG_REQUEST asks for, to the peer
    /// `auth` describes. `Ok(None)`: nothing to answer (no request, or a
    /// connection without pools). `Err`: an address was asked for and none
    /// could be leased, or the policy's answer was refused (nothing is
    /// leased then); when the policy deferred, nothing was leased either.
    pub(super) fn assign_vips(&mut self, sa: &mut IkeSa, payloads: &[Payload], auth: &AuthInfo) -> Result<Option<Payload>, FailureReason> {
        let Some(req) = cp_of(payloads, CfgType::REQUEST) else { return Ok(None) };
        let conn = &self.config.connections[sa.conn];
        if conn.pools.is_empty() {
            return Ok(None);
        }
        let asked = requested(req);
        if asked.is_empty() {
            return Ok(None);
        }
        // An EAP peer's lease goes with its EAP identity (the user), not
        // the IKE identity (often just the client's address).
        let owner = match &sa.eap_identity {
            Some(e) => Some(wisp_policy_api::Identity {
                kind: if e.contains('@') { wisp_policy_api::IdType::Rfc822Addr } else { wisp_policy_api::IdType::Fqdn },
                value: e.to_string(),
            }),
            None => sa.remote_id.clone(),
        };
        let Some(owner) = owner else {
            return Err(FailureReason::NoAddress { why: "no authenticated peer identity to lease to".into() });
        };
        let picks = self.address_picks(sa, auth, &asked)?;
        let conn = &self.config.connections[sa.conn];
        let mut vips = Vips::default();
        let mut errors = Vec::new();
        for (v6, want) in asked {
            let lease = match picks.iter().find(|(f, _)| f.is_ipv6() == v6).map(|(_, p)| p) {
                None => self.pools.acquire(&conn.pools, &owner, v6, want).map_err(|e| e.to_string()),
                Some(AddressPick::Pool(name)) => self
                    .pools
                    .acquire(std::slice::from_ref(name), &owner, v6, want)
                    .map_err(|e| format!("{e} (pool picked by policy {})", self.policy.describe())),
                Some(AddressPick::Address(a)) => match self.pools.acquire_exact(&conn.pools, &owner, *a) {
                    Ok(l) => Ok(l),
                    Err(e) => {
                        // The policy's own choice cannot be honoured: fail closed.
                        for l in &vips.leases {
                            self.pools.release(l);
                        }
                        let why = match e {
                            PoolError::Unavailable { addr, why } => format!("assigned {addr}, {why}"),
                            other => format!("assigned {a}: {other}"),
                        };
                        return Err(FailureReason::AddressRefused { policy: self.policy.describe(), why });
                    }
                },
            };
            match lease {
                Ok(l) => {
                    vips.addrs.push(l.addr);
                    vips.leases.push(l);
                }
                Err(why) => errors.push(why),
            }
        }
        if vips.leases.is_empty() {
            return Err(FailureReason::NoAddress { why: errors.join("; ") });
        }
        let mut attrs = Vec::new();
        let mut seen_pools: Vec<String> = Vec::new();
        for l in &vips.leases {
            if l.addr.is_ipv4() {
                attrs.push(attr(ConfigAttrType::INTERNAL_IP4_ADDRESS, octets(l.addr)));
            } else {
                let mut v = octets(l.addr);
                v.push(128);
                attrs.push(attr(ConfigAttrType::INTERNAL_IP6_ADDRESS, v));
            }
            if seen_pools.contains(&l.pool) {
                continue;
            }
            seen_pools.push(l.pool.clone());
            let Some(p) = self.pools.config(&l.pool) else { continue };
            for d in &p.dns {
                let t = if d.is_ipv4() { ConfigAttrType::INTERNAL_IP4_DNS } else { ConfigAttrType::INTERNAL_IP6_DNS };
                attrs.push(attr(t, octets(*d)));
                vips.dns.push(*d);
            }
            for (net, len) in &p.subnets {
                match net {
                    IpAddr::V4(n) => {
                        let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from(*len)) };
                        let mut v = n.octets().to_vec();
                        v.extend_from_slice(&mask.to_be_bytes());
                        attrs.push(attr(ConfigAttrType::INTERNAL_IP4_SUBNET, v));
                    }
                    IpAddr::V6(n) => {
                        let mut v = n.octets().to_vec();
                        v.push(*len);
                        attrs.push(attr(ConfigAttrType::INTERNAL_IP6_SUBNET, v));
                    }
                }
            }
        }
        sa.vip = Some(Box::new(vips));
        Ok(Some(Payload::Cp(CpPayload { cfg_type: CfgType::REPLY, attributes: attrs })))
    }

    /// Initiator, IKE_AUTH request: the CFG_REQUEST for the connection's `vips`.
    pub(super) fn cp_request(&self, sa: &IkeSa) -> Option<Payload> {
        let conn = &self.config.connections[sa.conn];
        if conn.vips.is_empty() {
            return None;
        }
        // A reauthentication asks for the addresses the old SA holds.
        let current: Vec<IpAddr> = match sa.reauth_of.and_then(|id| self.sas.get(&id)).and_then(|o| o.vip.as_deref()) {
            Some(v) if v.mine => v.addrs.clone(),
            _ => Vec::new(),
        };
        let mut attrs = Vec::new();
        for &a in &conn.vips {
            let a = &current.iter().copied().find(|c| c.is_ipv6() == a.is_ipv6()).unwrap_or(a);
            match a {
                IpAddr::V4(_) => {
                    let v = if a.is_unspecified() { Vec::new() } else { octets(*a) };
                    attrs.push(attr(ConfigAttrType::INTERNAL_IP4_ADDRESS, v));
                    attrs.push(attr(ConfigAttrType::INTERNAL_IP4_DNS, Vec::new()));
                }
                IpAddr::V6(_) => {
                    let v = if a.is_unspecified() {
                        Vec::new()
                    } else {
                        let mut v = octets(*a);
                        v.push(128);
                        v
                    };
                    attrs.push(attr(ConfigAttrType::INTERNAL_IP6_ADDRESS, v));
                    attrs.push(attr(ConfigAttrType::INTERNAL_IP6_DNS, Vec::new()));
                }
            }
        }
        Some(Payload::Cp(CpPayload { cfg_type: CfgType::REQUEST, attributes: attrs }))
    }

    /// Initiator, IKE_AUTH response: take the addresses and DNS servers of
    /// a CFG_REPLY. `Err` when we asked for an address and got none.
    pub(super) fn take_cp_reply(&mut self, sa: &mut IkeSa, payloads: &[Payload]) -> Result<(), FailureReason> {
        let conn = &self.config.connections[sa.conn];
        if conn.vips.is_empty() {
            return Ok(());
        }
        let mut v = Vips { mine: true, ..Vips::default() };
        if let Some(cp) = cp_of(payloads, CfgType::REPLY) {
            for a in &cp.attributes {
                let (is_addr, ip) = match a.attr_type {
                    ConfigAttrType::INTERNAL_IP4_ADDRESS => (true, v4(&a.value)),
                    ConfigAttrType::INTERNAL_IP6_ADDRESS => (true, v6(&a.value)),
                    ConfigAttrType::INTERNAL_IP4_DNS => (false, v4(&a.value)),
                    ConfigAttrType::INTERNAL_IP6_DNS => (false, v6(&a.value)),
                    _ => continue,
                };
                // Addresses only of families we asked for; none unspecified or twice.
                let Some(ip) = ip.filter(|ip| !ip.is_unspecified()) else { continue };
                if is_addr && !conn.vips.iter().any(|r| r.is_ipv6() == ip.is_ipv6()) {
                    continue;
                }
                let list = if is_addr { &mut v.addrs } else { &mut v.dns };
                if !list.contains(&ip) && list.len() < MAX_REPLY_ADDRS {
                    list.push(ip);
                }
            }
        }
        let got = !v.addrs.is_empty();
        sa.vip = Some(Box::new(v));
        if got {
            Ok(())
        } else {
            Err(FailureReason::NoVirtualIp { requested: conn.vips.clone() })
        }
    }

    /// The virtual IPs of a rekeyed IKE SA's successor: the same addresses,
    /// each lease held once more (the old SA releases its own hold).
    pub(super) fn inherit_vips(&self, old: &IkeSa) -> Option<Box<Vips>> {
        let mut v = old.vip.as_deref()?.clone();
        v.leases.retain(|l| self.pools.retain(l));
        Some(Box::new(v))
    }

    /// The SA is gone: its leases go back to the pool.
    pub(super) fn release_vips(&self, sa: &mut IkeSa) {
        if let Some(v) = sa.vip.take() {
            for l in &v.leases {
                self.pools.release(l);
            }
        }
    }
}
