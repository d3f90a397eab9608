//! Checks on what a plugin answered, before the answer reaches the IKE engine.
//!
//! Pure functions over the generated WIT types, so that a property test can
//! throw arbitrary plugin output at them: they never panic, and anything outside
//! the contract becomes [`Problem::Invalid`] (treated as a refusal).

use wisp_policy_api as api;

use crate::bindings::wit;
use crate::convert::{self, ts_from_wit};

/// Longest refusal reason kept (the rest is cut); reasons end up in logs.
pub const MAX_REASON_LEN: usize = 512;
/// A traffic selector payload counts its selectors in one octet.
pub const MAX_SELECTORS: usize = 255;

/// Why an answer is not a "yes".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The plugin said no (reason sanitized).
    Refused(String),
    /// The plugin's answer breaks the contract.
    Invalid(String),
}

/// Makes a plugin-provided text safe to log: control characters replaced, length
/// capped at [`MAX_REASON_LEN`] bytes (on a char boundary).
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_REASON_LEN));
    for ch in text.chars() {
        let ch = if ch.is_control() { ' ' } else { ch };
        if out.len() + ch.len_utf8() > MAX_REASON_LEN {
            out.push('…');
            break;
        }
        out.push(ch);
    }
    if out.trim().is_empty() {
        out = "(no reason given)".to_string();
    }
    out
}

/// `select-proposal`: the index must point into `offered`; each named
/// transform must be one of the chosen proposal's, at most one per transform
/// type. (Whether the result lies inside a configured proposal is checked by the
/// IKE engine, which enforces that for every policy.)
pub fn proposal_choice(
    answer: Result<wit::ProposalChoice, wit::Refusal>,
    offered: &[api::Proposal],
) -> Result<api::ProposalChoice, Problem> {
    let choice = answer.map_err(|r| Problem::Refused(sanitize(&r.reason)))?;
    let i = choice.proposal;
    let Some((index, chosen)) = usize::try_from(i).ok().and_then(|i| offered.get(i).map(|p| (i, p))) else {
        return Err(Problem::Invalid(format!("proposal index {i} out of range ({} offered)", offered.len())));
    };
    if choice.transforms.len() > chosen.transforms.len() {
        return Err(Problem::Invalid(format!(
            "{} transforms named for a proposal of {}",
            choice.transforms.len(),
            chosen.transforms.len()
        )));
    }
    let mut transforms = Vec::with_capacity(choice.transforms.len());
    for t in choice.transforms {
        let Some((ti, tr)) = usize::try_from(t).ok().and_then(|ti| chosen.transforms.get(ti).map(|tr| (ti, tr))) else {
            return Err(Problem::Invalid(format!(
                "transform index {t} out of range (proposal #{} has {} transforms)",
                chosen.number,
                chosen.transforms.len()
            )));
        };
        if transforms.iter().any(|&o: &usize| chosen.transforms[o].kind == tr.kind) {
            return Err(Problem::Invalid(format!("two transforms of type {} named (one per type)", tr.kind.raw())));
        }
        transforms.push(ti);
    }
    Ok(api::ProposalChoice { index, transforms })
}

/// `order-proposals`: indices into `configured`, no duplicates, not empty.
pub fn proposal_order(answer: Vec<u32>, configured: usize) -> Result<Vec<usize>, Problem> {
    if answer.is_empty() {
        return Err(Problem::Refused("plugin offers none of the configured proposals".into()));
    }
    if answer.len() > configured {
        return Err(Problem::Invalid(format!("{} indices for {configured} configured proposals", answer.len())));
    }
    let mut seen = vec![false; configured];
    let mut out = Vec::with_capacity(answer.len());
    for i in answer {
        let idx = match usize::try_from(i) {
            Ok(idx) if idx < configured => idx,
            _ => return Err(Problem::Invalid(format!("proposal index {i} out of range ({configured} configured)"))),
        };
        if seen[idx] {
            return Err(Problem::Invalid(format!("proposal index {i} listed twice")));
        }
        seen[idx] = true;
        out.push(idx);
    }
    Ok(out)
}

/// `authorize`.
pub fn authorization(answer: Result<(), wit::Refusal>) -> Result<(), Problem> {
    answer.map_err(|r| Problem::Refused(sanitize(&r.reason)))
}

fn side(name: &str, returned: &[wit::TrafficSelector], proposed: &[api::TrafficSelector]) -> Result<Vec<api::TrafficSelector>, Problem> {
    if returned.is_empty() {
        return Err(Problem::Refused(format!("no {name} traffic selector left after narrowing")));
    }
    if returned.len() > MAX_SELECTORS {
        return Err(Problem::Invalid(format!("{} {name} selectors returned (at most {MAX_SELECTORS})", returned.len())));
    }
    let mut out = Vec::with_capacity(returned.len());
    for (n, t) in returned.iter().enumerate() {
        let t = ts_from_wit(t);
        if !proposed.iter().any(|p| t.is_subset_of(p)) {
            return Err(Problem::Invalid(format!(
                "{name} selector #{n} ({}-{} proto {} ports {}-{}) is not inside any proposed {name} selector",
                t.start_address, t.end_address, t.ip_protocol, t.start_port, t.end_port
            )));
        }
        out.push(t);
    }
    Ok(out)
}

/// `narrow-selectors`: every returned selector lies inside one proposed for the
/// same side; neither side is empty.
pub fn selectors(answer: Result<wit::SelectorPair, wit::Refusal>, request: &api::SelectorRequest) -> Result<api::SelectorPair, Problem> {
    let pair = answer.map_err(|r| Problem::Refused(sanitize(&r.reason)))?;
    let remote = side("remote", &pair.remote, &request.remote_proposed)?;
    let local = side("local", &pair.local, &request.local_proposed)?;
    Ok(api::SelectorPair { remote, local })
}

/// `assign-address`: every pick inside the request's pools, of a family the
/// peer asked for, one per family ([`api::AddressRequest::check`], the check
/// the IKE engine enforces too). Whether an address is free only the
/// engine's pools know.
pub fn address_choice(
    answer: Result<wit::AddressChoice, wit::Refusal>,
    request: &api::AddressRequest,
) -> Result<api::AddressChoice, Problem> {
    let choice = answer.map_err(|r| Problem::Refused(sanitize(&r.reason)))?;
    // More picks than families asked for always break the contract, and the
    // first `families + 1` of them show how: no need to look at the rest.
    let look_at = choice.picks.len().min(request.requested.len() + 1);
    let picks = choice.picks[..look_at]
        .iter()
        .map(|p| match p {
            // A name that is no pool is quoted in the reason: make it loggable.
            wit::AddressPick::Pool(name) if request.pool(name).is_none() => api::AddressPick::Pool(sanitize(name)),
            p => convert::address_pick_from_wit(p),
        })
        .collect();
    let choice = api::AddressChoice { picks };
    request.check(&choice).map_err(|e| Problem::Invalid(e.to_string()))?;
    Ok(choice)
}

/// `info()`: a name and version that are short printable text.
pub fn info(i: &wit::PluginInfo) -> Result<(String, String), String> {
    let ok = |s: &str| !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_graphic());
    if !ok(&i.name) {
        return Err(format!("name {:?} must be 1-64 printable ASCII characters without spaces", sanitize(&i.name)));
    }
    if !ok(&i.version) {
        return Err(format!("version {:?} must be 1-64 printable ASCII characters without spaces", sanitize(&i.version)));
    }
    Ok((i.name.clone(), i.version.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::ts_to_wit;

    fn ts(a: &str, b: &str) -> api::TrafficSelector {
        api::TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_address: a.parse().unwrap(),
            end_address: b.parse().unwrap(),
        }
    }

    fn prop(kinds: &[(api::TransformType, u16)]) -> api::Proposal {
        api::Proposal {
            number: 1,
            protocol: api::Protocol::Ike,
            transforms: kinds.iter().map(|&(kind, id)| api::Transform { kind, id, key_length: None }).collect(),
        }
    }

    fn choice(proposal: u32, transforms: Vec<u32>) -> Result<wit::ProposalChoice, wit::Refusal> {
        Ok(wit::ProposalChoice { proposal, transforms })
    }

    #[test]
    fn index_checks() {
        use api::TransformType::*;
        let offered = vec![prop(&[(Encryption, 20)]), prop(&[(Encryption, 28), (Prf, 2), (Prf, 5)])];
        assert_eq!(proposal_choice(choice(1, vec![]), &offered), Ok(api::ProposalChoice::index(1)));
        assert!(matches!(proposal_choice(choice(2, vec![]), &offered), Err(Problem::Invalid(_))));
        assert!(matches!(proposal_choice(choice(u32::MAX, vec![]), &[]), Err(Problem::Invalid(_))));
        assert_eq!(proposal_choice(Err(wit::Refusal { reason: "no\nway".into() }), &offered), Err(Problem::Refused("no way".into())));
    }

    #[test]
    fn named_transforms_are_checked() {
        use api::TransformType::*;
        let offered = vec![prop(&[(Encryption, 28), (Prf, 2), (Prf, 5)])];
        assert_eq!(proposal_choice(choice(0, vec![2, 0]), &offered), Ok(api::ProposalChoice { index: 0, transforms: vec![2, 0] }));
        assert!(matches!(proposal_choice(choice(0, vec![3]), &offered), Err(Problem::Invalid(_))), "out of range");
        assert!(matches!(proposal_choice(choice(0, vec![1, 2]), &offered), Err(Problem::Invalid(_))), "two PRFs");
        assert!(matches!(proposal_choice(choice(0, vec![0; 100_000]), &offered), Err(Problem::Invalid(_))), "huge list");
    }

    #[test]
    fn order_checks() {
        assert_eq!(proposal_order(vec![2, 0], 3), Ok(vec![2, 0]));
        assert!(matches!(proposal_order(vec![0, 0], 3), Err(Problem::Invalid(_))));
        assert!(matches!(proposal_order(vec![3], 3), Err(Problem::Invalid(_))));
        assert!(matches!(proposal_order(vec![], 3), Err(Problem::Refused(_))));
    }

    #[test]
    fn selector_checks() {
        let req = api::SelectorRequest {
            remote_proposed: vec![ts("10.0.0.0", "10.0.0.255")],
            local_proposed: vec![ts("10.1.0.0", "10.1.255.255")],
            remote_configured: vec![],
            local_configured: vec![],
        };
        let inside = wit::SelectorPair {
            remote: vec![ts_to_wit(&ts("10.0.0.1", "10.0.0.9"))],
            local: vec![ts_to_wit(&ts("10.1.0.0", "10.1.0.255"))],
        };
        assert!(selectors(Ok(inside.clone()), &req).is_ok());
        let wide = wit::SelectorPair { remote: vec![ts_to_wit(&ts("10.0.0.0", "10.0.1.0"))], local: inside.local.clone() };
        assert!(matches!(selectors(Ok(wide), &req), Err(Problem::Invalid(_))));
        let empty = wit::SelectorPair { remote: vec![], local: inside.local };
        assert!(matches!(selectors(Ok(empty), &req), Err(Problem::Refused(_))));
    }

    #[test]
    fn address_checks() {
        let request = api::AddressRequest {
            auth: api::AuthInfo::psk(api::Identity { kind: api::IdType::Fqdn, value: "a.example".into() }),
            requested: vec![api::AddressWanted { family: api::AddressFamily::Ipv4, address: None }],
            pools: vec![api::AddressPool::parse("rw", "10.3.0.0/24").unwrap()],
        };
        let pick = |p: &[wit::AddressPick]| address_choice(Ok(wit::AddressChoice { picks: p.to_vec() }), &request);
        let inside = wit::AddressPick::Address(crate::convert::ip_to_wit("10.3.0.7".parse().unwrap()));
        assert_eq!(pick(std::slice::from_ref(&inside)).unwrap().picks, vec![api::AddressPick::Address("10.3.0.7".parse().unwrap())]);
        assert_eq!(pick(&[]).unwrap(), api::AddressChoice::default());
        let outside = wit::AddressPick::Address(crate::convert::ip_to_wit("10.9.9.9".parse().unwrap()));
        assert_eq!(pick(&[outside]), Err(Problem::Invalid("assigned 10.9.9.9, outside pools rw (10.3.0.0/24)".into())));
        let weird = wit::AddressPick::Pool(format!("x\n{}", "y".repeat(10_000)));
        match pick(&[weird]) {
            Err(Problem::Invalid(why)) => assert!(why.len() < 700 && !why.contains('\n'), "{why}"),
            other => panic!("{other:?}"),
        }
        let huge = vec![inside; 1_000_000];
        assert!(matches!(pick(&huge), Err(Problem::Invalid(why)) if why.contains("two IPv4")));
        assert_eq!(address_choice(Err(wit::Refusal { reason: "no".into() }), &request), Err(Problem::Refused("no".into())));
    }

    #[test]
    fn sanitize_caps_length() {
        let long = "é".repeat(1000);
        let s = sanitize(&long);
        assert!(s.len() <= MAX_REASON_LEN + '…'.len_utf8());
        assert_eq!(sanitize(""), "(no reason given)");
    }
}
