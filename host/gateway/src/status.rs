//! The status model shown by `wisp status` (text) and `wisp status --json`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub pid: u32,
    pub uptime_secs: u64,
    pub config: String,
    pub plugin: PluginStatus,
    pub connections: Vec<ConnectionStatus>,
    /// Dataplane-wide counters (drops by reason, etc.), name → value.
    #[serde(default)]
    pub dataplane: Vec<(String, u64)>,
    /// IKE_SA_INIT admission counters (attempts, cookies, half-open drops), name → value.
    #[serde(default)]
    pub ike: Vec<(String, u64)>,
    /// Daemon-wide counters of the control side (engine queues, control
    /// socket refusals), name → value.
    #[serde(default)]
    pub daemon: Vec<(String, u64)>,
    /// The last IKE_SA_INIT whose addresses matched no connection.
    #[serde(default)]
    pub last_unmatched_init: Option<Unmatched>,
    /// Virtual IP pools (`[pools.NAME]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolStatus>,
}

/// An IKE_SA_INIT no connection took: where from, how long ago.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Unmatched {
    pub source: String,
    pub secs_ago: u64,
}

/// A connection's engine queue (see `crate::queue`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct QueueStatus {
    /// Datagrams and notices waiting now, and the most ever seen.
    pub depth: u64,
    pub high_water: u64,
    pub capacity: u64,
    /// Datagram bytes waiting now.
    pub bytes: u64,
    /// Control commands waiting now.
    pub commands: u64,
    pub dropped_datagrams: u64,
    pub dropped_notices: u64,
    pub refused_commands: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PluginStatus {
    pub path: String,
    pub name: String,
    pub version: String,
    /// 1 for the first successful load, +1 for every successful reload.
    pub load_number: u64,
    pub sha256: String,
    /// Why the last load attempt failed (the previous version stays in charge).
    pub last_error: Option<String>,
    /// The decision workers shared by every connection.
    #[serde(default)]
    pub decisions: DecisionStatus,
}

/// `wisp_policy::DecisionPool` counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DecisionStatus {
    pub workers: usize,
    /// Questions decided by the plugin.
    pub asked: u64,
    /// Answers an engine picked up from memory (its own question again
    /// after being told, or the same question of another negotiation).
    pub remembered: u64,
    /// Refused because 1,024 questions were already waiting (overload).
    pub refused: u64,
    pub queued: usize,
    pub running: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConnectionStatus {
    pub name: String,
    pub local_addrs: Vec<String>,
    pub remote_addrs: Vec<String>,
    pub local_id: String,
    pub remote_id: String,
    /// `idle`, `connecting`, `established`, `failed`.
    pub state: String,
    /// Last failure (e.g. `AUTHENTICATION_FAILED: ...`).
    pub last_error: Option<String>,
    /// Listed by the connection's driver when asked; see `sas_unavailable`.
    pub ike_sas: Vec<IkeSaStatus>,
    /// Why `ike_sas` is empty although SAs may exist: the driver did not
    /// answer in time (busy or stuck); the other fields are current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sas_unavailable: Option<String>,
    #[serde(default)]
    pub queue: QueueStatus,
    /// Negotiations of this connection parked for a policy decision now.
    #[serde(default)]
    pub decisions_waiting: u64,
    /// Parked requests dropped because 256 were already waiting.
    #[serde(default)]
    pub parked_dropped: u64,
    /// Our certificate (`local.auth = pubkey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_cert: Option<CertStatus>,
}

/// A certificate in `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CertStatus {
    /// RFC 4514.
    pub subject: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_after: u64,
    /// Seconds until `not_after` when the status was made (negative: expired).
    pub expires_in_secs: i64,
    /// Expired, or expires within [`CERT_WARN_SECS`].
    pub warning: bool,
}

/// A certificate expiring within this is a warning (30 days).
pub const CERT_WARN_SECS: i64 = 30 * 86_400;

impl CertStatus {
    pub fn new(subject: String, issuer: String, not_after: u64, now_unix: u64) -> CertStatus {
        let left = not_after as i64 - now_unix as i64;
        CertStatus { subject, issuer, not_after, expires_in_secs: left, warning: left < CERT_WARN_SECS }
    }
    fn describe(&self) -> String {
        let d = self.expires_in_secs / 86_400;
        let when = if self.expires_in_secs < 0 { format!("EXPIRED {} days ago", -d) } else { format!("expires in {d} days") };
        format!("{} (issuer {}), {when}{}", self.subject, self.issuer, if self.warning { " WARNING" } else { "" })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IkeSaStatus {
    /// Our SPI, hex.
    pub local_spi: String,
    pub remote_spi: String,
    pub local: String,
    pub remote: String,
    pub local_id: String,
    pub remote_id: String,
    pub initiator: bool,
    pub state: String,
    /// e.g. `AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE25519`.
    pub algorithms: String,
    pub nat_detected: bool,
    pub established_secs: u64,
    pub rekey_in_secs: Option<u64>,
    pub children: Vec<ChildSaStatus>,
    /// How the peer authenticated: "pre-shared key" or the signature scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_auth: Option<String>,
    /// The peer's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cert: Option<CertStatus>,
    /// Virtual IPs assigned to us (`vips`) and to the peer (from `pools`),
    /// and the DNS servers that came or went with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_vips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_vips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

/// A virtual IP pool and its leases.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PoolStatus {
    pub name: String,
    /// `first-last`.
    pub range: String,
    pub size: String,
    /// Leases held by IKE SAs, and leases kept for identities that left.
    pub online: usize,
    pub offline: usize,
    pub leases: Vec<LeaseStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LeaseStatus {
    pub address: String,
    /// The identity it is leased to.
    pub identity: String,
    /// IKE SAs holding it (2 for a moment during a reauthentication).
    pub sas: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChildSaStatus {
    pub name: String,
    pub state: String,
    pub mode: String,
    /// Inbound (our) SPI, hex.
    pub spi_in: String,
    pub spi_out: String,
    /// e.g. `AES_GCM_16_128/NO_ESN` (`/CURVE25519` with PFS).
    pub algorithms: String,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub established_secs: u64,
    pub rekey_in_secs: Option<u64>,
    pub expire_in_secs: Option<u64>,
    /// How many times this child has been rekeyed.
    #[serde(default)]
    pub rekeys: u64,
}

impl Status {
    /// Human-readable rendering.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "wisp daemon pid {} up {}s, config {}", self.pid, self.uptime_secs, self.config);
        let p = &self.plugin;
        let _ = writeln!(
            o,
            "plugin: {} {} (load #{}, sha256 {}) from {}",
            if p.name.is_empty() { "-" } else { &p.name },
            p.version,
            p.load_number,
            short(&p.sha256),
            p.path
        );
        if let Some(e) = &p.last_error {
            let _ = writeln!(o, "  last load error: {e}");
        }
        let d = &p.decisions;
        if d.workers > 0 {
            let _ = writeln!(
                o,
                "  decisions: {} asked, {} from memory, {} queued, {} running on {} workers, {} refused (overload)",
                d.asked, d.remembered, d.queued, d.running, d.workers, d.refused
            );
        }
        for c in &self.connections {
            let _ = writeln!(
                o,
                "{}: {} {} [{}] ... {} [{}]",
                c.name,
                c.state,
                c.local_addrs.join(","),
                c.local_id,
                c.remote_addrs.join(","),
                c.remote_id
            );
            if let Some(e) = &c.last_error {
                let _ = writeln!(o, "  last error: {e}");
            }
            if let Some(cert) = &c.local_cert {
                let _ = writeln!(o, "  our certificate: {}", cert.describe());
            }
            if let Some(why) = &c.sas_unavailable {
                let _ = writeln!(o, "  SAs not listed: {why}");
            }
            if c.decisions_waiting > 0 || c.parked_dropped > 0 {
                let _ = writeln!(
                    o,
                    "  waiting for the policy: {} negotiations ({} dropped, too many waiting)",
                    c.decisions_waiting, c.parked_dropped
                );
            }
            let q = &c.queue;
            if q.high_water > 0 || q.dropped_datagrams + q.dropped_notices + q.refused_commands > 0 {
                let _ = writeln!(
                    o,
                    "  queue: {}/{} ({} bytes, max {}), dropped {} datagrams {} notices, refused {} commands",
                    q.depth, q.capacity, q.bytes, q.high_water, q.dropped_datagrams, q.dropped_notices, q.refused_commands
                );
            }
            for s in &c.ike_sas {
                let _ = writeln!(
                    o,
                    "  IKE SA {}_i{} {}_r{} {} {} -> {} {}, established {}s ago{}{}",
                    if s.initiator { &s.local_spi } else { &s.remote_spi },
                    if s.initiator { "*" } else { "" },
                    if s.initiator { &s.remote_spi } else { &s.local_spi },
                    if s.initiator { "" } else { "*" },
                    s.state,
                    s.local,
                    s.remote,
                    s.algorithms,
                    s.established_secs,
                    s.rekey_in_secs.map(|r| format!(", rekey in {r}s")).unwrap_or_default(),
                    if s.nat_detected { ", NAT" } else { "" },
                );
                if let Some(a) = &s.remote_auth {
                    let _ = writeln!(o, "    peer authenticated with {a}");
                }
                if let Some(cert) = &s.remote_cert {
                    let _ = writeln!(o, "    peer certificate: {}", cert.describe());
                }
                if !s.local_vips.is_empty() {
                    let _ = writeln!(o, "    our virtual IP {} (DNS {})", s.local_vips.join(" "), s.dns.join(" "));
                }
                if !s.remote_vips.is_empty() {
                    let _ = writeln!(o, "    peer's virtual IP {}", s.remote_vips.join(" "));
                }
                for ch in &s.children {
                    let _ = writeln!(
                        o,
                        "    {}: {} {} SPIs {}_i {}_o {}, {} bytes_i ({} pkts), {} bytes_o ({} pkts), {}s ago{}{}, rekeyed {}x",
                        ch.name,
                        ch.state,
                        ch.mode,
                        ch.spi_in,
                        ch.spi_out,
                        ch.algorithms,
                        ch.bytes_in,
                        ch.packets_in,
                        ch.bytes_out,
                        ch.packets_out,
                        ch.established_secs,
                        ch.rekey_in_secs.map(|r| format!(", rekey in {r}s")).unwrap_or_default(),
                        ch.expire_in_secs.map(|r| format!(", expires in {r}s")).unwrap_or_default(),
                        ch.rekeys,
                    );
                    let _ = writeln!(o, "      {} === {}", ch.local_ts.join(" "), ch.remote_ts.join(" "));
                }
            }
        }
        for p in &self.pools {
            let _ = writeln!(o, "pool {}: {} ({} addresses), {} online, {} offline", p.name, p.range, p.size, p.online, p.offline);
            for l in &p.leases {
                let _ =
                    writeln!(o, "  {} {}{}", l.address, l.identity, if l.sas > 1 { format!(" ({} SAs)", l.sas) } else { String::new() });
            }
        }
        if !self.ike.is_empty() {
            let _ = writeln!(o, "ike: {}", self.ike.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
        }
        if let Some(u) = &self.last_unmatched_init {
            let _ = writeln!(o, "last IKE_SA_INIT matching no connection: from {} {}s ago", u.source, u.secs_ago);
        }
        if !self.daemon.is_empty() {
            let _ = writeln!(o, "daemon: {}", self.daemon.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
        }
        if !self.dataplane.is_empty() {
            let _ = writeln!(o, "dataplane: {}", self.dataplane.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" "));
        }
        o
    }
}

fn short(s: &str) -> &str {
    if s.len() > 16 {
        &s[..16]
    } else if s.is_empty() {
        "-"
    } else {
        s
    }
}
