//! wisp-ike (work in progress)
pub mod codec;
pub mod crypto;
