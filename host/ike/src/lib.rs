//! wisp-ike: IKEv2 (RFC 7296), sans-IO.
pub mod admission;
pub mod codec;
pub mod crypto;
pub mod config;
pub mod engine;
pub mod event;
pub mod native_policy;
#[doc(hidden)]
pub mod engine_fuzz;
pub mod spi_pool;
