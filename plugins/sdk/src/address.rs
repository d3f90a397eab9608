//! `assign-address` answers and the pools a request carries.
//!
//! ```ignore
//! fn assign_address(&self, _ctx: &PeerContext, req: &AddressRequest) -> Result<AddressChoice, Refusal> {
//!     if req.auth.certificate_issuer.as_deref() == Some("CN=Staff CA") && address::has_pool(req, "staff") {
//!         return Ok(address::choose(vec![address::pool("staff")]));
//!     }
//!     Ok(address::no_opinion())
//! }
//! ```
//!
//! The host enforces every answer: a pool must be one of `request.pools`, an
//! address inside one of them and free or already this peer identity's, at
//! most one pick per family the peer asked for; anything else refuses the
//! address (INTERNAL_ADDRESS_FAILURE), as a refusal does.

use std::net::IpAddr;

use crate::cidr::ip_key;
use crate::{ip_from_wit, ip_to_wit, AddressChoice, AddressFamily, AddressPick, AddressPool, AddressRequest};

/// No opinion: the host leases every family as it would without a plugin.
pub fn no_opinion() -> AddressChoice {
    AddressChoice { picks: Vec::new() }
}

/// These picks (at most one per family asked for).
pub fn choose(picks: Vec<AddressPick>) -> AddressChoice {
    AddressChoice { picks }
}

/// A pick of the connection's pool `name` (the host picks the address in it).
pub fn pool(name: &str) -> AddressPick {
    AddressPick::Pool(name.to_string())
}

/// A pick of exactly `addr`.
pub fn exact(addr: IpAddr) -> AddressPick {
    AddressPick::Address(ip_to_wit(addr))
}

/// The family of an address.
pub fn family_of(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv6() {
        AddressFamily::Ipv6
    } else {
        AddressFamily::Ipv4
    }
}

/// True when the peer asked for an address of `family`.
pub fn wants(request: &AddressRequest, family: AddressFamily) -> bool {
    request.requested.iter().any(|w| w.family == family)
}

/// The connection's pool called `name`, if it has one.
pub fn find_pool<'a>(request: &'a AddressRequest, name: &str) -> Option<&'a AddressPool> {
    request.pools.iter().find(|p| p.name == name)
}

/// True when the connection has a pool called `name`.
pub fn has_pool(request: &AddressRequest, name: &str) -> bool {
    find_pool(request, name).is_some()
}

/// True when `addr` lies inside `pool`.
pub fn pool_contains(pool: &AddressPool, addr: IpAddr) -> bool {
    let a = ip_key(&ip_to_wit(addr));
    let (first, last) = (ip_key(&pool.first), ip_key(&pool.last));
    a.0 == first.0 && first.1 <= a.1 && a.1 <= last.1
}

/// The family of a pick: the address's, or the pool's when the request has
/// it (`None` for a pool the connection does not have).
pub fn pick_family(request: &AddressRequest, pick: &AddressPick) -> Option<AddressFamily> {
    match pick {
        AddressPick::Address(a) => Some(family_of(ip_from_wit(a))),
        AddressPick::Pool(name) => find_pool(request, name).map(|p| p.family),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AddressWanted, AuthInfo, AuthMethod, IdType, Identity};

    fn request() -> AddressRequest {
        let pool = |name: &str, family, first: &str, last: &str| AddressPool {
            name: name.into(),
            family,
            range: format!("{first}-{last}"),
            first: ip_to_wit(first.parse().unwrap()),
            last: ip_to_wit(last.parse().unwrap()),
            size: 0,
        };
        AddressRequest {
            auth: AuthInfo {
                peer_identity: Identity { kind: IdType::Fqdn, value: "a.example".into() },
                method: AuthMethod::Psk,
                certificate_subject: None,
                key_fingerprint: None,
                certificate_issuer: None,
                subject_alt_names: Vec::new(),
                certificate_serial: None,
                certificate_not_after: None,
                eap_identity: None,
                eap_method: None,
            },
            requested: vec![AddressWanted { family: AddressFamily::Ipv4, address: None }],
            pools: vec![
                pool("rw", AddressFamily::Ipv4, "10.3.0.1", "10.3.0.254"),
                pool("rw6", AddressFamily::Ipv6, "fd00::1", "fd00::ff"),
            ],
        }
    }

    #[test]
    fn pools_and_picks() {
        let r = request();
        assert!(wants(&r, AddressFamily::Ipv4) && !wants(&r, AddressFamily::Ipv6));
        assert!(has_pool(&r, "rw6") && !has_pool(&r, "staff"));
        let rw = find_pool(&r, "rw").unwrap();
        assert!(pool_contains(rw, "10.3.0.254".parse().unwrap()));
        assert!(!pool_contains(rw, "10.3.0.255".parse().unwrap()));
        assert!(!pool_contains(rw, "fd00::5".parse().unwrap()));
        assert_eq!(pick_family(&r, &pool("rw6")), Some(AddressFamily::Ipv6));
        assert_eq!(pick_family(&r, &pool("staff")), None);
        assert_eq!(pick_family(&r, &exact("10.9.9.9".parse().unwrap())), Some(AddressFamily::Ipv4));
        assert!(no_opinion().picks.is_empty());
    }
}
