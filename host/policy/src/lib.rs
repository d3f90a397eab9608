//! wisp-policy: the host side of wisp's policy plugins.
//!
//! A plugin is a WebAssembly component of the world `wisp:policy/policy-plugin`
//! (`wit/policy.wit`). This crate compiles and validates it with wasmtime, runs
//! every decision in a sandbox, checks the answers, and implements
//! [`wisp_policy_api::Policy`] so the IKE engine can call it.
//!
//! * Load once: [`load`] → [`LoadedPlugin`] (implements `Policy`).
//! * Hot reload: [`PolicySlot`] (implements `Policy`, watches the file,
//!   [`PolicySlot::status`] for `wisp status`).
//! * Offline: [`check`] for `wisp plugin check`.
//!
//! Sandbox: WASI with nothing granted (no preopened directories, environment,
//! arguments, sockets or stdio), a per-call CPU deadline by epoch interruption
//! ([`Limits::deadline`], default 20 ms; a ticker thread advances the epoch
//! every millisecond), a cap on the instance's linear memory
//! ([`Limits::memory`], default 16 MiB). A trap, timeout, memory-cap hit or an
//! answer outside the contract fails that one decision closed with a
//! [`DecisionError`] naming the plugin and version; the host goes on.
//!
//! Instances: by default ([`InstanceMode::Reuse`]) instances are pooled and
//! reused one decision at a time, and discarded after any failure; see
//! `BENCH.md` for the measurements behind that choice. [`InstanceMode::Fresh`]
//! instantiates (and configures) a new instance per decision.

pub mod bindings;
mod check;
pub mod convert;
mod deferring;
mod error;
pub mod fixture;
mod plugin;
mod runtime;
mod slot;
pub mod validate;

pub use check::{check, check_with, CheckReport};
pub use convert::{transform_name, Setting, SettingValue};
pub use deferring::{AsyncPolicy, DecisionPool, PoolStats, Waker, ANSWER_TTL, MAX_ANSWERS, MAX_QUEUED, MAX_QUEUED_PER_CONNECTION};
pub use error::{DecisionError, DecisionKind, LoadError, PluginLabel};
pub use plugin::{
    load, read_plugin_file, DecisionAnswer, DecisionRequest, InstanceMode, Limits, LoadedPlugin, PluginConfig, PluginMeta,
    DECISIONS_EXPORT, DECISION_FUNCTIONS, DEFAULT_MAX_SIZE, WORLD,
};
pub use runtime::{sha256_hex, EPOCH_TICK, MAX_LOG_BYTES_PER_CALL, MAX_LOG_LINES_PER_CALL};
pub use slot::{LoadFailure, PolicySlot, ReloadOutcome, SlotStatus, SwapListener, DEBOUNCE};
pub use wisp_policy_api as api;
