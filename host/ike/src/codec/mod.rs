//! IKEv2 message codec (RFC 7296 section 3, RFC 7383 fragments).
//!
//! Sans-IO: turns bytes into [`Message`]s and back. Nothing here panics on
//! input; every malformed datagram yields a [`DecodeError`].
//!
//! * Registry values (exchange types, notify types, transform IDs, ...) are
//!   open newtypes in [`registry`]: unknown values are preserved.
//! * Payloads wisp does not know are kept as [`Payload::Unknown`] when their
//!   critical bit is clear, and rejected with
//!   [`DecodeError::UnsupportedCriticalPayload`] (carrying the type, so the
//!   engine can answer UNSUPPORTED_CRITICAL_PAYLOAD with it) when it is set
//!   (RFC 7296 2.5, 3.2).
//! * Decoding is bounded: every decoder charges what it allocates to one
//!   per-datagram [`Budget`] (see [`DecodeLimits`]: at most 128 payloads and
//!   8 bytes of decoded memory per input byte plus 4 KiB), and counts that the
//!   bytes present cannot hold are rejected before anything is allocated.
//! * The SK / SKF payloads are kept as ciphertext by [`Message::decode`]; the
//!   [`sk`] module builds and opens encrypted messages and fragments.
//!
//! ```
//! use wisp_ike::codec::*;
//! let msg = Message {
//!     header: Header::new(1, 0, ExchangeType::IKE_SA_INIT, Flags::new(true, false), 0),
//!     payloads: vec![Payload::Nonce(vec![7; 32])],
//! };
//! let bytes = msg.encode().unwrap();
//! assert_eq!(Message::decode(&bytes).unwrap(), msg);
//! ```

pub mod fuzz;
pub mod registry;
pub mod sk;
mod types;
mod wire;

pub use registry::{
    AuthMethod, CertEncoding, CfgType, ConfigAttrType, ExchangeType, IdType, NotifyType, PayloadType, ProtocolId, TransformType, TsType,
};
pub use types::*;
pub use wire::{
    decode_chain, decode_chain_with, decode_payload, encode_chain, encode_payload, Budget, DecodeLimits, HeaderInfo, MAX_ATTRIBUTES,
    MAX_PAYLOADS, MAX_PROPOSALS,
};

/// Why a datagram could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended inside the named structure.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A length field is inconsistent with the data.
    #[error("bad length: {0}")]
    BadLength(&'static str),
    /// Structurally invalid (flags, numbering, trailing data, ...).
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// More items than the codec accepts.
    #[error("too many {0}")]
    TooMany(&'static str),
    /// The input is longer, or decodes into more memory, than the
    /// per-datagram [`DecodeLimits`] allow.
    #[error("over decode budget: {0}")]
    OverBudget(&'static str),
    /// The IKE header's major version is not 2 (answer INVALID_MAJOR_VERSION).
    #[error("unsupported major version {0}")]
    InvalidMajorVersion(u8),
    /// An unknown payload type with the critical bit set (answer
    /// UNSUPPORTED_CRITICAL_PAYLOAD with this type as notification data).
    #[error("unsupported critical payload {0}")]
    UnsupportedCriticalPayload(PayloadType),
}

impl DecodeError {
    /// The notify type to answer with (RFC 7296 2.21): INVALID_SYNTAX,
    /// INVALID_MAJOR_VERSION or UNSUPPORTED_CRITICAL_PAYLOAD.
    pub fn notify_type(&self) -> NotifyType {
        match self {
            DecodeError::InvalidMajorVersion(_) => NotifyType::INVALID_MAJOR_VERSION,
            DecodeError::UnsupportedCriticalPayload(_) => NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD,
            _ => NotifyType::INVALID_SYNTAX,
        }
    }
    /// Notification data to send with [`Self::notify_type`] (the one-byte
    /// payload type for UNSUPPORTED_CRITICAL_PAYLOAD, else empty).
    pub fn notify_data(&self) -> Vec<u8> {
        match self {
            DecodeError::UnsupportedCriticalPayload(t) => vec![t.0],
            _ => Vec::new(),
        }
    }
}

/// Why a message could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field does not fit its wire length.
    #[error("{0} too long")]
    TooLong(&'static str),
    /// The structure cannot be encoded as given.
    #[error("invalid: {0}")]
    Invalid(&'static str),
}
