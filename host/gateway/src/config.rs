//! Gateway configuration: TOML in the spirit of strongSwan's `swanctl.conf`.
//!
//! ```toml
//! log_level = "info"
//! control_socket = "/run/wisp/a.sock"  # its directory is created 0750
//!
//! [control]
//! group = "wisp"        # optional: socket 0660 root:wisp, members may connect (default 0600, root only)
//!
//! [daemon]
//! user = "wisp"         # optional: after opening the TUN device and sockets, run as this
//!                       # user keeping only CAP_NET_ADMIN (see host/gateway/README.md)
//! dns_hook = "/etc/wisp/dns-hook"   # optional: `up`/`down` with WISP_DNS etc. (see dns_hook.rs)
//!
//! [tun]
//! name = "wisp0"
//! addrs = ["10.98.1.1/24"]
//! mtu = 1400
//! io = "offload"        # or "plain" / "tokio-tun": no TSO/GRO (benchmark baselines)
//!
//! [plugin]
//! path = "../build/plugins/default.wasm"     # relative to this file
//! [plugin.settings]
//! allowed_identities = ["b.wisp.test"]
//!
//! [connections.site-b]
//! local_addrs = ["10.99.0.1"]
//! remote_addrs = ["10.99.0.2"]
//! proposals = ["aes128gcm16-prfsha256-x25519"]
//! dpd_delay = "2s"
//! dpd_timeout = "6s"
//! start_action = "start"
//! keyingtries = 0                      # tries for initiations wisp makes itself; 0 = forever
//!                                      # (default 0 when a child comes back by itself, else 1)
//! reauth_time = "24h"                  # optional: reauthenticate make-before-break
//! fragmentation = "yes"                # IKE fragments (RFC 7383): yes | accept (take, never send) | no
//! local.id = "a.wisp.test"
//! remote.id = "b.wisp.test"           # default: the remote address when remote_addrs is one host
//! auth.psk_file = "psk.txt"            # or auth.psk = "inline secret"; mode 0600 (0400)
//!
//! [connections.site-b.children.net]
//! local_ts = ["10.98.1.0/24"]
//! remote_ts = ["10.98.2.0/24"]
//! esp_proposals = ["aes128gcm16", "chacha20poly1305"]
//! mode = "tunnel"
//! rekey_time = "50m"
//! life_time = "60m"
//! rand_time = "5m"                     # rekey up to this much early, at random (default rekey_time / 20)
//! dpd_action = "restart"               # clear | trap | restart (default restart for start children, else clear)
//! close_action = "start"               # none | trap | start: on the peer's DELETE (same default rule)
//!
//! # Many peers on one connection: remote_addrs takes %any, CIDR blocks and
//! # ranges (a list, or swanctl's "a, b" string); remote.id a pattern. An
//! # IKE_SA_INIT goes to the connection whose addresses fit best (host >
//! # block > %any), IKE_AUTH to the best identity fit among those; the
//! # plugin authorizes the concrete identity. Such a connection only responds.
//! [connections.roadwarriors]
//! local_addrs = ["10.99.0.1"]
//! remote_addrs = "192.0.2.0/24, 198.51.100.10-198.51.100.20"
//! remote.id = "*.clients.wisp.test"    # or %any, *@example.net, 10.0.0.0/8
//! auth.psk_file = "rw-psk.txt"
//! [connections.roadwarriors.children.net]
//! local_ts = ["10.98.1.0/24"]
//! remote_ts = ["10.97.0.0/16"]         # each peer narrows to its own part
//! ```
//!
//! Road warriors: address pools (swanctl `pools`) and virtual IPs (`vips`):
//!
//! ```toml
//! [pools.rw]
//! addrs = "10.3.0.0/24"                # a CIDR block (network/broadcast left out) or a range a-b
//! dns = ["10.1.0.53"]
//! subnets = ["10.1.0.0/16"]            # INTERNAL_IP4/6_SUBNET (alias: subnet)
//! [connections.roadwarriors]
//! pools = ["rw"]                       # answer CFG_REQUEST from these, in order; the
//!                                      # plugin's assign-address may pick one of them or
//!                                      # an address inside them, never beyond
//! # children: remote_ts left out (or ["dynamic"]) = the peer's virtual IP
//! [connections.office]
//! vips = ["0.0.0.0", "::"]             # ask for an address of each family
//! # children: local_ts left out (or ["dynamic"]) = our virtual IP
//! ```
//!
//! EAP (RFC 7296 2.16): road warriors log in with a user name and password
//! (EAP-MSCHAPv2, what the native Windows, macOS/iOS and Android clients
//! use) after we proved ourselves with our certificate:
//!
//! ```toml
//! [secrets]
//! eap_file = "users.secrets"           # `alice = "password"` lines (TOML); mode 0600
//! [connections.rw]
//! local.certs = ["gwCert.pem"]         # required: the EAP server signs first
//! local.key = "gwKey.pem"
//! remote.auth = "eap-mschapv2"         # or "eap-tls" with remote.cacerts = [...] (client certificates)
//! remote.eap_id = "%any"               # ask with EAP-Identity (default: the IKE identity is the user)
//! remote.id = "%any"                   # the IKE identity (often just the client's address)
//! pools = ["rw"]                       # leases go to the EAP user
//! ```
//!
//! Certificates (swanctl's pubkey authentication):
//!
//! ```toml
//! [connections.hq]
//! local_addrs = ["10.99.0.1"]
//! remote_addrs = ["10.99.0.2"]
//! local.auth = "pubkey"                # psk | pubkey | rsa/pss; default pubkey when local.certs is set
//! local.certs = ["gwCert.pem", "subCaCert.pem"]   # ours first, then intermediates to send
//! local.key = "gwKey.pem"              # PKCS#8, SEC1 or PKCS#1 PEM/DER; mode 0600
//! local.id = "C=CH, O=Example, CN=gw.example.net"  # default: the certificate's subject
//! remote.auth = "pubkey"               # default pubkey when remote.cacerts is set
//! remote.cacerts = ["caCert.pem"]      # files or directories
//! remote.crls = ["crls/"]              # files or directories (optional)
//! remote.id = "hq.example.net"         # must be the certificate's subject or a subjectAltName
//! send_cert = "ifasked"                # ifasked | always | never
//! send_certreq = true
//! ```
//!
//! A reload that changes a connection holding live SAs puts the new settings
//! into effect at once and reauthenticates its IKE SAs make-before-break (a
//! rotated PSK takes over without a lost packet).
//!
//! Every error names the file, the line and column, and the dotted field path.
//! Durations and counts are bounded (see [`bounds`]): a value outside its range
//! is an error naming the field, so no later arithmetic on it can overflow.
//! A PSK file, and a config file holding an inline `auth.psk`, must not be
//! accessible by group or others (like ssh's private keys): an error names the
//! file and its mode.
//! Pre-shared keys are held in [`Psk`], whose `Debug` never prints the secret and
//! whose memory is zeroized on drop.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
pub use wisp_ike::config::AddrMatch;
use wisp_policy_api::{Proposal, Protocol, TrafficSelector, Transform, TransformType};
use zeroize::Zeroizing;

/// Default control socket path.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/wisp/wisp.sock";

/// A configuration error with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the location is unknown.
    pub line: usize,
    /// 1-based; 0 when unknown.
    pub column: usize,
    /// Dotted field path, e.g. `connections.site-b.children.net.local_ts[0]`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A pre-shared key. `Debug`/`Display` print `<redacted>`; zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk(Zeroizing<Vec<u8>>);

impl Psk {
    pub fn new(bytes: Vec<u8>) -> Self {
        Psk(Zeroizing::new(bytes))
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Psk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        if s.is_empty() {
            return Err(serde::de::Error::custom("pre-shared key must not be empty"));
        }
        Ok(Psk::new(s.as_bytes().to_vec()))
    }
}

/// A duration in config: an integer (seconds) or a string like `"500ms"`, `"30s"`,
/// `"5m"`, `"4h"`, `"1d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("invalid duration `{s}` (expected e.g. 30s, 5m, 4h)"))?;
        let ms = match unit.trim() {
            "ms" => Some(n),
            "" | "s" => n.checked_mul(1000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            "d" => n.checked_mul(86_400_000),
            u => return Err(format!("invalid duration unit `{u}` in `{s}` (ms, s, m, h, d)")),
        }
        .filter(|ms| u128::from(*ms) <= bounds::DURATION_ANY.as_millis())
        .ok_or_else(|| format!("duration `{s}` too large"))?;
        Ok(Dur(Duration::from_millis(ms)))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) if i >= 0 && (i as u64) <= bounds::DURATION_ANY.as_secs() => Ok(Dur(Duration::from_secs(i as u64))),
            Raw::Int(i) if i >= 0 => Err(serde::de::Error::custom(format!("duration {i}s too large"))),
            Raw::Int(i) => Err(serde::de::Error::custom(format!("negative duration {i}"))),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A count (bytes or packets): an integer or a string with K/M/G suffix (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Count(pub u64);

impl FromStr for Count {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().trim_end_matches(['B', 'b']);
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("invalid count `{s}`"))?;
        let mul: u64 = match unit.trim() {
            "" => 1,
            "K" | "k" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            u => return Err(format!("invalid count unit `{u}` in `{s}` (K, M, G)")),
        };
        n.checked_mul(mul).map(Count).ok_or_else(|| format!("count `{s}` too large"))
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) if i >= 0 => Ok(Count(i as u64)),
            Raw::Int(i) => Err(serde::de::Error::custom(format!("negative count {i}"))),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Ranges accepted for durations and counts. Each is far from anything the
/// arithmetic on it (jitter, `× 5`, `+ 10 %`, `now + t`) could overflow.
pub mod bounds {
    use std::time::Duration;

    /// IKE and Child SA lifetimes (`rekey_time`, `over_time`, `life_time`): 1 s to 365 days.
    pub const LIFETIME: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(365 * 86_400));
    /// `dpd_delay` (0 disables) and `dpd_timeout`: up to 1 day; a timeout of at least 1 s.
    pub const DPD_MAX: Duration = Duration::from_secs(86_400);
    pub const DPD_TIMEOUT_MIN: Duration = Duration::from_secs(1);
    /// `plugin.deadline`: 1 ms to 10 s per call.
    pub const PLUGIN_DEADLINE: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(10));
    /// `plugin.workers`: threads deciding for all engines.
    pub const PLUGIN_WORKERS: (usize, usize) = (1, 64);
    /// `plugin.memory`: 1 MiB to 1 GiB.
    pub const PLUGIN_MEMORY: (u64, u64) = (1 << 20, 1 << 30);
    /// `rekey_bytes` / `life_bytes` / `rekey_packets` / `life_packets`: 1 to 2^60.
    pub const TRAFFIC: (u64, u64) = (1, 1 << 60);
    /// `tun.mtu`: 576 to 9000.
    pub const MTU: (u16, u16) = (576, 9000);
    /// Connections per file (one engine thread each).
    pub const CONNECTIONS: usize = 256;
    /// Children per connection.
    pub const CHILDREN: usize = 64;
    /// Traffic selectors per `local_ts` / `remote_ts`, proposals per list,
    /// addresses per `local_addrs` / `remote_addrs` / `tun.addrs`.
    pub const LIST: usize = 64;
    /// Any duration at all (parse-time cap, before the field's own range): 100 years.
    pub const DURATION_ANY: Duration = Duration::from_secs(100 * 365 * 86_400);
}

/// IANA transform ids used by the proposal keywords.
pub mod iana {
    pub const ENCR_AES_GCM_16: u16 = 20;
    pub const ENCR_CHACHA20_POLY1305: u16 = 28;
    pub const PRF_HMAC_SHA1: u16 = 2;
    pub const PRF_HMAC_SHA2_256: u16 = 5;
    pub const PRF_HMAC_SHA2_384: u16 = 6;
    pub const PRF_HMAC_SHA2_512: u16 = 7;
    pub const DH_ECP_256: u16 = 19;
    pub const DH_ECP_384: u16 = 20;
    pub const DH_CURVE25519: u16 = 31;
    pub const ESN_NO: u16 = 0;
    pub const ESN_YES: u16 = 1;
}

/// A proposal in swanctl notation, e.g. `aes128gcm16-prfsha256-x25519` (IKE) or
/// `chacha20poly1305-x25519-esn` (ESP, with PFS group and ESN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposalSpec {
    pub text: String,
    pub transforms: Vec<Transform>,
}

impl ProposalSpec {
    fn parse(s: &str, kind: ProposalKind) -> Result<Self, String> {
        use iana::*;
        let mut transforms = Vec::new();
        let t = |kind, id, key_length| Transform { kind, id, key_length };
        for word in s.split('-') {
            let tr = match word.to_ascii_lowercase().as_str() {
                "aes128gcm16" | "aes128gcm" => t(TransformType::Encryption, ENCR_AES_GCM_16, Some(128)),
                "aes192gcm16" | "aes192gcm" => t(TransformType::Encryption, ENCR_AES_GCM_16, Some(192)),
                "aes256gcm16" | "aes256gcm" => t(TransformType::Encryption, ENCR_AES_GCM_16, Some(256)),
                "chacha20poly1305" => t(TransformType::Encryption, ENCR_CHACHA20_POLY1305, None),
                "prfsha1" if kind == ProposalKind::Ike => t(TransformType::Prf, PRF_HMAC_SHA1, None),
                "prfsha256" if kind == ProposalKind::Ike => t(TransformType::Prf, PRF_HMAC_SHA2_256, None),
                "prfsha384" if kind == ProposalKind::Ike => t(TransformType::Prf, PRF_HMAC_SHA2_384, None),
                "prfsha512" if kind == ProposalKind::Ike => t(TransformType::Prf, PRF_HMAC_SHA2_512, None),
                "x25519" | "curve25519" => t(TransformType::KeyExchange, DH_CURVE25519, None),
                "ecp256" => t(TransformType::KeyExchange, DH_ECP_256, None),
                "ecp384" => t(TransformType::KeyExchange, DH_ECP_384, None),
                "esn" if kind == ProposalKind::Esp => t(TransformType::Esn, ESN_YES, None),
                "noesn" if kind == ProposalKind::Esp => t(TransformType::Esn, ESN_NO, None),
                other => {
                    return Err(format!(
                        "unknown {} proposal keyword `{other}` in `{s}` (known: aes128gcm16, aes256gcm16, chacha20poly1305, {}x25519, ecp256, ecp384{})",
                        kind.name(),
                        if kind == ProposalKind::Ike { "prfsha256, prfsha384, prfsha512, " } else { "" },
                        if kind == ProposalKind::Esp { ", esn, noesn" } else { "" },
                    ))
                }
            };
            transforms.push(tr);
        }
        let has = |k| transforms.iter().any(|t: &Transform| t.kind == k);
        if !has(TransformType::Encryption) {
            return Err(format!("{} proposal `{s}` has no encryption algorithm", kind.name()));
        }
        if kind == ProposalKind::Ike {
            if !has(TransformType::Prf) {
                return Err(format!("IKE proposal `{s}` has no PRF (e.g. prfsha256)"));
            }
            if !has(TransformType::KeyExchange) {
                return Err(format!("IKE proposal `{s}` has no key exchange (e.g. x25519)"));
            }
        } else if !has(TransformType::Esn) {
            transforms.push(t(TransformType::Esn, ESN_NO, None));
        }
        Ok(ProposalSpec { text: s.to_string(), transforms })
    }

    /// The proposal as passed to the engine and the policy (numbered `number`).
    pub fn to_proposal(&self, number: u8, protocol: Protocol) -> Proposal {
        Proposal { number, protocol, transforms: self.transforms.clone() }
    }

    /// First transform of a kind.
    pub fn first(&self, kind: TransformType) -> Option<&Transform> {
        self.transforms.iter().find(|t| t.kind == kind)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProposalKind {
    Ike,
    Esp,
}
impl ProposalKind {
    fn name(self) -> &'static str {
        match self {
            ProposalKind::Ike => "IKE",
            ProposalKind::Esp => "ESP",
        }
    }
}

fn de_ike_proposals<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ProposalSpec>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter().map(|s| ProposalSpec::parse(s, ProposalKind::Ike).map_err(serde::de::Error::custom)).collect()
}

fn de_esp_proposals<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ProposalSpec>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    v.iter().map(|s| ProposalSpec::parse(s, ProposalKind::Esp).map_err(serde::de::Error::custom)).collect()
}

fn default_ike_proposals() -> Vec<ProposalSpec> {
    vec![ProposalSpec::parse("aes128gcm16-prfsha256-x25519", ProposalKind::Ike).expect("static")]
}

fn default_esp_proposals() -> Vec<ProposalSpec> {
    vec![ProposalSpec::parse("aes128gcm16", ProposalKind::Esp).expect("static")]
}

/// Parse a traffic selector: `10.1.0.0/24`, `10.1.0.7`, `10.1.0.1-10.1.0.9`,
/// `fd99::/64`, `0.0.0.0/0`, optionally followed by `[proto]` or `[proto/port]`
/// or `[proto/lo-hi]` (the one selector syntax, [`wisp_policy_api::selector`]).
pub fn parse_ts(s: &str) -> Result<TrafficSelector, String> {
    wisp_policy_api::selector::parse(s)
}

/// Print a selector the way [`parse_ts`] reads it (CIDR when it is one).
pub fn format_ts(ts: &TrafficSelector) -> String {
    wisp_policy_api::selector::format(ts, wisp_policy_api::selector::Style::Swanctl)
}

/// A list of strings, or one swanctl-style comma-separated string.
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum L {
        One(String),
        Many(Vec<String>),
    }
    Ok(match L::deserialize(d)? {
        L::One(s) => s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect(),
        L::Many(v) => v,
    })
}

fn de_remote_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<AddrMatch>, D::Error> {
    let v = string_list(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom("at least one remote address is required (%any accepts every peer)"));
    }
    v.iter().map(|s| AddrMatch::parse(s).map_err(serde::de::Error::custom)).collect()
}

fn de_local_addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    let mut out = Vec::new();
    for s in string_list(d)? {
        match s.as_str() {
            "%any" | "%any4" | "%any6" => {}
            _ => out.push(s.parse::<IpAddr>().map_err(|_| {
                serde::de::Error::custom(format!("local address {s:?}: expected an IP address or %any (wisp does not resolve names)"))
            })?),
        }
    }
    Ok(out)
}

fn de_ts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TrafficSelector>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom("at least one traffic selector is required (or leave the key out for `dynamic`)"));
    }
    // swanctl's `dynamic`: our (virtual) address, or the peer's; held as no selectors.
    if v.len() == 1 && v[0].trim() == "dynamic" {
        return Ok(Vec::new());
    }
    v.iter().map(|s| parse_ts(s).map_err(serde::de::Error::custom)).collect()
}

fn de_ips<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    let v = string_list(d)?;
    v.iter().map(|s| s.trim().parse::<IpAddr>().map_err(|_| serde::de::Error::custom(format!("{s:?} is not an IP address")))).collect()
}

/// `[secrets]`: secrets kept apart from the connections (swanctl keeps its
/// `secrets { eap-NAME { id = ..., secret = ... } }` section the same way).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// EAP user secrets: a TOML file of `identity = "password"` lines
    /// (quote an identity with `@` or spaces: `"alice@example.org" = "..."`),
    /// mode 0600 like a PSK file; read again on every reload.
    pub eap_file: Option<PathBuf>,
}

/// Reads an EAP secrets file (see [`SecretsConfig::eap_file`]).
pub fn load_eap_users(file: &Path) -> Result<wisp_ike::eap::EapUsers, String> {
    check_private_file(file, "EAP secrets")?;
    let text = Zeroizing::new(std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?);
    // The parser's own messages may quote the line: they are not passed on.
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(0, |s| text[..s.start].lines().count().max(1));
        format!("{} line {line}: not `identity = \"password\"` TOML", file.display())
    })?;
    let mut entries = Vec::with_capacity(table.len());
    for (id, v) in table {
        match v {
            toml::Value::String(s) if !s.is_empty() => entries.push((id, Zeroizing::new(s))),
            _ => return Err(format!("{}: the secret of {id:?} must be a non-empty string", file.display())),
        }
    }
    wisp_ike::eap::EapUsers::new(entries).map_err(|e| format!("{}: {e}", file.display()))
}

/// One `[pools.NAME]` (swanctl `pools`): addresses handed out to peers
/// that ask in IKE_AUTH (CFG_REQUEST), with the DNS servers and subnets
/// sent along.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// A CIDR block (`10.3.0.0/24`: its network and broadcast addresses
    /// are not handed out) or a range (`10.3.0.10-10.3.0.20`).
    pub addrs: String,
    #[serde(default, deserialize_with = "de_ips")]
    pub dns: Vec<IpAddr>,
    /// Networks behind the gateway (INTERNAL_IP4_SUBNET / INTERNAL_IP6_SUBNET).
    #[serde(default, alias = "subnet", deserialize_with = "string_list")]
    pub subnets: Vec<String>,
}

/// An interface address with prefix, e.g. `10.98.1.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for IfAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').ok_or_else(|| format!("expected address/prefix, got `{s}`"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("invalid address `{a}`"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p.parse().ok().filter(|p| *p <= max).ok_or_else(|| format!("invalid prefix `{p}`"))?;
        Ok(IfAddr { addr, prefix })
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for IfAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// What to do with a connection (or child) when the daemon starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StartAction {
    /// Wait for the peer or for `wisp up`.
    #[default]
    None,
    /// Initiate at start-up.
    Start,
    /// Initiate when traffic for the child's selectors appears (on demand):
    /// the dataplane routes the remote selectors to the TUN device and the
    /// first matching packet (dropped, like a kernel acquire) starts the
    /// negotiation. `trap` is accepted as a synonym. Falls back to `start`
    /// when the trap cannot be installed.
    #[serde(alias = "trap")]
    TrapIfFeasible,
}

/// swanctl `dpd_action`: what happens to a child when DPD (or exhausted
/// retransmissions) declares its peer dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DpdAction {
    /// Remove it.
    Clear,
    /// Remove it and install a trap: traffic for its selectors brings it back
    /// (`hold` is strongSwan's older name).
    #[serde(alias = "hold")]
    Trap,
    /// Initiate it again at once, retrying per `keyingtries` (`start` accepted).
    #[serde(alias = "start")]
    Restart,
}

/// swanctl `fragmentation`: IKE fragmentation (RFC 7383).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fragmentation {
    /// Announce it, take fragments, and send messages larger than
    /// `[ike] fragment_size` as fragments when the peer announced it too
    /// (`force`, which only changes IKEv1 in strongSwan, means the same).
    #[default]
    #[serde(alias = "force")]
    Yes,
    /// Announce it and take fragments, but send every message whole.
    Accept,
    /// Do not announce it.
    No,
}

/// swanctl `close_action`: what happens when the peer deletes a child (or
/// its IKE SA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CloseAction {
    /// Nothing (`clear` is strongSwan's older name).
    #[serde(alias = "clear")]
    None,
    /// Install a trap (`hold` accepted).
    #[serde(alias = "hold")]
    Trap,
    /// Initiate it again at once (`restart` accepted).
    #[serde(alias = "restart")]
    Start,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Tunnel,
    Transport,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_log_level")]
    pub log_level: LogLevel,
    /// Unix control socket; `--control` overrides it.
    pub control_socket: Option<PathBuf>,
    /// UDP port for IKE (default 500); NAT-T/ESP uses `natt_port` (default 4500).
    #[serde(default = "default_ike_port")]
    pub ike_port: u16,
    #[serde(default = "default_natt_port")]
    pub natt_port: u16,
    #[serde(default)]
    pub tun: TunConfig,
    #[serde(default)]
    pub plugin: PluginConfig,
    /// `[ike]`: daemon-wide IKE settings (cookies, half-open caps).
    #[serde(default)]
    pub ike: crate::ike_settings::IkeSettings,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub connections: BTreeMap<String, Connection>,
    /// `[pools.NAME]`: virtual IP pools.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolSpec>,
    /// Parsed from `pools` by [`Config::parse`].
    #[serde(skip)]
    pub pool_configs: Vec<wisp_ike::pool::PoolConfig>,
    /// `[secrets]`: where the EAP user secrets are.
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// Read from `secrets.eap_file` by [`Config::parse`].
    #[serde(skip)]
    pub eap_users: std::sync::Arc<wisp_ike::eap::EapUsers>,
    /// Set by [`Config::load`]: the file this was read from.
    #[serde(skip)]
    pub source: PathBuf,
}

fn default_log_level() -> LogLevel {
    LogLevel::Info
}
fn default_ike_port() -> u16 {
    500
}
fn default_natt_port() -> u16 {
    4500
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunConfig {
    #[serde(default = "default_tun_name")]
    pub name: String,
    /// Addresses put on the TUN device (usually one inside the local selectors).
    #[serde(default)]
    pub addrs: Vec<IfAddr>,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// How packets cross the TUN device.
    #[serde(default)]
    pub io: TunIo,
}

/// `[tun] io`: `offload` (tun-rs with TSO/GRO, the default), `plain`
/// (tun-rs, a packet per syscall) or `tokio-tun` (a packet per syscall).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TunIo {
    #[default]
    Offload,
    Plain,
    TokioTun,
}

impl Default for TunConfig {
    fn default() -> Self {
        TunConfig { name: default_tun_name(), addrs: Vec::new(), mtu: default_mtu(), io: TunIo::default() }
    }
}

fn default_tun_name() -> String {
    "wisp0".into()
}
fn default_mtu() -> u16 {
    1400
}

/// `[control]`: who may use the control socket.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Group allowed to use the control socket: the socket is then 0660
    /// `root:GROUP` (else 0600) and peers whose uid is 0, the daemon's own, or
    /// whose user belongs to this group (`SO_PEERCRED`) are served.
    pub group: Option<String>,
}

/// `[daemon]`: process settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Run as this user (and its primary group) once the TUN device and the
    /// sockets are open, keeping only `CAP_NET_ADMIN`. Unset: stay root.
    pub user: Option<String>,
    /// A program told of the DNS servers that come with our virtual IPs
    /// (`HOOK up|down`, see [`crate::dns_hook`]); relative to this file.
    /// Executable, writable by its owner only, owned by root or wisp's user.
    pub dns_hook: Option<PathBuf>,
}

/// `[plugin]`: the policy component and its settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Path to the `.wasm` component, relative to the config file. Default: the
    /// shipped `build/plugins/default.wasm` (see [`default_plugin_path`]).
    pub path: Option<PathBuf>,
    /// Per-call CPU deadline, default 20ms.
    pub deadline: Option<Dur>,
    /// Threads that run decisions for every connection, default 4. The
    /// IKE engines never wait for a decision: a slow one delays only the
    /// negotiation that asked; more workers decide more of them at once.
    pub workers: Option<usize>,
    /// Memory cap in bytes (K/M suffixes), default 16M.
    pub memory: Option<Count>,
    /// Largest plugin file accepted (K/M suffixes), default 64M; a bigger
    /// file is refused before it is compiled.
    pub max_size: Option<Count>,
    /// What a reload (plugin file, settings or `wisp reload`) does to live
    /// SAs: `recheck` (default) re-authorizes every IKE SA and re-checks every
    /// Child SA's selectors, deleting what the new policy refuses; `keep`
    /// leaves them until their next rekey.
    #[serde(default)]
    pub on_change: OnChange,
    /// Passed to the plugin's `configure`.
    #[serde(default)]
    pub settings: toml::Table,
}

/// `[plugin] on_change`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnChange {
    #[default]
    Recheck,
    Keep,
}

/// One `[connections.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// Our addresses (empty or `%any`: any). A list, or swanctl's
    /// comma-separated string.
    #[serde(default, deserialize_with = "de_local_addrs")]
    pub local_addrs: Vec<IpAddr>,
    /// Peer addresses: hosts, CIDR blocks, ranges `a-b`, `%any` (`%any4`,
    /// `%any6`). A list, or swanctl's comma-separated string. We initiate to
    /// the first single host; a connection without one only responds.
    #[serde(deserialize_with = "de_remote_addrs")]
    pub remote_addrs: Vec<AddrMatch>,
    #[serde(default)]
    pub local: Endpoint,
    #[serde(default)]
    pub remote: Endpoint,
    #[serde(default)]
    pub auth: Auth,
    /// When to send our certificate: `ifasked` (default: when the peer
    /// sent a CERTREQ), `always`, `never`.
    #[serde(default)]
    pub send_cert: SendCert,
    /// Send CERTREQ naming `remote.cacerts` (default yes).
    pub send_certreq: Option<bool>,
    #[serde(default = "default_ike_proposals", deserialize_with = "de_ike_proposals")]
    pub proposals: Vec<ProposalSpec>,
    /// IKE SA rekey (soft) time; default 4h.
    pub rekey_time: Option<Dur>,
    /// The rekey happens a random time of up to this much before
    /// `rekey_time`, so SAs made together do not rekey together. Default:
    /// rekey_time / 10 when rekey_time is at least 10 min, else 0. At most
    /// rekey_time.
    pub rand_time: Option<Dur>,
    /// IKE SA hard lifetime; default 10 % more than the larger of
    /// rekey_time and reauth_time.
    pub over_time: Option<Dur>,
    /// Reauthenticate IKE SAs this long after they were authenticated
    /// (make-before-break: the new IKE SA and its children are up before the
    /// old one goes); absent or 0: never.
    pub reauth_time: Option<Dur>,
    #[serde(default)]
    pub start_action: StartAction,
    /// IKE fragmentation (RFC 7383): `yes` (default), `accept`, `no`.
    #[serde(default)]
    pub fragmentation: Fragmentation,
    /// DPD: liveness check after this much inbound silence; 0/absent disables.
    pub dpd_delay: Option<Dur>,
    /// DPD: declare the peer dead when no answer for this long (default 5 × delay).
    pub dpd_timeout: Option<Dur>,
    /// Tries for an initiation wisp makes by itself (start, restarts after
    /// DPD, a peer's DELETE or expiry), with 1 s, 2 s, 4 s ... 60 s between
    /// them; 0 = forever. Default: 0 for a connection with a child that
    /// starts with the daemon or has `dpd_action = restart` or
    /// `close_action = start` (the tunnel always comes back), else 1.
    pub keyingtries: Option<u32>,
    /// Caps (no swanctl equivalent): established IKE SAs of this connection
    /// (default 256), Child SAs over all of them (default 1024), traffic
    /// selectors per side of one Child SA (default 32).
    pub max_ike_sas: Option<u32>,
    pub max_child_sas: Option<u32>,
    pub max_selectors: Option<u32>,
    /// Responder: the pools (`[pools.NAME]`) whose addresses peers asking
    /// for a virtual IP get, tried in order (swanctl `pools`).
    #[serde(default, deserialize_with = "string_list")]
    pub pools: Vec<String>,
    /// Initiator: virtual IPs to ask the peer for (swanctl `vips`):
    /// `0.0.0.0` / `::` for any address of the family. The address
    /// received goes on the TUN device and is our side of the tunnel.
    #[serde(default, deserialize_with = "de_ips")]
    pub vips: Vec<IpAddr>,
    #[serde(default)]
    pub children: BTreeMap<String, Child>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Identity: an IP address, `fqdn`, `user@fqdn`, or a distinguished
    /// name in swanctl's order (`"C=CH, O=Example, CN=gw.example.net"`).
    /// `remote.id` may also be a pattern: `%any`, `*.example.net`,
    /// `*@example.net`, `10.0.0.0/24` (the plugin then authorizes the
    /// concrete identity). Default for `local.id`: our certificate's
    /// subject with `local.auth = pubkey`, else the first local address;
    /// for `remote.id`: the remote address when `remote_addrs` is exactly
    /// one host (the peer must identify with it), else `%any`.
    pub id: Option<String>,
    /// `psk`, `pubkey` (a certificate and a signature; RFC 7427 when the
    /// peer supports it), for `local.auth` also `rsa/pss` (RSASSA-PSS
    /// with an RSA key), for `remote.auth` also `eap-mschapv2` and `eap-tls`. Default: `pubkey` when `local.certs` (`local`) or
    /// `remote.cacerts` (`remote`) is set, else `psk`.
    pub auth: Option<AuthKind>,
    /// `local.certs`: our certificate, then the intermediate CAs to send
    /// with it (PEM or DER files; relative to the config file).
    #[serde(default, deserialize_with = "string_list")]
    pub certs: Vec<String>,
    /// `local.key`: our private key (PEM or DER: PKCS#8, SEC1 EC, PKCS#1
    /// RSA; ECDSA P-256/P-384, Ed25519, RSA 2048-4096). Mode 0600.
    pub key: Option<String>,
    /// `remote.cacerts`: CA certificates the peer's certificate must chain
    /// to (files or directories).
    #[serde(default, deserialize_with = "string_list")]
    pub cacerts: Vec<String>,
    /// `remote.crls`: CRLs of those CAs (files or directories).
    #[serde(default, deserialize_with = "string_list")]
    pub crls: Vec<String>,
    /// `remote.eap_id` (with `remote.auth = eap-*`): the EAP identity the
    /// peer must prove. Default: its IKE identity; `%any` asks with
    /// EAP-Identity and takes any user of `[secrets] eap_file`.
    pub eap_id: Option<String>,
    /// Loaded by [`Config::parse`] (`local`).
    #[serde(skip)]
    pub credential: Option<std::sync::Arc<wisp_ike::config::LocalCredential>>,
    /// Loaded by [`Config::parse`] (`remote`).
    #[serde(skip)]
    pub trust: Option<std::sync::Arc<wisp_ike::config::TrustConfig>>,
}

/// `local.auth` / `remote.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum AuthKind {
    #[serde(rename = "psk")]
    Psk,
    #[serde(rename = "pubkey")]
    Pubkey,
    #[serde(rename = "rsa/pss")]
    RsaPss,
    /// `remote.auth` only: the peer authenticates by EAP-MSCHAPv2 against
    /// `[secrets] eap_file`; we by our certificate.
    #[serde(rename = "eap-mschapv2")]
    EapMschapv2,
    /// `remote.auth` only: the peer authenticates by EAP-TLS with a client
    /// certificate that chains to `remote.cacerts`; we by our certificate.
    #[serde(rename = "eap-tls")]
    EapTls,
}

impl AuthKind {
    /// The EAP method, for the `eap-*` kinds.
    pub fn eap_method(self) -> Option<wisp_ike::eap::Method> {
        match self {
            AuthKind::EapMschapv2 => Some(wisp_ike::eap::Method::MsChapV2),
            AuthKind::EapTls => Some(wisp_ike::eap::Method::Tls),
            _ => None,
        }
    }
}

impl Endpoint {
    /// `auth` with the default applied (`certs` for `local`, `cacerts` for `remote`).
    pub fn auth_kind(&self, local: bool) -> AuthKind {
        self.auth.unwrap_or(if (local && !self.certs.is_empty()) || (!local && !self.cacerts.is_empty()) {
            AuthKind::Pubkey
        } else {
            AuthKind::Psk
        })
    }
}

/// `send_cert` (swanctl): when we send our certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendCert {
    #[default]
    Ifasked,
    Always,
    Never,
}

/// `auth`: a PSK inline or from a file (exactly one), when a side uses one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub psk: Option<Psk>,
    pub psk_file: Option<PathBuf>,
    /// Resolved secret (set by [`Config::load`]).
    #[serde(skip)]
    pub resolved: Option<Psk>,
}

impl Auth {
    pub fn secret(&self) -> Option<&Psk> {
        self.resolved.as_ref().or(self.psk.as_ref())
    }
}

/// One `[connections.NAME.children.CHILD]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Child {
    /// Absent or `["dynamic"]`: our virtual IP, else our outer address.
    #[serde(default, deserialize_with = "de_ts")]
    pub local_ts: Vec<TrafficSelector>,
    /// Absent or `["dynamic"]`: the peer's virtual IP (leased from
    /// `pools`), else its outer address.
    #[serde(default, deserialize_with = "de_ts")]
    pub remote_ts: Vec<TrafficSelector>,
    #[serde(default = "default_esp_proposals", deserialize_with = "de_esp_proposals")]
    pub esp_proposals: Vec<ProposalSpec>,
    #[serde(default)]
    pub mode: Mode,
    /// Soft lifetime (rekey) by time; default 1h.
    pub rekey_time: Option<Dur>,
    /// Hard lifetime by time; default rekey_time * 1.1.
    pub life_time: Option<Dur>,
    /// The rekey happens a random time of up to this much before
    /// `rekey_time`. Default: rekey_time / 20 when rekey_time is at least
    /// 10 min, else 0. At most rekey_time.
    pub rand_time: Option<Dur>,
    pub rekey_bytes: Option<Count>,
    pub life_bytes: Option<Count>,
    pub rekey_packets: Option<Count>,
    pub life_packets: Option<Count>,
    pub start_action: Option<StartAction>,
    /// Default: `restart` for a child that starts with the daemon, else `clear`.
    pub dpd_action: Option<DpdAction>,
    /// Default: `start` for a child that starts with the daemon, else `none`.
    pub close_action: Option<CloseAction>,
}

/// The default spread of rekeys: `rekey / div` for lifetimes of at least
/// 10 min; none below (short lifetimes are tests and benches that want the
/// time they set).
fn default_rand_time(rekey: Duration, div: u32) -> Duration {
    if rekey >= Duration::from_secs(600) {
        rekey / div
    } else {
        Duration::ZERO
    }
}

/// Effective Child SA lifetimes (defaults applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub rekey_time: Duration,
    pub life_time: Duration,
    pub rand_time: Duration,
    pub rekey_bytes: Option<u64>,
    pub life_bytes: Option<u64>,
    pub rekey_packets: Option<u64>,
    pub life_packets: Option<u64>,
}

impl Child {
    pub fn lifetimes(&self) -> Lifetimes {
        let rekey = self.rekey_time.map(|d| d.0).unwrap_or(Duration::from_secs(3600));
        let life = self.life_time.map(|d| d.0).unwrap_or(rekey + rekey / 10);
        Lifetimes {
            rekey_time: rekey,
            life_time: life,
            rand_time: self.rand_time.map(|d| d.0).unwrap_or(default_rand_time(rekey, 20)),
            rekey_bytes: self.rekey_bytes.map(|c| c.0),
            life_bytes: self.life_bytes.map(|c| c.0),
            rekey_packets: self.rekey_packets.map(|c| c.0),
            life_packets: self.life_packets.map(|c| c.0),
        }
    }
}

impl Connection {
    pub fn ike_rekey_time(&self) -> Duration {
        self.rekey_time.map(|d| d.0).unwrap_or(Duration::from_secs(4 * 3600))
    }
    pub fn ike_rand_time(&self) -> Duration {
        self.rand_time.map(|d| d.0).unwrap_or(default_rand_time(self.ike_rekey_time(), 10))
    }
    pub fn ike_over_time(&self) -> Duration {
        let r = self.ike_rekey_time().max(self.reauth_time().unwrap_or_default());
        self.over_time.map(|d| d.0).unwrap_or(r + r / 10)
    }
    pub fn reauth_time(&self) -> Option<Duration> {
        self.reauth_time.map(|d| d.0).filter(|d| !d.is_zero())
    }
    pub fn dpd(&self) -> Option<(Duration, Duration)> {
        let d = self.dpd_delay.map(|d| d.0).filter(|d| !d.is_zero())?;
        Some((d, self.dpd_timeout.map(|d| d.0).unwrap_or(d * 5)))
    }
    /// The local identity (configured; else our certificate's subject,
    /// or the first local address, or 0.0.0.0).
    pub fn local_identity(&self) -> wisp_policy_api::Identity {
        if let Some(id) = &self.local.id {
            return wisp_ike::config::identity(id);
        }
        if let Some(c) = &self.local.credential {
            return wisp_policy_api::Identity { kind: wisp_policy_api::IdType::DerAsn1Dn, value: c.cert.subject.clone() };
        }
        wisp_ike::config::identity(&self.local_addrs.first().map_or_else(|| "0.0.0.0".to_string(), |a| a.to_string()))
    }
    /// The remote identity (pattern) string; `None`: `%any`.
    pub fn remote_id(&self) -> Option<String> {
        self.remote.id.clone().or_else(|| match self.remote_addrs.as_slice() {
            [one] => one.host().map(|a| a.to_string()),
            _ => None,
        })
    }
    /// The address we initiate to (the first single host of `remote_addrs`).
    pub fn initiate_to(&self) -> Option<IpAddr> {
        self.remote_addrs.iter().find_map(AddrMatch::host)
    }
}

/// Default plugin: `$WISP_DEFAULT_PLUGIN`, else `build/plugins/default.wasm` next to
/// the binary's repository (walks up from the executable), else
/// `/usr/lib/wisp/plugins/default.wasm`.
pub fn default_plugin_path() -> PathBuf {
    if let Some(p) = std::env::var_os("WISP_DEFAULT_PLUGIN") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            let cand = dir.join("build/plugins/default.wasm");
            if cand.exists() {
                return cand;
            }
        }
    }
    let cwd = PathBuf::from("build/plugins/default.wasm");
    if cwd.exists() {
        return cwd;
    }
    PathBuf::from("/usr/lib/wisp/plugins/default.wasm")
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        let cfg = Self::parse(&text, path)?;
        if let Some((name, _)) = cfg.connections.iter().find(|(_, c)| c.auth.psk.is_some()) {
            check_private(path).map_err(|message| {
                let field = format!("connections.{name}.auth.psk");
                let (line, column) = locate(&text, &field).unwrap_or((0, 0));
                ConfigError { file: path.to_path_buf(), line, column, field, message }
            })?;
        }
        Ok(cfg)
    }

    /// Parse `text` as if read from `path` (relative paths resolve against its directory).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let mut cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let (line, column) = inner.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            let field = if field == "." { String::new() } else { field };
            let (line, column) = if line == 0 { locate(text, &field).unwrap_or((0, 0)) } else { (line, column) };
            ConfigError { file: path.to_path_buf(), line, column, field, message: inner.message().to_string() }
        })?;
        cfg.source = path.to_path_buf();
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let err = |field: String, message: String| {
            let (line, column) = locate(text, &field).unwrap_or((0, 0));
            ConfigError { file: path.to_path_buf(), line, column, field, message }
        };
        if let Some(p) = &cfg.plugin.path {
            if p.is_relative() {
                cfg.plugin.path = Some(base.join(p));
            }
        }
        if let Some(p) = &cfg.control_socket {
            if p.is_relative() {
                cfg.control_socket = Some(base.join(p));
            }
        }
        if let Some(p) = &cfg.daemon.dns_hook {
            let p = if p.is_relative() { base.join(p) } else { p.clone() };
            let p = std::path::absolute(&p).unwrap_or(p);
            crate::dns_hook::check_hook(&p).map_err(|m| err("daemon.dns_hook".into(), m))?;
            cfg.daemon.dns_hook = Some(p);
        }
        cfg.ike.validate().map_err(|(field, message)| err(field, message))?;
        for (k, v) in &cfg.plugin.settings {
            let ok = match v {
                toml::Value::String(_) | toml::Value::Integer(_) | toml::Value::Boolean(_) => true,
                toml::Value::Array(a) => a.iter().all(|x| x.is_str()),
                _ => false,
            };
            if !ok {
                return Err(err(
                    format!("plugin.settings.{k}"),
                    "a plugin setting must be a string, an integer, a boolean or a list of strings".into(),
                ));
            }
        }
        check_bounds(&cfg).map_err(|(field, message)| err(field, message))?;
        let mut pools: Vec<wisp_ike::pool::PoolConfig> = Vec::new();
        for (name, p) in &cfg.pools {
            let f = |s: &str| format!("pools.{name}.{s}");
            let mut pc = wisp_ike::pool::PoolConfig::new(name, &p.addrs).map_err(|m| err(f("addrs"), m))?;
            if let Some(o) = pools.iter().find(|o| o.contains(pc.first) || pc.contains(o.first)) {
                return Err(err(f("addrs"), format!("overlaps pool {} ({})", o.name, o.range())));
            }
            for (k, n) in [("dns", p.dns.len()), ("subnets", p.subnets.len())] {
                if n > bounds::LIST {
                    return Err(err(f(k), format!("{n} entries, at most {} allowed", bounds::LIST)));
                }
            }
            pc.dns = p.dns.clone();
            for s in &p.subnets {
                let a: IfAddr = s.parse().map_err(|m| err(f("subnets"), m))?;
                pc.subnets.push((a.addr, a.prefix));
            }
            pools.push(pc);
        }
        cfg.pool_configs = pools;
        if let Some(file) = &cfg.secrets.eap_file {
            let file = if file.is_relative() { base.join(file) } else { file.clone() };
            cfg.eap_users = std::sync::Arc::new(load_eap_users(&file).map_err(|m| err("secrets.eap_file".into(), m))?);
            cfg.secrets.eap_file = Some(file);
        }
        let has_eap_file = cfg.secrets.eap_file.is_some();
        for (name, conn) in cfg.connections.iter_mut() {
            let f = |s: &str| format!("connections.{name}.{s}");
            if conn.remote_addrs.is_empty() {
                return Err(err(f("remote_addrs"), "at least one remote address is required".into()));
            }
            if conn.proposals.is_empty() {
                return Err(err(f("proposals"), "at least one IKE proposal is required".into()));
            }
            if let (Some(l), Some(r)) = (conn.local_addrs.first(), conn.initiate_to()) {
                if !conn.local_addrs.iter().any(|a| a.is_ipv4() == r.is_ipv4()) {
                    return Err(err(
                        f("local_addrs"),
                        format!("no local address of the family of the remote address {r} (first local: {l})"),
                    ));
                }
            }
            if conn.initiate_to().is_none() {
                let starts = |a: Option<StartAction>| matches!(a, Some(StartAction::Start | StartAction::TrapIfFeasible));
                if starts(Some(conn.start_action)) || conn.children.values().any(|c| starts(c.start_action)) {
                    return Err(err(
                        f("start_action"),
                        "start and trap need a remote address to initiate to: remote_addrs has no single host (only %any, blocks or ranges); use start_action = \"none\" on a responder-only connection".into(),
                    ));
                }
            }
            for p in &conn.pools {
                if !cfg.pools.contains_key(p) {
                    let known = cfg.pools.keys().cloned().collect::<Vec<_>>().join(", ");
                    return Err(err(f("pools"), format!("no pool named {p:?} (known: [{known}])")));
                }
            }
            if !conn.vips.is_empty() && conn.initiate_to().is_none() {
                return Err(err(f("vips"), "vips are asked for when we initiate: remote_addrs has no single host".into()));
            }
            if conn.vips.len() > 2 || (conn.vips.len() == 2 && conn.vips[0].is_ipv6() == conn.vips[1].is_ipv6()) {
                return Err(err(f("vips"), "at most one IPv4 and one IPv6 address".into()));
            }
            let (la, ra) = (conn.local.auth_kind(true), conn.remote.auth_kind(false));
            if ra == AuthKind::RsaPss {
                return Err(err(
                    f("remote.auth"),
                    "rsa/pss names how we sign; the peer's scheme is taken from its AUTH (use pubkey)".into(),
                ));
            }
            if la.eap_method().is_some() {
                return Err(err(f("local.auth"), "wisp does not authenticate itself by EAP (use pubkey or psk)".into()));
            }
            if conn.local.eap_id.is_some() {
                return Err(err(f("local.eap_id"), "wisp does not authenticate itself by EAP".into()));
            }
            if ra.eap_method().is_some() {
                if la == AuthKind::Psk {
                    // RFC 7296 2.16: the EAP server signs its first AUTH.
                    return Err(err(
                        f("local.auth"),
                        "remote.auth = eap-* needs a certificate of ours (local.auth = pubkey, local.certs, local.key)".into(),
                    ));
                }
                if ra == AuthKind::EapMschapv2 && !has_eap_file {
                    return Err(err(f("remote.auth"), "EAP needs the users' secrets: set [secrets] eap_file".into()));
                }
            } else if conn.remote.eap_id.is_some() {
                return Err(err(f("remote.eap_id"), "set only with remote.auth = eap-*".into()));
            }
            if let Some(id) = &conn.remote.eap_id {
                if id.is_empty() || id.len() > wisp_ike::eap::MAX_IDENTITY {
                    return Err(err(
                        f("remote.eap_id"),
                        format!("must be %any or an identity of 1 to {} octets", wisp_ike::eap::MAX_IDENTITY),
                    ));
                }
            }
            for (id, field) in [(&conn.local.id, "local.id"), (&conn.remote.id, "remote.id")] {
                if let Some(id) = id {
                    wisp_ike::config::parse_identity(id).map_err(|m| err(f(field), m))?;
                }
            }
            if la != AuthKind::Psk {
                let c = crate::credentials::load_local(&base, &conn.local.certs, conn.local.key.as_deref(), la == AuthKind::RsaPss)
                    .map_err(|(s, m)| err(f(&format!("local.{s}")), m))?;
                conn.local.credential = Some(c);
            } else if !conn.local.certs.is_empty() || conn.local.key.is_some() {
                return Err(err(f("local.auth"), "local.certs / local.key are set but local.auth = psk".into()));
            }
            if ra == AuthKind::EapTls && conn.remote.cacerts.is_empty() {
                return Err(err(f("remote.cacerts"), "remote.auth = eap-tls needs the CAs of the client certificates".into()));
            }
            if ra == AuthKind::Pubkey || ra == AuthKind::EapTls {
                let t = crate::credentials::load_trust(&base, &conn.remote.cacerts, &conn.remote.crls)
                    .map_err(|(s, m)| err(f(&format!("remote.{s}")), m))?;
                conn.remote.trust = Some(t);
            } else if !conn.remote.cacerts.is_empty() || !conn.remote.crls.is_empty() {
                return Err(err(f("remote.auth"), "remote.cacerts / remote.crls are set but remote.auth = psk".into()));
            }
            let needs_psk = la == AuthKind::Psk || ra == AuthKind::Psk;
            match (&conn.auth.psk, &conn.auth.psk_file) {
                (Some(_), Some(_)) => return Err(err(f("auth.psk_file"), "give either `psk` or `psk_file`, not both".into())),
                (None, None) if needs_psk => return Err(err(f("auth"), "missing `psk` or `psk_file`".into())),
                (None, None) => {}
                (None, Some(file)) => {
                    let file = if file.is_relative() { base.join(file) } else { file.clone() };
                    check_private(&file).map_err(|m| err(f("auth.psk_file"), m))?;
                    let bytes = Zeroizing::new(
                        std::fs::read(&file).map_err(|e| err(f("auth.psk_file"), format!("cannot read {}: {e}", file.display())))?,
                    );
                    let mut v: &[u8] = &bytes;
                    while let [rest @ .., b'\n' | b'\r'] = v {
                        v = rest;
                    }
                    if v.is_empty() {
                        return Err(err(f("auth.psk_file"), format!("{} is empty", file.display())));
                    }
                    conn.auth.resolved = Some(Psk::new(v.to_vec()));
                }
                (Some(_), None) => {}
            }
            if let Some((delay, timeout)) = conn.dpd() {
                if timeout < delay {
                    return Err(err(f("dpd_timeout"), "must not be shorter than dpd_delay".into()));
                }
            }
            if conn.ike_over_time() < conn.ike_rekey_time() {
                return Err(err(f("over_time"), "must not be shorter than rekey_time".into()));
            }
            if conn.ike_rand_time() > conn.ike_rekey_time() {
                return Err(err(f("rand_time"), "must not be longer than rekey_time".into()));
            }
            if conn.children.is_empty() {
                return Err(err(f("children"), "at least one child is required".into()));
            }
            for (cname, child) in &conn.children {
                let cf = |s: &str| format!("connections.{name}.children.{cname}.{s}");
                if child.esp_proposals.is_empty() {
                    return Err(err(cf("esp_proposals"), "at least one ESP proposal is required".into()));
                }
                let lt = child.lifetimes();
                if lt.life_time < lt.rekey_time {
                    return Err(err(cf("life_time"), "must not be shorter than rekey_time".into()));
                }
                if lt.rand_time > lt.rekey_time {
                    return Err(err(cf("rand_time"), "must not be longer than rekey_time".into()));
                }
                if let (Some(s), Some(h)) = (lt.rekey_bytes, lt.life_bytes) {
                    if h < s {
                        return Err(err(cf("life_bytes"), "must not be smaller than rekey_bytes".into()));
                    }
                }
                if let (Some(s), Some(h)) = (lt.rekey_packets, lt.life_packets) {
                    if h < s {
                        return Err(err(cf("life_packets"), "must not be smaller than rekey_packets".into()));
                    }
                }
                if child.mode == Mode::Transport {
                    return Err(err(cf("mode"), "transport mode is not supported yet (use tunnel)".into()));
                }
            }
        }
        Ok(cfg)
    }

    /// Plugin path with the default applied.
    pub fn plugin_path(&self) -> PathBuf {
        self.plugin.path.clone().unwrap_or_else(default_plugin_path)
    }

    /// Control socket path with the default applied.
    pub fn control_path(&self) -> PathBuf {
        self.control_socket.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
    }
}

/// Refuse a file holding a secret that group or others may access (like ssh
/// does with private keys): the error names the file and its mode.
pub fn check_private(path: &Path) -> Result<(), String> {
    check_private_file(path, "a pre-shared key")
}

/// [`check_private`] for a file holding `what` ("a private key").
pub fn check_private_file(path: &Path, what: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} has mode {mode:04o}, which lets group or others read {what}: refused (chmod 600 {})",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Every duration and count within [`bounds`], every list within its size cap.
/// Errors carry the dotted field path.
fn check_bounds(cfg: &Config) -> Result<(), (String, String)> {
    let range_d = |field: String, v: Option<Dur>, (lo, hi): (Duration, Duration)| match v {
        Some(Dur(d)) if d < lo || d > hi => Err((field, format!("{} is out of range ({} to {})", fmt_dur(d), fmt_dur(lo), fmt_dur(hi)))),
        _ => Ok(()),
    };
    let range_c = |field: String, v: Option<Count>, (lo, hi): (u64, u64)| match v {
        Some(Count(c)) if c < lo || c > hi => Err((field, format!("{c} is out of range ({lo} to {hi})"))),
        _ => Ok(()),
    };
    let list = |field: String, n: usize, max: usize| {
        if n > max {
            Err((field, format!("{n} entries, at most {max} allowed")))
        } else {
            Ok(())
        }
    };
    range_d("plugin.deadline".into(), cfg.plugin.deadline, bounds::PLUGIN_DEADLINE)?;
    range_c("plugin.memory".into(), cfg.plugin.memory, bounds::PLUGIN_MEMORY)?;
    if let Some(w) = cfg.plugin.workers {
        let (lo, hi) = bounds::PLUGIN_WORKERS;
        if !(lo..=hi).contains(&w) {
            return Err(("plugin.workers".into(), format!("{w} is out of range ({lo} to {hi})")));
        }
    }
    if !(bounds::MTU.0..=bounds::MTU.1).contains(&cfg.tun.mtu) {
        return Err(("tun.mtu".into(), format!("{} is out of range ({} to {})", cfg.tun.mtu, bounds::MTU.0, bounds::MTU.1)));
    }
    list("tun.addrs".into(), cfg.tun.addrs.len(), bounds::LIST)?;
    if cfg.ike_port == 0 {
        return Err(("ike_port".into(), "must not be 0".into()));
    }
    if cfg.natt_port == 0 {
        return Err(("natt_port".into(), "must not be 0".into()));
    }
    list("connections".into(), cfg.connections.len(), bounds::CONNECTIONS)?;
    list("pools".into(), cfg.pools.len(), bounds::CONNECTIONS)?;
    for (name, c) in &cfg.connections {
        let f = |s: &str| format!("connections.{name}.{s}");
        list(f("local_addrs"), c.local_addrs.len(), bounds::LIST)?;
        list(f("remote_addrs"), c.remote_addrs.len(), bounds::LIST)?;
        list(f("proposals"), c.proposals.len(), bounds::LIST)?;
        range_d(f("rekey_time"), c.rekey_time, bounds::LIFETIME)?;
        range_d(f("over_time"), c.over_time, bounds::LIFETIME)?;
        range_d(f("rand_time"), c.rand_time, (Duration::ZERO, bounds::LIFETIME.1))?;
        if c.reauth_time.is_some_and(|d| !d.0.is_zero()) {
            range_d(f("reauth_time"), c.reauth_time, bounds::LIFETIME)?;
        }
        range_d(f("dpd_delay"), c.dpd_delay, (Duration::ZERO, bounds::DPD_MAX))?;
        range_d(f("dpd_timeout"), c.dpd_timeout, (bounds::DPD_TIMEOUT_MIN, bounds::DPD_MAX))?;
        list(f("children"), c.children.len(), bounds::CHILDREN)?;
        for (cname, ch) in &c.children {
            let cf = |s: &str| format!("connections.{name}.children.{cname}.{s}");
            list(cf("local_ts"), ch.local_ts.len(), bounds::LIST)?;
            list(cf("remote_ts"), ch.remote_ts.len(), bounds::LIST)?;
            list(cf("esp_proposals"), ch.esp_proposals.len(), bounds::LIST)?;
            range_d(cf("rekey_time"), ch.rekey_time, bounds::LIFETIME)?;
            range_d(cf("life_time"), ch.life_time, bounds::LIFETIME)?;
            range_d(cf("rand_time"), ch.rand_time, (Duration::ZERO, bounds::LIFETIME.1))?;
            range_c(cf("rekey_bytes"), ch.rekey_bytes, bounds::TRAFFIC)?;
            range_c(cf("life_bytes"), ch.life_bytes, bounds::TRAFFIC)?;
            range_c(cf("rekey_packets"), ch.rekey_packets, bounds::TRAFFIC)?;
            range_c(cf("life_packets"), ch.life_packets, bounds::TRAFFIC)?;
        }
    }
    Ok(())
}

fn fmt_dur(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.is_zero() {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, col)
}

/// Find the line/column of a dotted field path (e.g. `connections.a.children.b.mode`)
/// in the TOML text, falling back to the closest enclosing key that exists.
pub fn locate(text: &str, field: &str) -> Option<(usize, usize)> {
    let doc = toml_edit::ImDocument::parse(text.to_string()).ok()?;
    let mut keys: Vec<String> = Vec::new();
    for part in field.split('.') {
        let base = part.split('[').next().unwrap_or(part);
        if !base.is_empty() {
            keys.push(base.to_string());
        }
    }
    while !keys.is_empty() {
        if let Some(span) = span_of(doc.as_table(), &keys) {
            return Some(line_col(text, span));
        }
        keys.pop();
    }
    None
}

fn span_of(table: &toml_edit::Table, keys: &[String]) -> Option<usize> {
    let (first, rest) = keys.split_first()?;
    let (key, item) = table.get_key_value(first)?;
    if rest.is_empty() {
        return key.span().map(|s| s.start).or_else(|| item.span().map(|s| s.start));
    }
    match item {
        toml_edit::Item::Table(t) => span_of(t, rest),
        toml_edit::Item::Value(toml_edit::Value::InlineTable(t)) => {
            let (k, v) = t.get_key_value(&rest[0])?;
            if rest.len() == 1 {
                k.span().map(|s| s.start).or_else(|| v.span().map(|s| s.start))
            } else {
                None
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
log_level = "debug"
[plugin]
path = "p.wasm"
[plugin.settings]
allowed_identities = ["b.wisp.test"]
[connections.b]
local_addrs = ["10.99.0.1"]
remote_addrs = ["10.99.0.2"]
proposals = ["aes256gcm16-prfsha384-ecp384", "chacha20poly1305-prfsha256-x25519"]
dpd_delay = "2s"
local.id = "a.wisp.test"
remote.id = "b.wisp.test"
auth.psk = "s3cret-value"
[connections.b.children.net]
local_ts = ["10.98.1.0/24"]
remote_ts = ["10.98.2.0/24[tcp/80]"]
esp_proposals = ["chacha20poly1305-x25519-esn"]
rekey_time = "5s"
rekey_bytes = "10M"
"#;

    #[test]
    fn parses_good_config() {
        let c = Config::parse(GOOD, Path::new("/etc/wisp/a.toml")).unwrap();
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.plugin.path.as_deref(), Some(Path::new("/etc/wisp/p.wasm")));
        let b = &c.connections["b"];
        assert_eq!(b.proposals.len(), 2);
        assert_eq!(b.proposals[0].first(TransformType::Encryption).unwrap().key_length, Some(256));
        assert_eq!(b.proposals[0].first(TransformType::KeyExchange).unwrap().id, iana::DH_ECP_384);
        assert_eq!(b.dpd(), Some((Duration::from_secs(2), Duration::from_secs(10))));
        let ch = &b.children["net"];
        assert_eq!(ch.remote_ts[0].ip_protocol, 6);
        assert_eq!(ch.remote_ts[0].start_port, 80);
        assert_eq!(format_ts(&ch.local_ts[0]), "10.98.1.0/24");
        assert_eq!(format_ts(&ch.remote_ts[0]), "10.98.2.0/24[tcp/80]");
        assert_eq!(ch.esp_proposals[0].first(TransformType::Esn).unwrap().id, iana::ESN_YES);
        let lt = ch.lifetimes();
        assert_eq!(lt.rekey_time, Duration::from_secs(5));
        assert_eq!(lt.life_time, Duration::from_millis(5500));
        assert_eq!(lt.rekey_bytes, Some(10 << 20));
        assert_eq!(b.auth.secret().unwrap().expose(), b"s3cret-value");
    }

    const RW: &str = r#"
[pools.rw]
addrs = "10.3.0.0/24"
dns = ["10.1.0.53", "fd00:1::53"]
subnet = "10.1.0.0/16"
[pools.rw6]
addrs = "fd00:3::-fd00:3::ff"
[connections.rw]
local_addrs = ["10.99.0.1"]
remote_addrs = "%any"
pools = ["rw", "rw6"]
auth.psk = "0123456789abcdef"
[connections.rw.children.net]
local_ts = ["10.1.0.0/16"]
[connections.client]
remote_addrs = ["10.99.0.9"]
vips = ["0.0.0.0", "::"]
auth.psk = "0123456789abcdef"
[connections.client.children.net]
local_ts = ["dynamic"]
remote_ts = ["0.0.0.0/0"]
"#;

    #[test]
    fn pools_vips_and_dynamic_selectors() {
        let c = Config::parse(RW, Path::new("a.toml")).unwrap();
        assert_eq!(c.pool_configs.len(), 2);
        let rw = &c.pool_configs[0];
        assert_eq!((rw.range(), rw.size()), ("10.3.0.1-10.3.0.254".to_string(), 254));
        assert_eq!(rw.dns.len(), 2);
        assert_eq!(rw.subnets, vec![("10.1.0.0".parse().unwrap(), 16)]);
        assert_eq!(c.pool_configs[1].size(), 256);
        assert_eq!(c.connections["rw"].pools, vec!["rw", "rw6"]);
        assert!(c.connections["rw"].children["net"].remote_ts.is_empty(), "absent = dynamic");
        assert!(c.connections["client"].children["net"].local_ts.is_empty(), "dynamic");
        assert_eq!(c.connections["client"].vips.len(), 2);
        let bad = |from: &str, to: &str, field: &str, msg: &str| {
            let e = Config::parse(&RW.replace(from, to), Path::new("a.toml")).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().contains(msg), "{e}");
            assert!(e.line > 0, "{e}");
        };
        bad("pools = [\"rw\", \"rw6\"]", "pools = [\"nope\"]", "connections.rw.pools", "no pool named \"nope\"");
        bad("addrs = \"fd00:3::-fd00:3::ff\"", "addrs = \"10.3.0.128/25\"", "pools.rw6.addrs", "overlaps pool rw");
        bad("addrs = \"10.3.0.0/24\"", "addrs = \"10.3.0.1/24\"", "pools.rw.addrs", "host bits");
        bad("vips = [\"0.0.0.0\", \"::\"]", "vips = [\"0.0.0.0\", \"10.0.0.1\"]", "connections.client.vips", "at most one IPv4");
        bad("vips = [\"0.0.0.0\", \"::\"]", "vips = [\"any\"]", "connections.client.vips", "not an IP address");
        bad("dns = [\"10.1.0.53\", \"fd00:1::53\"]", "dns = [\"ns1\"]", "pools.rw.dns", "not an IP address");
        bad("remote_addrs = [\"10.99.0.9\"]", "remote_addrs = \"%any\"", "connections.client.vips", "we initiate");
    }

    #[test]
    fn dns_hook_must_be_a_safe_executable() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let hook = d.path().join("hook");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        let cfg = |h: &str| format!("{GOOD}\n[daemon]\ndns_hook = {h:?}\n");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = Config::parse(&cfg(&hook.display().to_string()), Path::new("a.toml")).unwrap();
        assert_eq!(c.daemon.dns_hook.as_deref(), Some(hook.as_path()));
        // Relative to the config file.
        let c = Config::parse(&cfg("hook"), &d.path().join("w.toml")).unwrap();
        assert_eq!(c.daemon.dns_hook.as_deref(), Some(hook.as_path()));
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o775)).unwrap();
        let e = Config::parse(&cfg(&hook.display().to_string()), Path::new("a.toml")).unwrap_err();
        assert_eq!(e.field, "daemon.dns_hook", "{e}");
        assert!(e.line > 20, "{e}");
        assert!(e.message.contains("mode 0775"), "{e}");
        let e = Config::parse(&cfg("/nonexistent/hook"), Path::new("a.toml")).unwrap_err();
        assert_eq!(e.field, "daemon.dns_hook", "{e}");
    }

    #[test]
    fn psk_is_redacted_in_debug() {
        let c = Config::parse(GOOD, Path::new("a.toml")).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret-value"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn errors_name_line_and_field() {
        let bad = GOOD.replace("chacha20poly1305-x25519-esn", "chacha20poly1305-modp768");
        let e = Config::parse(&bad, Path::new("a.toml")).unwrap_err();
        assert_eq!(e.field, "connections.b.children.net.esp_proposals");
        assert_eq!(e.line, 18, "{e}");
        assert!(e.message.contains("modp768"), "{e}");

        let bad = GOOD.replace("10.98.1.0/24", "10.98.1.0/33");
        let e = Config::parse(&bad, Path::new("a.toml")).unwrap_err();
        assert_eq!(e.field, "connections.b.children.net.local_ts");
        assert_eq!(e.line, 16, "{e}");

        let bad = GOOD.replace("dpd_delay", "dpd_dealy");
        let e = Config::parse(&bad, Path::new("a.toml")).unwrap_err();
        assert_eq!(e.line, 11, "{e}");
        assert!(e.message.contains("dpd_dealy"), "{e}");

        let bad = GOOD.replace("auth.psk = \"s3cret-value\"", "auth.psk_file = \"/nonexistent/psk\"");
        let e = Config::parse(&bad, Path::new("a.toml")).unwrap_err();
        assert_eq!(e.field, "connections.b.auth.psk_file");
        assert_eq!(e.line, 14, "{e}");
        assert!(e.to_string().starts_with("a.toml:14:"), "{e}");

        let bad = GOOD.replace("rekey_time = \"5s\"", "rekey_time = \"5s\"\nlife_time = \"2s\"");
        let e = Config::parse(&bad, Path::new("a.toml")).unwrap_err();
        assert_eq!(e.field, "connections.b.children.net.life_time");
        assert_eq!(e.line, 20, "{e}");
    }

    #[test]
    fn rand_time_defaults_and_bounds() {
        let c = Config::parse(GOOD, Path::new("a.toml")).unwrap();
        let b = &c.connections["b"];
        // Short lifetimes get no spread by default; long ones rekey/10 (IKE), rekey/20 (child).
        assert_eq!(b.children["net"].lifetimes().rand_time, Duration::ZERO);
        assert_eq!(b.ike_rand_time(), Duration::from_secs(4 * 3600 / 10));
        let set = GOOD
            .replace("dpd_delay = \"2s\"", "dpd_delay = \"2s\"\nrekey_time = \"1h\"\nrand_time = \"30s\"")
            .replace("rekey_time = \"5s\"", "rekey_time = \"5s\"\nrand_time = \"2s\"");
        let c = Config::parse(&set, Path::new("a.toml")).unwrap();
        let b = &c.connections["b"];
        assert_eq!(b.ike_rand_time(), Duration::from_secs(30));
        assert_eq!(b.children["net"].lifetimes().rand_time, Duration::from_secs(2));
        let long = GOOD.replace("rekey_time = \"5s\"", "rekey_time = \"5s\"\nrand_time = \"6s\"");
        let e = Config::parse(&long, Path::new("a.toml")).unwrap_err();
        assert_eq!(e.field, "connections.b.children.net.rand_time", "{e}");
        let long = GOOD.replace("dpd_delay = \"2s\"", "dpd_delay = \"2s\"\nrekey_time = \"1m\"\nrand_time = \"2m\"");
        let e = Config::parse(&long, Path::new("a.toml")).unwrap_err();
        assert_eq!(e.field, "connections.b.rand_time", "{e}");
        assert!(e.message.contains("rekey_time"), "{e}");
    }

    #[test]
    fn tun_io_kinds() {
        assert_eq!(Config::parse(GOOD, Path::new("a.toml")).unwrap().tun.io, TunIo::Offload);
        let with = |io: &str| format!("{GOOD}[tun]\nio = \"{io}\"\n");
        assert_eq!(Config::parse(&with("tokio-tun"), Path::new("a.toml")).unwrap().tun.io, TunIo::TokioTun);
        assert_eq!(Config::parse(&with("plain"), Path::new("a.toml")).unwrap().tun.io, TunIo::Plain);
        let e = Config::parse(&with("turbo"), Path::new("a.toml")).unwrap_err();
        assert_eq!(e.field, "tun.io", "{e}");
        assert_eq!(e.line, GOOD.lines().count() + 2, "{e}");
        assert!(e.message.contains("turbo"), "{e}");
    }

    #[test]
    fn ts_forms() {
        let t = parse_ts("10.0.0.1-10.0.0.9").unwrap();
        assert_eq!(format_ts(&t), "10.0.0.1-10.0.0.9");
        let t = parse_ts("fd99::/64[udp/500-4500]").unwrap();
        assert_eq!(format_ts(&t), "fd99::/64[udp/500-4500]");
        assert_eq!(format_ts(&parse_ts("0.0.0.0/0").unwrap()), "0.0.0.0/0");
        assert!(parse_ts("10.0.0.9-10.0.0.1").is_err());
        assert!(parse_ts("10.0.0.0/24[tcp/90-80]").is_err());
        assert!(parse_ts("nonsense").is_err());
    }

    #[test]
    fn huge_values_rejected_with_field_and_line() {
        // Each once crashed a driver thread (`% 0` in the jitter, Duration overflow in `dpd_delay × 5`).
        for (from, to, field, line) in [
            ("dpd_delay = \"2s\"", "dpd_delay = 9223372036854775807", "connections.b.dpd_delay", 11),
            ("dpd_delay = \"2s\"", "dpd_delay = \"2s\"\nrekey_time = 18446744073709551", "connections.b.rekey_time", 12),
            ("dpd_delay = \"2s\"", "dpd_delay = \"2s\"\nover_time = \"9999d\"", "connections.b.over_time", 12),
            ("rekey_time = \"5s\"", "rekey_time = \"366d\"", "connections.b.children.net.rekey_time", 19),
            ("rekey_time = \"5s\"", "rekey_time = \"0s\"", "connections.b.children.net.rekey_time", 19),
            ("rekey_bytes = \"10M\"", "rekey_bytes = \"2000000000G\"", "connections.b.children.net.rekey_bytes", 20),
        ] {
            let bad = GOOD.replace(from, to);
            let e = Config::parse(&bad, Path::new("a.toml")).unwrap_err();
            assert_eq!(e.field, field, "{to}: {e}");
            assert_eq!(e.line, line, "{to}: {e}");
            assert!(e.message.contains("range") || e.message.contains("too large"), "{to}: {e}");
        }
        // The largest accepted values convert without overflow.
        let max = GOOD
            .replace("dpd_delay = \"2s\"", "dpd_delay = \"1d\"\nrekey_time = \"365d\"")
            .replace("rekey_time = \"5s\"", "rekey_time = \"365d\"");
        let c = Config::parse(&max, Path::new("a.toml")).unwrap();
        let b = &c.connections["b"];
        assert_eq!(b.dpd(), Some((Duration::from_secs(86_400), Duration::from_secs(5 * 86_400))));
        assert_eq!(b.ike_over_time(), Duration::from_secs(365 * 86_400) * 11 / 10);
        let ec = crate::driver::engine_conn(&c, "b", b).unwrap();
        assert_eq!(ec.ike_lifetimes.jitter, Duration::from_secs(365 * 86_400) / 10);
    }

    #[test]
    fn remote_id_defaults_to_the_remote_address() {
        let c = Config::parse(&GOOD.replace("remote.id = \"b.wisp.test\"\n", ""), Path::new("a.toml")).unwrap();
        assert_eq!(c.connections["b"].remote_id().as_deref(), Some("10.99.0.2"));
        let ec = crate::driver::engine_conn(&c, "b", &c.connections["b"]).unwrap();
        let id = ec.remote_id.exact().expect("an identity is required of the peer");
        assert_eq!((id.kind, id.value.as_str()), (wisp_policy_api::IdType::Ipv4Addr, "10.99.0.2"));
    }

    #[test]
    fn remote_addrs_many_peers() {
        let no_id = GOOD.replace("remote.id = \"b.wisp.test\"\n", "");
        let with = |addrs: &str| no_id.replace("remote_addrs = [\"10.99.0.2\"]", addrs);
        // swanctl's comma-separated string and a TOML list, with blocks, ranges, %any.
        for text in [
            "remote_addrs = \"10.99.0.0/24, 10.98.0.5-10.98.0.9,%any6\"",
            "remote_addrs = [\"10.99.0.0/24\", \"10.98.0.5-10.98.0.9\", \"%any6\"]",
        ] {
            let c = Config::parse(&with(text).replace("start_action = \"start\"", ""), Path::new("a.toml")).unwrap();
            let b = &c.connections["b"];
            assert_eq!(b.remote_addrs.len(), 3, "{text}");
            assert!(b.remote_addrs[0].contains("10.99.0.77".parse().unwrap()));
            assert!(b.remote_addrs[1].contains("10.98.0.9".parse().unwrap()));
            assert!(!b.remote_addrs[1].contains("10.98.0.10".parse().unwrap()));
            assert!(b.remote_addrs[2].contains("fd00::1".parse().unwrap()));
            // Many peers and no remote.id: any identity (the plugin authorizes it).
            assert_eq!(b.remote_id(), None);
            let ec = crate::driver::engine_conn(&c, "b", b).unwrap();
            assert_eq!(ec.remote_id, wisp_ike::config::IdMatch::Any);
            assert_eq!(ec.initiate_to(), None);
        }
        let c = Config::parse(&with("remote_addrs = \"%any\"").replace("start_action = \"start\"", ""), Path::new("a.toml")).unwrap();
        assert_eq!(c.connections["b"].remote_addrs, vec![AddrMatch::Any]);
        // A pattern for remote.id.
        let pat = GOOD.replace("remote.id = \"b.wisp.test\"", "remote.id = \"*.wisp.test\"");
        let c = Config::parse(&pat, Path::new("a.toml")).unwrap();
        let ec = crate::driver::engine_conn(&c, "b", &c.connections["b"]).unwrap();
        assert!(ec.remote_id.matches(&wisp_ike::config::identity("gw7.wisp.test")));
        assert!(!ec.remote_id.matches(&wisp_ike::config::identity("gw7.wisp.example")));
        for (bad, msg) in [
            ("remote_addrs = [\"10.99.0.0/33\"]", "10.99.0.0/33"),
            ("remote_addrs = [\"vpn.example.net\"]", "vpn.example.net"),
            ("remote_addrs = []", "at least one remote address"),
            ("remote_addrs = [\"10.9.0.9-10.9.0.1\"]", "10.9.0.9-10.9.0.1"),
        ] {
            let e = Config::parse(&with(bad), Path::new("a.toml")).unwrap_err().to_string();
            assert!(e.contains(msg), "{bad}: {e}");
        }
        let start = with("remote_addrs = \"10.99.0.0/24\"").replace("dpd_delay = \"2s\"", "start_action = \"start\"");
        let e = Config::parse(&start, Path::new("a.toml")).unwrap_err().to_string();
        assert!(e.contains("start_action") && e.contains("no single host"), "{e}");
    }

    #[test]
    fn durations_and_counts() {
        assert_eq!("500ms".parse::<Dur>().unwrap().0, Duration::from_millis(500));
        assert_eq!("4h".parse::<Dur>().unwrap().0, Duration::from_secs(14400));
        assert!("4y".parse::<Dur>().is_err());
        assert_eq!("2M".parse::<Count>().unwrap().0, 2 << 20);
        assert_eq!("1GB".parse::<Count>().unwrap().0, 1 << 30);
        assert!("x".parse::<Count>().is_err());
    }
}
