//! wisp-plugin-sdk: write a wisp policy plugin as a plain Rust trait.
//!
//! A wisp policy plugin is a WebAssembly component targeting the
//! `wisp:policy/policy-plugin` world (`wit/policy.wit`). This crate generates the
//! bindings, re-exports the WIT types, and gives you:
//!
//! - the [`Policy`] trait (one method per decision, sane defaults) and the
//!   [`export_policy!`] macro that turns an implementation into the component's
//!   exports;
//! - [`Settings`]: typed lookup of the plugin's `[plugin.settings]`;
//! - [`ts`]: traffic-selector intersection and narrowing;
//! - [`Cidr`]: CIDR parsing and address matching;
//! - [`ProposalExt`] and [`ids`]: proposal inspection (AEAD?, key length, DH
//!   group, a printable summary for refusal reasons);
//! - [`address`]: building `assign-address` answers (a pool, an address, or
//!   no opinion) and looking at the pools;
//! - [`host`]: logging, the clock, and the live-SA view.
//!
//! ```ignore
//! use wisp_plugin_sdk::*;
//!
//! struct OnlyAlice;
//! impl Policy for OnlyAlice {
//!     const NAME: &'static str = "only-alice";
//!     const VERSION: &'static str = "1.0.0";
//!     fn configure(_s: &Settings) -> Result<Self, String> { Ok(OnlyAlice) }
//!     fn authorize(&self, _ctx: &PeerContext, auth: &AuthInfo) -> Result<(), Refusal> {
//!         if auth.peer_identity.value == "alice@example.com" { Ok(()) }
//!         else { Err(refuse(format!("{} is not alice", auth.peer_identity.value))) }
//!     }
//! }
//! export_policy!(OnlyAlice);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release`; the `.wasm` is a
//! component ready for `wisp plugin check`.

#![forbid(unsafe_op_in_unsafe_fn)]

/// The generated bindings (`wit/` of the wisp repository).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "policy-plugin",
        pub_export_macro: true,
        export_macro_name: "__wisp_export_component",
        default_bindings_module: "wisp_plugin_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

pub mod address;
mod cidr;
mod proposal;
mod settings;
pub mod ts;

pub use bindings::wisp::policy::types::{
    AddressChoice, AddressFamily, AddressPick, AddressPool, AddressRequest, AddressWanted,
    AuthInfo, AuthMethod, Datetime, DecisionTrigger, IdType, Identity, IpAddress, LiveSas,
    LogLevel, PeerContext, PluginInfo, Proposal, ProposalChoice, Protocol, Refusal, SaKind,
    SelectorPair, SelectorRequest, Setting, SettingValue, TrafficSelector, Transform,
    TransformType,
};
pub use cidr::{ip_from_wit, ip_to_wit, Cidr};
pub use proposal::{choose_within, ids, ProposalExt};
pub use settings::Settings;

/// What the host offers a plugin: log, clock, live-SA counts.
pub mod host {
    use super::bindings::wisp::policy::host as raw;
    pub use super::{Datetime, Identity, LiveSas, LogLevel};

    /// Write a line into the gateway's log (tagged with the plugin's name).
    pub fn log(level: LogLevel, message: &str) {
        raw::log(level, message)
    }
    pub fn info(message: &str) {
        raw::log(LogLevel::Info, message)
    }
    pub fn warn(message: &str) {
        raw::log(LogLevel::Warn, message)
    }
    pub fn debug(message: &str) {
        raw::log(LogLevel::Debug, message)
    }
    /// The current wall-clock time (UTC).
    pub fn now() -> Datetime {
        raw::now()
    }
    /// How many IKE and Child SAs `peer` holds right now.
    pub fn sa_counts(peer: &Identity) -> LiveSas {
        raw::sa_counts(peer)
    }
}

/// Build a [`Refusal`] from a reason.
pub fn refuse(reason: impl Into<String>) -> Refusal {
    Refusal { reason: reason.into() }
}

/// A policy plugin. Implement `NAME`, `VERSION` and `configure`; every decision
/// has a default, so implement the ones your policy cares about and call
/// [`export_policy!`] once.
///
/// Defaults: `select_proposal` takes the peer's first proposal and leaves its
/// transforms to the host (the host only offers proposals it can implement
/// inside the configured ones, and enforces them), `order_proposals` offers the configured list
/// unchanged, `authorize` denies everyone (deny by default), `narrow_selectors`
/// narrows to the intersection of proposed and configured ranges
/// ([`ts::narrow_to_configured`]), `assign_address` has no opinion (the host
/// leases from the connection's pools as it would without a plugin).
pub trait Policy: Sized + 'static {
    /// Plugin name, shown in logs and `wisp status`.
    const NAME: &'static str;
    /// Plugin version, shown in logs and `wisp status`.
    const VERSION: &'static str;

    /// Build the policy from its settings. An error refuses the plugin (the
    /// previous version stays in charge on reload).
    fn configure(settings: &Settings) -> Result<Self, String>;

    /// As responder: which offered proposal to accept and, optionally, the
    /// transform taken for some of its types (indices into its `transforms`;
    /// [`choose_within`] computes them). `configured` is the ceiling the host
    /// enforces. `ctx.trigger` says whether this is a rekey.
    fn select_proposal(
        &self,
        _ctx: &PeerContext,
        _kind: SaKind,
        offered: &[Proposal],
        _configured: &[Proposal],
    ) -> Result<ProposalChoice, Refusal> {
        if offered.is_empty() {
            Err(refuse("no proposal offered"))
        } else {
            Ok(ProposalChoice { proposal: 0, transforms: Vec::new() })
        }
    }

    /// As initiator: indices into `configured`, in order of preference.
    fn order_proposals(&self, _ctx: &PeerContext, _kind: SaKind, configured: &[Proposal]) -> Vec<u32> {
        (0..configured.len() as u32).collect()
    }

    /// After the host verified the peer's AUTH payload: allow or deny.
    fn authorize(&self, _ctx: &PeerContext, auth: &AuthInfo) -> Result<(), Refusal> {
        Err(refuse(format!(
            "{} {} does not authorize peers (deny by default): {} refused",
            Self::NAME,
            Self::VERSION,
            auth.peer_identity.value
        )))
    }

    /// Narrow the proposed traffic selectors.
    fn narrow_selectors(&self, _ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, Refusal> {
        ts::narrow_to_configured(request)
    }

    /// As responder, a peer asking for virtual IPs: per family a pool
    /// ([`address::pool`]) or an address ([`address::exact`]) of the
    /// connection's, or nothing for the host's default. The host enforces
    /// the answer against the pools and their leases.
    fn assign_address(&self, _ctx: &PeerContext, _request: &AddressRequest) -> Result<AddressChoice, Refusal> {
        Ok(address::no_opinion())
    }
}

#[doc(hidden)]
pub mod __rt {
    use super::*;
    use std::cell::RefCell;
    use std::thread::LocalKey;

    pub fn info<P: Policy>() -> PluginInfo {
        PluginInfo { name: P::NAME.to_string(), version: P::VERSION.to_string() }
    }

    pub fn configure<P: Policy>(
        state: &'static LocalKey<RefCell<Option<P>>>,
        settings: Vec<Setting>,
    ) -> Result<(), String> {
        let p = P::configure(&Settings::new(settings))?;
        state.with(|s| *s.borrow_mut() = Some(p));
        Ok(())
    }

    /// Run `f` on the configured policy; a plugin the host never configured is
    /// configured with empty settings first (and refuses if that fails).
    pub fn with<P: Policy, R>(
        state: &'static LocalKey<RefCell<Option<P>>>,
        f: impl FnOnce(&P) -> R,
    ) -> Result<R, Refusal> {
        state.with(|s| {
            let mut s = s.borrow_mut();
            if s.is_none() {
                match P::configure(&Settings::new(Vec::new())) {
                    Ok(p) => *s = Some(p),
                    Err(e) => return Err(refuse(format!("{} is not configured: {e}", P::NAME))),
                }
            }
            match s.as_ref() {
                Some(p) => Ok(f(p)),
                None => Err(refuse(format!("{} is not configured", P::NAME))),
            }
        })
    }
}

/// Export a [`Policy`] implementation as the component's `decisions` interface.
/// Call it exactly once, at the crate root of a `cdylib` crate.
#[macro_export]
macro_rules! export_policy {
    ($ty:ty) => {
        ::std::thread_local! {
            static __WISP_POLICY_STATE: ::core::cell::RefCell<::core::option::Option<$ty>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }
        #[doc(hidden)]
        pub struct __WispPolicyExport;
        impl $crate::bindings::exports::wisp::policy::decisions::Guest for __WispPolicyExport {
            fn info() -> $crate::PluginInfo {
                $crate::__rt::info::<$ty>()
            }
            fn configure(settings: ::std::vec::Vec<$crate::Setting>) -> ::core::result::Result<(), ::std::string::String> {
                $crate::__rt::configure::<$ty>(&__WISP_POLICY_STATE, settings)
            }
            fn select_proposal(
                ctx: $crate::PeerContext,
                kind: $crate::SaKind,
                offered: ::std::vec::Vec<$crate::Proposal>,
                configured: ::std::vec::Vec<$crate::Proposal>,
            ) -> ::core::result::Result<$crate::ProposalChoice, $crate::Refusal> {
                $crate::__rt::with::<$ty, _>(&__WISP_POLICY_STATE, |p| {
                    <$ty as $crate::Policy>::select_proposal(p, &ctx, kind, &offered, &configured)
                })?
            }
            fn order_proposals(
                ctx: $crate::PeerContext,
                kind: $crate::SaKind,
                configured: ::std::vec::Vec<$crate::Proposal>,
            ) -> ::std::vec::Vec<u32> {
                match $crate::__rt::with::<$ty, _>(&__WISP_POLICY_STATE, |p| {
                    <$ty as $crate::Policy>::order_proposals(p, &ctx, kind, &configured)
                }) {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(r) => {
                        $crate::host::warn(&r.reason);
                        ::std::vec::Vec::new()
                    }
                }
            }
            fn authorize(ctx: $crate::PeerContext, auth: $crate::AuthInfo) -> ::core::result::Result<(), $crate::Refusal> {
                $crate::__rt::with::<$ty, _>(&__WISP_POLICY_STATE, |p| {
                    <$ty as $crate::Policy>::authorize(p, &ctx, &auth)
                })?
            }
            fn narrow_selectors(
                ctx: $crate::PeerContext,
                request: $crate::SelectorRequest,
            ) -> ::core::result::Result<$crate::SelectorPair, $crate::Refusal> {
                $crate::__rt::with::<$ty, _>(&__WISP_POLICY_STATE, |p| {
                    <$ty as $crate::Policy>::narrow_selectors(p, &ctx, &request)
                })?
            }
            fn assign_address(
                ctx: $crate::PeerContext,
                request: $crate::AddressRequest,
            ) -> ::core::result::Result<$crate::AddressChoice, $crate::Refusal> {
                $crate::__rt::with::<$ty, _>(&__WISP_POLICY_STATE, |p| {
                    <$ty as $crate::Policy>::assign_address(p, &ctx, &request)
                })?
            }
        }
        $crate::bindings::__wisp_export_component!(__WispPolicyExport with_types_in $crate::bindings);
    };
}
