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
//! also offer no key exchange (no PFS). Every alternative inside a proposal must
//! be acceptable, because the plugin chooses a proposal and the host then picks
//! the transforms inside it. As initiator, the configured proposals keep their
//! order, minus the unacceptable ones.
//!
//! Traffic selectors: each side narrowed to the intersection of what was
//! proposed and the connection's configured ranges (TS_UNACCEPTABLE if empty).

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

/// Why one proposal is unacceptable, or `None` when it is acceptable.
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
    let enc = p.encryption();
    if enc.is_empty() {
        why.push("no encryption transform".into());
    }
    for t in &enc {
        match t.id {
            ids::ENCR_AES_GCM_16 => match t.key_length {
                Some(b) if b >= 128 => {}
                Some(b) => why.push(format!("{} key of {b} bits is below 128", label(t))),
                None => why.push(format!("{} without a key length", label(t))),
            },
            ids::ENCR_CHACHA20_POLY1305 => {}
            _ if ids::AEAD.contains(&t.id) => why.push(format!("{} is not an accepted AEAD", label(t))),
            _ => why.push(format!("{} is not AEAD", label(t))),
        }
    }
    for t in p.integrity() {
        why.push(format!("integrity {} (AEAD needs none)", label(t)));
    }
    let prfs = p.prfs();
    match kind {
        SaKind::Ike => {
            if prfs.is_empty() {
                why.push("no PRF".into());
            }
            for t in &prfs {
                if !SHA2_PRF.contains(&t.id) {
                    why.push(format!("{} is not HMAC-SHA2", label(t)));
                }
            }
        }
        SaKind::Child => {
            for t in &prfs {
                why.push(format!("PRF {} in a Child SA proposal", label(t)));
            }
        }
    }
    let ke: Vec<&Transform> = p.of_type(TransformType::KeyExchange);
    let groups = p.dh_groups();
    if kind == SaKind::Ike && groups.is_empty() {
        why.push("no DH group".into());
    }
    for t in ke {
        if t.id == ids::KE_NONE {
            if kind == SaKind::Ike {
                why.push("KE NONE for an IKE SA".into());
            }
        } else if !MODERN_DH.contains(&t.id) {
            why.push(format!("{} is not a modern DH group", label(t)));
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

    fn select_proposal(&self, _ctx: &PeerContext, kind: SaKind, offered: &[Proposal]) -> Result<u32, Refusal> {
        if offered.is_empty() {
            return Err(refuse("peer offered no proposal"));
        }
        let mut rejected = Vec::new();
        for (i, p) in offered.iter().enumerate() {
            match problems(kind, p) {
                None => return Ok(i as u32),
                Some(why) => rejected.push(format!("#{} {} ({why})", p.number, p.summary())),
            }
        }
        Err(refuse(format!("peer offered {}; {POLICY_TEXT}", rejected.join("; "))))
    }

    fn order_proposals(&self, _ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, p) in configured.iter().enumerate() {
            match problems(kind, p) {
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
