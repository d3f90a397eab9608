//! IKEv2 message and payload data types (RFC 7296 section 3, RFC 7383).
//!
//! Reserved fields are not represented: they are sent as zero and ignored on
//! receipt. Length fields are not represented either: they are computed on
//! encode and checked on decode.

use super::registry::*;
use std::net::IpAddr;

/// IKE header flags (RFC 7296 3.1): only the three defined bits are named;
/// other bits are preserved as received.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// Set in messages sent by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// "Can speak a higher major version" (never set by wisp).
    pub const VERSION: u8 = 0x10;
    /// Set in responses.
    pub const RESPONSE: u8 = 0x20;

    /// Flags for a message with the given role bits.
    pub fn new(initiator: bool, response: bool) -> Self {
        let mut f = 0;
        if initiator {
            f |= Self::INITIATOR;
        }
        if response {
            f |= Self::RESPONSE;
        }
        Flags(f)
    }
    /// The I (original initiator) bit.
    pub fn initiator(self) -> bool {
        self.0 & Self::INITIATOR != 0
    }
    /// The R (response) bit.
    pub fn response(self) -> bool {
        self.0 & Self::RESPONSE != 0
    }
    /// The V (version) bit.
    pub fn version(self) -> bool {
        self.0 & Self::VERSION != 0
    }
}

impl core::fmt::Debug for Flags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Flags(")?;
        if self.initiator() {
            write!(f, "I")?;
        }
        if self.response() {
            write!(f, "R")?;
        }
        if self.version() {
            write!(f, "V")?;
        }
        write!(f, " {:#04x})", self.0)
    }
}

/// The fixed 28-byte IKE header (RFC 7296 3.1), without the next-payload and
/// length fields (derived from the payload chain on encode).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct Header {
    /// IKE SA initiator's SPI.
    pub spi_i: u64,
    /// IKE SA responder's SPI (0 in the first IKE_SA_INIT request).
    pub spi_r: u64,
    /// Major version (2 for IKEv2).
    pub major_version: u8,
    /// Minor version (0 for RFC 7296).
    pub minor_version: u8,
    /// Exchange type.
    pub exchange: ExchangeType,
    /// Flags (I, V, R).
    pub flags: Flags,
    /// Message ID.
    pub message_id: u32,
}

impl Header {
    /// Length of the encoded IKE header.
    pub const LEN: usize = 28;

    /// A version 2.0 header.
    pub fn new(spi_i: u64, spi_r: u64, exchange: ExchangeType, flags: Flags, message_id: u32) -> Self {
        Header { spi_i, spi_r, major_version: 2, minor_version: 0, exchange, flags, message_id }
    }
}

/// A transform attribute (RFC 7296 3.3.5).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub enum Attribute {
    /// Type/Value format (AF bit set): 15-bit type, 16-bit value.
    Tv {
        /// Attribute type (must be < 0x8000).
        attr_type: u16,
        /// Value.
        value: u16,
    },
    /// Type/Length/Value format (AF bit clear).
    Tlv {
        /// Attribute type (must be < 0x8000).
        attr_type: u16,
        /// Value (at most 65535 bytes).
        value: Vec<u8>,
    },
}

/// A transform substructure (RFC 7296 3.3.2).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct Transform {
    /// Transform type.
    pub transform_type: TransformType,
    /// Transform ID (see [`super::registry::encr`] etc.).
    pub id: u16,
    /// Attributes (normally at most one KEY_LENGTH).
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// A transform without attributes.
    pub fn new(transform_type: TransformType, id: u16) -> Self {
        Transform { transform_type, id, attributes: Vec::new() }
    }
    /// A transform with a KEY_LENGTH attribute (bits).
    pub fn with_key_length(transform_type: TransformType, id: u16, bits: u16) -> Self {
        Transform { transform_type, id, attributes: vec![Attribute::Tv { attr_type: super::registry::attr::KEY_LENGTH, value: bits }] }
    }
    /// The KEY_LENGTH attribute, if present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Tv { attr_type, value } if *attr_type == super::registry::attr::KEY_LENGTH => Some(*value),
            _ => None,
        })
    }
}

/// A proposal substructure (RFC 7296 3.3.1).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct Proposal {
    /// Proposal number (1-based, as sent).
    pub number: u8,
    /// Protocol (IKE, AH, ESP).
    pub protocol: ProtocolId,
    /// SPI (empty for the initial IKE SA, 8 bytes for IKE rekey, 4 for ESP/AH).
    pub spi: Vec<u8>,
    /// Transforms.
    pub transforms: Vec<Transform>,
}

impl Proposal {
    /// Transforms of one type, in order.
    pub fn transforms_of(&self, t: TransformType) -> impl Iterator<Item = &Transform> {
        self.transforms.iter().filter(move |x| x.transform_type == t)
    }
}

/// Security Association payload (RFC 7296 3.3).
#[derive(Clone, PartialEq, Eq, Debug, Hash, Default)]
pub struct SaPayload {
    /// Proposals in order of preference.
    pub proposals: Vec<Proposal>,
}

/// Key Exchange payload (RFC 7296 3.4).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct KePayload {
    /// DH group / key exchange method number (see [`super::registry::dh`]).
    pub group: u16,
    /// Public value.
    pub data: Vec<u8>,
}

/// Identification payload (IDi/IDr, RFC 7296 3.5).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct IdPayload {
    /// ID type.
    pub id_type: IdType,
    /// Identification data.
    pub data: Vec<u8>,
}

impl IdPayload {
    /// The payload body as it appears on the wire ("RestOfInitIDPayload" /
    /// "RestOfRespIDPayload" in RFC 7296 2.15): ID type, 3 reserved bytes, data.
    pub fn body_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.data.len());
        v.push(self.id_type.0);
        v.extend_from_slice(&[0, 0, 0]);
        v.extend_from_slice(&self.data);
        v
    }
}

/// Certificate (CERT) or Certificate Request (CERTREQ) payload (RFC 7296 3.6, 3.7).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct CertPayload {
    /// Certificate encoding.
    pub encoding: CertEncoding,
    /// Certificate data (CERT) or certification authority data (CERTREQ).
    pub data: Vec<u8>,
}

/// Authentication payload (RFC 7296 3.8).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct AuthPayload {
    /// Authentication method.
    pub method: AuthMethod,
    /// Authentication data.
    pub data: Vec<u8>,
}

/// Notify payload (RFC 7296 3.10).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct NotifyPayload {
    /// Protocol the SPI refers to (0 / NONE when no SPI).
    pub protocol: ProtocolId,
    /// SPI (usually empty; 4 bytes for Child SA notifies like REKEY_SA).
    pub spi: Vec<u8>,
    /// Notify message type.
    pub notify_type: NotifyType,
    /// Notification data.
    pub data: Vec<u8>,
}

impl NotifyPayload {
    /// A notify without SPI.
    pub fn new(notify_type: NotifyType, data: Vec<u8>) -> Self {
        NotifyPayload { protocol: ProtocolId::NONE, spi: Vec::new(), notify_type, data }
    }
}

/// Delete payload (RFC 7296 3.11).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct DeletePayload {
    /// Protocol (IKE, AH, ESP).
    pub protocol: ProtocolId,
    /// SPI size in bytes (0 for IKE, 4 for ESP/AH). Every SPI has this length.
    pub spi_size: u8,
    /// SPIs to delete (empty for IKE).
    pub spis: Vec<Vec<u8>>,
}

/// An address-range traffic selector (TS_IPV4_ADDR_RANGE / TS_IPV6_ADDR_RANGE).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct TsRange {
    /// IP protocol (0 = any).
    pub ip_protocol: u8,
    /// First port (or ICMP type/code packed, RFC 7296 3.13.1).
    pub start_port: u16,
    /// Last port.
    pub end_port: u16,
    /// First address; same family as `end_addr`.
    pub start_addr: IpAddr,
    /// Last address.
    pub end_addr: IpAddr,
}

/// One traffic selector (RFC 7296 3.13.1).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub enum TrafficSelector {
    /// An IPv4 or IPv6 address range.
    Range(TsRange),
    /// An unknown TS type, preserved as its raw body (after the 4-byte
    /// type/protocol/length prefix).
    Other {
        /// TS type.
        ts_type: TsType,
        /// IP protocol ID byte.
        ip_protocol: u8,
        /// Rest of the selector.
        body: Vec<u8>,
    },
}

/// Traffic Selector payload (TSi/TSr, RFC 7296 3.13).
#[derive(Clone, PartialEq, Eq, Debug, Hash, Default)]
pub struct TsPayload {
    /// Selectors.
    pub selectors: Vec<TrafficSelector>,
}

/// Encrypted and Authenticated payload (SK, RFC 7296 3.14).
///
/// Must be the last payload of a message. Its generic header's next-payload
/// field names the first *inner* payload.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct SkPayload {
    /// Type of the first payload inside the encrypted data.
    pub next_payload: PayloadType,
    /// IV | ciphertext (payloads, padding, pad length) | ICV.
    pub data: Vec<u8>,
}

/// Encrypted and Authenticated Fragment payload (SKF, RFC 7383 2.5).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct SkfPayload {
    /// First inner payload type in fragment 1, 0 in the others.
    pub next_payload: PayloadType,
    /// Fragment number, 1-based.
    pub fragment_number: u16,
    /// Total number of fragments.
    pub total_fragments: u16,
    /// IV | ciphertext | ICV.
    pub data: Vec<u8>,
}

/// A configuration attribute (RFC 7296 3.15.1).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct ConfigAttribute {
    /// Attribute type (15 bits).
    pub attr_type: ConfigAttrType,
    /// Value.
    pub value: Vec<u8>,
}

/// Configuration payload (CP, RFC 7296 3.15).
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct CpPayload {
    /// CFG type.
    pub cfg_type: CfgType,
    /// Attributes.
    pub attributes: Vec<ConfigAttribute>,
}

/// One IKEv2 payload.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub enum Payload {
    /// Security Association.
    Sa(SaPayload),
    /// Key Exchange.
    Ke(KePayload),
    /// Identification - Initiator.
    IdI(IdPayload),
    /// Identification - Responder.
    IdR(IdPayload),
    /// Certificate.
    Cert(CertPayload),
    /// Certificate Request.
    CertReq(CertPayload),
    /// Authentication.
    Auth(AuthPayload),
    /// Nonce (Ni/Nr): the nonce data.
    Nonce(Vec<u8>),
    /// Notify.
    Notify(NotifyPayload),
    /// Delete.
    Delete(DeletePayload),
    /// Vendor ID: the raw vendor ID bytes.
    VendorId(Vec<u8>),
    /// Traffic Selector - Initiator.
    TsI(TsPayload),
    /// Traffic Selector - Responder.
    TsR(TsPayload),
    /// Encrypted and Authenticated (ciphertext, not decrypted by the codec).
    Sk(SkPayload),
    /// Encrypted and Authenticated Fragment.
    Skf(SkfPayload),
    /// Configuration.
    Cp(CpPayload),
    /// EAP: the raw EAP message.
    Eap(Vec<u8>),
    /// A payload type wisp does not implement, preserved raw. Only non-critical
    /// unknown payloads can be decoded; a critical one is a
    /// [`super::DecodeError::UnsupportedCriticalPayload`].
    Unknown {
        /// The payload type.
        payload_type: PayloadType,
        /// The critical bit as received.
        critical: bool,
        /// The payload body (after the 4-byte generic header).
        body: Vec<u8>,
    },
}

impl Payload {
    /// The payload's type code.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::SA,
            Payload::Ke(_) => PayloadType::KE,
            Payload::IdI(_) => PayloadType::IDI,
            Payload::IdR(_) => PayloadType::IDR,
            Payload::Cert(_) => PayloadType::CERT,
            Payload::CertReq(_) => PayloadType::CERTREQ,
            Payload::Auth(_) => PayloadType::AUTH,
            Payload::Nonce(_) => PayloadType::NONCE,
            Payload::Notify(_) => PayloadType::NOTIFY,
            Payload::Delete(_) => PayloadType::DELETE,
            Payload::VendorId(_) => PayloadType::VENDOR_ID,
            Payload::TsI(_) => PayloadType::TSI,
            Payload::TsR(_) => PayloadType::TSR,
            Payload::Sk(_) => PayloadType::SK,
            Payload::Skf(_) => PayloadType::SKF,
            Payload::Cp(_) => PayloadType::CP,
            Payload::Eap(_) => PayloadType::EAP,
            Payload::Unknown { payload_type, .. } => *payload_type,
        }
    }
}

/// True if wisp's codec parses this payload type (others are [`Payload::Unknown`]).
pub fn is_known_payload_type(t: PayloadType) -> bool {
    matches!(t.0, 33..=48 | 53)
}

/// A whole IKE message: header plus payload chain.
///
/// For an encrypted message as received, `payloads` ends with a
/// [`Payload::Sk`] (or [`Payload::Skf`]); after [`crate::codec::sk::decrypt_message`]
/// the inner payloads are returned in a new `Message`.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct Message {
    /// Header.
    pub header: Header,
    /// Payloads in wire order.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// First notify of the given type.
    pub fn notify(&self, t: NotifyType) -> Option<&NotifyPayload> {
        self.payloads.iter().find_map(|p| match p {
            Payload::Notify(n) if n.notify_type == t => Some(n),
            _ => None,
        })
    }
    /// All notifies, in order.
    pub fn notifies(&self) -> impl Iterator<Item = &NotifyPayload> {
        self.payloads.iter().filter_map(|p| match p {
            Payload::Notify(n) => Some(n),
            _ => None,
        })
    }
    /// First payload of the given type.
    pub fn find(&self, t: PayloadType) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.payload_type() == t)
    }
}
