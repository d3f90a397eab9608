//! Typed errors of the plugin host.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use wisp_policy_api::PolicyError;

/// Which plugin, which version, which load: carried by every decision error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLabel {
    /// Name the plugin reports through `info()`.
    pub name: String,
    /// Version the plugin reports through `info()`.
    pub version: String,
    /// The host's load counter for this slot (1 for the first load).
    pub number: u64,
}

impl fmt::Display for PluginLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (#{})", self.name, self.version, self.number)
    }
}

/// The decision a call was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionKind {
    SelectProposal,
    OrderProposals,
    Authorize,
    NarrowSelectors,
    AssignAddress,
}

impl DecisionKind {
    pub const ALL: [DecisionKind; 5] = [
        DecisionKind::SelectProposal,
        DecisionKind::OrderProposals,
        DecisionKind::Authorize,
        DecisionKind::NarrowSelectors,
        DecisionKind::AssignAddress,
    ];
    /// The WIT function name.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::SelectProposal => "select-proposal",
            DecisionKind::OrderProposals => "order-proposals",
            DecisionKind::Authorize => "authorize",
            DecisionKind::NarrowSelectors => "narrow-selectors",
            DecisionKind::AssignAddress => "assign-address",
        }
    }
}

impl fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one decision did not produce a usable "yes". Every variant fails closed
/// for that negotiation only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// The plugin answered "no" with a reason.
    #[error("{decision}: refused by {plugin}: {reason}")]
    Refused { plugin: PluginLabel, decision: DecisionKind, reason: String },
    /// The plugin answered something the contract does not allow (index out of
    /// range, duplicate, selector wider than proposed, empty result, address
    /// outside the pools). Treated as a refusal.
    #[error("{decision}: invalid answer from {plugin}: {detail}")]
    InvalidAnswer { plugin: PluginLabel, decision: DecisionKind, detail: String },
    /// The plugin trapped (e.g. `unreachable`, out-of-bounds access, panic).
    #[error("{decision}: {plugin} trapped: {detail}")]
    Trap { plugin: PluginLabel, decision: DecisionKind, detail: String },
    /// The per-call CPU deadline passed (epoch interruption).
    #[error("{decision}: {plugin} exceeded its deadline of {deadline:?}")]
    Timeout { plugin: PluginLabel, decision: DecisionKind, deadline: Duration },
    /// The plugin tried to grow its memory past the cap.
    #[error("{decision}: {plugin} exceeded its memory cap of {limit} bytes")]
    MemoryLimit { plugin: PluginLabel, decision: DecisionKind, limit: usize },
    /// A fresh instance could not be created or configured.
    #[error("{decision}: {plugin} could not be instantiated: {detail}")]
    Instantiate { plugin: PluginLabel, decision: DecisionKind, detail: String },
}

impl DecisionError {
    pub fn plugin(&self) -> &PluginLabel {
        match self {
            DecisionError::Refused { plugin, .. }
            | DecisionError::InvalidAnswer { plugin, .. }
            | DecisionError::Trap { plugin, .. }
            | DecisionError::Timeout { plugin, .. }
            | DecisionError::MemoryLimit { plugin, .. }
            | DecisionError::Instantiate { plugin, .. } => plugin,
        }
    }

    /// True for a plain "no" and for an invalid answer (which counts as "no").
    pub fn is_refusal(&self) -> bool {
        matches!(self, DecisionError::Refused { .. } | DecisionError::InvalidAnswer { .. })
    }
}

impl From<DecisionError> for PolicyError {
    fn from(e: DecisionError) -> Self {
        let decider = e.plugin().to_string();
        match &e {
            DecisionError::Refused { reason, .. } => PolicyError::Refused { decider, reason: reason.clone() },
            DecisionError::InvalidAnswer { detail, .. } => {
                PolicyError::Refused { decider, reason: format!("invalid plugin answer: {detail}") }
            }
            DecisionError::Trap { decision, detail, .. } => PolicyError::Failed { decider, detail: format!("{decision}: trap: {detail}") },
            DecisionError::Timeout { decision, deadline, .. } => {
                PolicyError::Failed { decider, detail: format!("{decision}: deadline of {deadline:?} exceeded") }
            }
            DecisionError::MemoryLimit { decision, limit, .. } => {
                PolicyError::Failed { decider, detail: format!("{decision}: memory cap of {limit} bytes exceeded") }
            }
            DecisionError::Instantiate { decision, detail, .. } => {
                PolicyError::Failed { decider, detail: format!("{decision}: instantiation failed: {detail}") }
            }
        }
    }
}

/// Why a component could not be loaded (the previous version, if any, stays in
/// charge).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    /// Not a WebAssembly component (random bytes, a core module, a truncated file).
    #[error("not a valid WebAssembly component: {detail}")]
    NotAComponent { detail: String },
    /// The component does not export what the `policy-plugin` world requires.
    #[error("component does not match world wisp:policy/policy-plugin@0.4.0: {detail}")]
    MissingExport { detail: String },
    /// The component imports something the host does not provide.
    #[error("component imports something wisp does not provide: {detail}")]
    UnsupportedImport { detail: String },
    /// Exports exist but with the wrong types.
    #[error("component's exports do not match world wisp:policy/policy-plugin@0.4.0: {detail}")]
    TypeMismatch { detail: String },
    /// Instantiation or `info()` failed (trap, deadline, memory cap).
    #[error("instantiating the component failed: {detail}")]
    Instantiate { detail: String },
    /// `configure(settings)` returned an error or trapped.
    #[error("plugin {plugin} refused its settings: {detail}")]
    Configure { plugin: String, detail: String },
    /// `info()` returned an unusable name/version.
    #[error("plugin info invalid: {detail}")]
    BadInfo { detail: String },
    /// The file is larger than the configured cap (refused before compiling).
    #[error("plugin file {path} is {size} bytes, more than the cap of {limit} bytes ([plugin] max_size)")]
    TooLarge { path: PathBuf, size: u64, limit: u64 },
    /// The file may be modified by someone other than its owner.
    #[error("plugin file {path} has mode {mode:04o}: writable by group or others, refusing to load it (chmod go-w)")]
    UnsafeMode { path: PathBuf, mode: u32 },
    /// The host itself could not set up (engine, watcher).
    #[error("plugin host error: {detail}")]
    Host { detail: String },
}

/// Formats a wasmtime error with its whole chain of causes.
pub(crate) fn chain(e: &wasmtime::Error) -> String {
    let mut out = String::new();
    for (i, c) in e.chain().enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&c.to_string());
    }
    out
}
