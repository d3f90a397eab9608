//! Public-key infrastructure for certificate authentication (RFC 7296 3.5,
//! 3.6, 3.7; RFC 5280): Distinguished Names ([`dn`]) and X.509 certificate
//! parsing, identity binding and chain validation ([`cert`]).
//!
//! Sans-IO like the rest of the crate: DER in, results out; the time of
//! validation is a parameter.
pub mod cert;
pub mod dn;
