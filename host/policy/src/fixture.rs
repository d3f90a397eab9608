//! Decision fixtures: one decision, offline, against a plugin file.
//!
//! A fixture is a JSON file (format: `host/policy/FIXTURES.md`) naming the
//! decision, the plugin settings, what the host reports (clock, live SAs), the
//! peer context, the input, the expected answer, and which plugins it applies
//! to. [`eval`] runs one on a `.wasm` file (`wisp plugin eval FILE.wasm
//! FIXTURE.json`); [`Fixture::check`] compares an [`Answer`] with the
//! expectation. `host/policy/tests/fixtures.rs` runs every fixture in
//! `examples/fixtures/` against every plugin it names.

use crate::api::{
    AddressFamily, AddressPick, AddressPool, AddressRequest, AddressWanted, AuthInfo, AuthMethod, DecisionTrigger, IdType, Identity,
    PeerContext, Proposal, Protocol, SaCounts, SaKind, SaView, SelectorPair, SelectorRequest, TrafficSelector, Transform, TransformType,
};
use crate::{
    load, transform_name, DecisionAnswer, DecisionError, DecisionRequest, LoadError, LoadedPlugin, PluginConfig, Setting, SettingValue,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a fixture could not be read or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read fixture {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("fixture {name}: {detail}")]
    Invalid { name: String, detail: String },
    #[error("{0}")]
    Load(#[from] LoadError),
}

/// One parsed fixture.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// File stem (or "fixture" when parsed from a string).
    pub name: String,
    pub description: String,
    /// Plugins (file stems in `build/plugins/`) this fixture applies to.
    pub plugins: Vec<String>,
    pub settings: Vec<Setting>,
    /// The wall-clock time the host's `now` reports; `None` = real time.
    pub now: Option<SystemTime>,
    /// What the host's `sa-counts` reports per identity (others: zero).
    pub sa_counts: Vec<(Identity, SaCounts)>,
    pub request: DecisionRequest,
    pub expect: Expect,
}

/// The expected outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Allow,
    /// `select-proposal`: this offered proposal, with exactly these transforms
    /// named (none: the plugin leaves every type to the host).
    Index(usize, Vec<Transform>),
    Order(Vec<usize>),
    Selectors(SelectorPair),
    /// `assign-address`: exactly these picks, in this order (empty: no
    /// opinion, the host decides).
    Picks(Vec<AddressPick>),
    /// A refusal; the reason must contain the text, when given.
    Refuse(Option<String>),
    /// An answer the host rejects as outside the contract; the host's
    /// reason must contain the text, when given.
    Invalid(Option<String>),
    /// `configure` must refuse the settings; the message must contain the text.
    ConfigureError(Option<String>),
}

/// What a plugin answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Allow,
    /// The chosen offered proposal and the transforms the plugin named in it.
    Index(usize, Vec<Transform>),
    Order(Vec<usize>),
    Selectors(SelectorPair),
    /// `assign-address`: the plugin's picks (empty: the host's default).
    Picks(Vec<AddressPick>),
    /// The plugin said no, with its reason.
    Refused(String),
    /// The plugin's answer broke the contract (counts as a refusal).
    Invalid(String),
    /// Trap, deadline, memory cap, instantiation failure.
    Failed(String),
    /// `configure` refused the settings.
    ConfigureFailed(String),
}

// ---------------------------------------------------------------------------
// JSON shape

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixture {
    #[serde(default)]
    description: String,
    plugins: Vec<String>,
    #[serde(default)]
    settings: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    host: RawHost,
    #[serde(default)]
    context: RawContext,
    decision: String,
    input: serde_json::Value,
    expect: RawExpect,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHost {
    now: Option<serde_json::Value>,
    #[serde(default)]
    sa_counts: Vec<RawSaCount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSaCount {
    identity: String,
    #[serde(default)]
    ike_sas: u32,
    #[serde(default)]
    child_sas: u32,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawContext {
    connection: Option<String>,
    remote: Option<String>,
    local: Option<String>,
    #[serde(default)]
    nat_detected: bool,
    #[serde(default)]
    local_is_initiator: bool,
    peer_identity: Option<String>,
    /// "initial" (default), "rekey" or "recheck".
    trigger: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    allow: Option<bool>,
    index: Option<usize>,
    /// With `index`: the transforms the plugin must name (none if absent).
    transforms: Option<Vec<String>>,
    order: Option<Vec<usize>>,
    selectors: Option<RawPair>,
    /// `assign-address`: `["pool NAME", "address ADDR"]`, `[]` for no opinion.
    picks: Option<Vec<String>>,
    /// `true`, or a substring the reason must contain.
    refuse: Option<serde_json::Value>,
    /// `true`, or a substring of the host's reason for rejecting the answer.
    invalid: Option<serde_json::Value>,
    configure_error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPair {
    remote: Vec<String>,
    local: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProposals {
    kind: String,
    proposals: Vec<RawProposal>,
    /// select-proposal: the configured proposals (the host's ceiling); when
    /// absent, the offered proposals are passed as the configured ones.
    configured: Option<Vec<RawProposal>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProposal {
    number: Option<u8>,
    protocol: serde_json::Value,
    transforms: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    identity: String,
    #[serde(default = "default_method")]
    method: String,
    certificate_subject: Option<String>,
    key_fingerprint: Option<String>,
    certificate_issuer: Option<String>,
    #[serde(default)]
    subject_alt_names: Vec<String>,
    certificate_serial: Option<String>,
    certificate_not_after: Option<u64>,
    eap_identity: Option<String>,
    eap_method: Option<String>,
}

impl RawAuth {
    fn parse(self) -> Result<AuthInfo, String> {
        Ok(AuthInfo {
            peer_identity: parse_identity(&self.identity)?,
            method: method(&self.method)?,
            certificate_subject: self.certificate_subject,
            key_fingerprint: self.key_fingerprint,
            certificate_issuer: self.certificate_issuer,
            subject_alt_names: self.subject_alt_names,
            certificate_serial: self.certificate_serial,
            certificate_not_after: self.certificate_not_after,
            eap_identity: self.eap_identity,
            eap_method: self.eap_method,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAddress {
    auth: RawAuth,
    /// `"ipv4"`, `"ipv6"`, or a family with the address asked for: `"ipv4 10.3.0.9"`.
    requested: Vec<String>,
    /// `"NAME RANGE"`: `"rw 10.3.0.0/24"`, `"staff 10.4.0.10-10.4.0.20"`.
    pools: Vec<String>,
}

fn default_method() -> String {
    "psk".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelectors {
    remote_proposed: Vec<String>,
    local_proposed: Vec<String>,
    remote_configured: Vec<String>,
    local_configured: Vec<String>,
}

// ---------------------------------------------------------------------------
// Shorthand parsers (public: `wisp` and tests use them too)

/// `fqdn:gw.example.net`, `email:alice@example.com` (or `rfc822:`),
/// `ipv4:192.0.2.1`, `ipv6:fd99::1`, `dn:CN=carol, O=Example`, `gn:...`,
/// `key-id:0a1b`.
pub fn parse_identity(s: &str) -> Result<Identity, String> {
    let (t, v) = s.split_once(':').ok_or_else(|| format!("identity '{s}': expected TYPE:VALUE, e.g. fqdn:gw.example.net"))?;
    let kind = match t.trim().to_ascii_lowercase().as_str() {
        "ipv4" | "ipv4-addr" => IdType::Ipv4Addr,
        "fqdn" => IdType::Fqdn,
        "email" | "rfc822" | "rfc822-addr" => IdType::Rfc822Addr,
        "ipv6" | "ipv6-addr" => IdType::Ipv6Addr,
        "dn" | "der-asn1-dn" => IdType::DerAsn1Dn,
        "gn" | "der-asn1-gn" => IdType::DerAsn1Gn,
        "key-id" | "keyid" => IdType::KeyId,
        other => return Err(format!("identity '{s}': unknown type '{other}'")),
    };
    Ok(Identity { kind, value: v.to_string() })
}

fn method(s: &str) -> Result<AuthMethod, String> {
    Ok(match s {
        "psk" => AuthMethod::Psk,
        "rsa-signature" | "rsa" => AuthMethod::RsaSignature,
        "ecdsa-signature" | "ecdsa" => AuthMethod::EcdsaSignature,
        "digital-signature" | "signature" => AuthMethod::DigitalSignature,
        "eap" => AuthMethod::Eap,
        o => return Err(format!("unknown auth method '{o}' (psk, rsa, ecdsa, signature, eap)")),
    })
}

/// Names accepted for transforms, besides the host's own names
/// ([`transform_name`]): a few legacy algorithms a fixture may want to offer.
const EXTRA_TRANSFORM_NAMES: &[(&str, TransformType, u16)] = &[
    ("DES", TransformType::Encryption, 2),
    ("NULL", TransformType::Encryption, 11),
    ("PRF_HMAC_MD5", TransformType::Prf, 1),
    ("AUTH_HMAC_MD5_96", TransformType::Integrity, 1),
    ("MODP_768", TransformType::KeyExchange, 1),
    ("MODP_1024", TransformType::KeyExchange, 2),
    ("MODP_1536", TransformType::KeyExchange, 5),
];

fn transform_kind_prefix(p: &str) -> Option<TransformType> {
    Some(match p {
        "ENCR" => TransformType::Encryption,
        "PRF" => TransformType::Prf,
        "INTEG" => TransformType::Integrity,
        "KE" | "DH" => TransformType::KeyExchange,
        "ESN" => TransformType::Esn,
        _ => return None,
    })
}

/// One transform: a host name such as `AES_GCM_16`, `PRF_HMAC_SHA2_256`,
/// `CURVE25519`, `NO_ESN`, optionally with `-BITS` for the key length
/// (`AES_GCM_16-256`); `TYPE:NAME` where a name is ambiguous (`INTEG:NONE`,
/// `KE:NONE`); or raw numbers `TYPE:ID` (`ENCR:12`, `KE:2`).
pub fn parse_transform(s: &str) -> Result<Transform, String> {
    let s = s.trim();
    let (body, key_length) = match s.rsplit_once('-') {
        Some((b, bits)) if !bits.is_empty() && bits.bytes().all(|c| c.is_ascii_digit()) => {
            (b, Some(bits.parse::<u16>().map_err(|_| format!("transform '{s}': bad key length"))?))
        }
        _ => (s, None),
    };
    let (only, name) = match body.split_once(':') {
        Some((p, n)) => (Some(transform_kind_prefix(p).ok_or_else(|| format!("transform '{s}': unknown type '{p}'"))?), n),
        None => (None, body),
    };
    let kinds = [TransformType::Encryption, TransformType::Prf, TransformType::Integrity, TransformType::KeyExchange, TransformType::Esn];
    if let (Some(kind), Ok(id)) = (only, name.parse::<u16>()) {
        return Ok(Transform { kind, id, key_length });
    }
    let mut found: Vec<(TransformType, u16)> = Vec::new();
    for &(n, k, id) in EXTRA_TRANSFORM_NAMES {
        if n == name && only.is_none_or(|o| o == k) {
            found.push((k, id));
        }
    }
    if found.is_empty() {
        for k in kinds {
            if only.is_some_and(|o| o != k) {
                continue;
            }
            for id in 0..=1024u16 {
                if transform_name(k, id) == name {
                    found.push((k, id));
                }
            }
        }
    }
    match found.as_slice() {
        [(kind, id)] => Ok(Transform { kind: *kind, id: *id, key_length }),
        [] => Err(format!("transform '{s}': unknown name (use a host name like AES_GCM_16-256, or TYPE:ID like ENCR:12)")),
        _ => Err(format!("transform '{s}': ambiguous name, prefix the type (INTEG:{name}, KE:{name})")),
    }
}

/// A selector: `10.1.0.0/24`, `fd99::/64`, `10.1.0.5-10.1.0.9` or a single
/// address, optionally followed by `proto N` and `port P` / `ports A-B`
/// (defaults: any protocol, all ports); swanctl's `[tcp/80]` suffix is read
/// too (the one selector syntax, [`wisp_policy_api::selector`]).
pub fn parse_selector(s: &str) -> Result<TrafficSelector, String> {
    wisp_policy_api::selector::parse(s)
}

/// Printable selector, the inverse of [`parse_selector`] (CIDR form when the
/// range is a prefix).
pub fn format_selector(t: &TrafficSelector) -> String {
    wisp_policy_api::selector::format(t, wisp_policy_api::selector::Style::Words)
}

fn selectors(l: &[String]) -> Result<Vec<TrafficSelector>, String> {
    l.iter().map(|s| parse_selector(s)).collect()
}

/// `2026-11-30T09:30:00Z` (UTC only) or seconds since the Unix epoch.
pub fn parse_time(v: &serde_json::Value) -> Result<SystemTime, String> {
    if let Some(n) = v.as_u64() {
        return Ok(UNIX_EPOCH + Duration::from_secs(n));
    }
    let s = v.as_str().ok_or("now: expected \"YYYY-MM-DDTHH:MM:SSZ\" or seconds")?;
    let bad = || format!("now: '{s}' is not YYYY-MM-DDTHH:MM:SSZ (UTC)");
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || b[19] != b'Z' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().map_err(|_| bad());
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 || y < 1970 {
        return Err(bad());
    }
    // Days from civil (H. Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    Ok(UNIX_EPOCH + Duration::from_secs(secs as u64))
}

fn setting(key: &str, v: &serde_json::Value) -> Result<Setting, String> {
    use serde_json::Value as J;
    let value = match v {
        J::String(s) => SettingValue::Text(s.clone()),
        J::Bool(b) => SettingValue::Boolean(*b),
        J::Number(n) => SettingValue::Integer(n.as_i64().ok_or_else(|| format!("setting '{key}': not an integer"))?),
        J::Array(a) => SettingValue::TextList(
            a.iter()
                .map(|x| x.as_str().map(str::to_string).ok_or_else(|| format!("setting '{key}': lists hold strings only")))
                .collect::<Result<_, _>>()?,
        ),
        _ => return Err(format!("setting '{key}': use a string, integer, boolean or list of strings")),
    };
    Ok(Setting::new(key, value))
}

fn protocol(v: &serde_json::Value) -> Result<Protocol, String> {
    if let Some(n) = v.as_u64() {
        return u8::try_from(n).map(Protocol::from_raw).map_err(|_| format!("protocol {n} out of range"));
    }
    match v.as_str() {
        Some("ike") => Ok(Protocol::Ike),
        Some("esp") => Ok(Protocol::Esp),
        Some("ah") => Ok(Protocol::Ah),
        _ => Err(format!("protocol {v}: use \"ike\", \"esp\", \"ah\" or a number")),
    }
}

/// `ipv4`, `ipv6`, optionally followed by the address asked for.
fn wanted(s: &str) -> Result<AddressWanted, String> {
    let mut words = s.split_whitespace();
    let family = match words.next() {
        Some("ipv4") => AddressFamily::Ipv4,
        Some("ipv6") => AddressFamily::Ipv6,
        _ => return Err(format!("requested '{s}': use \"ipv4\", \"ipv6\" or e.g. \"ipv4 10.3.0.9\"")),
    };
    let address = match words.next() {
        None => None,
        Some(a) => {
            let a: std::net::IpAddr = a.parse().map_err(|_| format!("requested '{s}': '{a}' is not an address"))?;
            if AddressFamily::of(a) != family || words.next().is_some() {
                return Err(format!("requested '{s}': one address of the family named"));
            }
            Some(a)
        }
    };
    Ok(AddressWanted { family, address })
}

/// `NAME RANGE`, the range as `[pools.NAME] addrs` takes it.
fn address_pool(s: &str) -> Result<AddressPool, String> {
    let (name, range) = s.trim().split_once(char::is_whitespace).ok_or_else(|| format!("pool '{s}': expected NAME RANGE"))?;
    AddressPool::parse(name, range).map_err(|e| format!("pool '{s}': {e}"))
}

fn socket(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("'{s}' is not ADDRESS:PORT (IPv6: [ADDR]:PORT)"))
}

impl Fixture {
    /// Read and parse a fixture file.
    pub fn load(path: impl AsRef<Path>) -> Result<Fixture, FixtureError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| FixtureError::Read { path: path.to_path_buf(), detail: e.to_string() })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "fixture".into());
        Fixture::parse(&name, &text)
    }

    /// Parse fixture JSON.
    pub fn parse(name: &str, json: &str) -> Result<Fixture, FixtureError> {
        Self::parse_inner(name, json).map_err(|detail| FixtureError::Invalid { name: name.to_string(), detail })
    }

    fn parse_inner(name: &str, json: &str) -> Result<Fixture, String> {
        let raw: RawFixture = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let settings = raw.settings.iter().map(|(k, v)| setting(k, v)).collect::<Result<Vec<_>, _>>()?;
        let now = raw.host.now.as_ref().map(parse_time).transpose()?;
        let sa_counts = raw
            .host
            .sa_counts
            .iter()
            .map(|c| Ok((parse_identity(&c.identity)?, SaCounts { ike_sas: c.ike_sas, child_sas: c.child_sas })))
            .collect::<Result<Vec<_>, String>>()?;
        let c = &raw.context;
        let remote = socket(c.remote.as_deref().unwrap_or("192.0.2.10:4500"))?;
        let local = socket(c.local.as_deref().unwrap_or("198.51.100.1:4500"))?;
        let mut ctx = PeerContext {
            connection: c.connection.clone().unwrap_or_else(|| "test".into()),
            remote_address: remote.ip(),
            remote_port: remote.port(),
            local_address: local.ip(),
            local_port: local.port(),
            nat_detected: c.nat_detected,
            local_is_initiator: c.local_is_initiator,
            peer_identity: c.peer_identity.as_deref().map(parse_identity).transpose()?,
            trigger: match c.trigger.as_deref() {
                None | Some("initial") => DecisionTrigger::Initial,
                Some("rekey") => DecisionTrigger::Rekey,
                Some("recheck") => DecisionTrigger::Recheck,
                Some(o) => return Err(format!("context.trigger '{o}': use initial, rekey or recheck")),
            },
        };
        let input = raw.input.clone();
        let request = match raw.decision.as_str() {
            "select-proposal" | "order-proposals" => {
                let p: RawProposals = serde_json::from_value(input).map_err(|e| format!("input: {e}"))?;
                let kind = match p.kind.as_str() {
                    "ike" => SaKind::Ike,
                    "child" => SaKind::Child,
                    o => return Err(format!("input.kind '{o}': use \"ike\" or \"child\"")),
                };
                let list = |l: &[RawProposal]| {
                    l.iter()
                        .enumerate()
                        .map(|(i, rp)| {
                            Ok(Proposal {
                                number: rp.number.unwrap_or((i + 1).min(255) as u8),
                                protocol: protocol(&rp.protocol)?,
                                transforms: rp.transforms.iter().map(|t| parse_transform(t)).collect::<Result<_, _>>()?,
                            })
                        })
                        .collect::<Result<Vec<_>, String>>()
                };
                let proposals = list(&p.proposals)?;
                if raw.decision == "select-proposal" {
                    let configured = match &p.configured {
                        Some(c) => list(c)?,
                        None => proposals.clone(),
                    };
                    DecisionRequest::SelectProposal { ctx, kind, offered: proposals, configured }
                } else {
                    if p.configured.is_some() {
                        return Err("input.configured: only for select-proposal (order-proposals gets `proposals`)".into());
                    }
                    DecisionRequest::OrderProposals { ctx, kind, configured: proposals }
                }
            }
            "authorize" => {
                let a: RawAuth = serde_json::from_value(input).map_err(|e| format!("input: {e}"))?;
                let auth = a.parse()?;
                if ctx.peer_identity.is_none() {
                    ctx.peer_identity = Some(auth.peer_identity.clone());
                }
                DecisionRequest::Authorize { ctx, auth }
            }
            "narrow-selectors" => {
                let s: RawSelectors = serde_json::from_value(input).map_err(|e| format!("input: {e}"))?;
                DecisionRequest::NarrowSelectors {
                    ctx,
                    request: SelectorRequest {
                        remote_proposed: selectors(&s.remote_proposed)?,
                        local_proposed: selectors(&s.local_proposed)?,
                        remote_configured: selectors(&s.remote_configured)?,
                        local_configured: selectors(&s.local_configured)?,
                    },
                }
            }
            "assign-address" => {
                let a: RawAddress = serde_json::from_value(input).map_err(|e| format!("input: {e}"))?;
                let auth = a.auth.parse()?;
                if ctx.peer_identity.is_none() {
                    ctx.peer_identity = Some(auth.peer_identity.clone());
                }
                let requested = a.requested.iter().map(|w| wanted(w)).collect::<Result<Vec<_>, _>>()?;
                let pools = a.pools.iter().map(|p| address_pool(p)).collect::<Result<Vec<_>, _>>()?;
                DecisionRequest::AssignAddress { ctx, request: AddressRequest { auth, requested, pools } }
            }
            o => {
                return Err(format!("decision '{o}': use select-proposal, order-proposals, authorize, narrow-selectors or assign-address"))
            }
        };
        let e = &raw.expect;
        let substring = |v: &serde_json::Value, what: &str| -> Result<Option<String>, String> {
            match v {
                serde_json::Value::Bool(true) => Ok(None),
                serde_json::Value::String(s) => Ok(Some(s.clone())),
                _ => Err(format!("expect.{what}: true or a substring of the reason")),
            }
        };
        let mut expects = Vec::new();
        if let Some(a) = e.allow {
            if !a {
                return Err("expect.allow must be true (use \"refuse\" for a denial)".into());
            }
            expects.push(Expect::Allow);
        }
        if let Some(i) = e.index {
            let named = e.transforms.iter().flatten().map(|t| parse_transform(t)).collect::<Result<Vec<_>, _>>()?;
            expects.push(Expect::Index(i, named));
        } else if e.transforms.is_some() {
            return Err("expect.transforms: only with expect.index".into());
        }
        if let Some(o) = &e.order {
            expects.push(Expect::Order(o.clone()));
        }
        if let Some(p) = &e.selectors {
            expects.push(Expect::Selectors(SelectorPair { remote: selectors(&p.remote)?, local: selectors(&p.local)? }));
        }
        if let Some(p) = &e.picks {
            expects.push(Expect::Picks(p.iter().map(|p| AddressPick::parse(p)).collect::<Result<_, _>>()?));
        }
        if let Some(r) = &e.refuse {
            expects.push(Expect::Refuse(substring(r, "refuse")?));
        }
        if let Some(r) = &e.invalid {
            expects.push(Expect::Invalid(substring(r, "invalid")?));
        }
        if let Some(r) = &e.configure_error {
            expects.push(Expect::ConfigureError(substring(r, "configure_error")?));
        }
        if expects.len() != 1 {
            return Err("expect: give exactly one of allow, index, order, selectors, picks, refuse, invalid, configure_error".into());
        }
        let expect = expects.remove(0);
        let fits = matches!(
            (&request, &expect),
            (_, Expect::Refuse(_) | Expect::Invalid(_) | Expect::ConfigureError(_))
                | (DecisionRequest::SelectProposal { .. }, Expect::Index(..))
                | (DecisionRequest::OrderProposals { .. }, Expect::Order(_))
                | (DecisionRequest::Authorize { .. }, Expect::Allow)
                | (DecisionRequest::NarrowSelectors { .. }, Expect::Selectors(_))
                | (DecisionRequest::AssignAddress { .. }, Expect::Picks(_))
        );
        if !fits {
            return Err(format!("expect: {expect:?} is not an answer of {}", raw.decision));
        }
        if raw.plugins.is_empty() {
            return Err("plugins: name at least one plugin".into());
        }
        Ok(Fixture {
            name: name.to_string(),
            description: raw.description,
            plugins: raw.plugins,
            settings,
            now,
            sa_counts,
            request,
            expect,
        })
    }

    /// The plugin configuration this fixture asks for: its settings, its clock,
    /// its live-SA counts; limits from `base`.
    pub fn plugin_config(&self, base: &PluginConfig) -> PluginConfig {
        let mut c = base.clone();
        c.settings = self.settings.clone();
        c.sa_view = Arc::new(FixtureSas(self.sa_counts.clone()));
        if let Some(t) = self.now {
            c.clock = Arc::new(crate::api::FixedClock(t));
        }
        c
    }

    /// Compare an answer with the expectation: `Err` says how they differ.
    pub fn check(&self, answer: &Answer) -> Result<(), String> {
        let ok = match (&self.expect, answer) {
            (Expect::Allow, Answer::Allow) => true,
            (Expect::Index(a, ta), Answer::Index(b, tb)) => a == b && same_transforms(ta, tb),
            (Expect::Order(a), Answer::Order(b)) => a == b,
            (Expect::Selectors(a), Answer::Selectors(b)) => a == b,
            (Expect::Picks(a), Answer::Picks(b)) => a == b,
            (Expect::Refuse(sub), Answer::Refused(r)) => sub.as_deref().is_none_or(|s| r.contains(s)),
            (Expect::Invalid(sub), Answer::Invalid(r)) => sub.as_deref().is_none_or(|s| r.contains(s)),
            (Expect::ConfigureError(sub), Answer::ConfigureFailed(r)) => sub.as_deref().is_none_or(|s| r.contains(s)),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {}, got {answer}", self.expect_text()))
        }
    }

    fn expect_text(&self) -> String {
        match &self.expect {
            Expect::Allow => "allow".into(),
            Expect::Index(i, t) => Answer::Index(*i, t.clone()).to_string(),
            Expect::Order(o) => format!("order {o:?}"),
            Expect::Selectors(p) => Answer::Selectors(p.clone()).to_string(),
            Expect::Picks(p) => Answer::Picks(p.clone()).to_string(),
            Expect::Refuse(None) => "a refusal".into(),
            Expect::Refuse(Some(s)) => format!("a refusal containing {s:?}"),
            Expect::Invalid(None) => "an answer the host rejects".into(),
            Expect::Invalid(Some(s)) => format!("an answer the host rejects with {s:?}"),
            Expect::ConfigureError(None) => "configure to fail".into(),
            Expect::ConfigureError(Some(s)) => format!("configure to fail with {s:?}"),
        }
    }
}

/// The live-SA view a fixture sets.
#[derive(Debug, Clone)]
struct FixtureSas(Vec<(Identity, SaCounts)>);

impl SaView for FixtureSas {
    fn sa_counts(&self, peer: &Identity) -> SaCounts {
        self.0.iter().find(|(i, _)| i == peer).map(|(_, c)| *c).unwrap_or_default()
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |l: &[TrafficSelector]| l.iter().map(format_selector).collect::<Vec<_>>().join(", ");
        match self {
            Answer::Allow => write!(f, "allow"),
            Answer::Index(i, t) if t.is_empty() => write!(f, "index {i}"),
            Answer::Index(i, t) => write!(f, "index {i} with {}", t.iter().map(transform_label).collect::<Vec<_>>().join(", ")),
            Answer::Order(o) => write!(f, "order {o:?}"),
            Answer::Selectors(p) => write!(f, "selectors remote [{}] local [{}]", list(&p.remote), list(&p.local)),
            Answer::Picks(p) if p.is_empty() => write!(f, "picks [] (the host decides)"),
            Answer::Picks(p) => write!(f, "picks [{}]", p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")),
            Answer::Refused(r) => write!(f, "refuse: {r}"),
            Answer::Invalid(r) => write!(f, "invalid answer (refused): {r}"),
            Answer::Failed(r) => write!(f, "failed: {r}"),
            Answer::ConfigureFailed(r) => write!(f, "configure failed: {r}"),
        }
    }
}

impl Answer {
    /// The answer as fixture-style JSON (`{"allow": true}`, `{"refuse": "..."}`, ...).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        let list = |l: &[TrafficSelector]| l.iter().map(format_selector).collect::<Vec<_>>();
        match self {
            Answer::Allow => json!({ "allow": true }),
            Answer::Index(i, t) if t.is_empty() => json!({ "index": i }),
            Answer::Index(i, t) => {
                json!({ "index": i, "transforms": t.iter().map(transform_label).collect::<Vec<_>>() })
            }
            Answer::Order(o) => json!({ "order": o }),
            Answer::Selectors(p) => {
                json!({ "selectors": { "remote": list(&p.remote), "local": list(&p.local) } })
            }
            Answer::Picks(p) => json!({ "picks": p.iter().map(|p| p.to_string()).collect::<Vec<_>>() }),
            Answer::Refused(r) => json!({ "refuse": r }),
            Answer::Invalid(r) => json!({ "invalid": r }),
            Answer::Failed(r) => json!({ "failed": r }),
            Answer::ConfigureFailed(r) => json!({ "configure_error": r }),
        }
    }
}

/// Named transforms compared as sets (the order a plugin lists them in does not
/// matter).
fn same_transforms(a: &[Transform], b: &[Transform]) -> bool {
    let key = |t: &Transform| (t.kind.raw(), t.id, t.key_length);
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// A transform as fixtures write it: the host's name, `-BITS` for a key
/// length (`AES_GCM_16-256`, `PRF_HMAC_SHA2_256`).
pub fn transform_label(t: &Transform) -> String {
    let name = transform_name(t.kind, t.id);
    match t.key_length {
        Some(b) => format!("{name}-{b}"),
        None => name,
    }
}

/// Run one fixture's decision on an already loaded plugin (re-configured with
/// the fixture's settings, clock and live-SA counts; no recompilation).
pub fn eval_loaded(plugin: &LoadedPlugin, fixture: &Fixture) -> Result<Answer, FixtureError> {
    let config = fixture.plugin_config(plugin.config());
    let p = match plugin.reconfigure(&config, plugin.label().number) {
        Ok(p) => p,
        Err(LoadError::Configure { detail, .. }) => return Ok(Answer::ConfigureFailed(detail)),
        Err(e) => return Err(e.into()),
    };
    Ok(decide(&p, &fixture.request))
}

/// Run one decision on a loaded plugin and express the outcome as an [`Answer`].
pub fn decide(p: &LoadedPlugin, req: &DecisionRequest) -> Answer {
    match p.decide(req) {
        Ok(DecisionAnswer::Proposal(c)) => {
            let named = match req {
                DecisionRequest::SelectProposal { offered, .. } => {
                    c.transforms.iter().filter_map(|&t| offered.get(c.index)?.transforms.get(t).cloned()).collect()
                }
                _ => Vec::new(),
            };
            Answer::Index(c.index, named)
        }
        Ok(DecisionAnswer::Order(o)) => Answer::Order(o),
        Ok(DecisionAnswer::Authorized) => Answer::Allow,
        Ok(DecisionAnswer::Selectors(s)) => Answer::Selectors(s),
        Ok(DecisionAnswer::Address(c)) => Answer::Picks(c.picks),
        Err(DecisionError::Refused { reason, .. }) => Answer::Refused(reason),
        Err(DecisionError::InvalidAnswer { detail, .. }) => Answer::Invalid(detail),
        Err(e) => Answer::Failed(e.to_string()),
    }
}

/// `wisp plugin eval FILE.wasm FIXTURE.json`: load the plugin with the
/// fixture's settings, clock and live-SA counts, run the decision.
pub fn eval(wasm: impl AsRef<Path>, fixture: &Fixture) -> Result<Answer, FixtureError> {
    let config = fixture.plugin_config(&PluginConfig::default());
    match load(wasm, &config) {
        Ok(p) => Ok(decide(&p, &fixture.request)),
        Err(LoadError::Configure { detail, .. }) => Ok(Answer::ConfigureFailed(detail)),
        Err(e) => Err(e.into()),
    }
}

/// [`eval`] with the fixture read from a file.
pub fn eval_file(wasm: impl AsRef<Path>, fixture: impl AsRef<Path>) -> Result<Answer, FixtureError> {
    eval(wasm, &Fixture::load(fixture)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn shorthands() {
        let t = parse_transform("AES_GCM_16-256").unwrap();
        assert_eq!((t.kind, t.id, t.key_length), (TransformType::Encryption, 20, Some(256)));
        assert_eq!(parse_transform("CURVE25519").unwrap().id, 31);
        assert_eq!(parse_transform("MODP_1024").unwrap().kind, TransformType::KeyExchange);
        assert_eq!(parse_transform("KE:NONE").unwrap().kind, TransformType::KeyExchange);
        assert!(parse_transform("NONE").unwrap_err().contains("ambiguous"));
        assert_eq!(parse_transform("ENCR:12").unwrap().id, 12);
        assert!(parse_transform("FOO").is_err());

        let s = parse_selector("10.1.2.3/24 proto 6 ports 80-443").unwrap();
        assert_eq!(s.start_address, "10.1.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(s.end_address, "10.1.2.255".parse::<IpAddr>().unwrap());
        assert_eq!(format_selector(&s), "10.1.2.0/24 proto 6 ports 80-443");
        assert_eq!(format_selector(&parse_selector("::/0").unwrap()), "::/0");
        assert_eq!(format_selector(&parse_selector("0.0.0.0/0").unwrap()), "0.0.0.0/0");
        assert_eq!(format_selector(&parse_selector("10.0.0.5-10.0.0.9 port 53").unwrap()), "10.0.0.5-10.0.0.9 port 53");
        assert!(parse_selector("10.0.0.0/33").is_err());

        assert_eq!(parse_identity("email:a@b").unwrap().kind, IdType::Rfc822Addr);
        assert_eq!(parse_identity("dn:CN=x, O=y").unwrap().value, "CN=x, O=y");
        assert!(parse_identity("nope").is_err());

        let t = parse_time(&serde_json::json!("2026-11-30T09:30:00Z")).unwrap();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 1_796_031_000);
        assert!(parse_time(&serde_json::json!("2026-13-01T00:00:00Z")).is_err());
    }

    #[test]
    fn expectations() {
        let f = Fixture::parse("t", r#"{"plugins":["x"],"decision":"authorize","input":{"identity":"fqdn:a"},"expect":{"refuse":"nope"}}"#)
            .unwrap();
        assert!(f.check(&Answer::Refused("it is nope".into())).is_ok());
        assert!(f.check(&Answer::Refused("other".into())).is_err());
        assert!(f.check(&Answer::Allow).is_err());
        // The authorize context inherits the identity.
        match &f.request {
            DecisionRequest::Authorize { ctx, .. } => {
                assert_eq!(ctx.peer_identity.as_ref().unwrap().value, "a")
            }
            _ => panic!("wrong request"),
        }
        let bad = Fixture::parse("t", r#"{"plugins":["x"],"decision":"authorize","input":{"identity":"fqdn:a"},"expect":{"index":0}}"#);
        assert!(bad.is_err());
        let typo = Fixture::parse("t", r#"{"plugins":["x"],"decison":"authorize","input":{},"expect":{"allow":true}}"#);
        assert!(typo.is_err());
    }

    #[test]
    fn address_fixtures() {
        let f = Fixture::parse(
            "t",
            r#"{"plugins":["x"],"decision":"assign-address",
                "input":{"auth":{"identity":"email:alice@example.org","method":"eap","eap_identity":"alice","eap_method":"mschapv2"},
                         "requested":["ipv4 10.3.0.9","ipv6"],"pools":["rw 10.3.0.0/24","rw6 fd00:3::/120"]},
                "expect":{"picks":["address 10.3.0.7","pool rw6"]}}"#,
        )
        .unwrap();
        match &f.request {
            DecisionRequest::AssignAddress { ctx, request } => {
                assert_eq!(ctx.peer_identity.as_ref().unwrap().value, "alice@example.org");
                assert_eq!(request.auth.method, AuthMethod::Eap);
                assert_eq!((request.auth.eap_identity.as_deref(), request.auth.eap_method.as_deref()), (Some("alice"), Some("mschapv2")));
                assert_eq!(request.requested[0].address, Some("10.3.0.9".parse().unwrap()));
                assert_eq!(request.requested[1], AddressWanted { family: AddressFamily::Ipv6, address: None });
                assert_eq!((request.pools[1].name.as_str(), request.pools[1].size), ("rw6", 255));
            }
            other => panic!("wrong request {other:?}"),
        }
        let picks = vec![AddressPick::Address("10.3.0.7".parse().unwrap()), AddressPick::Pool("rw6".into())];
        assert!(f.check(&Answer::Picks(picks.clone())).is_ok());
        assert!(f.check(&Answer::Picks(picks.into_iter().rev().collect())).is_err(), "order matters");
        assert!(f.check(&Answer::Picks(vec![])).is_err());
        assert_eq!(Answer::Picks(vec![]).to_json(), serde_json::json!({ "picks": [] }));
        assert_eq!(Answer::Picks(vec![AddressPick::Pool("rw".into())]).to_string(), "picks [pool rw]");
        for bad in [r#""requested":["ipv5"]"#, r#""requested":["ipv4 fd00::1"]"#, r#""pools":["rw"]"#, r#""pools":["rw 10.3.0.1/24"]"#] {
            let (requested, pools) = if bad.contains("requested") { (bad, r#""pools":[]"#) } else { (r#""requested":[]"#, bad) };
            let json = format!(
                r#"{{"plugins":["x"],"decision":"assign-address","input":{{"auth":{{"identity":"fqdn:a"}},{requested},{pools}}},"expect":{{"picks":[]}}}}"#
            );
            assert!(Fixture::parse("t", &json).is_err(), "{bad}");
        }
        let invalid = Fixture::parse(
            "t",
            r#"{"plugins":["x"],"decision":"assign-address","input":{"auth":{"identity":"fqdn:a"},"requested":["ipv4"],"pools":[]},"expect":{"invalid":"outside pools"}}"#,
        )
        .unwrap();
        assert!(invalid.check(&Answer::Invalid("assigned 10.9.9.9, outside pools rw (10.3.0.0/24)".into())).is_ok());
        assert!(invalid.check(&Answer::Refused("outside pools".into())).is_err());
    }
}
