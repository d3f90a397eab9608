//! The policy wisp ships.
//!
//! Settings (`[plugin.settings]`):
//! - `allowed_ids` (text list): peer identities allowed to connect. FQDN and
//!   e-mail identities compare case-insensitively, others exactly.
//! - `allow_any` (boolean, default false): allow every authenticated peer.
//!
//! With neither, nobody is authorized (deny by default).
//!
//! Proposals: AEAD only — AES-GCM-16 with a key of at least 128 bits, or
//! ChaCha20-Poly1305 — with PRF HMAC-SHA2-256/384/512 (IKE SAs) and a modern
//! key exchange: Curve25519 (31), ECP-256/384/521 (19, 20, 21); Child SAs may
//! also offer no key exchange (no PFS). A proposal is an OR within each
//! transform type (RFC 7296 3.3): alternatives the policy does not accept
//! (AES-CCM, SHA-1, MODP groups next to acceptable ones) are excluded by naming
//! the accepted transform of that type, inside the configured proposals; a
//! proposal is refused only when a type has no acceptable transform. As
//! initiator, the configured proposals keep their order, minus the unacceptable
//! ones.
//!
//! Traffic selectors: each side narrowed to the intersection of what was
//! proposed and the connection's configured ranges (TS_UNACCEPTABLE if empty).
//!
//! Virtual IPs: no opinion (`assign-address` answers no pick, the SDK's
//! default): the host leases from the connection's pools in their order, an
//! identity's own lease first, exactly as without a plugin.

use wisp_plugin_sdk::*;

struct DefaultPolicy {
    allowed_ids: Vec<String>,
    allow_any: bool,
}

const MODERN_DH: &[u16] = &[ids::CURVE25519, ids::ECP_256, ids::ECP_384, ids::ECP_521];
const SHA2_PRF: &[u16] = &[ids::PRF_HMAC_SHA2_256, ids::PRF_HMAC_SHA2_384, ids::PRF_HMAC_SHA2_512];

const POLICY_TEXT: &str = "policy accepts AEAD only (AES_GCM_16 >= 128 bits or CHACHA20_POLY1305), \
PRF_HMAC_SHA2_256/384/512 and DH groups 31, 19, 20, 21";

fn label(t: &Transform) -> String {
    let n = if t.name.is_empty() { format!("TYPE{}_{}", t.raw_type, t.id) } else { t.name.clone() };
    match t.key_length {
        Some(b) => format!("{n}-{b}"),
        None => n,
    }
}

/// Why one transform is unacceptable, or `None` when it is acceptable.
fn transform_problem(kind: SaKind, t: &Transform) -> Option<String> {
    match t.kind {
        TransformType::Encryption => match t.id {
            ids::ENCR_AES_GCM_16 => match t.key_length {
                Some(b) if b >= 128 => None,
                Some(b) => Some(format!("{} key of {b} bits is below 128", label(t))),
                None => Some(format!("{} without a key length", label(t))),
            },
            ids::ENCR_CHACHA20_POLY1305 => None,
            _ if ids::AEAD.contains(&t.id) => Some(format!("{} is not an accepted AEAD", label(t))),
            _ => Some(format!("{} is not AEAD", label(t))),
        },
        TransformType::Integrity if t.id == ids::AUTH_NONE => None,
        TransformType::Integrity => Some(format!("integrity {} (AEAD needs none)", label(t))),
        TransformType::Prf if kind == SaKind::Child => Some(format!("PRF {} in a Child SA proposal", label(t))),
        TransformType::Prf if SHA2_PRF.contains(&t.id) => None,
        TransformType::Prf => Some(format!("{} is not HMAC-SHA2", label(t))),
        TransformType::KeyExchange if t.id == ids::KE_NONE => {
            (kind == SaKind::Ike).then(|| "KE NONE for an IKE SA".to_string())
        }
        TransformType::KeyExchange if MODERN_DH.contains(&t.id) => None,
        TransformType::KeyExchange => Some(format!("{} is not a modern DH group", label(t))),
        TransformType::Esn => None,
        TransformType::Unknown => Some(format!("unknown transform type {} ({})", t.raw_type, label(t))),
    }
}

const TYPES: [(TransformType, &str); 5] = [
    (TransformType::Encryption, "encryption"),
    (TransformType::Prf, "PRF"),
    (TransformType::Integrity, "integrity"),
    (TransformType::KeyExchange, "DH group"),
    (TransformType::Esn, "ESN"),
];

/// Why one proposal is unacceptable (some transform type without an acceptable
/// transform, a required type missing, an unknown type, another protocol), or
/// `None` when at least one transform of each type is acceptable.
fn problems(kind: SaKind, p: &Proposal) -> Option<String> {
    let mut why: Vec<String> = Vec::new();
    let want = match kind {
        SaKind::Ike => Protocol::Ike,
        SaKind::Child => Protocol::Esp,
    };
    if p.protocol != want {
        why.push(format!(
            "protocol {} (policy accepts {} only)",
            p.raw_protocol,
            if kind == SaKind::Ike { "IKE" } else { "ESP" }
        ));
    }
    let required: &[TransformType] = match kind {
        SaKind::Ike => &[TransformType::Encryption, TransformType::Prf, TransformType::KeyExchange],
        SaKind::Child => &[TransformType::Encryption],
    };
    for (ty, name) in TYPES {
        let of: Vec<&Transform> = p.of_type(ty);
        if of.is_empty() {
            if required.contains(&ty) {
                why.push(if ty == TransformType::KeyExchange { "no DH group".into() } else { format!("no {name}") });
            }
            continue;
        }
        let bad: Vec<String> = of.iter().filter_map(|t| transform_problem(kind, t)).collect();
        if bad.len() == of.len() {
            why.push(format!("no acceptable {name}: {}", bad.join(", ")));
        }
    }
    for t in &p.transforms {
        if t.kind == TransformType::Unknown {
            why.push(format!("unknown transform type {} ({})", t.raw_type, label(t)));
        }
    }
    if why.is_empty() {
        None
    } else {
        Some(why.join(", "))
    }
}

/// The transforms to name for an acceptable proposal: for each type that also
/// carries unacceptable alternatives, the accepted one, chosen inside the
/// configured proposals. Types whose every alternative is acceptable are left
/// to the host (which then prefers, for the key exchange, the peer's KE).
fn exclusions(kind: SaKind, p: &Proposal, configured: &[Proposal]) -> Result<Vec<u32>, String> {
    let mixed: Vec<TransformType> = TYPES
        .iter()
        .map(|(ty, _)| *ty)
        .filter(|ty| p.of_type(*ty).iter().any(|t| transform_problem(kind, t).is_some()))
        .collect();
    if mixed.is_empty() {
        return Ok(Vec::new());
    }
    let all = choose_within(p, configured, |t| transform_problem(kind, t).is_none())
        .ok_or_else(|| "no acceptable combination inside the configured proposals".to_string())?;
    Ok(all.into_iter().filter(|&i| mixed.contains(&p.transforms[i as usize].kind)).collect())
}

fn id_matches(allowed: &str, id: &Identity) -> bool {
    match id.kind {
        IdType::Fqdn | IdType::Rfc822Addr => allowed.eq_ignore_ascii_case(&id.value),
        _ => allowed == id.value,
    }
}

fn kind_name(k: IdType) -> &'static str {
    match k {
        IdType::Ipv4Addr => "ipv4",
        IdType::Fqdn => "fqdn",
        IdType::Rfc822Addr => "email",
        IdType::Ipv6Addr => "ipv6",
        IdType::DerAsn1Dn => "dn",
        IdType::DerAsn1Gn => "gn",
        IdType::KeyId => "key-id",
        IdType::Unknown => "unknown",
    }
}

impl Policy for DefaultPolicy {
    const NAME: &'static str = "wisp-default";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn configure(s: &Settings) -> Result<Self, String> {
        s.reject_unknown(&["allowed_ids", "allow_any"])?;
        let allowed_ids: Vec<String> = s
            .text_list("allowed_ids")?
            .unwrap_or_default()
            .into_iter()
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect();
        let allow_any = s.boolean("allow_any")?.unwrap_or(false);
        if !allow_any && allowed_ids.is_empty() {
            host::warn("wisp-default: neither allowed_ids nor allow_any is set; every peer will be denied");
        }
        Ok(DefaultPolicy { allowed_ids, allow_any })
    }

    fn select_proposal(
        &self,
        _ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, Refusal> {
        if offered.is_empty() {
            return Err(refuse("peer offered no proposal"));
        }
        let mut rejected = Vec::new();
        for (i, p) in offered.iter().enumerate() {
            let verdict = match problems(kind, p) {
                None => exclusions(kind, p, configured),
                Some(why) => Err(why),
            };
            match verdict {
                Ok(transforms) => return Ok(ProposalChoice { proposal: i as u32, transforms }),
                Err(why) => rejected.push(format!("#{} {} ({why})", p.number, p.summary())),
            }
        }
        Err(refuse(format!("peer offered {}; {POLICY_TEXT}", rejected.join("; "))))
    }

    fn order_proposals(&self, _ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, p) in configured.iter().enumerate() {
            // What we offer ourselves carries no alternative we would not accept.
            let weak: Vec<String> = p.transforms.iter().filter_map(|t| transform_problem(kind, t)).collect();
            match problems(kind, p).or_else(|| (!weak.is_empty()).then(|| weak.join(", "))) {
                None => out.push(i as u32),
                Some(why) => host::warn(&format!(
                    "wisp-default: not offering configured proposal #{} {} ({why})",
                    p.number,
                    p.summary()
                )),
            }
        }
        out
    }

    fn authorize(&self, _ctx: &PeerContext, auth: &AuthInfo) -> Result<(), Refusal> {
        let id = &auth.peer_identity;
        if self.allow_any {
            return Ok(());
        }
        if self.allowed_ids.iter().any(|a| id_matches(a, id)) {
            return Ok(());
        }
        if self.allowed_ids.is_empty() {
            Err(refuse(format!(
                "identity {} '{}' denied: no allowed_ids configured and allow_any is false (deny by default)",
                kind_name(id.kind),
                id.value
            )))
        } else {
            Err(refuse(format!(
                "identity {} '{}' is not in allowed_ids ({} entries)",
                kind_name(id.kind),
                id.value,
                self.allowed_ids.len()
            )))
        }
    }

    fn narrow_selectors(&self, _ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, Refusal> {
        ts::narrow_to_configured(request)
    }
}

export_policy!(DefaultPolicy);
