//! Example: allow-list by identity, certificate issuer or subjectAltName, with
//! source CIDRs; and virtual IPs by the same rules.
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
//!
//! `leases` (text list) says where a peer's virtual IP comes from
//! (`assign-address`), one entry per line, a rule (the forms above) and then
//! what it gets:
//!
//! ```toml
//! leases = ["alice@example.com 10.3.0.7",          # exactly this address
//!           "alice@example.com fd00:3::7",          # ... and this one for IPv6
//!           "issuer CN=Staff CA, O=Corp pool staff", # any address of pool `staff`
//!           "san dns:*.guest.example none"]          # no address at all (refused)
//! ```
//!
//! The last words decide: `pool NAME`, `none`, or else an address. For each
//! family the peer asks for, the first entry whose rule matches the peer and
//! that gives that family decides: an address of the family, a pool of the
//! family (a pool the connection does not have gives nothing, so one list
//! serves connections with different pools), or `none`, which refuses the
//! peer an address (INTERNAL_ADDRESS_FAILURE). A family no entry decides is
//! left to the host (its pools in order, the peer's own lease first). An
//! address is answered as written: the host refuses one outside the
//! connection's pools, or leased to another identity.
//!
//! Everything else is the SDK's plain behaviour: take the peer's first
//! proposal, offer the configured proposals in order, narrow selectors to
//! proposed ∩ configured.
//!
//! The Python (`examples/plugins/python`) and JavaScript (`examples/plugins/js`)
//! allow-lists implement exactly this, reasons included; the shared fixtures in
//! `examples/fixtures/allowlist-*.json` check that.

use std::net::IpAddr;

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

/// What a `leases` entry gives.
enum Gives {
    Address(IpAddr),
    Pool(String),
    Nothing,
}

struct Lease {
    /// The entry as written (for reasons).
    raw: String,
    rule: Rule,
    gives: Gives,
}

struct Allowlist {
    entries: Vec<Entry>,
    leases: Vec<Lease>,
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

/// One rule (identity, `issuer DN`, `san TYPE:VALUE`) of a `key` entry.
fn parse_rule(key: &str, raw: &str, text: &str) -> Result<Rule, String> {
    if let Some(dn) = text.strip_prefix("issuer ") {
        let dn = dn.trim();
        if dn.is_empty() {
            return Err(format!("{key} entry '{raw}': empty issuer"));
        }
        return Ok(Rule::Issuer(norm_dn(dn)));
    }
    if let Some(pat) = text.strip_prefix("san ") {
        let pat = pat.trim();
        let Some((kind, value)) = pat.split_once(':') else {
            return Err(format!("{key} entry '{raw}': subjectAltName '{pat}' is not TYPE:VALUE"));
        };
        let kind = kind.to_ascii_lowercase();
        if !SAN_TYPES.contains(&kind.as_str()) {
            return Err(format!("{key} entry '{raw}': unknown subjectAltName type '{kind}' (known: {})", SAN_TYPES.join(", ")));
        }
        if value.is_empty() {
            return Err(format!("{key} entry '{raw}': empty subjectAltName"));
        }
        let wild_ok = (kind == "dns" && value.starts_with("*.")) || (kind == "email" && value.starts_with("*@"));
        if value[usize::from(wild_ok)..].contains('*') {
            return Err(format!(
                "{key} entry '{raw}': '*' only as a leading DNS label (dns:*.example) or e-mail local part (email:*@example)"
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
    let rule = parse_rule("peers", raw, id)?;
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

/// `RULE ADDRESS`, `RULE pool NAME` or `RULE none`.
fn parse_lease(raw: &str) -> Result<Lease, String> {
    let usage = "expected RULE ADDRESS, RULE pool NAME or RULE none";
    let text = raw.trim();
    let Some((head, last)) = text.rsplit_once(' ') else {
        return Err(format!("leases entry '{raw}': {usage}"));
    };
    let (rule_text, gives) = if last == "none" {
        (head, Gives::Nothing)
    } else if let Some(rule_text) = head.strip_suffix(" pool") {
        (rule_text, Gives::Pool(last.to_string()))
    } else if head == "pool" {
        return Err(format!("leases entry '{raw}': no rule before 'pool'"));
    } else {
        match last.parse::<IpAddr>() {
            Ok(a) => (head, Gives::Address(a)),
            Err(_) => return Err(format!("leases entry '{raw}': '{last}' is not an address ({usage})")),
        }
    };
    let rule_text = rule_text.trim();
    if rule_text.is_empty() {
        return Err(format!("leases entry '{raw}': {usage}"));
    }
    let rule = parse_rule("leases", raw, rule_text)?;
    Ok(Lease { raw: raw.to_string(), rule, gives })
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
    const VERSION: &'static str = "1.2.0";

    fn configure(s: &Settings) -> Result<Self, String> {
        s.reject_unknown(&["peers", "leases"])?;
        let entries = s.text_list("peers")?.unwrap_or_default().iter().map(|e| parse_entry(e)).collect::<Result<Vec<_>, _>>()?;
        let leases = s.text_list("leases")?.unwrap_or_default().iter().map(|e| parse_lease(e)).collect::<Result<Vec<_>, _>>()?;
        Ok(Allowlist { entries, leases })
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

    fn assign_address(&self, _ctx: &PeerContext, req: &AddressRequest) -> Result<AddressChoice, Refusal> {
        let mut picks = Vec::new();
        for wanted in &req.requested {
            let decides = |l: &&Lease| match &l.gives {
                Gives::Address(a) => address::family_of(*a) == wanted.family,
                Gives::Pool(p) => address::find_pool(req, p).is_some_and(|p| p.family == wanted.family),
                Gives::Nothing => true,
            };
            let Some(lease) = self.leases.iter().filter(|l| rule_matches(&l.rule, &req.auth)).find(decides) else { continue };
            match &lease.gives {
                Gives::Address(a) => picks.push(address::exact(*a)),
                Gives::Pool(p) => picks.push(address::pool(p)),
                Gives::Nothing => {
                    return Err(refuse(format!(
                        "identity '{}' gets no address (leases entry '{}')",
                        req.auth.peer_identity.value, lease.raw
                    )))
                }
            }
        }
        Ok(address::choose(picks))
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
