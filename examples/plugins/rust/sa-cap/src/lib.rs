//! Example: cap the SAs one identity may hold at once (uses the host's live-SA
//! view).
//!
//! Settings:
//! - `max_ike_sas` (integer, default 1): an identity already holding this many
//!   IKE SAs is denied at `authorize` (a second concurrent login).
//! - `max_child_sas` (integer, default 4): a new Child SA for an identity that
//!   already holds this many is refused at `select-proposal`.
//! - `allowed_ids` (text list, optional): if set, the identity must be listed.
//!
//! The host counts SAs that are established; the one being negotiated is not
//! counted. A rekey (`ctx.trigger == rekey`) replaces an SA the identity already
//! holds, so the caps do not apply to it (the allow-list still does).

use wisp_plugin_sdk::*;

struct SaCap {
    max_ike: u32,
    max_child: u32,
    allowed_ids: Option<Vec<String>>,
}

fn cap(s: &Settings, key: &str, default: i64) -> Result<u32, String> {
    let v = s.integer(key)?.unwrap_or(default);
    u32::try_from(v).map_err(|_| format!("setting '{key}' must be 0..=4294967295, not {v}"))
}

impl Policy for SaCap {
    const NAME: &'static str = "sa-cap";
    const VERSION: &'static str = "1.0.0";

    fn configure(s: &Settings) -> Result<Self, String> {
        s.reject_unknown(&["max_ike_sas", "max_child_sas", "allowed_ids"])?;
        Ok(SaCap {
            max_ike: cap(s, "max_ike_sas", 1)?,
            max_child: cap(s, "max_child_sas", 4)?,
            allowed_ids: s.text_list("allowed_ids")?,
        })
    }

    fn select_proposal(&self, ctx: &PeerContext, kind: SaKind, offered: &[Proposal], _configured: &[Proposal]) -> Result<ProposalChoice, Refusal> {
        // A rekey (or re-check) concerns a Child SA the identity already holds.
        if kind == SaKind::Child && ctx.trigger == DecisionTrigger::Initial {
            if let Some(id) = &ctx.peer_identity {
                let n = host::sa_counts(id);
                if n.child_sas >= self.max_child {
                    return Err(refuse(format!(
                        "identity '{}' already holds {} Child SAs (max_child_sas = {})",
                        id.value, n.child_sas, self.max_child
                    )));
                }
            }
        }
        if offered.is_empty() {
            return Err(refuse("no proposal offered"));
        }
        Ok(ProposalChoice { proposal: 0, transforms: Vec::new() })
    }

    fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), Refusal> {
        let id = &auth.peer_identity;
        if let Some(ids) = &self.allowed_ids {
            if !ids.contains(&id.value) {
                return Err(refuse(format!("identity '{}' is not in allowed_ids", id.value)));
            }
        }
        let n = host::sa_counts(id);
        if ctx.trigger == DecisionTrigger::Initial && n.ike_sas >= self.max_ike {
            return Err(refuse(format!(
                "identity '{}' already holds {} IKE SAs (max_ike_sas = {})",
                id.value, n.ike_sas, self.max_ike
            )));
        }
        Ok(())
    }
}

export_policy!(SaCap);
