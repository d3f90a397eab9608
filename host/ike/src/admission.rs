//! Admission of IKE_SA_INIT requests: the responder's DoS defence (RFC 7296
//! 2.6, RFC 8019), daemon-wide and sans-IO.
//!
//! One [`Admission`] serves every engine of a daemon. The caller consults it
//! for each IKE_SA_INIT request *before* the request reaches an engine (no
//! queueing, no decode, no policy call, no DH for what it refuses), and the
//! engines report the half-open IKE SAs they create and finish
//! ([`Engine::set_admission`](crate::engine::Engine::set_admission)).
//!
//! * Every IKE_SA_INIT request counts as an attempt, whatever becomes of it
//!   (bad KE, INVALID_KE_PAYLOAD, plugin refusal, success). Cookies are
//!   demanded while the attempt rate (sliding one-second window) exceeds
//!   [`AdmissionConfig::cookie_rate_threshold`] or the half-open IKE SAs
//!   reach [`AdmissionConfig::cookie_threshold`].
//! * Hard caps: [`AdmissionConfig::init_limit_half_open`] half-open SAs in
//!   all, [`AdmissionConfig::block_threshold`] per source address. A request
//!   over a cap is dropped without an answer.
//! * Cookie = version byte | SHA-256(Ni | IPi | SPIi | secret). The secret
//!   rotates every [`AdmissionConfig::cookie_secret_lifetime`] or after
//!   [`AdmissionConfig::cookie_secret_uses`] cookies; the previous one stays
//!   valid for [`AdmissionConfig::cookie_grace`] after a rotation.
//!
//! Deterministic: no clock (the caller passes `now`, a [`Duration`] since any
//! fixed epoch), no OS randomness (secrets come from a ChaCha20 generator
//! seeded by the caller).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::codec::{ExchangeType, Flags, Header, Message, NotifyPayload, NotifyType, Payload};

/// Thresholds and caps (the gateway's `[ike]` section; names follow
/// strongSwan's `charon.*` options where one exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Half-open IKE SAs (all connections) from which cookies are demanded.
    pub cookie_threshold: u32,
    /// IKE_SA_INIT attempts per second (all connections, successful or not)
    /// beyond which cookies are demanded: with 100, the 101st attempt within
    /// a second must bring one.
    pub cookie_rate_threshold: u32,
    /// Most half-open IKE SAs one source address may hold.
    pub block_threshold: u32,
    /// Most half-open IKE SAs in all.
    pub init_limit_half_open: u32,
    /// The cookie secret rotates this often...
    pub cookie_secret_lifetime: Duration,
    /// ...or after this many cookies, whichever comes first.
    pub cookie_secret_uses: u64,
    /// How long after a rotation cookies of the previous secret are accepted.
    pub cookie_grace: Duration,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            cookie_threshold: 10,
            cookie_rate_threshold: 100,
            block_threshold: 5,
            init_limit_half_open: 1000,
            cookie_secret_lifetime: Duration::from_secs(120),
            cookie_secret_uses: 100_000,
            cookie_grace: Duration::from_secs(10),
        }
    }
}

/// What to do with an IKE_SA_INIT request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the engine.
    Admit,
    /// Send these bytes (an IKE_SA_INIT response carrying only a COOKIE
    /// notify) back to the sender, on the port the request came to; do not
    /// hand the request on.
    Cookie(Vec<u8>),
    /// Drop it silently (counted).
    Drop(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// Not an IKE_SA_INIT request we can read the nonce of while cookies are on.
    Malformed,
    /// [`AdmissionConfig::init_limit_half_open`] reached.
    HalfOpenGlobal,
    /// [`AdmissionConfig::block_threshold`] reached for the source address.
    HalfOpenSource,
}

/// Counters (cumulative since start, except `half_open` and `cookies_required`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// IKE_SA_INIT requests seen.
    pub attempts: u64,
    /// COOKIE answers sent.
    pub cookies_sent: u64,
    /// Requests admitted with a valid cookie.
    pub cookies_accepted: u64,
    /// Requests that presented a cookie that did not verify (answered with a fresh one).
    pub cookies_invalid: u64,
    pub dropped_half_open_global: u64,
    pub dropped_half_open_source: u64,
    pub dropped_malformed: u64,
    pub secret_rotations: u64,
    /// Half-open IKE SAs now.
    pub half_open: u64,
    /// Whether a request arriving now must carry a cookie.
    pub cookies_required: bool,
}

impl AdmissionStats {
    /// `(name, value)` pairs, for status output.
    pub fn list(&self) -> Vec<(String, u64)> {
        [
            ("ike_init_attempts", self.attempts),
            ("ike_cookies_sent", self.cookies_sent),
            ("ike_cookies_accepted", self.cookies_accepted),
            ("ike_cookies_invalid", self.cookies_invalid),
            ("ike_half_open", self.half_open),
            ("ike_drop_half_open_global", self.dropped_half_open_global),
            ("ike_drop_half_open_source", self.dropped_half_open_source),
            ("ike_drop_init_malformed", self.dropped_malformed),
            ("ike_cookie_secret_rotations", self.secret_rotations),
            ("ike_cookies_required", self.cookies_required as u64),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect()
    }
}

struct Secret {
    version: u8,
    key: [u8; 32],
    /// When it became current.
    since: Duration,
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// The daemon-wide admission state. See the module documentation.
pub struct Admission {
    cfg: AdmissionConfig,
    rng: ChaCha20Rng,
    current: Secret,
    /// The previous secret and until when it is accepted.
    previous: Option<(Secret, Duration)>,
    uses: u64,
    /// Attempt counts of the current and the previous one-second window.
    window: u64,
    in_window: u64,
    in_prev_window: u64,
    half_open_total: u32,
    half_open_by_ip: HashMap<IpAddr, u32>,
    stats: AdmissionStats,
}

impl Admission {
    /// `seed` seeds the generator the cookie secrets come from (the OS RNG in
    /// production). `now` starts the first secret's lifetime.
    pub fn new(cfg: AdmissionConfig, seed: [u8; 32], now: Duration) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Admission {
            cfg,
            rng,
            current: Secret { version: 0, key, since: now },
            previous: None,
            uses: 0,
            window: now.as_secs(),
            in_window: 0,
            in_prev_window: 0,
            half_open_total: 0,
            half_open_by_ip: HashMap::new(),
            stats: AdmissionStats::default(),
        }
    }

    /// New thresholds (e.g. after a reload); counts and secrets are kept.
    pub fn set_config(&mut self, cfg: AdmissionConfig) {
        self.cfg = cfg;
    }

    pub fn config(&self) -> &AdmissionConfig {
        &self.cfg
    }

    pub fn stats(&self, now: Duration) -> AdmissionStats {
        let mut s = self.stats.clone();
        s.half_open = self.half_open_total as u64;
        s.cookies_required = self.cookies_required(now);
        s
    }

    /// Half-open IKE SAs held by `ip` now.
    pub fn half_open_of(&self, ip: IpAddr) -> u32 {
        self.half_open_by_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Attempts in the last second (sliding window estimate).
    pub fn attempt_rate(&self, now: Duration) -> u64 {
        let sec = now.as_secs();
        let (cur, prev) = match sec.saturating_sub(self.window) {
            0 => (self.in_window, self.in_prev_window),
            1 => (0, self.in_window),
            _ => (0, 0),
        };
        let frac = now.subsec_millis() as u64;
        cur + prev * (1000 - frac) / 1000
    }

    /// Whether a request arriving at `now` must carry a valid cookie.
    pub fn cookies_required(&self, now: Duration) -> bool {
        self.half_open_total >= self.cfg.cookie_threshold || self.attempt_rate(now) > self.cfg.cookie_rate_threshold as u64
    }

    /// Decide on one IKE_SA_INIT request (`datagram` without the non-ESP
    /// marker) from `remote`. Counts it as an attempt.
    pub fn check_init(&mut self, now: Duration, remote: SocketAddr, datagram: &[u8]) -> Verdict {
        self.count_attempt(now);
        self.rotate_if_due(now);
        if self.half_open_total >= self.cfg.init_limit_half_open {
            self.stats.dropped_half_open_global += 1;
            return Verdict::Drop(DropReason::HalfOpenGlobal);
        }
        if self.half_open_of(remote.ip()) >= self.cfg.block_threshold {
            self.stats.dropped_half_open_source += 1;
            return Verdict::Drop(DropReason::HalfOpenSource);
        }
        if !self.cookies_required(now) {
            return Verdict::Admit;
        }
        let Some(init) = parse_init(datagram) else {
            self.stats.dropped_malformed += 1;
            return Verdict::Drop(DropReason::Malformed);
        };
        if let Some(c) = init.cookie {
            if self.verify(now, c, init.nonce, remote.ip(), init.spi_i) {
                self.stats.cookies_accepted += 1;
                return Verdict::Admit;
            }
            self.stats.cookies_invalid += 1;
        }
        let cookie = cookie_value(&self.current, init.nonce, remote.ip(), init.spi_i);
        self.uses += 1;
        let reply = Message {
            header: Header::new(init.spi_i, 0, ExchangeType::IKE_SA_INIT, Flags::new(false, true), 0),
            payloads: vec![Payload::Notify(NotifyPayload::new(NotifyType::COOKIE, cookie))],
        };
        match reply.encode() {
            Ok(b) => {
                self.stats.cookies_sent += 1;
                Verdict::Cookie(b)
            }
            Err(_) => {
                self.stats.dropped_malformed += 1;
                Verdict::Drop(DropReason::Malformed)
            }
        }
    }

    /// An engine created a half-open IKE SA for `ip`. `false` (nothing
    /// counted): a cap is reached, the engine must not keep the SA.
    pub fn half_open_started(&mut self, ip: IpAddr) -> bool {
        if self.half_open_total >= self.cfg.init_limit_half_open {
            self.stats.dropped_half_open_global += 1;
            return false;
        }
        let n = self.half_open_by_ip.entry(ip).or_insert(0);
        if *n >= self.cfg.block_threshold {
            self.stats.dropped_half_open_source += 1;
            if *n == 0 {
                self.half_open_by_ip.remove(&ip);
            }
            return false;
        }
        *n += 1;
        self.half_open_total += 1;
        true
    }

    /// A half-open IKE SA of `ip` completed IKE_AUTH, failed or expired.
    pub fn half_open_finished(&mut self, ip: IpAddr) {
        if let Some(n) = self.half_open_by_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.half_open_by_ip.remove(&ip);
            }
            self.half_open_total = self.half_open_total.saturating_sub(1);
        }
    }

    fn count_attempt(&mut self, now: Duration) {
        self.stats.attempts += 1;
        let sec = now.as_secs();
        match sec.saturating_sub(self.window) {
            0 => {}
            1 => {
                self.in_prev_window = self.in_window;
                self.in_window = 0;
                self.window = sec;
            }
            _ => {
                self.in_prev_window = 0;
                self.in_window = 0;
                self.window = sec;
            }
        }
        self.in_window += 1;
    }

    fn rotate_if_due(&mut self, now: Duration) {
        if let Some((_, until)) = &self.previous {
            if now >= *until {
                self.previous = None;
            }
        }
        let age = now.saturating_sub(self.current.since);
        if age < self.cfg.cookie_secret_lifetime && self.uses < self.cfg.cookie_secret_uses {
            return;
        }
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        let next = Secret { version: self.current.version.wrapping_add(1), key, since: now };
        key.zeroize();
        let old = std::mem::replace(&mut self.current, next);
        self.previous = Some((old, now + self.cfg.cookie_grace));
        self.uses = 0;
        self.stats.secret_rotations += 1;
    }

    fn verify(&self, now: Duration, presented: &[u8], ni: &[u8], ip: IpAddr, spi_i: u64) -> bool {
        let Some(&version) = presented.first() else { return false };
        let secret = if version == self.current.version {
            &self.current
        } else {
            match &self.previous {
                Some((s, until)) if s.version == version && now < *until => s,
                _ => return false,
            }
        };
        crate::crypto::auth::auth_eq(presented, &cookie_value(secret, ni, ip, spi_i))
    }
}

fn cookie_value(secret: &Secret, ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(ni);
    match ip {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(spi_i.to_be_bytes());
    h.update(secret.key);
    let mut v = Vec::with_capacity(33);
    v.push(secret.version);
    v.extend_from_slice(&h.finalize());
    v
}

/// Whether `datagram` (without the non-ESP marker) is a new IKE_SA_INIT
/// request: exchange 34, from the original initiator, not a response, no
/// responder SPI yet. Only the fixed header is read.
pub fn is_init_request(datagram: &[u8]) -> bool {
    if datagram.len() < 28 {
        return false;
    }
    let flags = datagram[19];
    datagram[18] == ExchangeType::IKE_SA_INIT.0
        && flags & Flags::INITIATOR != 0
        && flags & Flags::RESPONSE == 0
        && datagram[8..16] == [0u8; 8]
}

struct InitFields<'a> {
    spi_i: u64,
    nonce: &'a [u8],
    /// The COOKIE notify's data, when it is the first payload (RFC 7296 2.6).
    cookie: Option<&'a [u8]>,
}

/// Walk the payload chain of an IKE_SA_INIT request far enough to find the
/// nonce and a leading COOKIE notify, without allocating.
fn parse_init(d: &[u8]) -> Option<InitFields<'_>> {
    const NONCE: u8 = 40;
    const NOTIFY: u8 = 41;
    const MAX_PAYLOADS: usize = 64;
    if !is_init_request(d) {
        return None;
    }
    let spi_i = u64::from_be_bytes(d[0..8].try_into().ok()?);
    let total = (u32::from_be_bytes(d[24..28].try_into().ok()?) as usize).min(d.len());
    let mut next = d[16];
    let mut off = 28;
    let mut nonce = None;
    let mut cookie = None;
    for i in 0..MAX_PAYLOADS {
        if next == 0 {
            break;
        }
        if off + 4 > total {
            return None;
        }
        let len = u16::from_be_bytes([d[off + 2], d[off + 3]]) as usize;
        if len < 4 || off + len > total {
            return None;
        }
        let body = &d[off + 4..off + len];
        match next {
            NONCE => nonce = Some(body),
            NOTIFY if i == 0 && body.len() >= 4 => {
                let ty = u16::from_be_bytes([body[2], body[3]]);
                let spi_len = body[1] as usize;
                if ty == NotifyType::COOKIE.0 && body.len() >= 4 + spi_len {
                    cookie = Some(&body[4 + spi_len..]);
                }
            }
            _ => {}
        }
        next = d[off];
        off += len;
    }
    Some(InitFields { spi_i, nonce: nonce?, cookie })
}
