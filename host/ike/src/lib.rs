//! wisp-ike: IKEv2 (RFC 7296), sans-IO.
#![forbid(unsafe_code)]
pub mod admission;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod eap;
pub mod engine;
#[doc(hidden)]
pub mod engine_fuzz;
pub mod event;
pub mod native_policy;
pub mod pki;
pub mod pool;
pub mod spi_pool;
