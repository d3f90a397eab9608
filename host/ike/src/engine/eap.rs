//! EAP in IKE_AUTH, as the responder (RFC 7296 2.16):
//!
//! ```text
//! HDR, SK {IDi, [IDr,] SAi2, TSi, TSr [, CP]}  -->
//!                         <--  HDR, SK {IDr, [CERT,] AUTH, EAP}
//! HDR, SK {EAP}  -->
//!                         <--  HDR, SK {EAP}            (as many as the method needs)
//!                         <--  HDR, SK {EAP (Success)}
//! HDR, SK {AUTH}  -->
//!                         <--  HDR, SK {AUTH, [CP,] SAr2, TSi, TSr}
//! ```
//!
//! The SA stays half-open (`InitResponded`) throughout, with the first
//! request kept: its SA, TS and CP payloads are answered in the last
//! response, and its IDi is in the peer's AUTH octets. Both final AUTHs are
//! keyed with the method's MSK. The policy's `authorize` runs after the
//! peer's final AUTH verified, as for any other method.

use std::time::Duration;

use wisp_policy_api::{AuthInfo, Identity};
use zeroize::Zeroizing;

use crate::codec::{self, ExchangeType, Header, NotifyType, Payload};
use crate::config::{LocalAuth, RemoteAuth};
use crate::eap::{self, Method, Outcome, Session};
use crate::event::{DownReason, Exchange, FailureReason, Side};

use super::authn;
use super::convert::identity_from_wire;
use super::sa::IkeSa;
use super::{notify, Engine};

/// An EAP authentication under way on a half-open SA.
pub(crate) struct EapState {
    /// The first IKE_AUTH request.
    pub first: Vec<Payload>,
    step: Step,
    /// The failure already reported (the method refused the peer and the
    /// session only waits for it to acknowledge).
    refused: Option<FailureReason>,
}

enum Step {
    Running(Session),
    /// EAP-Success sent; the peer's AUTH is due. `cert`: EAP-TLS's
    /// verified client certificate.
    Succeeded {
        method: Method,
        identity: String,
        msk: Zeroizing<Vec<u8>>,
        cert: Option<Box<crate::pki::cert::CertInfo>>,
    },
}

/// How the peer authenticated, for [`Engine::finish_responder_auth`].
pub(crate) enum AuthDone {
    /// Its own AUTH (PSK or signature) in this request; `conn_before` is the
    /// SA's connection before this request picked one.
    Signed { conn_before: usize },
    /// EAP, then the AUTH keyed with the method's MSK (kept in `state`,
    /// which goes back on the SA should a decision be deferred).
    Eap { state: Box<EapState> },
}

impl EapState {
    /// The MSK of the method that succeeded (empty before).
    pub fn msk(&self) -> &[u8] {
        match &self.step {
            Step::Succeeded { msk, .. } => msk,
            Step::Running(_) => &[],
        }
    }
}

impl Engine {
    /// The EAP user secrets (swanctl `secrets.eap-*`), shared by every
    /// engine of the daemon and replaced on reload. Live SAs are not
    /// touched by a change.
    pub fn set_eap_users(&mut self, users: std::sync::Arc<eap::EapUsers>) {
        self.eap_users = users;
    }

    /// The first IKE_AUTH request came without AUTH and connection
    /// `sa.conn` takes EAP: we prove ourselves and start the method.
    pub(super) fn eap_start(&mut self, now: Duration, mut sa: IkeSa, h: &Header, payloads: Vec<Payload>) {
        let conn = &self.config.connections[sa.conn];
        let RemoteAuth::Eap(cfg) = &conn.remote_auth else { return };
        let Some(keys) = sa.keys.as_ref() else { return };
        let idr_p = authn::local_id_wire(conn);
        let signed = authn::Signed { prf: keys.suite.prf, real_message: &sa.init_resp, peer_nonce: &sa.ni, sk_p: &keys.sk_pr, id: &idr_p };
        let proof = match authn::prove(conn, sa.hints.as_deref(), &signed) {
            Ok(p) => p,
            Err(why) => {
                self.deny_auth(now, sa, h, NotifyType::AUTHENTICATION_FAILED, FailureReason::OwnAuth { why }, Vec::new());
                return;
            }
        };
        let ike_identity = payloads
            .iter()
            .find_map(|p| if let Payload::IdI(i) = p { Some(identity_from_wire(i).value) } else { None })
            .unwrap_or_default();
        let first_id = self.rng.bytes::<1>()[0];
        let tls = match (cfg.method, &conn.local_auth, &cfg.tls_trust) {
            (Method::Tls, LocalAuth::Pubkey(ours), Some(trust)) => match eap::tls::server_config(ours, trust, self.unix_time) {
                Ok(c) => Some(c),
                Err(why) => {
                    self.deny_auth(now, sa, h, NotifyType::AUTHENTICATION_FAILED, FailureReason::OwnAuth { why }, Vec::new());
                    return;
                }
            },
            _ => None,
        };
        let (session, request) = match Session::start(cfg.method, cfg.eap_id.clone(), &ike_identity, first_id, self.rng.bytes(), tls) {
            Ok(s) => s,
            Err(why) => {
                self.deny_auth(now, sa, h, NotifyType::AUTHENTICATION_FAILED, FailureReason::OwnAuth { why }, Vec::new());
                return;
            }
        };
        let mut out = vec![Payload::IdR(idr_p)];
        out.extend(proof.certs);
        out.push(proof.auth);
        out.push(Payload::Eap(request));
        sa.eap = Some(Box::new(EapState { first: payloads, step: Step::Running(session), refused: None }));
        self.send_response(&mut sa, ExchangeType::IKE_AUTH, h.message_id, out);
        self.put(sa);
    }

    /// A later IKE_AUTH request of an EAP authentication.
    pub(super) fn eap_continue(&mut self, now: Duration, mut sa: IkeSa, h: &Header, payloads: Vec<Payload>) {
        let Some(mut state) = sa.eap.take() else { return };
        let method_of = |step: &Step| match step {
            Step::Running(s) => s.method(),
            Step::Succeeded { method, .. } => *method,
        };
        let method = method_of(&state.step);
        let refused = state.refused.take();
        let fail = |this: &mut Engine, mut sa: IkeSa, why: String, extra: Vec<Payload>| match refused.clone() {
            // Said when the method refused: the peer's acknowledgement ends it.
            Some(reason) => {
                let mut out = extra;
                out.push(notify(NotifyType::AUTHENTICATION_FAILED, Vec::new()));
                this.send_response(&mut sa, ExchangeType::IKE_AUTH, h.message_id, out);
                this.linger(now, sa, DownReason::Failed(reason));
            }
            None => {
                let reason = FailureReason::EapFailed { method: method.to_string(), why };
                this.deny_auth(now, sa, h, NotifyType::AUTHENTICATION_FAILED, reason, extra);
            }
        };
        match &mut state.step {
            Step::Running(session) => {
                let Some(bytes) = payloads.iter().find_map(|p| if let Payload::Eap(b) = p { Some(b) } else { None }) else {
                    fail(self, sa, "IKE_AUTH request without an EAP payload during EAP".into(), Vec::new());
                    return;
                };
                let challenge = self.rng.bytes();
                match session.process(bytes, &self.eap_users, challenge) {
                    Outcome::Continue(packet) => {
                        sa.eap = Some(state);
                        self.send_response(&mut sa, ExchangeType::IKE_AUTH, h.message_id, vec![Payload::Eap(packet)]);
                        self.put(sa);
                    }
                    Outcome::Success { packet, msk, identity, peer_certs } => {
                        // EAP-TLS: the EAP identity must be the certificate's
                        // (its subject or a subjectAltName), as for IKE's own.
                        let cert = match peer_certs.first().map(|ee| crate::pki::cert::CertInfo::parse(ee)) {
                            None => None,
                            Some(Err(err)) => {
                                fail(
                                    self,
                                    sa,
                                    format!("the client certificate does not parse: {err}"),
                                    vec![Payload::Eap(eap::encode_code(eap::FAILURE, packet[1]))],
                                );
                                return;
                            }
                            Some(Ok(c)) => {
                                let bound = crate::config::parse_identity(&identity)
                                    .map(|id| super::convert::identity_to_wire(&id))
                                    .is_ok_and(|w| c.binds_identity(w.id_type.0, &w.data));
                                if !bound {
                                    let why = format!("EAP identity {identity:?} is not in the client certificate {}", c.subject);
                                    fail(self, sa, why, vec![Payload::Eap(eap::encode_code(eap::FAILURE, packet[1]))]);
                                    return;
                                }
                                Some(Box::new(c))
                            }
                        };
                        state.step = Step::Succeeded { method, identity, msk, cert };
                        sa.eap = Some(state);
                        self.send_response(&mut sa, ExchangeType::IKE_AUTH, h.message_id, vec![Payload::Eap(packet)]);
                        self.put(sa);
                    }
                    Outcome::Refused { packet, reason } => {
                        // Reported now: a peer may give up instead of answering
                        // (charon sends INFORMATIONAL AUTHENTICATION_FAILED).
                        let reason = FailureReason::EapFailed { method: method.to_string(), why: reason };
                        let remote = sa.remote;
                        self.failure(
                            Some(&sa),
                            remote,
                            None,
                            Side::Local,
                            Exchange::IkeAuth,
                            reason.clone(),
                            Some(NotifyType::AUTHENTICATION_FAILED),
                        );
                        state.refused = Some(reason);
                        sa.eap = Some(state);
                        self.send_response(&mut sa, ExchangeType::IKE_AUTH, h.message_id, vec![Payload::Eap(packet)]);
                        self.put(sa);
                    }
                    Outcome::Failure { packet, reason } => fail(self, sa, reason, vec![Payload::Eap(packet)]),
                }
            }
            Step::Succeeded { identity, msk, cert, .. } => {
                let msk: &[u8] = msk;
                let Some(auth) = payloads.iter().find_map(|p| if let Payload::Auth(a) = p { Some(a) } else { None }) else {
                    fail(self, sa, "the peer sent no AUTH after EAP-Success".into(), Vec::new());
                    return;
                };
                let Some(idi) = state.first.iter().find_map(|p| if let Payload::IdI(i) = p { Some(i) } else { None }) else { return };
                let Some(keys) = sa.keys.as_ref() else { return };
                let signed =
                    authn::Signed { prf: keys.suite.prf, real_message: &sa.init_req, peer_nonce: &sa.nr, sk_p: &keys.sk_pi, id: idi };
                let peer = identity_from_wire(idi);
                if auth.method != codec::AuthMethod::SHARED_KEY_MIC || !super::suite::ct_eq(&authn::msk_auth(&signed, msk), &auth.data) {
                    let check = format!("AUTH of peer {peer} does not verify with the MSK of {method} (identity {identity:?})");
                    self.deny_auth(
                        now,
                        sa,
                        h,
                        NotifyType::AUTHENTICATION_FAILED,
                        FailureReason::AuthenticationFailed { check },
                        Vec::new(),
                    );
                    return;
                }
                let info = eap_auth_info(peer.clone(), method, identity, cert.as_deref());
                sa.auth_scheme = Some(format!("{method} as {identity:?}").into());
                sa.eap_identity = Some(identity.as_str().into());
                sa.remote_id = Some(peer);
                self.finish_responder_auth(now, sa, h, payloads, info, AuthDone::Eap { state });
            }
        }
    }
}

impl Engine {
    /// An INFORMATIONAL request during EAP: the peer gave up (charon does
    /// so on an EAP-MSCHAPv2 Failure request). The SA goes, with the
    /// reason we reported, or the peer's notify when we had none.
    pub(super) fn eap_aborted(&mut self, now: Duration, mut sa: IkeSa, h: &Header, payloads: Vec<Payload>) {
        let state = sa.eap.take().expect("EAP under way");
        self.send_response(&mut sa, ExchangeType::INFORMATIONAL, h.message_id, Vec::new());
        let reason = match state.refused {
            Some(r) => r,
            None => {
                let said: Vec<String> = payloads
                    .iter()
                    .filter_map(|p| if let Payload::Notify(n) = p { Some(n.notify_type.to_string()) } else { None })
                    .collect();
                let method = match &state.step {
                    Step::Running(s) => s.method(),
                    Step::Succeeded { method, .. } => *method,
                };
                let why =
                    if said.is_empty() { "the peer ended EAP".to_string() } else { format!("the peer ended EAP ({})", said.join(", ")) };
                let reason = FailureReason::EapFailed { method: method.to_string(), why };
                let remote = sa.remote;
                self.failure(Some(&sa), remote, None, Side::Remote, Exchange::IkeAuth, reason.clone(), None);
                reason
            }
        };
        self.linger(now, sa, DownReason::Failed(reason));
    }
}

/// The policy sees the IKE identity as `peer_identity`, the EAP user and
/// method beside it, and for EAP-TLS the client certificate's facts.
fn eap_auth_info(peer: Identity, method: Method, identity: &str, cert: Option<&crate::pki::cert::CertInfo>) -> AuthInfo {
    let mut info = AuthInfo::psk(peer);
    info.method = wisp_policy_api::AuthMethod::Eap;
    info.eap_identity = Some(identity.to_string());
    info.eap_method = Some(method.name().to_string());
    if let Some(c) = cert {
        info.certificate_subject = Some(c.subject.clone());
        info.certificate_issuer = Some(c.issuer.clone());
        info.key_fingerprint = Some(c.key_fingerprint.replace(':', ""));
        info.subject_alt_names = authn::san_strings(&c.sans);
        info.certificate_serial = Some(c.serial.clone());
        info.certificate_not_after = Some(c.not_after);
    }
    info
}
