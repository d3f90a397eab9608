//! The daemon-side checks never panic on any plugin output, and whatever they
//! accept satisfies the contract.

use proptest::prelude::*;
use wisp_policy::api;
use wisp_policy::bindings::wit;
use wisp_policy::convert::{ip_from_wit, ts_from_wit, ts_to_wit};
use wisp_policy::validate::{self, Problem};

fn ip() -> impl Strategy<Value = wit::IpAddress> {
    prop_oneof![
        // Mostly a narrow v4 range so that subsets actually happen.
        (any::<u8>()).prop_map(|d| wit::IpAddress::Ipv4((10, 99, 1, d))),
        any::<(u8, u8, u8, u8)>().prop_map(wit::IpAddress::Ipv4),
        any::<(u16, u16, u16, u16, u16, u16, u16, u16)>().prop_map(wit::IpAddress::Ipv6),
    ]
}

fn selector() -> impl Strategy<Value = wit::TrafficSelector> {
    (prop_oneof![Just(0u8), Just(6u8), any::<u8>()], any::<u16>(), any::<u16>(), ip(), ip()).prop_map(
        |(ip_protocol, start_port, end_port, start_address, end_address)| wit::TrafficSelector {
            ip_protocol,
            start_port,
            end_port,
            start_address,
            end_address,
        },
    )
}

fn refusal() -> impl Strategy<Value = wit::Refusal> {
    prop_oneof![any::<String>(), "\\PC{0,2000}", Just(String::new())].prop_map(|reason| wit::Refusal { reason })
}

fn request() -> impl Strategy<Value = api::SelectorRequest> {
    let side = || prop::collection::vec(selector().prop_map(|t| ts_from_wit(&t)), 0..4);
    (side(), side()).prop_map(|(remote_proposed, local_proposed)| api::SelectorRequest {
        remote_configured: remote_proposed.clone(),
        local_configured: local_proposed.clone(),
        remote_proposed,
        local_proposed,
    })
}

/// Plugin answers: either arbitrary selectors, or ones cut from the proposal.
fn pair(req: &api::SelectorRequest) -> impl Strategy<Value = wit::SelectorPair> {
    let from = |v: &Vec<api::TrafficSelector>| v.iter().map(ts_to_wit).collect::<Vec<_>>();
    let (r, l) = (from(&req.remote_proposed), from(&req.local_proposed));
    prop_oneof![
        (prop::collection::vec(selector(), 0..6), prop::collection::vec(selector(), 0..6))
            .prop_map(|(remote, local)| wit::SelectorPair { remote, local }),
        Just(wit::SelectorPair { remote: r, local: l }),
        prop::collection::vec(selector(), 250..300).prop_map(|v| wit::SelectorPair { remote: v.clone(), local: v }),
    ]
}

fn address_request() -> impl Strategy<Value = api::AddressRequest> {
    let wanted = (any::<bool>(), prop::option::of(ip())).prop_map(|(v6, a)| api::AddressWanted {
        family: if v6 { api::AddressFamily::Ipv6 } else { api::AddressFamily::Ipv4 },
        address: a.map(|a| ip_from_wit(&a)),
    });
    let pools = prop::sample::subsequence(vec!["rw 10.99.1.0/24", "staff 10.99.1.200-10.99.1.220", "rw6 ::/120", "x 10.0.0.0/8"], 0..4);
    (prop::collection::vec(wanted, 0..3), pools).prop_map(|(mut requested, pools)| {
        requested.dedup_by_key(|w| w.family);
        api::AddressRequest {
            auth: api::AuthInfo::psk(api::Identity { kind: api::IdType::Fqdn, value: "p.example".into() }),
            requested,
            pools: pools
                .iter()
                .map(|p| {
                    let (name, range) = p.split_once(' ').unwrap();
                    api::AddressPool::parse(name, range).unwrap()
                })
                .collect(),
        }
    })
}

fn address_pick() -> impl Strategy<Value = wit::AddressPick> {
    prop_oneof![
        ip().prop_map(wit::AddressPick::Address),
        prop_oneof![Just("rw".to_string()), Just("rw6".to_string()), Just("staff".to_string()), any::<String>()]
            .prop_map(wit::AddressPick::Pool),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn address_choice_never_panics_and_accepted_ones_are_inside(
        req in address_request(),
        answer in prop_oneof![
            prop::collection::vec(address_pick(), 0..4).prop_map(|picks| Ok(wit::AddressChoice { picks })),
            refusal().prop_map(Err),
        ],
    ) {
        match validate::address_choice(answer.clone(), &req) {
            Ok(c) => {
                let mut families = std::collections::HashSet::new();
                for p in &c.picks {
                    let family = match p {
                        api::AddressPick::Pool(name) => {
                            let pool = req.pools.iter().find(|q| &q.name == name);
                            prop_assert!(pool.is_some(), "unknown pool {} accepted", name);
                            pool.unwrap().family
                        }
                        api::AddressPick::Address(a) => {
                            prop_assert!(req.pools.iter().any(|q| q.contains(*a)), "{} outside the pools accepted", a);
                            api::AddressFamily::of(*a)
                        }
                    };
                    prop_assert!(req.requested.iter().any(|w| w.family == family), "a family not asked for accepted");
                    prop_assert!(families.insert(family), "two picks of one family accepted");
                }
            }
            Err(Problem::Refused(r)) => {
                prop_assert!(answer.is_err());
                prop_assert!(r.len() <= validate::MAX_REASON_LEN + 3);
            }
            Err(Problem::Invalid(why)) => {
                prop_assert!(answer.is_ok());
                prop_assert!(!why.chars().any(char::is_control), "{:?}", why);
            }
        }
    }

    #[test]
    fn proposal_choice_never_panics(
        answer in prop_oneof![
            (prop_oneof![0u32..4, any::<u32>()], prop::collection::vec(prop_oneof![0u32..6, any::<u32>()], 0..8))
                .prop_map(|(proposal, transforms)| Ok(wit::ProposalChoice { proposal, transforms })),
            refusal().prop_map(Err)
        ],
        offered in prop::collection::vec(prop::collection::vec((1u8..6, 0u16..40), 0..6), 0..4),
    ) {
        let offered: Vec<api::Proposal> = offered
            .into_iter()
            .enumerate()
            .map(|(n, ts)| api::Proposal {
                number: n as u8 + 1,
                protocol: api::Protocol::Ike,
                transforms: ts
                    .into_iter()
                    .map(|(k, id)| api::Transform { kind: api::TransformType::from_raw(k), id, key_length: None })
                    .collect(),
            })
            .collect();
        match validate::proposal_choice(answer.clone(), &offered) {
            Ok(c) => {
                let Ok(raw) = &answer else { panic!("accepted a refusal") };
                prop_assert_eq!(c.index as u32, raw.proposal);
                let p = &offered[c.index];
                let mut kinds = std::collections::HashSet::new();
                for &t in &c.transforms {
                    prop_assert!(t < p.transforms.len());
                    prop_assert!(kinds.insert(p.transforms[t].kind), "two transforms of one type accepted");
                }
            }
            Err(Problem::Refused(r)) => {
                prop_assert!(answer.is_err());
                prop_assert!(r.len() <= validate::MAX_REASON_LEN + 3);
                prop_assert!(!r.chars().any(char::is_control));
            }
            Err(Problem::Invalid(_)) => prop_assert!(answer.is_ok()),
        }
    }

    #[test]
    fn proposal_order_never_panics(answer in prop::collection::vec(prop_oneof![0u32..8, any::<u32>()], 0..12),
                                   configured in 0usize..8) {
        if let Ok(order) = validate::proposal_order(answer.clone(), configured) {
            prop_assert!(!order.is_empty());
            let mut seen = std::collections::HashSet::new();
            for i in &order {
                prop_assert!(*i < configured);
                prop_assert!(seen.insert(*i), "duplicate accepted");
            }
            prop_assert_eq!(order.iter().map(|i| *i as u32).collect::<Vec<_>>(), answer);
        }
    }

    #[test]
    fn authorization_never_panics(answer in prop_oneof![Just(Ok(())), refusal().prop_map(Err)]) {
        prop_assert_eq!(validate::authorization(answer.clone()).is_ok(), answer.is_ok());
    }

    #[test]
    fn selectors_never_panic_and_accepted_ones_are_inside(
        (req, answer) in request().prop_flat_map(|req| {
            let p = pair(&req);
            (Just(req), prop_oneof![p.prop_map(Ok), refusal().prop_map(Err)])
        })
    ) {
        if let Ok(pair) = validate::selectors(answer, &req) {
            prop_assert!(!pair.remote.is_empty() && !pair.local.is_empty());
            prop_assert!(pair.remote.len() <= validate::MAX_SELECTORS);
            for t in &pair.remote {
                prop_assert!(req.remote_proposed.iter().any(|p| t.is_subset_of(p)));
            }
            for t in &pair.local {
                prop_assert!(req.local_proposed.iter().any(|p| t.is_subset_of(p)));
            }
        }
    }

    #[test]
    fn info_never_panics(name in any::<String>(), version in "\\PC{0,80}") {
        if let Ok((n, v)) = validate::info(&wit::PluginInfo { name: name.clone(), version: version.clone() }) {
            prop_assert!(!n.is_empty() && n.len() <= 64 && !v.is_empty() && v.len() <= 64);
        }
    }
}
