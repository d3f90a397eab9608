//! EAP (RFC 3748) inside IKE_AUTH (RFC 7296 2.16), as the server: the
//! gateway has proved itself with its certificate and authenticates the
//! peer by an EAP method; the method's MSK then keys both sides' final AUTH.
//!
//! Sans-IO like the rest of the engine: a [`Session`] takes the peer's EAP
//! packet and gives the next one to send. Randomness (the MS-CHAPv2
//! challenge) comes from the caller.
//!
//! Methods: EAP-Identity (type 1, when the EAP identity is not the IKE
//! identity: swanctl `remote.eap_id = %any`), EAP-MSCHAPv2 (type 26),
//! what the native IKEv2 clients of Windows, macOS/iOS and Android use,
//! and EAP-TLS (type 13, a client certificate, with rustls).

pub mod mschapv2;
pub mod tls;

use std::collections::BTreeMap;
use std::fmt;

use zeroize::Zeroizing;

use crate::config::Secret;

/// EAP codes (RFC 3748 4).
pub const REQUEST: u8 = 1;
pub const RESPONSE: u8 = 2;
pub const SUCCESS: u8 = 3;
pub const FAILURE: u8 = 4;
/// EAP types (RFC 3748 5).
pub const TYPE_IDENTITY: u8 = 1;
pub const TYPE_NAK: u8 = 3;

/// The longest EAP identity we take (octets).
pub const MAX_IDENTITY: usize = 255;
/// EAP round trips one authentication may take.
pub const MAX_ROUNDS: u8 = 64;

/// An EAP method wisp serves (swanctl `remote.auth = eap-NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// EAP-MSCHAPv2: a password, checked against [`EapUsers`].
    MsChapV2,
    /// EAP-TLS: a client certificate, checked against `remote.cacerts`.
    Tls,
}

impl Method {
    /// The EAP type code.
    pub fn type_code(self) -> u8 {
        match self {
            Method::MsChapV2 => mschapv2::TYPE,
            Method::Tls => tls::TYPE,
        }
    }
    /// The swanctl name (`eap-mschapv2` is `remote.auth`'s spelling).
    pub fn name(self) -> &'static str {
        match self {
            Method::MsChapV2 => "mschapv2",
            Method::Tls => "tls",
        }
    }
    /// Parses a swanctl `remote.auth` value naming an EAP method.
    pub fn from_auth(s: &str) -> Option<Method> {
        match s {
            "eap-mschapv2" => Some(Method::MsChapV2),
            "eap-tls" => Some(Method::Tls),
            _ => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EAP-{}", self.name().to_uppercase())
    }
}

/// Which EAP identity the peer must authenticate as (swanctl `remote.eap_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum EapId {
    /// The IKE identity (IDi) is the EAP identity; no EAP-Identity round.
    #[default]
    Ike,
    /// Ask with EAP-Identity and take what the peer says (`%any`).
    Any,
    /// Ask with EAP-Identity; it must be this one.
    Exact(String),
}

/// EAP user secrets (swanctl's `secrets.eap-*`), by EAP identity. `Debug`
/// shows the names, never the secrets; the secrets are zeroized on drop.
/// Shared by the daemon's engines; [`EapUsers::replace`] swaps them all at
/// once on reload.
#[derive(Default)]
pub struct EapUsers {
    by_name: std::sync::RwLock<BTreeMap<String, Secret>>,
}

impl EapUsers {
    /// From (identity, password) pairs; a repeated identity is an error.
    pub fn new(entries: impl IntoIterator<Item = (String, Zeroizing<String>)>) -> Result<EapUsers, String> {
        let mut by_name = BTreeMap::new();
        for (name, secret) in entries {
            if name.is_empty() || name.len() > MAX_IDENTITY {
                return Err(format!("EAP identity {name:?} is empty or longer than {MAX_IDENTITY} octets"));
            }
            if by_name.insert(name.clone(), Secret::new(secret.as_bytes().to_vec())).is_some() {
                return Err(format!("EAP identity {name:?} is given twice"));
            }
        }
        Ok(EapUsers { by_name: std::sync::RwLock::new(by_name) })
    }
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Secret>> {
        self.by_name.read().unwrap_or_else(|p| p.into_inner())
    }
    /// Takes `other`'s secrets (a reload); authentications under way see
    /// the new ones from their next round on.
    pub fn replace(&self, other: &EapUsers) {
        let new = other.read().clone();
        *self.by_name.write().unwrap_or_else(|p| p.into_inner()) = new;
    }
    /// The password of `name`.
    pub fn password(&self, name: &str) -> Option<Zeroizing<String>> {
        self.read().get(name).and_then(|s| std::str::from_utf8(s.as_bytes()).ok().map(|p| Zeroizing::new(p.to_string())))
    }
    pub fn len(&self) -> usize {
        self.read().len()
    }
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

impl fmt::Debug for EapUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EapUsers").field("identities", &self.read().keys().collect::<Vec<_>>()).finish()
    }
}

/// One EAP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub code: u8,
    pub id: u8,
    /// The type (requests and responses); 0 for Success and Failure.
    pub typ: u8,
    /// The type data.
    pub data: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses one packet; its Length must be the payload's.
    pub fn parse(b: &'a [u8]) -> Result<Packet<'a>, String> {
        if b.len() < 4 {
            return Err(format!("EAP packet of {} octets", b.len()));
        }
        let len = u16::from_be_bytes([b[2], b[3]]) as usize;
        if len != b.len() {
            return Err(format!("EAP Length {len} in a payload of {} octets", b.len()));
        }
        match b[0] {
            REQUEST | RESPONSE if len >= 5 => Ok(Packet { code: b[0], id: b[1], typ: b[4], data: &b[5..] }),
            SUCCESS | FAILURE if len == 4 => Ok(Packet { code: b[0], id: b[1], typ: 0, data: &[] }),
            c => Err(format!("EAP code {c} with Length {len}")),
        }
    }
}

/// Encodes a Request or Response.
pub fn encode(code: u8, id: u8, typ: u8, data: &[u8]) -> Vec<u8> {
    let len = 5 + data.len();
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&[code, id]);
    v.extend_from_slice(&(len as u16).to_be_bytes());
    v.push(typ);
    v.extend_from_slice(data);
    v
}

/// Encodes a Success or Failure.
pub fn encode_code(code: u8, id: u8) -> Vec<u8> {
    vec![code, id, 0, 4]
}

/// The EAP types a Nak asks for, by name where known.
fn nak_types(data: &[u8]) -> String {
    let names: Vec<String> = data
        .iter()
        .map(|&t| match t {
            0 => "none".to_string(),
            4 => "MD5".into(),
            13 => "TLS".into(),
            21 => "TTLS".into(),
            25 => "PEAP".into(),
            26 => "MSCHAPv2".into(),
            t => format!("type {t}"),
        })
        .collect();
    names.join(", ")
}

enum Phase {
    Identity,
    MsChap(mschapv2::Server),
    Tls(Box<tls::Server>),
}

/// The server side of one EAP authentication.
pub struct Session {
    method: Method,
    eap_id: EapId,
    /// The identifier of our last Request.
    id: u8,
    /// The EAP identity, once known.
    identity: Option<String>,
    phase: Phase,
    rounds: u8,
    /// EAP-TLS: the server's configuration, until the method starts.
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
}

/// What a Response leads to.
pub enum Outcome {
    /// Send this EAP packet (a Request) and wait for the next Response.
    Continue(Vec<u8>),
    /// Send this EAP-Success; the peer proved `identity`, and the method
    /// keyed the final AUTH with `msk`. EAP-TLS: the peer's certificate
    /// chain (end entity first), which the caller binds to `identity`.
    Success { packet: Vec<u8>, msk: Zeroizing<Vec<u8>>, identity: String, peer_certs: Vec<Vec<u8>> },
    /// Send this Request, which tells the peer it failed (its answer ends
    /// the method with a Failure); `reason` says why, for the log.
    Refused { packet: Vec<u8>, reason: String },
    /// Send this EAP-Failure; `reason` says why (for the log, not the peer).
    Failure { packet: Vec<u8>, reason: String },
}

impl Session {
    /// Starts with the first Request: EAP-Identity unless the IKE identity
    /// `ike_identity` is the EAP identity. `id` is its EAP identifier,
    /// `challenge` the method's randomness; `tls` the TLS server's
    /// configuration (EAP-TLS only).
    pub fn start(
        method: Method,
        eap_id: EapId,
        ike_identity: &str,
        id: u8,
        challenge: [u8; 16],
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) -> Result<(Session, Vec<u8>), String> {
        if method == Method::Tls && tls.is_none() {
            return Err("EAP-TLS without a TLS configuration".into());
        }
        let mut s = Session { method, eap_id, id, identity: None, phase: Phase::Identity, rounds: 0, tls };
        let first = if s.eap_id == EapId::Ike {
            s.identity = Some(ike_identity.to_string());
            s.begin_method(challenge)?
        } else {
            encode(REQUEST, id, TYPE_IDENTITY, &[])
        };
        Ok((s, first))
    }

    pub fn method(&self) -> Method {
        self.method
    }

    fn begin_method(&mut self, challenge: [u8; 16]) -> Result<Vec<u8>, String> {
        match self.method {
            Method::MsChapV2 => {
                let (m, data) = mschapv2::Server::start(challenge, self.id);
                self.phase = Phase::MsChap(m);
                Ok(encode(REQUEST, self.id, mschapv2::TYPE, &data))
            }
            Method::Tls => {
                let cfg = self.tls.take().ok_or("EAP-TLS without a TLS configuration")?;
                let (t, data) = tls::Server::start(cfg)?;
                self.phase = Phase::Tls(Box::new(t));
                Ok(encode(REQUEST, self.id, tls::TYPE, &data))
            }
        }
    }

    /// The peer's Response `bytes`; `users` holds the secrets, `challenge`
    /// fresh randomness should the method need it.
    pub fn process(&mut self, bytes: &[u8], users: &EapUsers, challenge: [u8; 16]) -> Outcome {
        let fail = |this: &Session, reason: String| Outcome::Failure { packet: encode_code(FAILURE, this.id), reason };
        self.rounds += 1;
        if self.rounds > MAX_ROUNDS {
            return fail(self, format!("more than {MAX_ROUNDS} EAP round trips"));
        }
        let p = match Packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => return fail(self, format!("malformed EAP packet: {e}")),
        };
        if p.code != RESPONSE || p.id != self.id {
            return fail(self, format!("expected an EAP Response with identifier {}, got code {} identifier {}", self.id, p.code, p.id));
        }
        if p.typ == TYPE_NAK {
            return fail(self, format!("the peer declined {} and asks for {}", self.method, nak_types(p.data)));
        }
        match &mut self.phase {
            Phase::Identity => {
                if p.typ != TYPE_IDENTITY {
                    return fail(self, format!("expected EAP-Identity, got EAP type {}", p.typ));
                }
                let identity = match std::str::from_utf8(p.data) {
                    Ok(s) if !s.is_empty() && s.len() <= MAX_IDENTITY && !s.chars().any(char::is_control) => s.to_string(),
                    _ => return fail(self, "EAP identity empty, too long, not UTF-8 or not printable".into()),
                };
                if let EapId::Exact(want) = &self.eap_id {
                    if *want != identity {
                        return fail(self, format!("EAP identity {identity:?} is not remote.eap_id {want:?}"));
                    }
                }
                self.identity = Some(identity);
                self.id = self.id.wrapping_add(1);
                match self.begin_method(challenge) {
                    Ok(first) => Outcome::Continue(first),
                    Err(e) => fail(self, e),
                }
            }
            Phase::Tls(t) => {
                if p.typ != tls::TYPE {
                    return fail(self, format!("expected EAP-TLS, got EAP type {}", p.typ));
                }
                match t.respond(p.data) {
                    tls::Step::Request(data) => {
                        self.id = self.id.wrapping_add(1);
                        Outcome::Continue(encode(REQUEST, self.id, tls::TYPE, &data))
                    }
                    tls::Step::Done { msk, peer_certs } => Outcome::Success {
                        packet: encode_code(SUCCESS, self.id),
                        msk,
                        identity: self.identity.clone().unwrap_or_default(),
                        peer_certs,
                    },
                    tls::Step::Failed(reason) => fail(self, reason),
                }
            }
            Phase::MsChap(m) => {
                if p.typ != mschapv2::TYPE {
                    return fail(self, format!("expected EAP-MSCHAPv2, got EAP type {}", p.typ));
                }
                let identity = self.identity.clone().unwrap_or_default();
                match m.respond(p.data, &identity, |n| users.password(n)) {
                    mschapv2::Step::Request(data) => {
                        self.id = self.id.wrapping_add(1);
                        Outcome::Continue(encode(REQUEST, self.id, mschapv2::TYPE, &data))
                    }
                    mschapv2::Step::Refuse { data, why } => {
                        self.id = self.id.wrapping_add(1);
                        Outcome::Refused { packet: encode(REQUEST, self.id, mschapv2::TYPE, &data), reason: why }
                    }
                    mschapv2::Step::Done { msk, user } => {
                        Outcome::Success { packet: encode_code(SUCCESS, self.id), msk, identity: user, peer_certs: Vec::new() }
                    }
                    mschapv2::Step::Failed(reason) => fail(self, reason),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> EapUsers {
        EapUsers::new([("alice".to_string(), Zeroizing::new("pw-alice".to_string()))]).unwrap()
    }

    /// Plays the peer: answers Identity with `who`, MSCHAPv2 with `pw`.
    fn run(eap_id: EapId, ike_id: &str, who: &str, pw: &str) -> Outcome {
        let u = users();
        let (mut s, mut req) = Session::start(Method::MsChapV2, eap_id, ike_id, 7, [3; 16], None).unwrap();
        loop {
            let p = Packet::parse(&req).unwrap();
            assert_eq!(p.code, REQUEST);
            let resp = match p.typ {
                TYPE_IDENTITY => encode(RESPONSE, p.id, TYPE_IDENTITY, who.as_bytes()),
                mschapv2::TYPE if p.data[0] == 1 => {
                    encode(RESPONSE, p.id, mschapv2::TYPE, &mschapv2::peer::response(p.data, [5; 16], who, pw).unwrap())
                }
                mschapv2::TYPE => encode(RESPONSE, p.id, mschapv2::TYPE, &mschapv2::peer::ack(p.data)),
                t => panic!("type {t}"),
            };
            match s.process(&resp, &u, [4; 16]) {
                Outcome::Continue(next) | Outcome::Refused { packet: next, .. } => req = next,
                done => return done,
            }
        }
    }

    #[test]
    fn identity_then_mschapv2() {
        let Outcome::Success { packet, msk, identity, .. } = run(EapId::Any, "10.0.0.9", "alice", "pw-alice") else { panic!("failed") };
        assert_eq!(identity, "alice");
        assert_eq!(msk.len(), 64);
        let p = Packet::parse(&packet).unwrap();
        assert_eq!((p.code, p.typ), (SUCCESS, 0));
    }

    #[test]
    fn ike_identity_is_the_eap_identity_by_default() {
        assert!(matches!(run(EapId::Ike, "alice", "alice", "pw-alice"), Outcome::Success { .. }));
        // The user name must be the IKE identity then.
        let Outcome::Failure { reason, .. } = run(EapId::Ike, "bob", "alice", "pw-alice") else { panic!() };
        assert!(reason.contains("is not the EAP identity"), "{reason}");
    }

    #[test]
    fn refusals_name_the_cause() {
        for (eap_id, who, pw, why) in [
            (EapId::Any, "alice", "nope", "wrong password"),
            (EapId::Any, "carol", "x", "no EAP secret"),
            (EapId::Exact("bob".into()), "alice", "pw-alice", "is not remote.eap_id"),
        ] {
            let Outcome::Failure { packet, reason } = run(eap_id, "x", who, pw) else { panic!("{why}: accepted") };
            assert!(reason.contains(why), "{reason}");
            assert_eq!(Packet::parse(&packet).unwrap().code, FAILURE);
        }
    }

    #[test]
    fn nak_wrong_identifier_and_garbage_fail() {
        let u = users();
        let (mut s, req) = Session::start(Method::MsChapV2, EapId::Any, "x", 1, [0; 16], None).unwrap();
        let id = req[1];
        let Outcome::Failure { reason, .. } = s.process(&encode(RESPONSE, id, TYPE_NAK, &[13]), &u, [0; 16]) else { panic!() };
        assert!(reason.contains("declined EAP-MSCHAPV2 and asks for TLS"), "{reason}");
        let (mut s, _) = Session::start(Method::MsChapV2, EapId::Any, "x", 1, [0; 16], None).unwrap();
        assert!(matches!(s.process(&encode(RESPONSE, id + 1, TYPE_IDENTITY, b"alice"), &u, [0; 16]), Outcome::Failure { .. }));
        for junk in [&[][..], &[2, 1, 0], &[2, 1, 0, 9, 1], &[2, 1, 0, 4], &[9, 1, 0, 5, 1]] {
            let (mut s, _) = Session::start(Method::MsChapV2, EapId::Any, "x", 1, [0; 16], None).unwrap();
            assert!(matches!(s.process(junk, &u, [0; 16]), Outcome::Failure { .. }), "{junk:?}");
        }
    }

    #[test]
    fn rounds_are_bounded() {
        let u = users();
        let (mut s, _) = Session::start(Method::MsChapV2, EapId::Any, "x", 1, [0; 16], None).unwrap();
        // Identity answered, then only Naks of nothing... each a failure; a
        // session that fails is over, but a looping peer cannot get more
        // than MAX_ROUNDS out of one session either.
        for _ in 0..MAX_ROUNDS + 1 {
            let _ = s.process(&encode(RESPONSE, 1, TYPE_IDENTITY, b"alice"), &u, [0; 16]);
        }
        let Outcome::Failure { reason, .. } = s.process(&[], &u, [0; 16]) else { panic!() };
        assert!(reason.contains("round trips"), "{reason}");
    }

    #[test]
    fn users_debug_hides_secrets() {
        let u = users();
        let d = format!("{u:?}");
        assert!(d.contains("alice") && !d.contains("pw-alice"), "{d}");
        assert!(EapUsers::new([("a".into(), Zeroizing::new("x".into())), ("a".into(), Zeroizing::new("y".into()))]).is_err());
    }
}
