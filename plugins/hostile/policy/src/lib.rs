//! Test plugin for wisp-policy. Built once per behaviour (cargo feature):
//!
//! | feature          | misbehaviour                                            |
//! |------------------|---------------------------------------------------------|
//! | (none) = v1      | none: picks proposal 0, allows everyone, keeps selectors |
//! | `v2`             | none: picks the last proposal, version 2.0.0            |
//! | `trap`           | `select-proposal` executes `unreachable`                |
//! | `spin`           | `select-proposal` never returns                         |
//! | `sleep`          | `select-proposal` sleeps for an hour (WASI poll)        |
//! | `bomb`           | `select-proposal` allocates memory without end          |
//! | `bad-index`      | `select-proposal` answers an index past the end,        |
//! |                  | `order-proposals` lists an index twice                  |
//! | `wide-selector`  | `narrow-selectors` widens the remote selector           |
//! | `recursion`      | `select-proposal` recurses without end (stack overflow) |
//! | `log-flood`      | `authorize` logs 20,000 lines of 1 KiB, then allows     |
//! | `huge-answer`    | `order-proposals` answers 1,000,000 indices,            |
//! |                  | `narrow-selectors` 100,000 selectors, `select-proposal` |
//! |                  | refuses with a 4 MiB reason                              |
//! | `bad-address`    | `assign-address` answers outside the pools, by the      |
//! |                  | peer's identity: `outside` 10.9.9.9, `unknown-pool` a   |
//! |                  | pool `nope`, `wrong-family` the first pool of a family  |
//! |                  | not asked for, `twice` two picks for the first family,  |
//! |                  | `many` 100,000 picks; others: no opinion                 |
//!
//! Only the decision named misbehaves; the others answer normally, so a test can
//! check that the host still works after the misbehaviour.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "policy-plugin",
});

use exports::wisp::policy::decisions::Guest;
use wisp::policy::types::{
    AddressChoice, AddressPick, AddressRequest, AuthInfo, IpAddress, PeerContext, PluginInfo, Proposal,
    ProposalChoice, Refusal, SaKind, SelectorPair, SelectorRequest, Setting,
};

struct Hostile;

/// Recursion the optimizer cannot turn into a loop (the result is mixed
/// with two different operations after the call), kept in wasm locals only:
/// no frame goes to the shadow stack in linear memory, so what runs out is
/// the engine's native call stack (wasmtime's `max_wasm_stack`), which is
/// what this plugin tests.
#[inline(never)]
#[allow(unconditional_recursion)]
fn deeper(n: u64) -> u64 {
    let below = deeper(n.wrapping_add(1));
    (below.wrapping_add(n.rotate_left(7))) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

const NAME: &str = if cfg!(feature = "trap") {
    "hostile-trap"
} else if cfg!(feature = "spin") {
    "hostile-spin"
} else if cfg!(feature = "sleep") {
    "hostile-sleep"
} else if cfg!(feature = "bomb") {
    "hostile-bomb"
} else if cfg!(feature = "bad-index") {
    "hostile-bad-index"
} else if cfg!(feature = "wide-selector") {
    "hostile-wide-selector"
} else if cfg!(feature = "recursion") {
    "hostile-recursion"
} else if cfg!(feature = "log-flood") {
    "hostile-log-flood"
} else if cfg!(feature = "huge-answer") {
    "hostile-huge-answer"
} else if cfg!(feature = "bad-address") {
    "hostile-bad-address"
} else {
    "hostile-reload"
};

const VERSION: &str = if cfg!(feature = "v2") { "2.0.0" } else { "1.0.0" };

impl Guest for Hostile {
    fn info() -> PluginInfo {
        PluginInfo { name: NAME.to_string(), version: VERSION.to_string() }
    }

    fn configure(settings: Vec<Setting>) -> Result<(), String> {
        if settings.iter().any(|s| s.key == "refuse-settings") {
            return Err("told to refuse my settings".to_string());
        }
        Ok(())
    }

    fn select_proposal(
        _ctx: PeerContext,
        _kind: SaKind,
        offered: Vec<Proposal>,
        _configured: Vec<Proposal>,
    ) -> Result<ProposalChoice, Refusal> {
        if cfg!(feature = "trap") {
            core::arch::wasm32::unreachable();
        }
        if cfg!(feature = "spin") {
            let mut n: u64 = 0;
            loop {
                n = core::hint::black_box(n.wrapping_add(1));
            }
        }
        if cfg!(feature = "sleep") {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        if cfg!(feature = "recursion") {
            return Ok(ProposalChoice { proposal: deeper(0) as u32, transforms: Vec::new() });
        }
        if cfg!(feature = "huge-answer") {
            return Err(Refusal { reason: "no ".repeat((4 << 20) / 3) });
        }
        if cfg!(feature = "bomb") {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page so the memory is really used.
                hoard.push(vec![0xA5; 1 << 20]);
                core::hint::black_box(&hoard);
            }
        }
        if offered.is_empty() {
            return Err(Refusal { reason: "nothing offered".to_string() });
        }
        let choice = |proposal: u32| Ok(ProposalChoice { proposal, transforms: Vec::new() });
        if cfg!(feature = "bad-index") {
            return choice(offered.len() as u32 + 5);
        }
        if cfg!(feature = "v2") {
            return choice(offered.len() as u32 - 1);
        }
        choice(0)
    }

    fn order_proposals(_ctx: PeerContext, _kind: SaKind, configured: Vec<Proposal>) -> Vec<u32> {
        if cfg!(feature = "bad-index") {
            return vec![0, 0];
        }
        if cfg!(feature = "huge-answer") {
            return (0..1_000_000u32).collect();
        }
        let mut order: Vec<u32> = (0..configured.len() as u32).collect();
        if cfg!(feature = "v2") {
            order.reverse();
        }
        order
    }

    fn authorize(_ctx: PeerContext, auth: AuthInfo) -> Result<(), Refusal> {
        if cfg!(feature = "log-flood") {
            let line = "x".repeat(1024);
            for i in 0..20_000u32 {
                wisp::policy::host::log(wisp::policy::host::LogLevel::Info, &format!("{i} {line}"));
            }
        }
        if auth.peer_identity.value.starts_with("deny") {
            return Err(Refusal { reason: format!("{} is not welcome ({VERSION})", auth.peer_identity.value) });
        }
        Ok(())
    }

    fn narrow_selectors(_ctx: PeerContext, request: SelectorRequest) -> Result<SelectorPair, Refusal> {
        let mut remote = request.remote_proposed.clone();
        if cfg!(feature = "huge-answer") {
            if let Some(first) = remote.first().cloned() {
                remote = vec![first; 100_000];
            }
        }
        if cfg!(feature = "wide-selector") {
            for ts in &mut remote {
                ts.start_address = match ts.start_address {
                    IpAddress::Ipv4(_) => IpAddress::Ipv4((0, 0, 0, 0)),
                    IpAddress::Ipv6(_) => IpAddress::Ipv6((0, 0, 0, 0, 0, 0, 0, 0)),
                };
                ts.end_address = match ts.end_address {
                    IpAddress::Ipv4(_) => IpAddress::Ipv4((255, 255, 255, 255)),
                    IpAddress::Ipv6(_) => IpAddress::Ipv6((0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff)),
                };
            }
        }
        Ok(SelectorPair { remote, local: request.local_proposed })
    }

    fn assign_address(_ctx: PeerContext, request: AddressRequest) -> Result<AddressChoice, Refusal> {
        let none = AddressChoice { picks: Vec::new() };
        if !cfg!(feature = "bad-address") {
            return Ok(none);
        }
        let Some(first) = request.requested.first() else { return Ok(none) };
        let picks = match request.auth.peer_identity.value.as_str() {
            "outside" => vec![AddressPick::Address(IpAddress::Ipv4((10, 9, 9, 9)))],
            "unknown-pool" => vec![AddressPick::Pool("nope".to_string())],
            "wrong-family" => {
                let other = request.pools.iter().find(|p| !request.requested.iter().any(|w| w.family == p.family));
                other.map(|p| AddressPick::Pool(p.name.clone())).into_iter().collect()
            }
            "twice" => {
                let same: Vec<AddressPick> = request
                    .pools
                    .iter()
                    .filter(|p| p.family == first.family)
                    .map(|p| AddressPick::Address(p.first))
                    .collect();
                let one = same.first().cloned().into_iter();
                one.clone().chain(one).collect()
            }
            "many" => request.pools.iter().take(1).map(|p| AddressPick::Pool(p.name.clone())).cycle().take(100_000).collect(),
            _ => Vec::new(),
        };
        Ok(AddressChoice { picks })
    }
}

export!(Hostile);
