//! EAP-MSCHAPv2 (draft-kamath-pppext-eap-mschapv2-02) as the EAP server:
//! the MS-CHAP-V2 computations of RFC 2759 and the session keys of RFC 3079,
//! with the MSK laid out as strongSwan and Windows expect (the server's
//! MasterReceiveKey, its MasterSendKey, then 32 zero octets).
//!
//! The exchange, one EAP round trip each:
//! ```text
//!  Request  Challenge (OpCode 1: 16-octet challenge, our name)
//!  Response Response  (OpCode 2: peer challenge, NT-Response, user name)
//!  Request  Success   (OpCode 3: "S=<authenticator response> M=...")
//!  Response Success   (OpCode 3)                       -> EAP-Success
//! ```
//! A wrong password gets a Failure request (OpCode 4, `E=691 R=0`: no retry);
//! the peer's Failure response ends the method.

use des::cipher::{BlockEncrypt, KeyInit};
use md4::{Digest as _, Md4};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// EAP type of MS-CHAP-V2 (IANA "EAP Method Types").
pub const TYPE: u8 = 26;

const OP_CHALLENGE: u8 = 1;
const OP_RESPONSE: u8 = 2;
const OP_SUCCESS: u8 = 3;
const OP_FAILURE: u8 = 4;
const CHALLENGE_LEN: usize = 16;
const RESPONSE_LEN: usize = 49;
/// The name we send in the Challenge.
const SERVER_NAME: &[u8] = b"wisp";

/// RFC 2759 8.7.
const MAGIC1: &[u8] = b"Magic server to client signing constant";
const MAGIC2: &[u8] = b"Pad to make it do more than one iteration";
/// RFC 3079 3.4.
const MASTER_MAGIC: &[u8] = b"This is the MPPE Master Key";
const SEND_MAGIC_CLIENT: &[u8] = b"On the client side, this is the send key; on the server side, it is the receive key.";
const RECV_MAGIC_CLIENT: &[u8] = b"On the client side, this is the receive key; on the server side, it is the send key.";

/// NtPasswordHash (RFC 2759 8.3): MD4 of the password in UTF-16LE.
pub fn nt_password_hash(password: &str) -> Zeroizing<[u8; 16]> {
    let mut h = Md4::new();
    for u in password.encode_utf16() {
        h.update(u.to_le_bytes());
    }
    Zeroizing::new(h.finalize().into())
}

/// HashNtPasswordHash (RFC 2759 8.4).
fn hash_hash(hash: &[u8; 16]) -> Zeroizing<[u8; 16]> {
    Zeroizing::new(Md4::digest(hash).into())
}

/// The user name without a Windows domain prefix (`DOMAIN\user` -> `user`),
/// as ChallengeHash takes it (RFC 2759 8.2).
pub fn user_part(name: &str) -> &str {
    name.rsplit_once('\\').map_or(name, |(_, u)| u)
}

/// ChallengeHash (RFC 2759 8.2).
pub fn challenge_hash(peer: &[u8; 16], auth: &[u8; 16], user: &str) -> [u8; 8] {
    let d = Sha1::new().chain_update(peer).chain_update(auth).chain_update(user_part(user).as_bytes()).finalize();
    d[..8].try_into().expect("8 of 20")
}

/// One DES block with a 56-bit key spread over 8 octets (RFC 2759 8.6).
fn des_encrypt(key7: &[u8], block: &[u8; 8]) -> [u8; 8] {
    let mut k = [0u8; 8];
    let mut bits: u64 = 0;
    for &b in key7 {
        bits = (bits << 8) | u64::from(b);
    }
    for (i, out) in k.iter_mut().enumerate() {
        // 7 key bits, then a parity bit (odd parity; DES ignores it).
        let seven = ((bits >> (49 - 7 * i)) & 0x7f) as u8;
        let b = seven << 1;
        *out = b | u8::from(b.count_ones().is_multiple_of(2));
    }
    let cipher = des::Des::new_from_slice(&k).expect("8-octet key");
    let mut out = des::cipher::Block::<des::Des>::clone_from_slice(block);
    cipher.encrypt_block(&mut out);
    k.fill(0);
    out.into()
}

/// ChallengeResponse (RFC 2759 8.5): the 24-octet NT-Response.
pub fn challenge_response(challenge: &[u8; 8], hash: &[u8; 16]) -> [u8; 24] {
    let mut z = Zeroizing::new([0u8; 21]);
    z[..16].copy_from_slice(hash);
    let mut out = [0u8; 24];
    for i in 0..3 {
        out[i * 8..i * 8 + 8].copy_from_slice(&des_encrypt(&z[i * 7..i * 7 + 7], challenge));
    }
    out
}

/// GenerateNTResponse (RFC 2759 8.1), what the peer computes.
pub fn nt_response(auth: &[u8; 16], peer: &[u8; 16], user: &str, password: &str) -> [u8; 24] {
    challenge_response(&challenge_hash(peer, auth, user), &nt_password_hash(password))
}

/// GenerateAuthenticatorResponse (RFC 2759 8.7): the 20 octets behind "S=".
pub fn authenticator_response(hash: &[u8; 16], nt_resp: &[u8; 24], peer: &[u8; 16], auth: &[u8; 16], user: &str) -> [u8; 20] {
    let hh = hash_hash(hash);
    let digest = Sha1::new().chain_update(&hh[..]).chain_update(nt_resp).chain_update(MAGIC1).finalize();
    let ch = challenge_hash(peer, auth, user);
    Sha1::new().chain_update(digest).chain_update(ch).chain_update(MAGIC2).finalize().into()
}

/// GetMasterKey (RFC 3079 3.4).
pub fn master_key(hash: &[u8; 16], nt_resp: &[u8; 24]) -> Zeroizing<[u8; 16]> {
    let hh = hash_hash(hash);
    let d = Zeroizing::new(Sha1::new().chain_update(&hh[..]).chain_update(nt_resp).chain_update(MASTER_MAGIC).finalize());
    Zeroizing::new(d[..16].try_into().expect("16 of 20"))
}

/// GetAsymmetricStartKey (RFC 3079 3.4) for a 128-bit session key, with
/// the magic chosen by the caller.
fn start_key(master: &[u8; 16], magic: &[u8]) -> Zeroizing<[u8; 16]> {
    let d =
        Zeroizing::new(Sha1::new().chain_update(master).chain_update([0u8; 40]).chain_update(magic).chain_update([0xf2u8; 40]).finalize());
    Zeroizing::new(d[..16].try_into().expect("16 of 20"))
}

/// The server's send and receive keys (RFC 3079 3.4 with IsServer).
pub fn server_keys(master: &[u8; 16]) -> (Zeroizing<[u8; 16]>, Zeroizing<[u8; 16]>) {
    (start_key(master, RECV_MAGIC_CLIENT), start_key(master, SEND_MAGIC_CLIENT))
}

/// The 64-octet MSK: MasterReceiveKey | MasterSendKey (the server's) | 32 zeros.
pub fn msk(hash: &[u8; 16], nt_resp: &[u8; 24]) -> Zeroizing<Vec<u8>> {
    let master = master_key(hash, nt_resp);
    let (send, recv) = server_keys(&master);
    let mut m = Zeroizing::new(Vec::with_capacity(64));
    m.extend_from_slice(&recv[..]);
    m.extend_from_slice(&send[..]);
    m.resize(64, 0);
    m
}

fn upper_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The MS-CHAP-V2 part of an EAP packet: OpCode, MS-CHAPv2-ID, MS-Length
/// (the EAP length minus 5, i.e. from OpCode on) and the rest.
fn packet(op: u8, ms_id: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + body.len());
    v.push(op);
    v.push(ms_id);
    v.extend_from_slice(&((4 + body.len()) as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// The server's state, between EAP round trips.
pub struct Server {
    challenge: [u8; 16],
    ms_id: u8,
    state: State,
}

enum State {
    /// Challenge sent; the Response is due.
    Challenged,
    /// Success request sent; the peer's Success response is due.
    Verified { msk: Zeroizing<Vec<u8>>, user: String },
    /// Failure request sent; the peer's Failure response ends it.
    Refused { why: String },
}

/// What one Response leads to.
pub enum Step {
    /// The type data of the next Request (EAP type 26).
    Request(Vec<u8>),
    /// The method succeeded: send EAP-Success. `user` is the name the peer
    /// proved the password of.
    Done { msk: Zeroizing<Vec<u8>>, user: String },
    /// The peer failed to prove the password: send this Failure request
    /// (the peer answers it, or gives up). `why` is for the log.
    Refuse { data: Vec<u8>, why: String },
    /// The method failed: send EAP-Failure.
    Failed(String),
}

impl Server {
    /// A server that challenges with `challenge`; returns the type data of
    /// the first Request. `ms_id` is the EAP identifier of that Request.
    pub fn start(challenge: [u8; 16], ms_id: u8) -> (Server, Vec<u8>) {
        let mut body = Vec::with_capacity(1 + CHALLENGE_LEN + SERVER_NAME.len());
        body.push(CHALLENGE_LEN as u8);
        body.extend_from_slice(&challenge);
        body.extend_from_slice(SERVER_NAME);
        (Server { challenge, ms_id, state: State::Challenged }, packet(OP_CHALLENGE, ms_id, &body))
    }

    /// The peer's Response (its EAP type data). `expected` is the identity
    /// the user name must be (the EAP identity); `secret` finds the
    /// password of a user name.
    pub fn respond(&mut self, data: &[u8], expected: &str, secret: impl Fn(&str) -> Option<Zeroizing<String>>) -> Step {
        let Some(&op) = data.first() else { return Step::Failed("empty EAP-MSCHAPv2 message".into()) };
        match std::mem::replace(&mut self.state, State::Refused { why: String::new() }) {
            State::Challenged if op == OP_RESPONSE => self.verify(data, expected, secret),
            State::Verified { msk, user } if op == OP_SUCCESS => Step::Done { msk, user },
            State::Refused { why } if op == OP_FAILURE => Step::Failed(why),
            _ if op == OP_FAILURE => Step::Failed("the peer aborted EAP-MSCHAPv2".into()),
            _ => Step::Failed(format!("unexpected EAP-MSCHAPv2 OpCode {op}")),
        }
    }

    fn verify(&mut self, data: &[u8], expected: &str, secret: impl Fn(&str) -> Option<Zeroizing<String>>) -> Step {
        // OpCode, ID, MS-Length (2), Value-Size, Response (49), Name.
        if data.len() < 5 + RESPONSE_LEN || data[4] as usize != RESPONSE_LEN {
            return Step::Failed("malformed EAP-MSCHAPv2 Response".into());
        }
        let ms_len = u16::from_be_bytes([data[2], data[3]]) as usize;
        if ms_len != data.len() || data[1] != self.ms_id {
            return Step::Failed("EAP-MSCHAPv2 Response with a wrong MS-Length or MS-CHAPv2-ID".into());
        }
        let resp = &data[5..5 + RESPONSE_LEN];
        let peer: [u8; 16] = resp[..16].try_into().expect("16");
        let nt: [u8; 24] = resp[24..48].try_into().expect("24");
        let Ok(name) = std::str::from_utf8(&data[5 + RESPONSE_LEN..]) else {
            return Step::Failed("EAP-MSCHAPv2 user name is not UTF-8".into());
        };
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Step::Failed("EAP-MSCHAPv2 user name empty, too long or not printable".into());
        }
        if name != expected && user_part(name) != user_part(expected) {
            return Step::Failed(format!("EAP-MSCHAPv2 user name {name:?} is not the EAP identity {expected:?}"));
        }
        // One answer for an unknown user and a wrong password, so that a
        // prober learns nothing from the reply.
        let refuse = |this: &mut Server, why: String| {
            let msg = format!("E=691 R=0 C={} V=3 M=Authentication failed", upper_hex(&this.challenge));
            this.state = State::Refused { why: why.clone() };
            Step::Refuse { data: packet(OP_FAILURE, this.ms_id, msg.as_bytes()), why }
        };
        let Some(password) = secret(name) else {
            return refuse(self, format!("no EAP secret for {name:?}"));
        };
        let hash = nt_password_hash(&password);
        let want = challenge_response(&challenge_hash(&peer, &self.challenge, name), &hash);
        if !bool::from(want.ct_eq(&nt)) {
            return refuse(self, format!("EAP-MSCHAPv2: wrong password for {name:?}"));
        }
        let s = authenticator_response(&hash, &nt, &peer, &self.challenge, name);
        let msg = format!("S={} M=Welcome to wisp", upper_hex(&s));
        self.state = State::Verified { msk: msk(&hash, &nt), user: name.to_string() };
        Step::Request(packet(OP_SUCCESS, self.ms_id, msg.as_bytes()))
    }
}

/// The peer's side, for tests: the Response to a Challenge, and the check
/// of the server's Success message.
pub mod peer {
    use super::*;

    /// The Response type data to the Challenge `data`, for `user`/`password`,
    /// with our `peer_challenge`.
    pub fn response(data: &[u8], peer_challenge: [u8; 16], user: &str, password: &str) -> Option<Vec<u8>> {
        if data.first() != Some(&OP_CHALLENGE) || data.len() < 5 + CHALLENGE_LEN || data[4] as usize != CHALLENGE_LEN {
            return None;
        }
        let auth: [u8; 16] = data[5..21].try_into().ok()?;
        let nt = nt_response(&auth, &peer_challenge, user, password);
        let mut body = vec![RESPONSE_LEN as u8];
        body.extend_from_slice(&peer_challenge);
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&nt);
        body.push(0);
        body.extend_from_slice(user.as_bytes());
        Some(packet(OP_RESPONSE, data[1], &body))
    }

    /// The MSK the peer derives.
    pub fn msk_of(password: &str, nt: &[u8; 24]) -> Zeroizing<Vec<u8>> {
        super::msk(&nt_password_hash(password), nt)
    }

    /// The peer's answer to a Success or Failure request: the same OpCode.
    pub fn ack(data: &[u8]) -> Vec<u8> {
        vec![data.first().copied().unwrap_or(OP_FAILURE)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
    fn a16(s: &str) -> [u8; 16] {
        h(s).try_into().unwrap()
    }

    // RFC 2759 9.2 and RFC 3079 3.5.3.
    const AUTH: &str = "5B 5D 7C 7D 7B 3F 2F 3E 3C 2C 60 21 32 26 26 28";
    const PEER: &str = "21 40 23 24 25 5E 26 2A 28 29 5F 2B 3A 33 7C 7E";

    #[test]
    fn rfc2759_sample() {
        let (auth, peer) = (a16(AUTH), a16(PEER));
        assert_eq!(challenge_hash(&peer, &auth, "User").to_vec(), h("D0 2E 43 86 BC E9 12 26"));
        let hash = nt_password_hash("clientPass");
        assert_eq!(hash.to_vec(), h("44 EB BA 8D 53 12 B8 D6 11 47 44 11 F5 69 89 AE"));
        assert_eq!(hash_hash(&hash).to_vec(), h("41 C0 0C 58 4B D2 D9 1C 40 17 A2 A1 2F A5 9F 3F"));
        let nt = nt_response(&auth, &peer, "User", "clientPass");
        assert_eq!(nt.to_vec(), h("82 30 9E CD 8D 70 8B 5E A0 8F AA 39 81 CD 83 54 42 33 11 4A 3D 85 D6 DF"));
        let s = authenticator_response(&hash, &nt, &peer, &auth, "User");
        assert_eq!(format!("S={}", upper_hex(&s)), "S=407A5589115FD0D6209F510FE9C04566932CDA56");
        // A domain prefix is not hashed.
        assert_eq!(challenge_hash(&peer, &auth, "CORP\\User"), challenge_hash(&peer, &auth, "User"));
    }

    #[test]
    fn rfc3079_keys() {
        let hash = nt_password_hash("clientPass");
        let nt: [u8; 24] = h("82309ECD8D708B5EA08FAA3981CD83544233114A3D85D6DF").try_into().unwrap();
        let master = master_key(&hash, &nt);
        assert_eq!(master.to_vec(), h("FD EC E3 71 7A 8C 83 8C B3 88 E5 27 AE 3C DD 31"));
        // SendStartKey128 of RFC 3079 3.5.3 is the server's send key.
        let (send, recv) = server_keys(&master);
        assert_eq!(send.to_vec(), h("8B 7C DC 14 9B 99 3A 1B A1 18 CB 15 3F 56 DC CB"));
        assert_ne!(send.to_vec(), recv.to_vec());
        let m = msk(&hash, &nt);
        assert_eq!(m.len(), 64);
        assert_eq!(&m[..16], &recv[..]);
        assert_eq!(&m[16..32], &send[..]);
        assert!(m[32..].iter().all(|&b| b == 0));
    }

    fn users(name: &str) -> Option<Zeroizing<String>> {
        (name == "alice").then(|| Zeroizing::new("correct horse".to_string()))
    }

    #[test]
    fn server_accepts_the_right_password_and_both_sides_share_the_msk() {
        let (mut s, chal) = Server::start([7; 16], 3);
        assert_eq!(chal[1], 3);
        assert_eq!(u16::from_be_bytes([chal[2], chal[3]]) as usize, chal.len());
        let resp = peer::response(&chal, [9; 16], "alice", "correct horse").unwrap();
        let Step::Request(success) = s.respond(&resp, "alice", users) else { panic!("no success request") };
        assert_eq!(success[0], OP_SUCCESS);
        let text = std::str::from_utf8(&success[4..]).unwrap();
        let nt: [u8; 24] = resp[5 + 24..5 + 48].try_into().unwrap();
        let expect = authenticator_response(&nt_password_hash("correct horse"), &nt, &[9; 16], &[7; 16], "alice");
        assert!(text.starts_with(&format!("S={}", upper_hex(&expect))), "{text}");
        let Step::Done { msk, user } = s.respond(&peer::ack(&success), "alice", users) else { panic!("not done") };
        assert_eq!(user, "alice");
        assert_eq!(msk.to_vec(), peer::msk_of("correct horse", &nt).to_vec());
    }

    #[test]
    fn wrong_password_unknown_user_and_other_name_fail() {
        for (user, pw, expected, why) in [
            ("alice", "wrong", "alice", "wrong password"),
            ("mallory", "x", "mallory", "no EAP secret"),
            ("alice", "correct horse", "bob", "is not the EAP identity"),
        ] {
            let (mut s, chal) = Server::start([1; 16], 0);
            let resp = peer::response(&chal, [2; 16], user, pw).unwrap();
            match s.respond(&resp, expected, users) {
                Step::Refuse { data: f, why: first } => {
                    assert!(first.contains(why), "{first}");
                    assert_eq!(f[0], OP_FAILURE, "{why}");
                    assert!(std::str::from_utf8(&f[4..]).unwrap().starts_with("E=691 R=0 C=01010101"));
                    let Step::Failed(reason) = s.respond(&peer::ack(&f), expected, users) else { panic!("{why}") };
                    assert!(reason.contains(why), "{reason}");
                }
                Step::Failed(reason) => assert!(reason.contains(why), "{reason}"),
                Step::Done { .. } | Step::Request(_) => panic!("{why}: accepted"),
            }
        }
    }

    #[test]
    fn malformed_responses_fail_without_panic() {
        let (_, chal) = Server::start([1; 16], 5);
        let good = peer::response(&chal, [2; 16], "alice", "correct horse").unwrap();
        for n in 0..good.len() {
            let (mut s, _) = Server::start([1; 16], 5);
            assert!(matches!(s.respond(&good[..n], "alice", users), Step::Failed(_)), "truncated to {n}");
        }
        let mut bad_id = good.clone();
        bad_id[1] ^= 1;
        let (mut s, _) = Server::start([1; 16], 5);
        assert!(matches!(s.respond(&bad_id, "alice", users), Step::Failed(_)));
        // A Success before the Response.
        let (mut s, _) = Server::start([1; 16], 5);
        assert!(matches!(s.respond(&[OP_SUCCESS], "alice", users), Step::Failed(_)));
    }
}
