//! CREATE_CHILD_SA (new Child SA, Child rekey, IKE rekey) and the Child SA
//! parts of IKE_AUTH, both roles; collision handling per RFC 7296 2.8.1.

use std::time::Duration;

use wisp_policy_api::{self as api, DecisionTrigger, PeerContext, SaKind, SelectorRequest, TrafficSelector};

use crate::codec::{self, ExchangeType, KePayload, NotifyPayload, NotifyType, Payload, ProtocolId, SaPayload};
use crate::config::Mode;
use crate::event::*;

use super::convert;
use super::sa::*;
use super::suite;
use super::*;

/// A refused Child SA request: the notify to answer with and why.
pub(super) struct ChildRefusal {
    pub notify: NotifyType,
    pub data: Vec<u8>,
    /// Boxed: a `FailureReason` is large and refusals are rare.
    pub reason: Box<FailureReason>,
}

fn refuse(notify: NotifyType, reason: FailureReason) -> ChildRefusal {
    ChildRefusal { notify, data: Vec::new(), reason: Box::new(reason) }
}

fn min_nonce<'a>(a: &'a [u8], b: &'a [u8]) -> Vec<u8> {
    if a <= b {
        a.to_vec()
    } else {
        b.to_vec()
    }
}

fn within(got: &[TrafficSelector], proposed: &[TrafficSelector]) -> bool {
    !got.is_empty() && got.iter().all(|g| proposed.iter().any(|p| g.is_subset_of(p)))
}

/// How well configured selectors fit proposed ones: 2 equal (as sets),
/// 1 the proposal lies inside the configuration, 0 narrowing is needed.
fn ts_fit(configured: &[TrafficSelector], proposed: &[TrafficSelector]) -> u8 {
    let inside = within(proposed, configured);
    if inside && within(configured, proposed) {
        2
    } else {
        u8::from(inside)
    }
}

/// Payloads of a Child SA request: IKE_AUTH (`create` false) or CREATE_CHILD_SA.
pub(super) fn child_request_payloads(nego: &ChildNego, create: bool) -> Vec<Payload> {
    let mut v = Vec::new();
    if let Some(old) = nego.rekey_of {
        v.push(Payload::Notify(NotifyPayload {
            protocol: ProtocolId::ESP,
            spi: old.to_be_bytes().to_vec(),
            notify_type: NotifyType::REKEY_SA,
            data: Vec::new(),
        }));
    }
    if nego.mode == Mode::Transport {
        v.push(notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()));
    }
    let proposals = if create { nego.proposals.clone() } else { nego.proposals.iter().map(strip_ke).collect() };
    v.push(Payload::Sa(SaPayload { proposals }));
    if create {
        v.push(Payload::Nonce(nego.ni.clone()));
        if let Some(dh) = &nego.dh {
            v.push(Payload::Ke(KePayload { group: nego.group, data: suite::dh_public(dh) }));
        }
    }
    v.push(Payload::TsI(convert::ts_to_wire(&nego.ts_i)));
    v.push(Payload::TsR(convert::ts_to_wire(&nego.ts_r)));
    v
}

fn strip_ke(p: &codec::Proposal) -> codec::Proposal {
    let mut p = p.clone();
    p.transforms.retain(|t| t.transform_type != codec::TransformType::DH);
    p
}

fn spi32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

fn spi64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

impl Engine {
    /// Responder: the policy chooses among `usable` (the offered proposals that
    /// have a reduction inside `ceiling`), then the host enforces the ceiling
    /// on its answer, whatever it was: the result is one transform of each
    /// offered type, all inside one configured proposal (RFC 7296 3.3).
    /// Returns the index into `usable` and the reduced proposal.
    pub(super) fn choose_proposal(
        &self,
        ctx: &PeerContext,
        kind: SaKind,
        usable: &[&codec::Proposal],
        ceiling: &[api::Proposal],
        ke_group: Option<u16>,
        ignore_ke: bool,
    ) -> Result<(usize, codec::Proposal), String> {
        let api_props: Vec<api::Proposal> = usable.iter().map(|p| convert::to_api_proposal(p)).collect();
        let choice = self.policy.select_proposal(ctx, kind, &api_props, ceiling).map_err(|e| policy_reason(&e))?;
        let Some(p) = usable.get(choice.index) else {
            return Err(format!("policy {} chose proposal index {} out of range", self.policy.describe(), choice.index));
        };
        convert::negotiate(p, kind, ceiling, &choice.transforms, ke_group, ignore_ke).map(|r| (choice.index, r)).map_err(|why| {
            format!(
                "policy {} chose proposal #{} ({}) outside the configured proposals ({why})",
                self.policy.describe(),
                p.number,
                convert::summary(std::slice::from_ref(*p))
            )
        })
    }

    /// `authorize` again for an IKE SA rekey (either role), with the identity and
    /// auth facts the IKE SA was authenticated with.
    pub(super) fn reauthorize(&self, sa: &IkeSa, ctx: &PeerContext) -> Result<(), String> {
        let Some(auth) = &sa.auth else {
            return Err("the IKE SA has no authenticated peer".into());
        };
        self.policy.authorize(ctx, auth).map_err(|e| format!("peer {} no longer authorized: {}", auth.peer_identity, policy_reason(&e)))
    }

    /// Prepare a Child SA request for template `child` (or a rekey of child `rekey_idx`).
    pub(super) fn child_nego(
        &mut self,
        sa: &IkeSa,
        child: &str,
        rekey_idx: Option<usize>,
        with_ke: bool,
    ) -> Result<ChildNego, EngineError> {
        let conn = &self.config.connections[sa.conn];
        let ch = conn.child(child).ok_or_else(|| EngineError::UnknownChild(conn.name.clone(), child.into()))?;
        if rekey_idx.is_none() {
            self.child_cap_allows(sa.conn, Some(sa)).map_err(EngineError::Limit)?;
        }
        let mut ctx = self.ctx(sa, sa.conn, true);
        if rekey_idx.is_some() {
            ctx.trigger = DecisionTrigger::Rekey;
        }
        let order = self.ordered(&ctx, SaKind::Child, &ch.esp_proposals).map_err(EngineError::Policy)?;
        let (ts_i, ts_r) = match rekey_idx.and_then(|i| sa.children.get(i)) {
            Some(c) => (c.local_ts.clone(), c.remote_ts.clone()),
            None => (self.local_ts_for(sa, &ch.local_ts), self.remote_ts_for(sa, &ch.remote_ts)),
        };
        let rekey_of = rekey_idx.and_then(|i| sa.children.get(i)).map(|c| c.spi_in);
        let mode = ch.mode;
        let props: Vec<wisp_policy_api::Proposal> = order.iter().map(|&i| ch.esp_proposals[i].clone()).collect();
        let spi_in = self.alloc_esp_spi();
        let proposals: Vec<codec::Proposal> = props
            .iter()
            .enumerate()
            .map(|(n, p)| convert::to_wire_proposal(p, n as u8 + 1, spi_in.to_be_bytes().to_vec(), with_ke))
            .collect();
        let group = if with_ke {
            proposals
                .iter()
                .flat_map(|p| p.transforms_of(codec::TransformType::DH))
                .map(|t| t.id)
                .find(|g| *g != 0 && suite::dh_supported(*g))
                .unwrap_or(0)
        } else {
            0
        };
        let dh = if group != 0 { suite::dh_generate(group, &mut self.rng).map(|(d, _)| d) } else { None };
        Ok(ChildNego {
            child: child.to_string(),
            spi_in,
            proposals,
            ni: self.nonce(),
            dh,
            group,
            ts_i,
            ts_r,
            mode,
            rekey_of,
            ke_retries: 0,
        })
    }

    /// Responder side of a Child SA (IKE_AUTH or CREATE_CHILD_SA). On success the
    /// child is added to `sa` and the answer payloads plus its description returned.
    // Issue 11's per-SA state machine replaces this signature.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn respond_child(
        &mut self,
        now: Duration,
        sa: &mut IkeSa,
        payloads: &[Payload],
        ni: &[u8],
        nr: &[u8],
        in_auth: bool,
        rekey_idx: Option<usize>,
    ) -> Result<(Vec<Payload>, ChildSaInfo), ChildRefusal> {
        let mut sa_p = None;
        let mut tsi = None;
        let mut tsr = None;
        let mut ke = None;
        for p in payloads {
            match p {
                Payload::Sa(s) => sa_p = Some(s),
                Payload::TsI(t) => tsi = Some(t),
                Payload::TsR(t) => tsr = Some(t),
                Payload::Ke(k) if !in_auth => ke = Some(k),
                _ => {}
            }
        }
        let (Some(sa_p), Some(tsi), Some(tsr)) = (sa_p, tsi, tsr) else {
            return Err(refuse(NotifyType::INVALID_SYNTAX, FailureReason::Malformed(Malformed::ChildRequestIncomplete)));
        };
        let conn_i = sa.conn;
        if rekey_idx.is_none() {
            self.child_cap_allows(conn_i, Some(&*sa))
                .map_err(|what| refuse(NotifyType::NO_ADDITIONAL_SAS, FailureReason::Limit { what }))?;
        }
        for (side, n) in [("TSi", tsi.selectors.len()), ("TSr", tsr.selectors.len())] {
            self.selector_cap_allows(conn_i, side, n)
                .map_err(|detail| refuse(NotifyType::TS_UNACCEPTABLE, FailureReason::TsCap { by: SelectorSource::PeerProposal, detail }))?;
        }
        // Proposals with an ESP SPI, without KE inside IKE_AUTH (its Child SA
        // has no key exchange of its own).
        let offered: Vec<codec::Proposal> =
            sa_p.proposals.iter().filter(|p| p.spi.len() == 4).map(|p| if in_auth { strip_ke(p) } else { p.clone() }).collect();
        let conn = &self.config.connections[conn_i];
        let mut ctx = self.ctx(sa, conn_i, false);
        if rekey_idx.is_some() {
            ctx.trigger = DecisionTrigger::Rekey;
        }
        // Traffic selectors, from our perspective: the peer initiated, so TSi is remote.
        let remote_proposed = convert::ts_from_wire(tsi);
        let local_proposed = convert::ts_from_wire(tsr);
        let templates: Vec<usize> = match rekey_idx.and_then(|i| sa.children.get(i)) {
            Some(old) => conn.children.iter().position(|c| c.name == old.name).into_iter().collect(),
            None => {
                // The child whose selectors fit the proposal best is tried
                // first (as charon's child config selection does): equal
                // selectors before a proposal inside them before narrowing;
                // configuration order among equals.
                let mut v: Vec<usize> = (0..conn.children.len()).collect();
                v.sort_by_key(|&i| {
                    let ch = &conn.children[i];
                    let (r, l) = (self.remote_ts_for(sa, &ch.remote_ts), self.local_ts_for(sa, &ch.local_ts));
                    std::cmp::Reverse(ts_fit(&r, &remote_proposed) + ts_fit(&l, &local_proposed))
                });
                v
            }
        };
        // The Child SA template comes first (its selectors), then the proposal,
        // inside that child's configured ESP proposals only: the proposals of
        // the connection's children are never pooled.
        let mut ts_reason = format!("connection {} has no child configured", conn.name);
        let mut prop_reason = None;
        let mut picked = None;
        for ti in templates {
            let ch = &self.config.connections[conn_i].children[ti];
            let usable: Vec<&codec::Proposal> =
                offered.iter().filter(|p| convert::negotiate(p, SaKind::Child, &ch.esp_proposals, &[], None, in_auth).is_ok()).collect();
            let (remote_configured, local_configured) = match rekey_idx.and_then(|i| sa.children.get(i)) {
                Some(old) => (old.remote_ts.clone(), old.local_ts.clone()),
                None => (self.remote_ts_for(sa, &ch.remote_ts), self.local_ts_for(sa, &ch.local_ts)),
            };
            if remote_configured.is_empty() {
                let vips = sa.vip.as_deref().map(|v| v.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "));
                ts_reason = format!("child {}: the peer's virtual IP {} lies outside its remote_ts", ch.name, vips.unwrap_or_default());
                continue;
            }
            let req = SelectorRequest {
                remote_proposed: remote_proposed.clone(),
                local_proposed: local_proposed.clone(),
                remote_configured,
                local_configured,
            };
            let pair = match self.policy.narrow_selectors(&ctx, &req) {
                Ok(pair) if within(&pair.remote, &remote_proposed) && within(&pair.local, &local_proposed) => pair,
                Ok(_) => {
                    ts_reason = format!("policy {} returned selectors outside the proposal", self.policy.describe());
                    continue;
                }
                // Deferred: stop here, the caller parks the request (this
                // refusal is never sent).
                Err(e) if self.policy.deferred() => {
                    return Err(refuse(NotifyType::TEMPORARY_FAILURE, FailureReason::PolicyRefused { why: policy_reason(&e) }))
                }
                Err(e) => {
                    ts_reason = format!("child {}: {}", ch.name, policy_reason(&e));
                    continue;
                }
            };
            if usable.is_empty() {
                prop_reason = Some(format!(
                    "peer offered ESP {}; child {} accepts {} (we implement AES_GCM_16 128/256 and CHACHA20_POLY1305)",
                    convert::summary(&sa_p.proposals),
                    ch.name,
                    ch.esp_proposals.iter().map(crate::config::proposal_summary).collect::<Vec<_>>().join(", ")
                ));
                continue;
            }
            match self.choose_proposal(&ctx, SaKind::Child, &usable, &ch.esp_proposals, ke.map(|k| k.group), in_auth) {
                Ok((i, chosen)) => {
                    picked = Some((ti, pair, usable[i].spi.clone(), chosen));
                    break;
                }
                Err(why) if self.policy.deferred() => {
                    return Err(refuse(NotifyType::TEMPORARY_FAILURE, FailureReason::PolicyRefused { why }))
                }
                Err(reason) => prop_reason = Some(format!("child {}: {reason}", ch.name)),
            }
        }
        let Some((ti, pair, peer_spi, chosen)) = picked else {
            return Err(match prop_reason {
                Some(detail) => refuse(NotifyType::NO_PROPOSAL_CHOSEN, FailureReason::NoProposalChosen { detail }),
                None => refuse(NotifyType::TS_UNACCEPTABLE, FailureReason::TsUnacceptable { detail: ts_reason }),
            });
        };
        for (side, n) in [("remote", pair.remote.len()), ("local", pair.local.len())] {
            self.selector_cap_allows(conn_i, side, n).map_err(|detail| {
                refuse(NotifyType::TS_UNACCEPTABLE, FailureReason::TsCap { by: SelectorSource::PolicyNarrowing, detail })
            })?;
        }
        let spi_out =
            spi32(&peer_spi).ok_or_else(|| refuse(NotifyType::INVALID_SYNTAX, FailureReason::Malformed(Malformed::EspSpiSize)))?;
        let group = convert::pick(&chosen, codec::TransformType::DH).map(|t| t.id).unwrap_or(0);
        if group != 0 && ke.map(|k| k.group) != Some(group) {
            return Err(ChildRefusal {
                notify: NotifyType::INVALID_KE_PAYLOAD,
                data: group.to_be_bytes().to_vec(),
                reason: Box::new(FailureReason::KeGroupMismatch { sent: ke.map(|k| k.group), selected: group }),
            });
        }
        let cipher = convert::esp_cipher(&chosen)
            .ok_or_else(|| refuse(NotifyType::NO_PROPOSAL_CHOSEN, FailureReason::NoUsableEspCipher { answer: false }))?;
        let ch = &self.config.connections[conn_i].children[ti];
        let transport = find_notify(payloads, NotifyType::USE_TRANSPORT_MODE).is_some() && ch.mode == Mode::Transport;
        let name = ch.name.clone();
        let lifetimes = ch.lifetimes.clone();
        let (g_ir, ke_out) = if group != 0 {
            let (dh, public) =
                suite::dh_generate(group, &mut self.rng).ok_or_else(|| refuse(NotifyType::NO_PROPOSAL_CHOSEN, FailureReason::DhFailed))?;
            let shared = suite::dh_compute(&dh, &ke.expect("checked above").data)
                .ok_or_else(|| refuse(NotifyType::INVALID_SYNTAX, FailureReason::Malformed(Malformed::InvalidKe)))?;
            (Some(shared), Some(public))
        } else {
            (None, None)
        };
        let keys = sa.keys.as_ref().ok_or_else(|| refuse(NotifyType::INVALID_SYNTAX, FailureReason::NoKeys))?;
        let (i2r, r2i) =
            suite::child_keymat(keys.suite.prf, &keys.sk_d, g_ir.as_deref().map(|v| v.as_slice()), ni, nr, cipher.keymat_len())
                .ok_or_else(|| refuse(NotifyType::NO_PROPOSAL_CHOSEN, FailureReason::KeyDerivation))?;
        let spi_in = self.alloc_esp_spi();
        let mut answer = chosen.clone();
        answer.spi = spi_in.to_be_bytes().to_vec();
        let mut out = Vec::new();
        if transport {
            out.push(notify(NotifyType::USE_TRANSPORT_MODE, Vec::new()));
        }
        out.push(Payload::Sa(SaPayload { proposals: vec![answer] }));
        if !in_auth {
            out.push(Payload::Nonce(nr.to_vec()));
        }
        if let Some(k) = ke_out {
            out.push(Payload::Ke(KePayload { group, data: k }));
        }
        out.push(Payload::TsI(convert::ts_to_wire(&pair.remote)));
        out.push(Payload::TsR(convert::ts_to_wire(&pair.local)));
        let child = self.new_child(
            now,
            name,
            spi_in,
            spi_out,
            if transport { Mode::Transport } else { Mode::Tunnel },
            ChildAlgorithms {
                cipher,
                esn: convert::pick(&chosen, codec::TransformType::ESN).is_some_and(|t| t.id == 1),
                pfs_group: (group != 0).then_some(group),
            },
            pair.local,
            pair.remote,
            lifetimes,
            false,
        );
        let info = self.child_info(sa, &child, r2i, i2r);
        add_child(sa, child);
        Ok((out, info))
    }

    #[allow(clippy::too_many_arguments)]
    fn new_child(
        &mut self,
        now: Duration,
        name: String,
        spi_in: u32,
        spi_out: u32,
        mode: Mode,
        algs: ChildAlgorithms,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
        lifetimes: crate::config::Lifetimes,
        initiator: bool,
    ) -> Child {
        let (soft_at, hard_at) = self.jittered(now, &lifetimes);
        Child {
            name,
            spi_in,
            spi_out,
            mode,
            algs,
            local_ts,
            remote_ts,
            lifetimes,
            created: now,
            soft_at,
            hard_at,
            bytes: 0,
            packets: 0,
            soft_traffic_fired: false,
            state: ChildState::Installed,
            initiator,
            rekey_theirs: None,
            expired: false,
        }
    }

    fn child_info(&self, sa: &IkeSa, c: &Child, key_out: suite::SecretBytes, key_in: suite::SecretBytes) -> ChildSaInfo {
        ChildSaInfo {
            ike: sa.id,
            connection: self.config.connections[sa.conn].name.clone(),
            name: c.name.clone(),
            spi_in: c.spi_in,
            spi_out: c.spi_out,
            protocol: 50,
            mode: c.mode,
            algorithms: c.algs,
            key_in: EspKey(key_in),
            key_out: EspKey(key_out),
            local_ts: c.local_ts.clone(),
            remote_ts: c.remote_ts.clone(),
            lifetimes: c.lifetimes.clone(),
            nat: sa.nat,
            local: sa.local,
            remote: sa.remote,
            initiator: c.initiator,
        }
    }

    /// Initiator side: process the answer to our Child SA request.
    pub(super) fn complete_child(
        &mut self,
        now: Duration,
        sa: &mut IkeSa,
        nego: ChildNego,
        payloads: &[Payload],
        nr: &[u8],
        in_auth: bool,
    ) -> Result<ChildSaInfo, (Side, Option<NotifyType>, FailureReason)> {
        let fail = |this: &mut Engine, side, nt, reason| {
            this.spis_in.remove(&nego.spi_in);
            Err((side, nt, reason))
        };
        if let Some(n) = first_error(payloads) {
            let nt = n.notify_type;
            return fail(self, Side::Remote, Some(nt), FailureReason::PeerRefusedChild { child: nego.child.clone(), notify: nt.0 });
        }
        let mut sa_p = None;
        let mut tsi = None;
        let mut tsr = None;
        let mut ke = None;
        for p in payloads {
            match p {
                Payload::Sa(s) => sa_p = Some(s),
                Payload::TsI(t) => tsi = Some(t),
                Payload::TsR(t) => tsr = Some(t),
                Payload::Ke(k) => ke = Some(k),
                _ => {}
            }
        }
        let (Some(sa_p), Some(tsi), Some(tsr)) = (sa_p, tsi, tsr) else {
            return fail(self, Side::Remote, Some(NotifyType::INVALID_SYNTAX), FailureReason::Malformed(Malformed::ChildAnswerIncomplete));
        };
        let offered: Vec<codec::Proposal> = if in_auth { nego.proposals.iter().map(strip_ke).collect() } else { nego.proposals.clone() };
        // Exactly one transform of each type of the proposal we sent: an answer
        // that drops the KE transform (PFS) or ESN is refused.
        let answer = match sa_p.proposals.as_slice() {
            [one] => convert::check_answer(one, &offered),
            _ => Err(format!("{} proposals in the answer", sa_p.proposals.len())),
        };
        if let Err(why) = answer {
            return fail(
                self,
                Side::Local,
                Some(NotifyType::NO_PROPOSAL_CHOSEN),
                FailureReason::AnswerRefused { esp: true, answer: convert::summary(&sa_p.proposals), why },
            );
        }
        let chosen = &sa_p.proposals[0];
        let Some(spi_out) = spi32(&chosen.spi) else {
            return fail(self, Side::Local, Some(NotifyType::INVALID_SYNTAX), FailureReason::Malformed(Malformed::EspSpiSize));
        };
        let Some(cipher) = convert::esp_cipher(chosen) else {
            return fail(self, Side::Local, Some(NotifyType::NO_PROPOSAL_CHOSEN), FailureReason::NoUsableEspCipher { answer: true });
        };
        let group = convert::pick(chosen, codec::TransformType::DH).map(|t| t.id).unwrap_or(0);
        let g_ir = if group != 0 {
            match (ke, &nego.dh) {
                (Some(k), Some(dh)) if k.group == group && group == nego.group => match suite::dh_compute(dh, &k.data) {
                    Some(s) => Some(s),
                    None => {
                        return fail(self, Side::Local, Some(NotifyType::INVALID_SYNTAX), FailureReason::Malformed(Malformed::InvalidKe))
                    }
                },
                _ => return fail(self, Side::Local, Some(NotifyType::INVALID_SYNTAX), FailureReason::Malformed(Malformed::KeMissing)),
            }
        } else {
            None
        };
        let ts_i = convert::ts_from_wire(tsi);
        let ts_r = convert::ts_from_wire(tsr);
        if !within(&ts_i, &nego.ts_i) || !within(&ts_r, &nego.ts_r) {
            return fail(
                self,
                Side::Local,
                Some(NotifyType::TS_UNACCEPTABLE),
                FailureReason::TsOutside {
                    ts_i: crate::native_policy::ts_list(&ts_i),
                    ts_r: crate::native_policy::ts_list(&ts_r),
                    our_i: crate::native_policy::ts_list(&nego.ts_i),
                    our_r: crate::native_policy::ts_list(&nego.ts_r),
                },
            );
        }
        for (side, n) in [("TSi", ts_i.len()), ("TSr", ts_r.len())] {
            if let Err(detail) = self.selector_cap_allows(sa.conn, side, n) {
                return fail(
                    self,
                    Side::Local,
                    Some(NotifyType::TS_UNACCEPTABLE),
                    FailureReason::TsCap { by: SelectorSource::PeerNarrowing, detail },
                );
            }
        }
        let transport = nego.mode == Mode::Transport && find_notify(payloads, NotifyType::USE_TRANSPORT_MODE).is_some();
        let Some(keys) = sa.keys.as_ref() else {
            return fail(self, Side::Local, None, FailureReason::NoKeys);
        };
        // IKE_AUTH: KEYMAT uses the IKE SA's nonces; CREATE_CHILD_SA the exchange's.
        let ni: &[u8] = if in_auth { &sa.ni } else { &nego.ni };
        let Some((i2r, r2i)) =
            suite::child_keymat(keys.suite.prf, &keys.sk_d, g_ir.as_deref().map(|v| v.as_slice()), ni, nr, cipher.keymat_len())
        else {
            return fail(self, Side::Local, None, FailureReason::KeyDerivation);
        };
        let conn = &self.config.connections[sa.conn];
        let lifetimes = conn.child(&nego.child).map(|c| c.lifetimes.clone()).unwrap_or_else(crate::config::Lifetimes::child_default);
        let algs = ChildAlgorithms {
            cipher,
            esn: convert::pick(chosen, codec::TransformType::ESN).is_some_and(|t| t.id == 1),
            pfs_group: (group != 0).then_some(group),
        };
        let child = self.new_child(
            now,
            nego.child.clone(),
            nego.spi_in,
            spi_out,
            if transport { Mode::Transport } else { Mode::Tunnel },
            algs,
            ts_i,
            ts_r,
            lifetimes,
            true,
        );
        let info = self.child_info(sa, &child, i2r, r2i);
        add_child(sa, child);
        Ok(info)
    }

    /// Start a queued task (the request window is free). `false`: it waits
    /// for a policy decision and is first in the queue again.
    pub(super) fn start_task(&mut self, now: Duration, sa: &mut IkeSa, task: Task) -> bool {
        self.policy.take_deferred();
        let again = task.clone();
        self.start_task_now(now, sa, task);
        if self.policy.take_deferred() {
            sa.tasks.push_front(again);
            self.task_waits(now, sa);
            return false;
        }
        true
    }

    /// A task of ours (a CREATE_CHILD_SA exchange) could not start.
    fn task_failed(&mut self, sa: &IkeSa, reason: FailureReason) {
        self.failure(Some(sa), sa.remote, None, Side::Local, Exchange::CreateChildSa, reason, None);
    }

    fn start_task_now(&mut self, now: Duration, sa: &mut IkeSa, task: Task) {
        match task {
            Task::CreateChild(name) => match self.child_nego(sa, &name, None, true) {
                Ok(nego) => {
                    let p = child_request_payloads(&nego, true);
                    self.send_request(now, sa, ExchangeType::CREATE_CHILD_SA, p, Pending::CreateChild(nego));
                }
                Err(_) if self.policy.deferred() => {}
                Err(e) => {
                    self.task_failed(sa, FailureReason::NotStarted { why: e.to_string() });
                }
            },
            Task::RekeyChild(spi) => {
                let Some(i) = sa.child_idx(spi) else { return };
                if sa.children[i].state != ChildState::Installed {
                    return;
                }
                let name = sa.children[i].name.clone();
                match self.child_nego(sa, &name, Some(i), true) {
                    Ok(nego) => {
                        sa.children[i].state = ChildState::Rekeying;
                        let p = child_request_payloads(&nego, true);
                        self.send_request(now, sa, ExchangeType::CREATE_CHILD_SA, p, Pending::CreateChild(nego));
                    }
                    Err(_) if self.policy.deferred() => {}
                    Err(e) => {
                        self.task_failed(sa, FailureReason::NotStarted { why: e.to_string() });
                    }
                }
            }
            Task::RekeyIke => {
                let Some(cur) = sa.suite else { return };
                let mut ctx = self.ctx(sa, sa.conn, true);
                ctx.trigger = DecisionTrigger::Rekey;
                if let Err(why) = self.reauthorize(sa, &ctx) {
                    if self.policy.deferred() {
                        return;
                    }
                    self.task_failed(sa, FailureReason::IkeRekeyRefused { why });
                    return;
                }
                let conn = &self.config.connections[sa.conn];
                let order = match self.ordered(&ctx, SaKind::Ike, &conn.ike_proposals) {
                    Ok(o) => o,
                    Err(_) if self.policy.deferred() => return,
                    Err(detail) => {
                        self.task_failed(sa, FailureReason::NoProposalChosen { detail });
                        return;
                    }
                };
                let new_spi = self.alloc_ike_spi();
                let conn = &self.config.connections[sa.conn];
                let proposals: Vec<codec::Proposal> = order
                    .iter()
                    .enumerate()
                    .map(|(n, &i)| convert::to_wire_proposal(&conn.ike_proposals[i], n as u8 + 1, new_spi.to_be_bytes().to_vec(), true))
                    .collect();
                let groups: Vec<u16> = proposals.iter().flat_map(|p| p.transforms_of(codec::TransformType::DH)).map(|t| t.id).collect();
                let group =
                    if groups.contains(&cur.dh) { cur.dh } else { groups.into_iter().find(|g| suite::dh_supported(*g)).unwrap_or(cur.dh) };
                let Some((dh, _)) = suite::dh_generate(group, &mut self.rng) else { return };
                self.by_spi.insert(new_spi, sa.id);
                let ni = self.nonce();
                let p = vec![
                    Payload::Sa(SaPayload { proposals: proposals.clone() }),
                    Payload::Nonce(ni.clone()),
                    Payload::Ke(KePayload { group, data: suite::dh_public(&dh) }),
                ];
                let nego = IkeRekeyNego { new_spi, proposals, ni, dh, group, ke_retries: 0 };
                self.send_request(now, sa, ExchangeType::CREATE_CHILD_SA, p, Pending::RekeyIke(nego));
            }
            Task::DeleteRemoved(spis) => self.send_delete_removed(now, sa, spis),
            Task::DeleteChild(spi) => {
                let Some(i) = sa.child_idx(spi) else { return };
                if sa.children[i].state != ChildState::Rekeyed {
                    sa.children[i].state = ChildState::Deleting;
                }
                let p = vec![Payload::Delete(codec::DeletePayload {
                    protocol: ProtocolId::ESP,
                    spi_size: 4,
                    spis: vec![spi.to_be_bytes().to_vec()],
                })];
                self.send_request(now, sa, ExchangeType::INFORMATIONAL, p, Pending::DeleteChildren(vec![spi]));
            }
            Task::DeleteIke => {
                if sa.state != IkeState::Rekeyed {
                    sa.state = IkeState::Deleting;
                }
                if sa.delete_reason.is_none() {
                    sa.delete_reason = Some(Box::new(DownReason::LocalDelete));
                }
                let p = vec![Payload::Delete(codec::DeletePayload { protocol: ProtocolId::IKE, spi_size: 0, spis: Vec::new() })];
                self.send_request(now, sa, ExchangeType::INFORMATIONAL, p, Pending::DeleteIke);
            }
            Task::Dpd => {
                self.send_request(now, sa, ExchangeType::INFORMATIONAL, Vec::new(), Pending::Informational);
            }
        }
    }

    pub(super) fn responder_create_child(&mut self, now: Duration, mut sa: IkeSa, h: &codec::Header, payloads: Vec<Payload>) {
        let ex = Exchange::CreateChildSa;
        let respond_err = |this: &mut Engine, sa: &mut IkeSa, nt: NotifyType, data: Vec<u8>| {
            this.send_response(sa, ExchangeType::CREATE_CHILD_SA, h.message_id, vec![notify(nt, data)]);
        };
        if sa.state != IkeState::Established {
            respond_err(self, &mut sa, NotifyType::TEMPORARY_FAILURE, Vec::new());
            self.put(sa);
            return;
        }
        let ni = payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let Some(ni) = ni.filter(|n| n.len() >= 16 && n.len() <= 256) else {
            respond_err(self, &mut sa, NotifyType::INVALID_SYNTAX, Vec::new());
            self.put(sa);
            return;
        };
        let is_ike =
            payloads.iter().any(|p| matches!(p, Payload::Sa(s) if s.proposals.first().is_some_and(|p| p.protocol == ProtocolId::IKE)));
        if is_ike {
            self.responder_ike_rekey(now, sa, h, payloads, ni);
            return;
        }
        let mut rekey_idx = None;
        if let Some(n) = find_notify(&payloads, NotifyType::REKEY_SA) {
            let old = spi32(&n.spi).and_then(|s| sa.child_by_out(s));
            match old {
                None => {
                    respond_err(self, &mut sa, NotifyType::CHILD_SA_NOT_FOUND, Vec::new());
                    self.put(sa);
                    return;
                }
                Some(i) if matches!(sa.children[i].state, ChildState::Rekeyed | ChildState::Deleting) => {
                    respond_err(self, &mut sa, NotifyType::TEMPORARY_FAILURE, Vec::new());
                    self.put(sa);
                    return;
                }
                Some(i) => rekey_idx = Some(i),
            }
        }
        let nr = self.nonce();
        match self.respond_child(now, &mut sa, &payloads, &ni, &nr, false, rekey_idx) {
            Err(_) if self.policy.take_deferred() => {
                self.park_request(now, sa, h, payloads);
                return;
            }
            Ok((out, info)) => {
                self.send_response(&mut sa, ExchangeType::CREATE_CHILD_SA, h.message_id, out);
                match rekey_idx {
                    Some(i) => {
                        let old = &mut sa.children[i];
                        if old.state == ChildState::Rekeying {
                            old.rekey_theirs = Some(RekeyRecord { min_nonce: min_nonce(&ni, &nr) });
                        } else {
                            old.state = ChildState::Rekeyed;
                        }
                        let (os_in, os_out) = (old.spi_in, old.spi_out);
                        self.events.push_back(Event::ChildSaRekeyed { old_spi_in: os_in, old_spi_out: os_out, new: info });
                    }
                    None => self.events.push_back(Event::ChildSaUp(info)),
                }
            }
            Err(r) => {
                respond_err(self, &mut sa, r.notify, r.data);
                if r.notify != NotifyType::INVALID_KE_PAYLOAD {
                    let remote = sa.remote;
                    self.failure(Some(&sa), remote, None, Side::Local, ex, *r.reason, Some(r.notify));
                }
            }
        }
        self.kick(now, &mut sa);
        self.put(sa);
    }

    fn responder_ike_rekey(&mut self, now: Duration, mut sa: IkeSa, h: &codec::Header, payloads: Vec<Payload>, ni: Vec<u8>) {
        let ex = Exchange::CreateChildSa;
        let reply = |this: &mut Engine, sa: &mut IkeSa, p: Vec<Payload>| {
            this.send_response(sa, ExchangeType::CREATE_CHILD_SA, h.message_id, p);
        };
        let sa_p = payloads.iter().find_map(|p| match p {
            Payload::Sa(s) => Some(s),
            _ => None,
        });
        let ke = payloads.iter().find_map(|p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        });
        let (Some(sa_p), Some(ke)) = (sa_p, ke) else {
            reply(self, &mut sa, vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())]);
            self.put(sa);
            return;
        };
        let ceiling = &self.config.connections[sa.conn].ike_proposals;
        let usable: Vec<&codec::Proposal> = sa_p
            .proposals
            .iter()
            .filter(|p| p.spi.len() == 8 && convert::negotiate(p, SaKind::Ike, ceiling, &[], None, false).is_ok())
            .collect();
        let mut ctx = self.ctx(&sa, sa.conn, false);
        ctx.trigger = DecisionTrigger::Rekey;
        let sel = if usable.is_empty() {
            Err(format!(
                "peer offered {} for the IKE rekey; connection {} accepts {}",
                convert::summary(&sa_p.proposals),
                self.config.connections[sa.conn].name,
                ceiling.iter().map(crate::config::proposal_summary).collect::<Vec<_>>().join(", ")
            ))
        } else {
            self.choose_proposal(&ctx, SaKind::Ike, &usable, ceiling, Some(ke.group), false)
        };
        let (idx, chosen) = match sel {
            Ok(c) => c,
            Err(_) if self.policy.take_deferred() => {
                self.park_request(now, sa, h, payloads);
                return;
            }
            Err(detail) => {
                reply(self, &mut sa, vec![notify(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new())]);
                let remote = sa.remote;
                let reason = FailureReason::NoProposalChosen { detail };
                self.failure(Some(&sa), remote, None, Side::Local, ex, reason, Some(NotifyType::NO_PROPOSAL_CHOSEN));
                self.put(sa);
                return;
            }
        };
        let Some(new_suite) = super::init::ike_suite(&chosen) else {
            reply(self, &mut sa, vec![notify(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new())]);
            self.put(sa);
            return;
        };
        if ke.group != new_suite.dh {
            reply(self, &mut sa, vec![notify(NotifyType::INVALID_KE_PAYLOAD, new_suite.dh.to_be_bytes().to_vec())]);
            self.put(sa);
            return;
        }
        // The peer keeps its authenticated identity only while the policy still
        // authorizes it: a rekey asks again.
        if let Err(why) = self.reauthorize(&sa, &ctx) {
            if self.policy.take_deferred() {
                self.park_request(now, sa, h, payloads);
                return;
            }
            reply(self, &mut sa, vec![notify(NotifyType::AUTHENTICATION_FAILED, Vec::new())]);
            let remote = sa.remote;
            self.failure(
                Some(&sa),
                remote,
                None,
                Side::Local,
                ex,
                FailureReason::PolicyRefused { why },
                Some(NotifyType::AUTHENTICATION_FAILED),
            );
            self.put(sa);
            return;
        }
        let Some(peer_spi) = spi64(&usable[idx].spi).filter(|s| *s != 0) else {
            reply(self, &mut sa, vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())]);
            self.put(sa);
            return;
        };
        let Some((dh, ke_r)) = suite::dh_generate(new_suite.dh, &mut self.rng) else { return };
        let Some(g_ir) = suite::dh_compute(&dh, &ke.data) else {
            reply(self, &mut sa, vec![notify(NotifyType::INVALID_SYNTAX, Vec::new())]);
            self.put(sa);
            return;
        };
        let nr = self.nonce();
        let our_spi = self.alloc_ike_spi();
        let Some(old_keys) = sa.keys.as_ref() else { return };
        let skeyseed = suite::skeyseed_rekey(old_keys.suite.prf, &old_keys.sk_d, &g_ir, &ni, &nr);
        let Some(keys) = suite::derive_ike_keys(new_suite, &skeyseed, &ni, &nr, peer_spi, our_spi) else {
            self.put(sa);
            return;
        };
        let new_id = self.new_id();
        let mut new = self.rekeyed_sa(&sa, new_id, false, peer_spi, our_spi, new_suite, keys);
        self.establish_rekeyed(now, &mut new);
        let ours_outstanding = matches!(sa.outstanding.as_ref().map(|o| &o.pending), Some(Pending::RekeyIke(_)));
        new.children = std::mem::take(&mut sa.children);
        if ours_outstanding {
            sa.rekey_theirs = Some(IkeRekeyRecord { min_nonce: min_nonce(&ni, &nr), new_sa: new_id });
        } else {
            sa.state = IkeState::Rekeyed;
            sa.rekeyed_at = Some(now);
            new.tasks.extend(sa.tasks.drain(..).filter(|t| !matches!(t, Task::DeleteIke | Task::RekeyIke)));
        }
        let mut answer = chosen.clone();
        answer.spi = our_spi.to_be_bytes().to_vec();
        reply(
            self,
            &mut sa,
            vec![
                Payload::Sa(SaPayload { proposals: vec![answer] }),
                Payload::Nonce(nr),
                Payload::Ke(KePayload { group: new_suite.dh, data: ke_r }),
            ],
        );
        self.by_spi.insert(our_spi, new_id);
        new.up_reported = true;
        let info = self.ike_info(&new);
        self.events.push_back(Event::IkeSaRekeyed { old: sa.id, new: info });
        self.put(sa);
        self.put(new);
    }

    #[allow(clippy::too_many_arguments)]
    fn rekeyed_sa(
        &self,
        old: &IkeSa,
        id: IkeSaId,
        initiator: bool,
        spi_i: u64,
        spi_r: u64,
        s: suite::IkeSuite,
        keys: suite::IkeKeys,
    ) -> IkeSa {
        let mut n = self.skeleton(id, spi_i, spi_r);
        n.conn = old.conn;
        n.initiator = initiator;
        n.local = old.local;
        n.remote = old.remote;
        n.natt = old.natt;
        n.nat = old.nat;
        n.fragmentation = old.fragmentation;
        n.remote_id = old.remote_id.clone();
        n.auth = old.auth.clone();
        n.auth_scheme = old.auth_scheme.clone();
        n.eap_identity = old.eap_identity.clone();
        n.suite = Some(s);
        n.group = s.dh;
        n.keys = Some(keys);
        n.replaces = Some(old.id);
        n.reauth_at = old.reauth_at;
        n.vip = self.inherit_vips(old);
        n
    }

    fn establish_rekeyed(&mut self, now: Duration, sa: &mut IkeSa) {
        sa.state = IkeState::Established;
        sa.created = now;
        sa.established_at = Some(now);
        sa.last_recv = now;
        let lt = self.config.connections[sa.conn].ike_lifetimes.clone();
        let (soft, hard) = self.jittered(now, &lt);
        sa.soft_at = soft;
        sa.hard_at = hard;
    }

    pub(super) fn initiator_child_response(&mut self, now: Duration, mut sa: IkeSa, mut nego: ChildNego, payloads: Vec<Payload>) {
        let ex = Exchange::CreateChildSa;
        // INVALID_KE_PAYLOAD: retry once with the group the peer wants.
        if let Some(n) = find_notify(&payloads, NotifyType::INVALID_KE_PAYLOAD) {
            let want = if n.data.len() == 2 { u16::from_be_bytes([n.data[0], n.data[1]]) } else { 0 };
            let offered = nego.proposals.iter().any(|p| p.transforms_of(codec::TransformType::DH).any(|t| t.id == want));
            if offered && want != nego.group && nego.ke_retries < MAX_INIT_RETRIES {
                if let Some((dh, _)) = suite::dh_generate(want, &mut self.rng) {
                    nego.ke_retries += 1;
                    nego.dh = Some(dh);
                    nego.group = want;
                    let p = child_request_payloads(&nego, true);
                    self.send_request(now, &mut sa, ExchangeType::CREATE_CHILD_SA, p, Pending::CreateChild(nego));
                    self.put(sa);
                    return;
                }
            }
        }
        let rekey_of = nego.rekey_of;
        let ni = nego.ni.clone();
        let nr = payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let result = match nr.clone() {
            Some(nr) => self.complete_child(now, &mut sa, nego, &payloads, &nr, false),
            None => {
                self.spis_in.remove(&nego.spi_in);
                match first_error(&payloads) {
                    Some(n) => Err((
                        Side::Remote,
                        Some(n.notify_type),
                        FailureReason::PeerRefusedChild { child: nego.child.clone(), notify: n.notify_type.0 },
                    )),
                    None => Err((Side::Remote, Some(NotifyType::INVALID_SYNTAX), FailureReason::Malformed(Malformed::ChildAnswerNoNonce))),
                }
            }
        };
        match result {
            Ok(info) => match rekey_of.and_then(|s| sa.child_idx(s)) {
                Some(oi) => {
                    let nr = nr.unwrap_or_default();
                    let new_spi = info.spi_in;
                    let old = &mut sa.children[oi];
                    let (os_in, os_out) = (old.spi_in, old.spi_out);
                    old.state = ChildState::Rekeyed;
                    match old.rekey_theirs.take() {
                        Some(rec) if min_nonce(&ni, &nr) < rec.min_nonce => {
                            // Collision, and our exchange holds the lowest nonce: our new SA
                            // is redundant; the peer deletes the old one.
                            if let Some(ni_) = sa.child_idx(new_spi) {
                                sa.children[ni_].state = ChildState::Rekeyed;
                            }
                            sa.tasks.push_front(Task::DeleteChild(new_spi));
                        }
                        _ => sa.tasks.push_front(Task::DeleteChild(os_in)),
                    }
                    self.events.push_back(Event::ChildSaRekeyed { old_spi_in: os_in, old_spi_out: os_out, new: info });
                }
                None => self.events.push_back(Event::ChildSaUp(info)),
            },
            Err((side, nt, reason)) => {
                let mut report = true;
                if let Some(oi) = rekey_of.and_then(|s| sa.child_idx(s)) {
                    let old = &mut sa.children[oi];
                    if old.rekey_theirs.take().is_some() || old.state == ChildState::Rekeyed {
                        // Lost a collision: the peer's rekey already replaced it.
                        old.state = ChildState::Rekeyed;
                        report = nt != Some(NotifyType::TEMPORARY_FAILURE);
                    } else if old.state == ChildState::Rekeying {
                        old.state = ChildState::Installed;
                        old.soft_at = Some(now + Duration::from_secs(10));
                    }
                }
                if report {
                    let remote = sa.remote;
                    self.failure(Some(&sa), remote, None, side, ex, reason, nt);
                }
            }
        }
        self.kick(now, &mut sa);
        self.put(sa);
    }

    pub(super) fn initiator_ike_rekey_response(&mut self, now: Duration, mut sa: IkeSa, mut nego: IkeRekeyNego, payloads: Vec<Payload>) {
        let ex = Exchange::CreateChildSa;
        if let Some(n) = find_notify(&payloads, NotifyType::INVALID_KE_PAYLOAD) {
            let want = if n.data.len() == 2 { u16::from_be_bytes([n.data[0], n.data[1]]) } else { 0 };
            let offered = nego.proposals.iter().any(|p| p.transforms_of(codec::TransformType::DH).any(|t| t.id == want));
            if offered && want != nego.group && nego.ke_retries < MAX_INIT_RETRIES {
                if let Some((dh, _)) = suite::dh_generate(want, &mut self.rng) {
                    nego.ke_retries += 1;
                    nego.dh = dh;
                    nego.group = want;
                    let p = vec![
                        Payload::Sa(SaPayload { proposals: nego.proposals.clone() }),
                        Payload::Nonce(nego.ni.clone()),
                        Payload::Ke(KePayload { group: want, data: suite::dh_public(&nego.dh) }),
                    ];
                    self.send_request(now, &mut sa, ExchangeType::CREATE_CHILD_SA, p, Pending::RekeyIke(nego));
                    self.put(sa);
                    return;
                }
            }
        }
        let release = |this: &mut Engine, spi: u64, id: IkeSaId| {
            if this.by_spi.get(&spi) == Some(&id) {
                this.by_spi.remove(&spi);
            }
        };
        if let Some(n) = first_error(&payloads) {
            let nt = n.notify_type;
            release(self, nego.new_spi, sa.id);
            if nt == NotifyType::TEMPORARY_FAILURE && (sa.rekey_theirs.is_some() || sa.state == IkeState::Rekeyed) {
                // Collision lost: the peer's rekey replaced this SA.
                self.adopt_peer_rekey(&mut sa);
            } else {
                let remote = sa.remote;
                self.failure(Some(&sa), remote, None, Side::Remote, ex, FailureReason::PeerRefusedIkeRekey { notify: nt.0 }, Some(nt));
                if nt == NotifyType::TEMPORARY_FAILURE {
                    sa.soft_at = Some(now + Duration::from_secs(10));
                }
            }
            self.kick(now, &mut sa);
            self.put(sa);
            return;
        }
        let sa_p = payloads.iter().find_map(|p| match p {
            Payload::Sa(s) => Some(s),
            _ => None,
        });
        let ke = payloads.iter().find_map(|p| match p {
            Payload::Ke(k) => Some(k),
            _ => None,
        });
        let nr = payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let parsed = (|| {
            let sa_p = sa_p?;
            let ke = ke?;
            let nr = nr?;
            if sa_p.proposals.len() != 1 || convert::check_answer(&sa_p.proposals[0], &nego.proposals).is_err() || ke.group != nego.group {
                return None;
            }
            let s = super::init::ike_suite(&sa_p.proposals[0]).filter(|s| s.dh == nego.group)?;
            let peer_spi = spi64(&sa_p.proposals[0].spi).filter(|s| *s != 0)?;
            let g_ir = suite::dh_compute(&nego.dh, &ke.data)?;
            Some((s, peer_spi, g_ir, nr))
        })();
        let Some((new_suite, peer_spi, g_ir, nr)) = parsed else {
            release(self, nego.new_spi, sa.id);
            let remote = sa.remote;
            self.failure(
                Some(&sa),
                remote,
                None,
                Side::Local,
                ex,
                FailureReason::Malformed(Malformed::IkeRekeyAnswer),
                Some(NotifyType::INVALID_SYNTAX),
            );
            self.kick(now, &mut sa);
            self.put(sa);
            return;
        };
        let Some(old_keys) = sa.keys.as_ref() else { return };
        let skeyseed = suite::skeyseed_rekey(old_keys.suite.prf, &old_keys.sk_d, &g_ir, &nego.ni, &nr);
        let Some(keys) = suite::derive_ike_keys(new_suite, &skeyseed, &nego.ni, &nr, nego.new_spi, peer_spi) else {
            self.put(sa);
            return;
        };
        let new_id = self.new_id();
        let mut new = self.rekeyed_sa(&sa, new_id, true, nego.new_spi, peer_spi, new_suite, keys);
        self.establish_rekeyed(now, &mut new);
        self.by_spi.insert(nego.new_spi, new_id);
        let lose = match &sa.rekey_theirs {
            Some(rec) => min_nonce(&nego.ni, &nr) < rec.min_nonce,
            None => false,
        };
        let theirs = sa.rekey_theirs.take();
        sa.state = IkeState::Rekeyed;
        if lose {
            // Our new SA is redundant: delete it; the peer deletes the old one.
            new.delete_reason = Some(Box::new(DownReason::Rekeyed));
            new.tasks.push_back(Task::DeleteIke);
            if let Some(rec) = theirs {
                if let Ok(mut t) = self.take(rec.new_sa) {
                    t.tasks.extend(sa.tasks.drain(..).filter(|t| !matches!(t, Task::DeleteIke | Task::RekeyIke)));
                    self.put(t);
                }
            }
        } else {
            // We survive: take the children (from the old SA or the peer's redundant one).
            new.children = std::mem::take(&mut sa.children);
            if let Some(rec) = theirs {
                if let Some(t) = self.sas.get_mut(&rec.new_sa) {
                    new.children.append(&mut t.children);
                }
                self.retime(rec.new_sa);
            }
            new.tasks.extend(sa.tasks.drain(..).filter(|t| !matches!(t, Task::DeleteIke | Task::RekeyIke)));
            sa.delete_reason = Some(Box::new(DownReason::Rekeyed));
            sa.tasks.clear();
            sa.tasks.push_back(Task::DeleteIke);
            new.up_reported = true;
            let info = self.ike_info(&new);
            self.events.push_back(Event::IkeSaRekeyed { old: sa.id, new: info });
        }
        self.kick(now, &mut new);
        self.kick(now, &mut sa);
        self.put(new);
        self.put(sa);
    }

    /// After losing an IKE rekey collision by TEMPORARY_FAILURE: the SA the peer
    /// created by rekeying this one takes over.
    fn adopt_peer_rekey(&mut self, sa: &mut IkeSa) {
        if let Some(rec) = sa.rekey_theirs.take() {
            if let Some(t) = self.sas.get_mut(&rec.new_sa) {
                t.tasks.extend(sa.tasks.drain(..).filter(|t| !matches!(t, Task::DeleteIke | Task::RekeyIke)));
            }
        }
        sa.state = IkeState::Rekeyed;
    }
}

/// Most IKE SAs carry one Child SA (two for a moment while it is rekeyed):
/// grow the list one at a time, not by the default four (a Child is ~300
/// bytes).
fn add_child(sa: &mut IkeSa, child: Child) {
    sa.children.reserve_exact(1);
    sa.children.push(child);
}
