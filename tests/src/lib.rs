//! Test bed for wisp: network namespaces, strongSwan charon, end-to-end and interop suites.
//!
//! Everything here needs root (network namespaces, veth pairs, TUN devices). Tests
//! call [`require_root`] first and return early (pass, with a message) otherwise.
//!
//! - [`netns`]: namespaces, veth pairs, commands and threads inside a namespace,
//!   all removed on drop; [`netns::Pair`] is the usual two-gateway topology.
//! - [`charon`]: a strongSwan charon in its own namespace with a private `/run`,
//!   a generated `strongswan.conf`, a private vici socket and a file log.
//! - [`swanctl`]: `swanctl.conf` generation (connections, children, PSK secrets).
//! - [`sas`]: `swanctl --list-sas --raw` parsing into typed IKE/Child SA views.
//! - [`charon_log`]: charon log parsing (key dumps at level 4, SPIs, notifies).
//! - [`traffic`]: ping and a checksummed TCP transfer between namespaces.
//! - [`wisp`]: the `wisp` daemon in a namespace and its CLI (`status --json`).
//! - [`proc`]: child-process guard (SIGTERM, then SIGKILL, on drop).
//! - [`pki`]: test CAs, certificates and CRLs made with strongSwan's `pki`.

pub mod charon;
pub mod charon_log;
pub mod harness;
pub mod ike_driver;
pub mod netns;
pub mod pki;
pub mod proc;
pub mod sas;
pub mod swanctl;
pub mod traffic;
pub mod util;
pub mod wisp;

pub use util::{require_root, unique_name, Error, Result, TestDir};
