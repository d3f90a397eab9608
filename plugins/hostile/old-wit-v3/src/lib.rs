//! A well-behaved policy plugin, but built against `wisp:policy@0.3.0`
//! (`wit/policy.wit` in this directory is the frozen 0.3.0 contract, the one
//! before `decisions` gained `assign-address` and `auth-info` the EAP facts).
//! wisp 0.4.0 must refuse to load it with an error naming the version it was
//! built for.

wit_bindgen::generate!({
    path: "wit",
    world: "policy-plugin",
});

use exports::wisp::policy::decisions::Guest;
use wisp::policy::types::*;

struct OldV3;

impl Guest for OldV3 {
    fn info() -> PluginInfo {
        PluginInfo { name: "old-wit-v3".to_string(), version: "1.0.0".to_string() }
    }
    fn configure(_settings: Vec<Setting>) -> Result<(), String> {
        Ok(())
    }
    fn select_proposal(
        _ctx: PeerContext,
        _kind: SaKind,
        _offered: Vec<Proposal>,
        _configured: Vec<Proposal>,
    ) -> Result<ProposalChoice, Refusal> {
        Ok(ProposalChoice { proposal: 0, transforms: Vec::new() })
    }
    fn order_proposals(_ctx: PeerContext, _kind: SaKind, configured: Vec<Proposal>) -> Vec<u32> {
        (0..configured.len() as u32).collect()
    }
    fn authorize(_ctx: PeerContext, _auth: AuthInfo) -> Result<(), Refusal> {
        Ok(())
    }
    fn narrow_selectors(_ctx: PeerContext, request: SelectorRequest) -> Result<SelectorPair, Refusal> {
        Ok(SelectorPair { remote: request.remote_proposed, local: request.local_proposed })
    }
}

export!(OldV3);
