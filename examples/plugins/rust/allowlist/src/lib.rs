//! Example: allow-list by identity, certificate issuer or subjectAltName, with
//! source CIDRs.
//!
//! Settings: `peers` (text list), one rule per entry, each optionally followed
//! by ` from CIDR, CIDR, ...`:
//!
//! ```toml
//! [plugin.settings]
//! peers = ["alice@example.com from 10.99.0.0/16, 192.0.2.0/24",   # only from these
//!          "gw.example.net",                                     # from anywhere
//!          "issuer CN=Corp CA, O=Corp from 10.20.0.0/16",        # any certificate of this CA
//!          "san dns:*.corp.example",                             # any certificate with such a SAN
//!          "san email:*@corp.example"]
//! ```
//!
//! Rule forms:
//! - `IDENTITY`: the peer's identity, as the host prints it (FQDN and e-mail
//!   identities compare ASCII-case-insensitively, others exactly).
//! - `issuer DN`: a peer whose certificate issuer (`auth-info.certificate-issuer`)
//!   is the RFC 4514 `DN`, compared ASCII-case-insensitively and ignoring
//!   spaces around the `,` between RDNs. A peer without a certificate never
//!   matches.
//! - `san TYPE:VALUE`: a peer whose certificate has a subjectAltName
//!   (`auth-info.subject-alt-names`) of that `TYPE` (`dns`, `email`, `ip`,
//!   `uri`, `dn`) matching `VALUE`: `dns`, `email` and `ip` compare
//!   ASCII-case-insensitively, `uri` exactly, `dn` like `issuer`. `*` may only
//!   lead a `dns` pattern as a whole label (`*.corp.example` matches
//!   `gw.corp.example` and `a.b.corp.example`, not `corp.example`) or stand for
//!   the local part of an `email` pattern (`*@corp.example`).
//!
//! `authorize` allows a peer that some rule matches and whose address lies in
//! one of that rule's CIDRs (a rule without `from` allows any address).
//! Everything else is the SDK's plain behaviour: take the peer's first
//! proposal, offer the configured proposals in order, narrow selectors to
//! proposed ∩ configured.
//!
//! The Python (`examples/plugins/python`) and JavaScript (`examples/plugins/js`)
//! allow-lists implement exactly this, reasons included; the shared fixtures in
//! `examples/fixtures/allowlist-*.json` check that.

use wisp_plugin_sdk::*;

enum Rule {
    /// A peer identity.
    Id(String),
    /// A certificate issuer, normalized ([`norm_dn`]).
    Issuer(String),
    /// A subjectAltName pattern: type (lowercase) and value.
    San(String, String),
}

struct Entry {
    rule: Rule,
    /// The CIDRs as written (for reasons) and parsed; empty = any address.
    sources: Vec<(String, Cidr)>,
}

struct Allowlist {
    entries: Vec<Entry>,
}

const SAN_TYPES: [&str; 5] = ["dns", "email", "ip", "uri", "dn"];

/// An RFC 4514 DN for comparison: ASCII lowercase, the RDNs (split at commas
/// not escaped with `\`) trimmed of spaces and joined with `,`.
fn norm_dn(dn: &str) -> String {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = dn.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts.iter().map(|p| p.trim_matches(' ').to_ascii_lowercase()).collect::<Vec<_>>().join(",")
}

fn parse_rule(raw: &str, text: &str) -> Result<Rule, String> {
    if let Some(dn) = text.strip_prefix("issuer ") {
        let dn = dn.trim();
        if dn.is_empty() {
            return Err(format!("peers entry '{raw}': empty issuer"));
        }
        return Ok(Rule::Issuer(norm_dn(dn)));
    }
    if let Some(pat) = text.strip_prefix("san ") {
        let pat = pat.trim();
        let Some((kind, value)) = pat.split_once(':') else {
            return Err(format!("peers entry '{raw}': subjectAltName '{pat}' is not TYPE:VALUE"));
        };
        let kind = kind.to_ascii_lowercase();
        if !SAN_TYPES.contains(&kind.as_str()) {
            return Err(format!("peers entry '{raw}': unknown subjectAltName type '{kind}' (known: {})", SAN_TYPES.join(", ")));
        }
        if value.is_empty() {
            return Err(format!("peers entry '{raw}': empty subjectAltName"));
        }
        let wild_ok = (kind == "dns" && value.starts_with("*.")) || (kind == "email" && value.starts_with("*@"));
        if value[usize::from(wild_ok)..].contains('*') {
            return Err(format!(
                "peers entry '{raw}': '*' only as a leading DNS label (dns:*.example) or e-mail local part (email:*@example)"
            ));
        }
        let value = if kind == "dn" { norm_dn(value) } else { value.to_string() };
        return Ok(Rule::San(kind, value));
    }
    Ok(Rule::Id(text.to_string()))
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
    let rule = parse_rule(raw, id)?;
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
    Ok(Entry { rule, sources })
}

fn id_matches(entry: &str, id: &Identity) -> bool {
    match id.kind {
        IdType::Fqdn | IdType::Rfc822Addr => entry.eq_ignore_ascii_case(&id.value),
        _ => entry == id.value,
    }
}

/// True when `value` ends with `suffix` (ASCII-case-insensitively) and has
/// something before it.
fn ends_with_ci(value: &str, suffix: &str) -> bool {
    value.len() > suffix.len()
        && value.is_char_boundary(value.len() - suffix.len())
        && value[value.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

fn san_matches(kind: &str, pattern: &str, san: &str) -> bool {
    let Some((k, v)) = san.split_once(':') else { return false };
    if k != kind {
        return false;
    }
    match kind {
        "dns" => match pattern.strip_prefix('*') {
            Some(suffix) => ends_with_ci(v, suffix),
            None => v.eq_ignore_ascii_case(pattern),
        },
        "email" => match pattern.strip_prefix('*') {
            Some(suffix) => ends_with_ci(v, suffix) && !v[..v.len() - suffix.len()].contains('@'),
            None => v.eq_ignore_ascii_case(pattern),
        },
        "ip" => v.eq_ignore_ascii_case(pattern),
        "dn" => norm_dn(v) == pattern,
        _ => v == pattern,
    }
}

fn rule_matches(rule: &Rule, auth: &AuthInfo) -> bool {
    match rule {
        Rule::Id(id) => id_matches(id, &auth.peer_identity),
        Rule::Issuer(dn) => auth.certificate_issuer.as_deref().is_some_and(|i| norm_dn(i) == *dn),
        Rule::San(kind, pattern) => auth.subject_alt_names.iter().any(|s| san_matches(kind, pattern, s)),
    }
}

impl Policy for Allowlist {
    const NAME: &'static str = "allowlist";
    const VERSION: &'static str = "1.1.0";

    fn configure(s: &Settings) -> Result<Self, String> {
        s.reject_unknown(&["peers"])?;
        let entries = s.text_list("peers")?.unwrap_or_default().iter().map(|e| parse_entry(e)).collect::<Result<Vec<_>, _>>()?;
        Ok(Allowlist { entries })
    }

    fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), Refusal> {
        let id = &auth.peer_identity;
        let mine: Vec<&Entry> = self.entries.iter().filter(|e| rule_matches(&e.rule, auth)).collect();
        if mine.is_empty() {
            let by_cert = self.entries.iter().any(|e| !matches!(e.rule, Rule::Id(_)));
            let detail = if !by_cert {
                String::new()
            } else if auth.certificate_issuer.is_none() && auth.subject_alt_names.is_empty() {
                " (no certificate)".to_string()
            } else {
                let sans = if auth.subject_alt_names.is_empty() { "none".to_string() } else { auth.subject_alt_names.join(", ") };
                format!(" (certificate issuer '{}', subjectAltNames: {sans})", auth.certificate_issuer.as_deref().unwrap_or(""))
            };
            return Err(refuse(format!("identity '{}' is not on the allow-list{detail}", id.value)));
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
