//! IKE_SA_INIT and IKE_AUTH, both roles.

use std::net::SocketAddr;
use std::time::Duration;

use wisp_policy_api::{AuthInfo, SaKind};

use crate::codec::{self, ExchangeType, Flags, Header, KePayload, Message, NotifyType, Payload, SaPayload};
use crate::config::ConnectionConfig;
use crate::event::*;

use super::authn;
use super::convert::{self, identity_from_wire, identity_to_wire};
use super::eap::AuthDone;
use super::sa::*;
use super::suite::{self, IkeSuite};
use super::*;
use crate::crypto::sig;

impl Engine {
    pub(super) fn initiate_ike(&mut self, now: Duration, ci: usize, child: Option<String>) -> Result<IkeSaId, EngineError> {
        let conn: &ConnectionConfig = &self.config.connections[ci];
        let remote_ip = conn.initiate_to().ok_or_else(|| EngineError::NoRemoteAddress(conn.name.clone()))?;
        self.initiate_ike_to(now, ci, child, remote_ip)
    }

    /// [`Engine::initiate_ike`] towards `remote_ip` (a reauthentication
    /// goes to the peer's current address).
    pub(super) fn initiate_ike_to(
        &mut self,
        now: Duration,
        ci: usize,
        child: Option<String>,
        remote_ip: std::net::IpAddr,
    ) -> Result<IkeSaId, EngineError> {
        let conn: &ConnectionConfig = &self.config.connections[ci];
        let local_ip = conn.local_for(remote_ip);
        let local = SocketAddr::new(local_ip, 500);
        let remote = SocketAddr::new(remote_ip, conn.remote_port);
        let probe = self.skeleton(IkeSaId(0), 0, 0);
        self.ike_cap_allows(&probe, ci, false).map_err(EngineError::Limit)?;
        let id = self.new_id();
        let spi_i = self.alloc_ike_spi();
        let mut sa = self.skeleton(id, spi_i, 0);
        sa.conn = ci;
        sa.initiator = true;
        sa.local = local;
        sa.remote = remote;
        sa.state = IkeState::InitSent;
        sa.created = now;
        sa.last_recv = now;
        sa.first_child_name = child;
        self.by_spi.insert(spi_i, id);
        match self.prepare_init(now, &mut sa) {
            Ok(true) => {}
            Ok(false) => self.init_waits(now, &sa),
            Err(e) => {
                self.forget(&sa);
                return Err(e);
            }
        }
        self.put(sa);
        Ok(id)
    }

    /// Our IKE SA `sa` (`InitSent`, nothing sent yet): order the proposals,
    /// prepare the first child and send IKE_SA_INIT. `Ok(false)`: a policy
    /// decision is deferred, nothing changed; ask again later.
    pub(super) fn prepare_init(&mut self, now: Duration, sa: &mut IkeSa) -> Result<bool, EngineError> {
        self.policy.take_deferred();
        let ci = sa.conn;
        let ctx = self.ctx(sa, ci, true);
        let conn = &self.config.connections[ci];
        let order = match self.ordered(&ctx, SaKind::Ike, &conn.ike_proposals) {
            Ok(o) => o,
            Err(_) if self.policy.take_deferred() => return Ok(false),
            Err(e) => return Err(EngineError::Policy(e)),
        };
        let offered: Vec<codec::Proposal> = order
            .iter()
            .enumerate()
            .map(|(n, &i)| convert::to_wire_proposal(&conn.ike_proposals[i], n as u8 + 1, Vec::new(), true))
            .collect();
        let group = offered
            .iter()
            .flat_map(|p| p.transforms_of(codec::TransformType::DH))
            .map(|t| t.id)
            .find(|g| suite::dh_supported(*g))
            .ok_or_else(|| EngineError::Policy("no supported key exchange group in the IKE proposals".into()))?;
        if let Some(child) = sa.first_child_name.clone() {
            match self.child_nego(sa, &child, None, false) {
                Ok(nego) => sa.first_child = Some(Box::new(nego)),
                Err(_) if self.policy.take_deferred() => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        sa.offered = offered;
        let (dh, _) = suite::dh_generate(group, &mut self.rng).ok_or_else(|| EngineError::Policy("DH failed".into()))?;
        sa.dh = Some(dh);
        sa.group = group;
        sa.ni = self.nonce();
        self.send_init_request(now, sa);
        Ok(true)
    }

    fn send_init_request(&mut self, now: Duration, sa: &mut IkeSa) {
        let Some(dh) = &sa.dh else { return };
        let ke = suite::dh_public(dh);
        let conn = &self.config.connections[sa.conn];
        let mut payloads = Vec::new();
        if let Some(c) = &sa.cookie {
            payloads.push(notify(NotifyType::COOKIE, c.clone()));
        }
        payloads.push(Payload::Sa(SaPayload { proposals: sa.offered.clone() }));
        payloads.push(Payload::Ke(KePayload { group: sa.group, data: ke }));
        payloads.push(Payload::Nonce(sa.ni.clone()));
        let src = if conn.force_encap { self.rng.vec(20) } else { suite::nat_hash(sa.spi_i, 0, sa.local) };
        payloads.push(notify(NotifyType::NAT_DETECTION_SOURCE_IP, src));
        payloads.push(notify(NotifyType::NAT_DETECTION_DESTINATION_IP, suite::nat_hash(sa.spi_i, 0, sa.remote)));
        if conn.fragmentation.announced() {
            payloads.push(notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED, Vec::new()));
        }
        if authn::uses_signatures(conn) {
            payloads.push(notify(NotifyType::SIGNATURE_HASH_ALGORITHMS, sig::hash_algorithms_notify_data()));
        }
        let msg = Message { header: Header::new(sa.spi_i, 0, ExchangeType::IKE_SA_INIT, Flags::new(true, false), 0), payloads };
        let Ok(bytes) = msg.encode() else { return };
        sa.init_req = bytes.clone();
        sa.next_msg_id = 1;
        let timeout = conn.retransmit.timeout;
        sa.outstanding =
            Some(Box::new(Outstanding { msg_id: 0, bytes: vec![bytes.clone()], sends: 1, next_at: now + timeout, pending: Pending::Init }));
        let t = self.transmit_for(sa, bytes);
        self.transmits.push_back(t);
    }

    fn fail_sa(&mut self, sa: IkeSa, side: Side, exchange: Exchange, reason: FailureReason, notify: Option<NotifyType>) {
        let remote = sa.remote;
        self.failure(Some(&sa), remote, None, side, exchange, reason.clone(), notify);
        self.teardown(sa, DownReason::Failed(reason));
    }

    pub(super) fn initiator_init_response(
        &mut self,
        now: Duration,
        mut sa: IkeSa,
        h: &Header,
        msg: Message,
        bytes: &[u8],
        remote: SocketAddr,
    ) {
        let _ = remote;
        let ex = Exchange::IkeSaInit;
        if let Some(c) = msg.notify(NotifyType::COOKIE) {
            if sa.init_retries < MAX_INIT_RETRIES && !c.data.is_empty() && c.data.len() <= 64 {
                sa.init_retries += 1;
                sa.cookie = Some(c.data.clone());
                self.send_init_request(now, &mut sa);
                self.put(sa);
            } else {
                self.fail_sa(sa, Side::Remote, ex, FailureReason::CookieLoop, Some(NotifyType::COOKIE));
            }
            return;
        }
        if let Some(n) = msg.notify(NotifyType::INVALID_KE_PAYLOAD) {
            let want = if n.data.len() == 2 { u16::from_be_bytes([n.data[0], n.data[1]]) } else { 0 };
            let offered = sa.offered.iter().any(|p| p.transforms_of(codec::TransformType::DH).any(|t| t.id == want));
            if offered && want != sa.group && sa.init_retries < MAX_INIT_RETRIES {
                if let Some((dh, _)) = suite::dh_generate(want, &mut self.rng) {
                    sa.init_retries += 1;
                    sa.dh = Some(dh);
                    sa.group = want;
                    self.send_init_request(now, &mut sa);
                    self.put(sa);
                    return;
                }
            }
            let reason = FailureReason::KeGroupNotOffered { group: want, offered: convert::summary(&sa.offered) };
            self.fail_sa(sa, Side::Remote, ex, reason, Some(NotifyType::INVALID_KE_PAYLOAD));
            return;
        }
        if let Some(n) = msg.notifies().find(|n| n.notify_type.is_error()) {
            let nt = n.notify_type;
            let reason = FailureReason::PeerRefusedInit { notify: nt.0, offered: convert::summary(&sa.offered) };
            self.fail_sa(sa, Side::Remote, ex, reason, Some(nt));
            return;
        }
        let mut sa_p = None;
        let mut ke = None;
        let mut nonce = None;
        for p in &msg.payloads {
            match p {
                Payload::Sa(s) => sa_p = Some(s),
                Payload::Ke(k) => ke = Some(k),
                Payload::Nonce(n) => nonce = Some(n),
                _ => {}
            }
        }
        let (Some(sa_p), Some(ke), Some(nonce)) = (sa_p, ke, nonce) else {
            self.fail_sa(
                sa,
                Side::Remote,
                ex,
                FailureReason::Malformed(Malformed::InitResponseIncomplete),
                Some(NotifyType::INVALID_SYNTAX),
            );
            return;
        };
        let answer = match sa_p.proposals.as_slice() {
            [one] => convert::check_answer(one, &sa.offered),
            _ => Err(format!("peer answered with {} proposals", sa_p.proposals.len())),
        };
        if let Err(why) = answer {
            self.fail_sa(
                sa,
                Side::Local,
                ex,
                FailureReason::AnswerRefused { esp: false, answer: convert::summary(&sa_p.proposals), why },
                Some(NotifyType::NO_PROPOSAL_CHOSEN),
            );
            return;
        }
        if nonce.len() < 16 || nonce.len() > 256 || h.spi_r == 0 {
            self.fail_sa(
                sa,
                Side::Local,
                ex,
                FailureReason::Malformed(Malformed::InitResponseNonceOrSpi),
                Some(NotifyType::INVALID_SYNTAX),
            );
            return;
        }
        let chosen = &sa_p.proposals[0];
        let suite = match ike_suite(chosen) {
            Some(s) if s.dh == sa.group && ke.group == sa.group => s,
            _ => {
                self.fail_sa(
                    sa,
                    Side::Local,
                    ex,
                    FailureReason::AnswerKeMismatch { answer: convert::summary(&sa_p.proposals) },
                    Some(NotifyType::INVALID_SYNTAX),
                );
                return;
            }
        };
        let Some(g_ir) = sa.dh.as_ref().and_then(|d| suite::dh_compute(d, &ke.data)) else {
            self.fail_sa(sa, Side::Local, ex, FailureReason::Malformed(Malformed::KeValue), Some(NotifyType::INVALID_SYNTAX));
            return;
        };
        sa.spi_r = h.spi_r;
        sa.nr = nonce.clone();
        sa.init_resp = bytes.to_vec();
        sa.dh = None;
        let skeyseed = suite::skeyseed_initial(suite.prf, &sa.ni, &sa.nr, &g_ir);
        sa.keys = suite::derive_ike_keys(suite, &skeyseed, &sa.ni, &sa.nr, sa.spi_i, sa.spi_r);
        if sa.keys.is_none() {
            self.fail_sa(sa, Side::Local, ex, FailureReason::KeyDerivation, None);
            return;
        }
        sa.suite = Some(suite);
        self.detect_nat(&mut sa, &msg.payloads, h);
        sa.fragmentation =
            self.config.connections[sa.conn].fragmentation.announced() && msg.notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
        authn::PeerHints::note(&mut sa.hints, &msg.payloads);
        if sa.nat.local_behind_nat || sa.nat.remote_behind_nat || self.config.connections[sa.conn].force_encap {
            sa.natt = true;
            sa.nat.udp_encap = true;
            sa.local.set_port(NATT_PORT);
            sa.remote.set_port(NATT_PORT);
        }
        if let Err(reason) = self.send_auth_request(now, &mut sa) {
            self.fail_sa(sa, Side::Local, Exchange::IkeAuth, FailureReason::OwnAuth { why: reason }, None);
            return;
        }
        self.put(sa);
    }

    /// NAT-D check (RFC 7296 2.23) with the SPIs of the message carrying the hashes.
    fn detect_nat(&mut self, sa: &mut IkeSa, payloads: &[Payload], h: &Header) {
        let mut saw = false;
        let mut src_match = false;
        let mut dst_match = true;
        let my = suite::nat_hash(h.spi_i, h.spi_r, sa.local);
        let peer = suite::nat_hash(h.spi_i, h.spi_r, sa.remote);
        for p in payloads {
            if let Payload::Notify(n) = p {
                if n.notify_type == NotifyType::NAT_DETECTION_SOURCE_IP {
                    saw = true;
                    if n.data == peer {
                        src_match = true;
                    }
                } else if n.notify_type == NotifyType::NAT_DETECTION_DESTINATION_IP {
                    saw = true;
                    if n.data != my {
                        dst_match = false;
                    }
                }
            }
        }
        if saw {
            sa.nat.remote_behind_nat = !src_match;
            sa.nat.local_behind_nat = !dst_match;
        }
    }

    /// IKE_AUTH request: `IDi, [CERT+], [CERTREQ], [IDr], AUTH, [N(INITIAL_CONTACT)], SA, TSi, TSr`.
    /// An error (our key cannot sign) fails the SA.
    fn send_auth_request(&mut self, now: Duration, sa: &mut IkeSa) -> Result<(), String> {
        let conn = &self.config.connections[sa.conn];
        let Some(keys) = &sa.keys else { return Ok(()) };
        let idi = authn::local_id_wire(conn);
        let signed = authn::Signed { prf: keys.suite.prf, real_message: &sa.init_req, peer_nonce: &sa.nr, sk_p: &keys.sk_pi, id: &idi };
        let proof = authn::prove(conn, sa.hints.as_deref(), &signed)?;
        let mut payloads = vec![Payload::IdI(idi)];
        payloads.extend(proof.certs);
        payloads.extend(authn::certreq(&[conn]));
        if let Some(r) = conn.remote_id.exact() {
            payloads.push(Payload::IdR(identity_to_wire(r)));
        }
        payloads.push(proof.auth);
        if let Some(cp) = self.cp_request(sa) {
            payloads.push(cp);
        }
        let others = self.sas.values().any(|s| s.conn == sa.conn && s.remote.ip() == sa.remote.ip() && s.up_reported);
        if conn.initial_contact && !others {
            payloads.push(notify(NotifyType::INITIAL_CONTACT, Vec::new()));
        }
        if let Some(nego) = &sa.first_child {
            payloads.extend(super::child::child_request_payloads(nego, false));
        }
        sa.state = IkeState::AuthSent;
        self.send_request(now, sa, ExchangeType::IKE_AUTH, payloads, Pending::Auth);
        Ok(())
    }

    pub(super) fn responder_init(&mut self, now: Duration, local: SocketAddr, remote: SocketAddr, bytes: &[u8], h: &Header) {
        let ex = Exchange::IkeSaInit;
        self.policy.take_deferred();
        // Retransmitted request → cached response.
        if let Some(&id) = self.half_open_index.get(&(h.spi_i, remote)) {
            if let Some(sa) = self.sas.get(&id) {
                if sa.state == IkeState::InitResponded && sa.init_req == bytes {
                    let t = Transmit { local, remote, bytes: sa.init_resp.clone(), non_esp_marker: false };
                    self.transmits.push_back(t);
                }
            }
            return;
        }
        let reply_plain = |this: &mut Engine, payloads: Vec<Payload>| {
            let m = Message { header: Header::new(h.spi_i, 0, ExchangeType::IKE_SA_INIT, Flags::new(false, true), 0), payloads };
            if let Ok(b) = m.encode() {
                this.transmits.push_back(Transmit { local, remote, bytes: b, non_esp_marker: local.port() == NATT_PORT });
            }
        };
        let msg = match Message::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                if matches!(e, codec::DecodeError::UnsupportedCriticalPayload(_)) {
                    reply_plain(self, vec![notify(e.notify_type(), e.notify_data())]);
                }
                return;
            }
        };
        if h.message_id != 0 {
            return;
        }
        let mut sa_p = None;
        let mut ke = None;
        let mut nonce = None;
        for p in &msg.payloads {
            match p {
                Payload::Sa(s) => sa_p = Some(s),
                Payload::Ke(k) => ke = Some(k),
                Payload::Nonce(n) => nonce = Some(n),
                _ => {}
            }
        }
        let (Some(sa_p), Some(ke), Some(ni)) = (sa_p, ke, nonce) else {
            reply_plain(self, vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())]);
            return;
        };
        if ni.len() < 16 || ni.len() > 256 {
            reply_plain(self, vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())]);
            return;
        }
        // Cookies under half-open pressure: no state for a request without a valid one.
        // (cheap test first: counting half-open SAs is O(SAs))
        // Requests parked for a policy decision count as half-open: they cost
        // a decision each.
        let parked = self.parked_inits();
        let threshold = self.config.cookie_threshold;
        if self.sas.len() + parked >= threshold && self.half_open_count() + parked >= threshold {
            let expected = suite::cookie(&self.cookie_secret, ni, remote.ip(), h.spi_i);
            let presented = match msg.payloads.first() {
                Some(Payload::Notify(n)) if n.notify_type == NotifyType::COOKIE => Some(&n.data),
                _ => None,
            };
            if presented.map(|c| suite::ct_eq(c, &expected)) != Some(true) {
                reply_plain(self, vec![notify(NotifyType::COOKIE, expected)]);
                return;
            }
        }
        // Connections that match the addresses, best fit first (a host
        // before a block, a block before %any; config order breaks ties).
        let mut fits: Vec<(u128, usize)> =
            self.config.connections.iter().enumerate().filter_map(|(i, c)| Some((c.addr_fit(local.ip(), remote.ip())?, i))).collect();
        fits.sort();
        let candidates: Vec<usize> = fits.into_iter().map(|(_, i)| i).collect();
        let id = self.new_id();
        let mut sa = self.skeleton(id, h.spi_i, 0);
        sa.local = local;
        sa.remote = remote;
        sa.created = now;
        sa.last_recv = now;
        let Some(&ci) = candidates.first() else {
            reply_plain(self, vec![notify(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new())]);
            self.events.push_back(Event::Failure(Failure {
                ike: None,
                connection: None,
                side: Side::Local,
                exchange: ex,
                reason: FailureReason::NoConnection { peer: remote },
                notify: Some(NotifyType::NO_PROPOSAL_CHOSEN.0),
                remote,
            }));
            return;
        };
        sa.conn = ci;
        sa.candidates = candidates;
        // Proposal selection.
        let ceiling = &self.config.connections[ci].ike_proposals;
        let usable: Vec<&codec::Proposal> =
            sa_p.proposals.iter().filter(|p| convert::negotiate(p, SaKind::Ike, ceiling, &[], None, false).is_ok()).collect();
        let refuse = |this: &mut Engine, reason: FailureReason| {
            reply_plain(this, vec![notify(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new())]);
            this.events.push_back(Event::Failure(Failure {
                ike: None,
                connection: Some(this.config.connections[ci].name.clone()),
                side: Side::Local,
                exchange: ex,
                reason,
                notify: Some(NotifyType::NO_PROPOSAL_CHOSEN.0),
                remote,
            }));
        };
        if usable.is_empty() {
            let detail = format!(
                "peer offered {}; we accept {} (connection {}; wisp implements AES_GCM_16 128/256 and CHACHA20_POLY1305 with PRF_HMAC_SHA1/SHA2 and CURVE25519/ECP_256/ECP_384)",
                convert::summary(&sa_p.proposals),
                self.config.connections[ci].ike_proposals.iter().map(crate::config::proposal_summary).collect::<Vec<_>>().join(", "),
                self.config.connections[ci].name
            );
            refuse(self, FailureReason::NoProposalChosen { detail });
            return;
        }
        let ctx = self.ctx(&sa, ci, false);
        let chosen =
            match self.choose_proposal(&ctx, SaKind::Ike, &usable, &self.config.connections[ci].ike_proposals, Some(ke.group), false) {
                Ok((_, chosen)) => chosen,
                Err(_) if self.policy.take_deferred() => {
                    self.park_init(now, local, remote, bytes, h.spi_i);
                    return;
                }
                Err(detail) => {
                    refuse(self, FailureReason::NoProposalChosen { detail });
                    return;
                }
            };
        let Some(suite) = ike_suite(&chosen) else {
            refuse(self, FailureReason::SelectedUnusable);
            return;
        };
        if ke.group != suite.dh {
            // Stateless: tell the initiator which group to use.
            reply_plain(self, vec![notify(NotifyType::INVALID_KE_PAYLOAD, suite.dh.to_be_bytes().to_vec())]);
            return;
        }
        let Some((dh, ke_r)) = suite::dh_generate(suite.dh, &mut self.rng) else { return };
        let Some(g_ir) = suite::dh_compute(&dh, &ke.data) else {
            reply_plain(self, vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())]);
            return;
        };
        sa.spi_r = self.alloc_ike_spi();
        sa.ni = ni.clone();
        sa.nr = self.nonce();
        sa.group = suite.dh;
        sa.suite = Some(suite);
        let skeyseed = suite::skeyseed_initial(suite.prf, &sa.ni, &sa.nr, &g_ir);
        sa.keys = suite::derive_ike_keys(suite, &skeyseed, &sa.ni, &sa.nr, sa.spi_i, sa.spi_r);
        if sa.keys.is_none() {
            return;
        }
        self.detect_nat(&mut sa, &msg.payloads, h);
        let conn = &self.config.connections[ci];
        // RFC 7383 2.3: announced only in answer to the initiator's announcement.
        sa.fragmentation = conn.fragmentation.announced() && msg.notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
        if sa.nat.local_behind_nat || sa.nat.remote_behind_nat || conn.force_encap || local.port() == NATT_PORT {
            sa.nat.udp_encap = true;
        }
        let mut answer = chosen.clone();
        answer.spi = Vec::new();
        let mut payloads = vec![
            Payload::Sa(SaPayload { proposals: vec![answer] }),
            Payload::Ke(KePayload { group: suite.dh, data: ke_r }),
            Payload::Nonce(sa.nr.clone()),
        ];
        let src = if conn.force_encap { self.rng.vec(20) } else { suite::nat_hash(sa.spi_i, sa.spi_r, local) };
        payloads.push(notify(NotifyType::NAT_DETECTION_SOURCE_IP, src));
        payloads.push(notify(NotifyType::NAT_DETECTION_DESTINATION_IP, suite::nat_hash(sa.spi_i, sa.spi_r, remote)));
        if sa.fragmentation {
            payloads.push(notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED, Vec::new()));
        }
        // Certificates: our hash algorithms (RFC 7427 4) in answer to the
        // peer's, and the CAs we trust for any connection it may turn out
        // to be (RFC 7296 3.7).
        let cands: Vec<&ConnectionConfig> = sa.candidates.iter().map(|&i| &self.config.connections[i]).collect();
        if cands.iter().any(|c| authn::uses_signatures(c)) && msg.notify(NotifyType::SIGNATURE_HASH_ALGORITHMS).is_some() {
            payloads.push(notify(NotifyType::SIGNATURE_HASH_ALGORITHMS, sig::hash_algorithms_notify_data()));
        }
        payloads.extend(authn::certreq(&cands));
        authn::PeerHints::note(&mut sa.hints, &msg.payloads);
        let m = Message { header: Header::new(sa.spi_i, sa.spi_r, ExchangeType::IKE_SA_INIT, Flags::new(false, true), 0), payloads };
        let Ok(resp) = m.encode() else { return };
        sa.init_req = bytes.to_vec();
        sa.init_resp = resp.clone();
        sa.state = IkeState::InitResponded;
        sa.peer_next_id = 1;
        sa.natt = local.port() == NATT_PORT;
        self.by_spi.insert(sa.spi_r, id);
        self.half_open_index.insert((sa.spi_i, remote), id);
        let t = self.transmit_for(&sa, resp);
        self.transmits.push_back(t);
        self.put(sa);
    }

    /// Refuses an IKE_AUTH request: the notify `nt` to the peer, `reason`
    /// reported, the SA lingers to answer retransmissions.
    pub(super) fn deny_auth(
        &mut self,
        now: Duration,
        mut sa: IkeSa,
        h: &Header,
        nt: NotifyType,
        reason: FailureReason,
        extra: Vec<Payload>,
    ) {
        let mut out = extra;
        out.push(notify(nt, Vec::new()));
        self.send_response(&mut sa, ExchangeType::IKE_AUTH, h.message_id, out);
        let remote = sa.remote;
        self.failure(Some(&sa), remote, None, Side::Local, Exchange::IkeAuth, reason.clone(), Some(nt));
        self.linger(now, sa, DownReason::Failed(reason));
    }

    pub(super) fn responder_auth(&mut self, now: Duration, mut sa: IkeSa, h: &Header, payloads: Vec<Payload>) {
        if sa.eap.is_some() {
            self.eap_continue(now, sa, h, payloads);
            return;
        }
        let mut idi = None;
        let mut idr = None;
        let mut auth = None;
        let mut certs = Vec::new();
        for p in &payloads {
            match p {
                Payload::IdI(i) => idi = Some(i),
                Payload::IdR(i) => idr = Some(i),
                Payload::Auth(a) => auth = Some(a),
                Payload::Cert(c) => certs.push(c),
                _ => {}
            }
        }
        let Some(idi) = idi else {
            self.deny_auth(now, sa, h, NotifyType::INVALID_SYNTAX, FailureReason::Malformed(Malformed::AuthRequestNoIdi), Vec::new());
            return;
        };
        let peer_id = identity_from_wire(idi);
        let method = auth.map(|a| a.method);
        // Refine by identity: of the connections that accept the peer's
        // addresses, the one whose `remote.id` fits IDi best (exact before an
        // address block, a pattern, %any; then the better address fit).
        // Then by the peer's AUTH method: a connection that wants a
        // certificate does not take a PSK, and the other way round; no
        // AUTH payload asks for EAP (RFC 7296 2.16).
        let by_id: Vec<(usize, usize)> = sa
            .candidates
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, ci)| {
                let c = &self.config.connections[ci];
                convert::id_accepts(&c.remote_id, idi) && idr.is_none_or(|r| convert::same_identity(&c.local_id, r))
            })
            .collect();
        let pick = by_id
            .iter()
            .copied()
            .filter(|&(_, ci)| authn::method_fits(&self.config.connections[ci], method))
            .min_by_key(|&(order, ci)| (std::cmp::Reverse(self.config.connections[ci].remote_id.rank()), order))
            .map(|(_, ci)| ci);
        let Some(ci) = pick else {
            let reason = match by_id.first() {
                Some(&(_, ci)) => {
                    let c = &self.config.connections[ci];
                    FailureReason::AuthMethodMismatch {
                        peer: peer_id.clone(),
                        method: method.map_or_else(|| "EAP (no AUTH payload)".to_string(), |m| m.to_string()),
                        connection: c.name.clone(),
                        expects: authn::remote_auth_name(c).to_string(),
                    }
                }
                None => FailureReason::NoMatchingConnection { peer: peer_id.clone(), spi_i: h.spi_i },
            };
            self.deny_auth(now, sa, h, NotifyType::AUTHENTICATION_FAILED, reason, Vec::new());
            return;
        };
        let conn_before = sa.conn;
        sa.conn = ci;
        authn::PeerHints::note(&mut sa.hints, &payloads);
        let Some(auth) = auth else {
            self.eap_start(now, sa, h, payloads);
            return;
        };
        let Some(keys) = sa.keys.as_ref() else { return };
        let conn = &self.config.connections[ci];
        let signed = authn::Signed { prf: keys.suite.prf, real_message: &sa.init_req, peer_nonce: &sa.nr, sk_p: &keys.sk_pi, id: idi };
        let info = match authn::check_peer(conn, auth, &certs, &signed, self.unix_time) {
            Ok((info, scheme)) => {
                sa.auth_scheme = Some(scheme.into());
                info
            }
            Err(check) => {
                self.deny_auth(now, sa, h, NotifyType::AUTHENTICATION_FAILED, FailureReason::AuthenticationFailed { check }, Vec::new());
                return;
            }
        };
        sa.remote_id = Some(peer_id);
        self.finish_responder_auth(now, sa, h, payloads, info, AuthDone::Signed { conn_before });
    }

    /// The peer is authenticated (by its AUTH, or by EAP and the AUTH keyed
    /// with its MSK): authorize it, lease its virtual IPs, make the first
    /// Child SA, prove ourselves and establish. `payloads` is the request
    /// being answered (parked as it is when a decision is deferred).
    pub(super) fn finish_responder_auth(
        &mut self,
        now: Duration,
        mut sa: IkeSa,
        h: &Header,
        payloads: Vec<Payload>,
        info: AuthInfo,
        done: AuthDone,
    ) {
        let ex = Exchange::IkeAuth;
        let ci = sa.conn;
        let peer_id = sa.remote_id.clone().expect("set by the caller");
        // With EAP, the Child SA, the virtual IPs and INITIAL_CONTACT were
        // asked for in the first IKE_AUTH request.
        let first_owned;
        let first: &[Payload] = match &done {
            AuthDone::Eap { state, .. } => {
                first_owned = state.first.clone();
                &first_owned
            }
            AuthDone::Signed { .. } => &payloads,
        };
        // Parks the request until the policy answers, putting the SA back
        // as it was before the question.
        let park = |this: &mut Engine, mut sa: IkeSa, done: AuthDone, payloads: Vec<Payload>| {
            match done {
                AuthDone::Signed { conn_before } => {
                    sa.conn = conn_before;
                    sa.remote_id = None;
                }
                AuthDone::Eap { state } => sa.eap = Some(state),
            }
            this.park_request(now, sa, h, payloads);
        };
        let ctx = self.ctx(&sa, ci, false);
        if let Err(e) = self.policy.authorize(&ctx, &info) {
            if self.policy.take_deferred() {
                park(self, sa, done, payloads);
                return;
            }
            self.deny_auth(
                now,
                sa,
                h,
                NotifyType::AUTHENTICATION_FAILED,
                FailureReason::NotAuthorized { peer: peer_id, why: policy_reason(&e) },
                Vec::new(),
            );
            return;
        }
        let initial_contact = find_notify(first, NotifyType::INITIAL_CONTACT).is_some();
        if let Err(what) = self.ike_cap_allows(&sa, ci, initial_contact) {
            self.deny_auth(now, sa, h, NotifyType::AUTHENTICATION_FAILED, FailureReason::Limit { what }, Vec::new());
            return;
        }
        // Virtual IPs first: the Child SA's selectors narrow to them.
        let (cp_reply, vip_failure) = match self.assign_vips(&mut sa, first, &info) {
            Ok(cp) => (cp, None),
            Err(_) if self.policy.take_deferred() => {
                // `assign-address` is asked again when the answer is in (nothing was leased).
                park(self, sa, done, payloads);
                return;
            }
            Err(reason) => (None, Some(reason)),
        };
        // The Child SA's decisions come before anything changes, so that a
        // deferred one leaves the SA as it was.
        let child = if vip_failure.is_none() && first.iter().any(|p| matches!(p, Payload::Sa(_))) {
            let (ni, nr) = (sa.ni.clone(), sa.nr.clone());
            let r = self.respond_child(now, &mut sa, first, &ni, &nr, true, None);
            if r.is_err() && self.policy.take_deferred() {
                // Asked again when the answer is in: the same lease comes back.
                self.release_vips(&mut sa);
                park(self, sa, done, payloads);
                return;
            }
            Some(r)
        } else {
            None
        };
        sa.auth = Some(Box::new(info));
        // Authenticated.
        sa.candidates.clear();
        let keys = sa.keys.as_ref().expect("checked");
        let conn = &self.config.connections[ci];
        let idr_p = authn::local_id_wire(conn);
        let signed = authn::Signed { prf: keys.suite.prf, real_message: &sa.init_resp, peer_nonce: &sa.ni, sk_p: &keys.sk_pr, id: &idr_p };
        let mut out = Vec::new();
        match &done {
            AuthDone::Signed { .. } => match authn::prove(conn, sa.hints.as_deref(), &signed) {
                Ok(proof) => {
                    out.push(Payload::IdR(idr_p.clone()));
                    out.extend(proof.certs);
                    out.push(proof.auth);
                }
                Err(why) => {
                    sa.auth = None;
                    self.release_vips(&mut sa);
                    self.deny_auth(now, sa, h, NotifyType::AUTHENTICATION_FAILED, FailureReason::OwnAuth { why }, Vec::new());
                    return;
                }
            },
            // RFC 7296 2.16: our second AUTH, keyed with the MSK.
            AuthDone::Eap { state } => out.push(Payload::Auth(codec::AuthPayload {
                method: codec::AuthMethod::SHARED_KEY_MIC,
                data: authn::msk_auth(&signed, state.msk()).to_vec(),
            })),
        }
        drop(done);
        out.extend(cp_reply);
        self.establish(now, &mut sa);
        if initial_contact {
            self.initial_contact(&sa);
        }
        let half_key = (sa.spi_i, sa.remote);
        if self.half_open_index.get(&half_key) == Some(&sa.id) {
            self.half_open_index.remove(&half_key);
        }
        let mut child_events = Vec::new();
        if let Some(r) = child {
            match r {
                Ok((p, info)) => {
                    out.extend(p);
                    child_events.push(Event::ChildSaUp(info));
                }
                Err(r) => {
                    out.push(notify(r.notify, r.data));
                    let remote = sa.remote;
                    self.failure(Some(&sa), remote, None, Side::Local, ex, *r.reason, Some(r.notify));
                }
            }
        }
        if let Some(reason) = vip_failure {
            // RFC 7296 3.10.1: the IKE SA is made, no Child SA. Without an
            // address the peer has no use for it: we delete it.
            out.push(notify(NotifyType::INTERNAL_ADDRESS_FAILURE, Vec::new()));
            let remote = sa.remote;
            self.failure(Some(&sa), remote, None, Side::Local, ex, reason.clone(), Some(NotifyType::INTERNAL_ADDRESS_FAILURE));
            sa.delete_reason = Some(Box::new(DownReason::Failed(reason)));
            sa.tasks.push_back(Task::DeleteIke);
        }
        self.send_response(&mut sa, ExchangeType::IKE_AUTH, h.message_id, out);
        self.report_up(&mut sa);
        self.events.extend(child_events);
        sa.drop_handshake();
        self.kick(now, &mut sa);
        self.put(sa);
    }

    /// Mark established and set IKE lifetimes.
    fn establish(&mut self, now: Duration, sa: &mut IkeSa) {
        sa.state = IkeState::Established;
        sa.established_at = Some(now);
        sa.last_recv = now;
        let lt = self.config.connections[sa.conn].ike_lifetimes.clone();
        let (soft, hard) = self.jittered(now, &lt);
        sa.soft_at = soft;
        sa.hard_at = hard;
        sa.reauth_at = self.config.connections[sa.conn].reauth_time.map(|t| now + t);
    }

    pub(super) fn ike_info(&self, sa: &IkeSa) -> IkeSaInfo {
        let conn = &self.config.connections[sa.conn];
        IkeSaInfo {
            ike: sa.id,
            connection: conn.name.clone(),
            spi_i: sa.spi_i,
            spi_r: sa.spi_r,
            initiator: sa.initiator,
            local: sa.local,
            remote: sa.remote,
            local_id: conn.local_id.clone(),
            remote_id: sa
                .remote_id
                .clone()
                .unwrap_or_else(|| wisp_policy_api::Identity { kind: wisp_policy_api::IdType::Fqdn, value: String::new() }),
            algorithms: sa.algorithms(),
            nat: sa.nat,
            peer_auth: sa.peer_auth(),
            vips: sa.virtual_ips(),
        }
    }

    fn report_up(&mut self, sa: &mut IkeSa) {
        if !sa.up_reported {
            sa.up_reported = true;
            let info = self.ike_info(sa);
            self.events.push_back(Event::IkeSaUp(info));
        }
    }

    /// INITIAL_CONTACT: other IKE SAs with this peer identity are stale.
    fn initial_contact(&mut self, sa: &IkeSa) {
        let stale: Vec<IkeSaId> = self
            .sas
            .values()
            .filter(|s| s.id != sa.id && s.conn == sa.conn && s.remote_id == sa.remote_id && s.state == IkeState::Established)
            .map(|s| s.id)
            .collect();
        for id in stale {
            if let Ok(old) = self.take(id) {
                self.teardown(old, DownReason::Replaced);
            }
        }
    }

    pub(super) fn initiator_auth_response(
        &mut self,
        now: Duration,
        mut sa: IkeSa,
        out: Outstanding,
        payloads: Vec<Payload>,
        remote: SocketAddr,
    ) {
        let _ = remote;
        let ex = Exchange::IkeAuth;
        let mut idr = None;
        let mut auth = None;
        let mut certs = Vec::new();
        for p in &payloads {
            match p {
                Payload::IdR(i) => idr = Some(i),
                Payload::Auth(a) => auth = Some(a),
                Payload::Cert(c) => certs.push(c),
                _ => {}
            }
        }
        let (Some(idr), Some(auth)) = (idr, auth) else {
            let (nt, reason) = match first_error(&payloads) {
                Some(n) if n.notify_type == NotifyType::AUTHENTICATION_FAILED => {
                    let with_cert = matches!(self.config.connections[sa.conn].local_auth, crate::config::LocalAuth::Pubkey(_));
                    (Some(n.notify_type), FailureReason::PeerRefusedOurAuth { with_cert })
                }
                Some(n) => (Some(n.notify_type), FailureReason::PeerRefusedAuth { notify: n.notify_type.0 }),
                None => (Some(NotifyType::INVALID_SYNTAX), FailureReason::Malformed(Malformed::AuthResponseIncomplete)),
            };
            self.fail_sa(sa, Side::Remote, ex, reason, nt);
            return;
        };
        let peer_id = identity_from_wire(idr);
        let conn = &self.config.connections[sa.conn];
        let keys = sa.keys.as_ref().expect("response was decrypted");
        let mut problem = None;
        let mut verified = None;
        if !convert::id_accepts(&conn.remote_id, idr) {
            problem = Some(FailureReason::IdentityMismatch { peer: peer_id.clone(), expected: conn.remote_id.to_string() });
        } else {
            let signed = authn::Signed { prf: keys.suite.prf, real_message: &sa.init_resp, peer_nonce: &sa.ni, sk_p: &keys.sk_pr, id: idr };
            match authn::check_peer(conn, auth, &certs, &signed, self.unix_time) {
                Ok((info, scheme)) => {
                    sa.auth_scheme = Some(scheme.into());
                    verified = Some(info)
                }
                Err(check) => problem = Some(FailureReason::AuthenticationFailed { check }),
            }
        }
        sa.remote_id = Some(peer_id.clone());
        if let Some(info) = verified {
            let ctx = self.ctx(&sa, sa.conn, true);
            match self.policy.authorize(&ctx, &info) {
                Ok(()) => sa.auth = Some(Box::new(info)),
                Err(_) if self.policy.take_deferred() => {
                    sa.remote_id = None;
                    self.park_response(now, sa, out, payloads);
                    return;
                }
                Err(e) => problem = Some(FailureReason::NotAuthorized { peer: peer_id.clone(), why: policy_reason(&e) }),
            }
        }
        if let Some(reason) = problem {
            // Tell the responder (it already considers the SA up) and give up at once.
            let remote = sa.remote;
            self.failure(Some(&sa), remote, None, Side::Local, ex, reason.clone(), Some(NotifyType::AUTHENTICATION_FAILED));
            sa.state = IkeState::Deleting;
            sa.delete_reason = Some(Box::new(DownReason::Failed(reason)));
            self.send_request(
                now,
                &mut sa,
                ExchangeType::INFORMATIONAL,
                vec![
                    notify(NotifyType::AUTHENTICATION_FAILED, Vec::new()),
                    Payload::Delete(codec::DeletePayload { protocol: codec::ProtocolId::IKE, spi_size: 0, spis: Vec::new() }),
                ],
                Pending::DeleteIke,
            );
            // Do not wait for the answer.
            sa.outstanding = None;
            self.teardown(sa, DownReason::Failed(FailureReason::PeerAuthFailed));
            return;
        }
        if let Err(reason) = self.take_cp_reply(&mut sa, &payloads) {
            let remote = sa.remote;
            let nt = find_notify(&payloads, NotifyType::INTERNAL_ADDRESS_FAILURE).map(|n| n.notify_type);
            self.failure(Some(&sa), remote, None, Side::Remote, ex, reason, nt);
        }
        self.establish(now, &mut sa);
        self.report_up(&mut sa);
        if let Some(nego) = sa.first_child.take() {
            let nr = sa.nr.clone();
            match self.complete_child(now, &mut sa, *nego, &payloads, &nr, true) {
                Ok(info) => self.events.push_back(Event::ChildSaUp(info)),
                Err((side, nt, reason)) => {
                    let remote = sa.remote;
                    self.failure(Some(&sa), remote, None, side, ex, reason, nt);
                }
            }
        }
        sa.drop_handshake();
        self.kick(now, &mut sa);
        self.put(sa);
    }
}

/// The IKE suite of a reduced (single transform per type) proposal.
pub(super) fn ike_suite(p: &codec::Proposal) -> Option<IkeSuite> {
    let e = convert::pick(p, codec::TransformType::ENCR)?;
    let prf = convert::pick(p, codec::TransformType::PRF)?;
    let dh = convert::pick(p, codec::TransformType::DH)?;
    if !suite::aead_supported(e.id, e.key_length()) || !suite::prf_supported(prf.id) || !suite::dh_supported(dh.id) {
        return None;
    }
    Some(IkeSuite { encr: e.id, key_bits: e.key_length().unwrap_or(256), prf: prf.id, dh: dh.id })
}
