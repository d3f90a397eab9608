//! Example: identity allow-list with source CIDRs.
//!
//! Settings: `peers` (text list), one entry per identity:
//!
//! ```toml
//! [plugin.settings]
//! peers = ["alice@example.com from 10.99.0.0/16, 192.0.2.0/24",   # only from these
//!          "gw.example.net"]                                     # from anywhere
//! ```
//!
//! `authorize` allows a peer whose identity is listed (FQDN and e-mail
//! identities compare ASCII-case-insensitively) and whose address lies in one of
//! that entry's CIDRs (an entry without `from` allows any address). Everything
//! else is the SDK's plain behaviour: take the peer's first proposal, offer the
//! configured proposals in order, narrow selectors to proposed ∩ configured.
//!
//! The Python (`examples/plugins/python`) and JavaScript (`examples/plugins/js`)
//! allow-lists implement exactly this, reasons included; the shared fixtures in
//! `examples/fixtures/allowlist-*.json` check that.

use wisp_plugin_sdk::*;

struct Entry {
    id: String,
    /// The CIDRs as written (for reasons) and parsed; empty = any address.
    sources: Vec<(String, Cidr)>,
}

struct Allowlist {
    entries: Vec<Entry>,
}

fn parse_entry(raw: &str) -> Result<Entry, String> {
    let (id, cidrs) = match raw.rfind(" from ") {
        Some(i) => (&raw[..i], Some(&raw[i + 6..])),
        None => (raw, None),
    };
    let id = id.trim();
    if id.is_empty() {
        return Err(format!("peers entry '{raw}': empty identity"));
    }
    let mut sources = Vec::new();
    if let Some(list) = cidrs {
        for c in list.split(',') {
            let c = c.trim();
            if c.is_empty() {
                continue;
            }
            let parsed = Cidr::parse(c).map_err(|_| format!("peers entry '{raw}': bad CIDR '{c}'"))?;
            sources.push((c.to_string(), parsed));
        }
        if sources.is_empty() {
            return Err(format!("peers entry '{raw}': no CIDR after 'from'"));
        }
    }
    Ok(Entry { id: id.to_string(), sources })
}

fn id_matches(entry: &str, id: &Identity) -> bool {
    match id.kind {
        IdType::Fqdn | IdType::Rfc822Addr => entry.eq_ignore_ascii_case(&id.value),
        _ => entry == id.value,
    }
}

impl Policy for Allowlist {
    const NAME: &'static str = "allowlist";
    const VERSION: &'static str = "1.0.0";

    fn configure(s: &Settings) -> Result<Self, String> {
        s.reject_unknown(&["peers"])?;
        let entries = s
            .text_list("peers")?
            .unwrap_or_default()
            .iter()
            .map(|e| parse_entry(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Allowlist { entries })
    }

    fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), Refusal> {
        let id = &auth.peer_identity;
        let mine: Vec<&Entry> = self.entries.iter().filter(|e| id_matches(&e.id, id)).collect();
        if mine.is_empty() {
            return Err(refuse(format!("identity '{}' is not on the allow-list", id.value)));
        }
        if mine.iter().any(|e| e.sources.is_empty() || e.sources.iter().any(|(_, c)| c.contains_wit(&ctx.remote_address))) {
            return Ok(());
        }
        let allowed: Vec<&str> = mine.iter().flat_map(|e| e.sources.iter().map(|(t, _)| t.as_str())).collect();
        Err(refuse(format!(
            "identity '{}' is not allowed from {} (allowed: {})",
            id.value,
            ip_from_wit(&ctx.remote_address),
            allowed.join(", ")
        )))
    }

    fn narrow_selectors(&self, _ctx: &PeerContext, req: &SelectorRequest) -> Result<SelectorPair, Refusal> {
        let remote = ts::intersect_lists(&req.remote_proposed, &req.remote_configured);
        if remote.is_empty() {
            return Err(refuse("remote selectors do not overlap the configured ranges"));
        }
        let local = ts::intersect_lists(&req.local_proposed, &req.local_configured);
        if local.is_empty() {
            return Err(refuse("local selectors do not overlap the configured ranges"));
        }
        Ok(SelectorPair { remote, local })
    }
}

export_policy!(Allowlist);
