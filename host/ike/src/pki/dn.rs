//! Distinguished Names: the `ID_DER_ASN1_DN` identity of RFC 7296 3.5, the
//! subject and issuer of X.509 certificates (RFC 5280 4.1.2.4).
//!
//! On the wire a DN is the DER of an X.501 `Name` (an RDNSequence). Two text
//! forms are read and written here:
//!
//! * the **configuration** form of strongSwan's swanctl.conf,
//!   `"C=CH, O=strongSwan, CN=moon.strongswan.org"`: RDNs in DER order (the
//!   first written is the first in the sequence), separated by `,` (spaces
//!   after it are skipped), or by `/` when the string starts with `/`
//!   (`"/C=CH/O=strongSwan/CN=moon"`); `\` escapes the next character (or
//!   `\XX` a byte in hex), a value may be `"quoted"`; `+` is literal (no
//!   multi-valued RDNs in this form, as in strongSwan);
//! * **RFC 4514** strings, which list the RDNs in the reverse order
//!   (`CN=moon.strongswan.org,O=strongSwan,C=CH`), `+` joining the attributes
//!   of a multi-valued RDN, `#hex` values holding the BER of the value.
//!
//! Keywords ([`KEYWORDS`]) are the same in both forms: `SN` is the surname
//! (RFC 4519, and strongSwan's `pki` agrees), `S` and `ST` the state.
//!
//! String values are encoded as strongSwan does (checked against its `pki`):
//! PrintableString when every character is in its set (RFC 5280 appendix
//! A), UTF8String otherwise; `C` must be two letters (PrintableString),
//! `E`/emailAddress is an IA5String. `DC` is PrintableString/UTF8String
//! like the other attributes (strongSwan does so; RFC 4519 says IA5String —
//! [`equal`] ignores the string type anyway). [`equal`] compares DNs as RFC 5280 7.1 describes in practice
//! (strongSwan's compare_dn): string types ignored, ASCII case ignored, runs
//! of white space collapsed.

use der::asn1::{Any, ObjectIdentifier, SetOfVec};
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

/// The longest DER Name built from text.
pub const MAX_DN_DER: usize = 1024;

/// Why a DN string or DER could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnError {
    #[error("empty DN")]
    Empty,
    #[error("missing '=' in \"{rdn}\" of DN \"{input}\"")]
    NoEquals { rdn: String, input: String },
    #[error("empty attribute type in DN \"{input}\"")]
    EmptyType { input: String },
    #[error("unknown attribute type \"{key}\" in DN \"{input}\"")]
    UnknownAttribute { key: String, input: String },
    #[error("empty value for {key}")]
    EmptyValue { key: String },
    #[error("bad escape in value of {key}: {detail}")]
    BadEscape { key: String, detail: String },
    #[error("unterminated quoted value for {key}")]
    UnterminatedQuote { key: String },
    #[error("unexpected text after the quoted value of {key}")]
    AfterQuote { key: String },
    #[error("bad #hex value for {key}: {detail}")]
    BadHex { key: String, detail: String },
    #[error("value of {key} is not UTF-8")]
    BadUtf8 { key: String },
    #[error("C must be two letters, got \"{0}\"")]
    BadCountry(String),
    #[error("value of {key} must be ASCII (IA5String)")]
    NotIa5 { key: String },
    #[error("DN longer than {MAX_DN_DER} bytes ({0} bytes)")]
    TooLong(usize),
    #[error("malformed DER Name: {0}")]
    Der(String),
}

/// How a value of a given attribute is encoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// PrintableString if possible, else UTF8String.
    Dir,
    /// Two letters, PrintableString.
    Country,
    /// IA5String.
    Ia5,
}

/// A known attribute type.
struct Attr {
    oid: &'static str,
    /// The name `to_rfc4514` prints.
    name: &'static str,
    kind: Kind,
}

const CN: &str = "2.5.4.3";
const SURNAME: &str = "2.5.4.4";
const SERIAL: &str = "2.5.4.5";
const EMAIL: &str = "1.2.840.113549.1.9.1";

/// Known attributes, in the order `to_rfc4514` looks them up.
const ATTRS: &[Attr] = &[
    Attr { oid: CN, name: "CN", kind: Kind::Dir },
    Attr { oid: SURNAME, name: "SN", kind: Kind::Dir },
    Attr { oid: SERIAL, name: "serialNumber", kind: Kind::Dir },
    Attr { oid: "2.5.4.6", name: "C", kind: Kind::Country },
    Attr { oid: "2.5.4.7", name: "L", kind: Kind::Dir },
    Attr { oid: "2.5.4.8", name: "ST", kind: Kind::Dir },
    Attr { oid: "2.5.4.9", name: "STREET", kind: Kind::Dir },
    Attr { oid: "2.5.4.10", name: "O", kind: Kind::Dir },
    Attr { oid: "2.5.4.11", name: "OU", kind: Kind::Dir },
    Attr { oid: "2.5.4.12", name: "title", kind: Kind::Dir },
    Attr { oid: "2.5.4.13", name: "description", kind: Kind::Dir },
    Attr { oid: "2.5.4.17", name: "postalCode", kind: Kind::Dir },
    Attr { oid: "2.5.4.41", name: "name", kind: Kind::Dir },
    Attr { oid: "2.5.4.42", name: "GN", kind: Kind::Dir },
    Attr { oid: "2.5.4.43", name: "initials", kind: Kind::Dir },
    Attr { oid: "2.5.4.44", name: "generationQualifier", kind: Kind::Dir },
    Attr { oid: "2.5.4.46", name: "dnQualifier", kind: Kind::Dir },
    Attr { oid: "2.5.4.65", name: "pseudonym", kind: Kind::Dir },
    Attr { oid: "0.9.2342.19200300.100.1.25", name: "DC", kind: Kind::Dir },
    Attr { oid: "0.9.2342.19200300.100.1.1", name: "UID", kind: Kind::Dir },
    Attr { oid: EMAIL, name: "emailAddress", kind: Kind::Ia5 },
];

/// Keywords accepted in both forms (case-insensitive) and their OIDs.
pub const KEYWORDS: &[(&str, &str)] = &[
    ("CN", CN),
    ("commonName", CN),
    ("SN", SURNAME),
    ("surname", SURNAME),
    ("serialNumber", SERIAL),
    ("C", "2.5.4.6"),
    ("countryName", "2.5.4.6"),
    ("L", "2.5.4.7"),
    ("localityName", "2.5.4.7"),
    ("ST", "2.5.4.8"),
    ("S", "2.5.4.8"),
    ("stateOrProvinceName", "2.5.4.8"),
    ("street", "2.5.4.9"),
    ("streetAddress", "2.5.4.9"),
    ("O", "2.5.4.10"),
    ("organizationName", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("organizationalUnitName", "2.5.4.11"),
    ("T", "2.5.4.12"),
    ("title", "2.5.4.12"),
    ("D", "2.5.4.13"),
    ("description", "2.5.4.13"),
    ("postalCode", "2.5.4.17"),
    ("N", "2.5.4.41"),
    ("name", "2.5.4.41"),
    ("G", "2.5.4.42"),
    ("GN", "2.5.4.42"),
    ("givenName", "2.5.4.42"),
    ("I", "2.5.4.43"),
    ("initials", "2.5.4.43"),
    ("generationQualifier", "2.5.4.44"),
    ("dnQualifier", "2.5.4.46"),
    ("pseudonym", "2.5.4.65"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("domainComponent", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
    ("userId", "0.9.2342.19200300.100.1.1"),
    ("E", EMAIL),
    ("Email", EMAIL),
    ("emailAddress", EMAIL),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Syntax {
    Config,
    Rfc4514,
}

/// The OID of a keyword (case-insensitive) or dotted OID (optionally
/// `OID.`-prefixed).
fn keyword_oid(key: &str) -> Option<ObjectIdentifier> {
    if let Some((_, oid)) = KEYWORDS.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
        return ObjectIdentifier::new(oid).ok();
    }
    let dotted = key.strip_prefix("OID.").or_else(|| key.strip_prefix("oid.")).unwrap_or(key);
    if dotted.starts_with(|c: char| c.is_ascii_digit()) {
        return ObjectIdentifier::new(dotted).ok();
    }
    None
}

fn attr_of(oid: &ObjectIdentifier) -> Option<&'static Attr> {
    ATTRS.iter().find(|a| ObjectIdentifier::new(a.oid).map(|o| &o == oid).unwrap_or(false))
}

/// A value as written: text, or the BER of the value (`#hex`).
enum RawValue {
    Text(String),
    Ber(Vec<u8>),
}

/// Splits a DN string into RDNs of (keyword, value).
fn split(input: &str, syntax: Syntax) -> Result<Vec<Vec<(String, RawValue)>>, DnError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(DnError::Empty);
    }
    let (s, sep) = match (syntax, trimmed.strip_prefix('/')) {
        (Syntax::Config, Some(rest)) => (rest.as_bytes(), b'/'),
        _ => (trimmed.as_bytes(), b','),
    };
    let plus = syntax == Syntax::Rfc4514;
    let mut rdns = Vec::new();
    let mut rdn = Vec::new();
    let mut i = 0;
    loop {
        // Attribute type.
        let start = i;
        while i < s.len() && s[i] != b'=' && s[i] != sep && !(plus && s[i] == b'+') {
            i += 1;
        }
        if i >= s.len() || s[i] != b'=' {
            return Err(DnError::NoEquals { rdn: String::from_utf8_lossy(&s[start..i]).trim().to_string(), input: input.to_string() });
        }
        let key = String::from_utf8_lossy(&s[start..i]).trim().to_string();
        if key.is_empty() {
            return Err(DnError::EmptyType { input: input.to_string() });
        }
        i += 1;
        while i < s.len() && s[i] == b' ' {
            i += 1;
        }
        let value = if i < s.len() && s[i] == b'#' {
            let hs = i + 1;
            while i < s.len() && s[i] != sep && !(plus && s[i] == b'+') {
                i += 1;
            }
            let hex = std::str::from_utf8(&s[hs..i]).unwrap_or("").trim();
            RawValue::Ber(decode_hex(hex).ok_or_else(|| DnError::BadHex { key: key.clone(), detail: format!("\"{hex}\"") })?)
        } else if i < s.len() && s[i] == b'"' {
            i += 1;
            let mut v = Vec::new();
            loop {
                match s.get(i) {
                    None => return Err(DnError::UnterminatedQuote { key }),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        i = unescape(s, i, &mut v, &key)?;
                    }
                    Some(&c) => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            while i < s.len() && s[i] == b' ' {
                i += 1;
            }
            if i < s.len() && s[i] != sep && !(plus && s[i] == b'+') {
                return Err(DnError::AfterQuote { key });
            }
            RawValue::Text(String::from_utf8(v).map_err(|_| DnError::BadUtf8 { key: key.clone() })?)
        } else {
            let mut v = Vec::new();
            // Length of `v` up to its last character that is not an unescaped space.
            let mut keep = 0;
            while i < s.len() && s[i] != sep && !(plus && s[i] == b'+') {
                if s[i] == b'\\' {
                    i = unescape(s, i, &mut v, &key)?;
                    keep = v.len();
                } else {
                    v.push(s[i]);
                    if s[i] != b' ' {
                        keep = v.len();
                    }
                    i += 1;
                }
            }
            v.truncate(keep);
            RawValue::Text(String::from_utf8(v).map_err(|_| DnError::BadUtf8 { key: key.clone() })?)
        };
        rdn.push((key, value));
        if i >= s.len() {
            rdns.push(std::mem::take(&mut rdn));
            break;
        }
        if s[i] == sep {
            rdns.push(std::mem::take(&mut rdn));
        }
        i += 1;
        // `, ` in the configuration form; spaces before a type in general.
        while i < s.len() && s[i] == b' ' {
            i += 1;
        }
    }
    Ok(rdns)
}

/// Reads the escape at `s[i] == '\\'` into `v`; returns the index after it.
fn unescape(s: &[u8], i: usize, v: &mut Vec<u8>, key: &str) -> Result<usize, DnError> {
    let hex = |c: u8| (c as char).to_digit(16);
    match (s.get(i + 1), s.get(i + 2)) {
        (Some(&a), Some(&b)) if hex(a).is_some() && hex(b).is_some() => {
            v.push((hex(a).unwrap_or(0) * 16 + hex(b).unwrap_or(0)) as u8);
            Ok(i + 3)
        }
        (Some(&a), _) if hex(a).is_some() => {
            Err(DnError::BadEscape { key: key.to_string(), detail: "\\ followed by a single hex digit".to_string() })
        }
        (Some(&a), _) => {
            v.push(a);
            Ok(i + 2)
        }
        (None, _) => Err(DnError::BadEscape { key: key.to_string(), detail: "\\ at the end".to_string() }),
    }
}

fn decode_hex(h: &str) -> Option<Vec<u8>> {
    if h.is_empty() || h.len() & 1 != 0 {
        return None;
    }
    (0..h.len()).step_by(2).map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok()).collect()
}

/// The PrintableString character set (RFC 5280 appendix A, X.680 41.4).
fn is_printable(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&c))
}

fn encode_value(key: &str, oid: &ObjectIdentifier, value: RawValue) -> Result<Any, DnError> {
    let text = match value {
        RawValue::Ber(ber) => {
            return Any::from_der(&ber).map_err(|e| DnError::BadHex { key: key.to_string(), detail: e.to_string() });
        }
        RawValue::Text(t) => t,
    };
    if text.is_empty() {
        return Err(DnError::EmptyValue { key: key.to_string() });
    }
    let kind = attr_of(oid).map(|a| a.kind).unwrap_or(Kind::Dir);
    let tag = match kind {
        Kind::Country => {
            if text.len() != 2 || !text.bytes().all(|c| c.is_ascii_alphabetic()) {
                return Err(DnError::BadCountry(text));
            }
            Tag::PrintableString
        }
        Kind::Ia5 => {
            if !text.is_ascii() {
                return Err(DnError::NotIa5 { key: key.to_string() });
            }
            Tag::Ia5String
        }
        Kind::Dir if is_printable(&text) => Tag::PrintableString,
        Kind::Dir => Tag::Utf8String,
    };
    Any::new(tag, text.into_bytes()).map_err(|e| DnError::Der(e.to_string()))
}

fn build(input: &str, syntax: Syntax) -> Result<Vec<u8>, DnError> {
    let mut rdns = Vec::new();
    for rdn in split(input, syntax)? {
        let mut set = SetOfVec::new();
        for (key, value) in rdn {
            let oid = keyword_oid(&key).ok_or_else(|| DnError::UnknownAttribute { key: key.clone(), input: input.to_string() })?;
            let value = encode_value(&key, &oid, value)?;
            set.insert(AttributeTypeAndValue { oid, value }).map_err(|e| DnError::Der(format!("{key}: {e}")))?;
        }
        rdns.push(RelativeDistinguishedName(set));
    }
    if syntax == Syntax::Rfc4514 {
        rdns.reverse();
    }
    let der = RdnSequence(rdns).to_der().map_err(|e| DnError::Der(e.to_string()))?;
    if der.len() > MAX_DN_DER {
        return Err(DnError::TooLong(der.len()));
    }
    Ok(der)
}

/// A DN in the configuration form (swanctl.conf order: the first RDN written
/// is the first in the DER sequence) as DER `Name`.
///
/// Attribute keywords (case-insensitive): C, ST/S, L, O, OU, CN, SN/surname,
/// serialNumber, GN/G/givenName, T/title, D/description, N/name, I/initials, DC,
/// E/Email/emailAddress, UID, street, pseudonym, dnQualifier,
/// generationQualifier, postalCode, and dotted OIDs (`2.5.4.3=foo`).
pub fn from_config(s: &str) -> Result<Vec<u8>, DnError> {
    build(s, Syntax::Config)
}

/// An RFC 4514 string (RDNs in reverse DER order, `+` for multi-valued RDNs,
/// `#hex` BER values) as DER `Name`.
pub fn from_rfc4514(s: &str) -> Result<Vec<u8>, DnError> {
    build(s, Syntax::Rfc4514)
}

/// The text of a string-typed value, if it is one.
fn value_text(v: &Any) -> Option<String> {
    let b = v.value();
    match v.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::VisibleString | Tag::NumericString => {
            String::from_utf8(b.to_vec()).ok()
        }
        // Teletex read as Latin-1, as strongSwan and OpenSSL do in practice.
        Tag::TeletexString => Some(b.iter().map(|&c| c as char).collect()),
        Tag::BmpString => {
            if b.len() & 1 != 0 {
                return None;
            }
            let units: Vec<u16> = b.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// Appends `text` escaped per RFC 4514 2.4 (control characters hex-escaped
/// too, so a log line stays one line).
fn escape_into(out: &mut String, text: &str) {
    let n = text.chars().count();
    for (i, c) in text.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i + 1 == n => out.push_str("\\ "),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\{:02X}", c as u32)),
            c => out.push(c),
        }
    }
}

fn decode(der: &[u8]) -> Result<Name, DnError> {
    Name::from_der(der).map_err(|e| DnError::Der(e.to_string()))
}

/// A DER `Name` as an RFC 4514 string: RDNs in reverse order; CN, L, ST, O,
/// OU, C, STREET, DC, UID by their RFC 4514 short names, other known types by
/// their usual names (SN for the surname, serialNumber, GN, title,
/// emailAddress…), unknown types as a dotted OID with a `#hex` BER value.
pub fn to_rfc4514(der: &[u8]) -> Result<String, DnError> {
    let name = decode(der)?;
    Ok(name_to_rfc4514(&name))
}

/// [`to_rfc4514`] of a decoded Name.
pub(crate) fn name_to_rfc4514(name: &Name) -> String {
    let mut out = String::new();
    for (i, rdn) in name.0.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.0.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let known = attr_of(&atv.oid);
            match known {
                Some(a) => out.push_str(a.name),
                None => out.push_str(&atv.oid.to_string()),
            }
            out.push('=');
            match (known, value_text(&atv.value)) {
                (Some(_), Some(text)) => escape_into(&mut out, &text),
                _ => {
                    out.push('#');
                    let ber = atv.value.to_der().unwrap_or_default();
                    for b in ber {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    out
}

/// Normalized text for comparison: trimmed, runs of white space as one
/// space, ASCII letters lowercase.
fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase()
}

fn atv_equal(a: &AttributeTypeAndValue, b: &AttributeTypeAndValue) -> bool {
    if a.oid != b.oid {
        return false;
    }
    match (value_text(&a.value), value_text(&b.value)) {
        (Some(x), Some(y)) => normalize(&x) == normalize(&y),
        _ => a.value == b.value,
    }
}

/// Are two DER Names the same DN? RDN by RDN (in order), attribute types
/// equal and values equal ignoring the string type, ASCII case and runs of
/// white space. Malformed DER is never equal to anything.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    match (decode(a), decode(b)) {
        (Ok(x), Ok(y)) => names_equal(&x, &y),
        _ => false,
    }
}

/// [`equal`] of decoded Names.
pub(crate) fn names_equal(x: &Name, y: &Name) -> bool {
    x.0.len() == y.0.len()
        && x.0.iter().zip(y.0.iter()).all(|(r, s)| {
            r.0.len() == s.0.len()
                && r.0.iter().all(|p| s.0.iter().any(|q| atv_equal(p, q)))
                && s.0.iter().all(|q| r.0.iter().any(|p| atv_equal(p, q)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trip_reverses() {
        let der = from_config("C=CH, O=strongSwan, CN=moon.strongswan.org").unwrap();
        assert_eq!(to_rfc4514(&der).unwrap(), "CN=moon.strongswan.org,O=strongSwan,C=CH");
        assert_eq!(from_rfc4514("CN=moon.strongswan.org,O=strongSwan,C=CH").unwrap(), der);
        let name = Name::from_der(&der).unwrap();
        assert_eq!(name.0[0].0.get(0).unwrap().oid, ObjectIdentifier::new_unwrap("2.5.4.6"));
        assert_eq!(name.0[2].0.get(0).unwrap().oid, ObjectIdentifier::new_unwrap("2.5.4.3"));
        // x509-cert's own parser agrees on the RFC 4514 order.
        let theirs: RdnSequence = "CN=moon.strongswan.org,O=strongSwan,C=CH".parse().unwrap();
        assert_eq!(theirs.0.len(), 3);
        assert_eq!(theirs.0[0].0.get(0).unwrap().oid, ObjectIdentifier::new_unwrap("2.5.4.6"));
    }

    #[test]
    fn slash_form_and_keywords() {
        let a = from_config("/C=CH/O=strongSwan/CN=moon").unwrap();
        let b = from_config("c=CH,o=strongSwan,   cn=moon").unwrap();
        assert_eq!(a, b);
        let all = from_config(
            "C=CH, ST=Zug, L=Baar, O=o, OU=u, CN=c, S=Bern, SN=sur, serialNumber=9, GN=g, T=t, DC=org, E=a@b.c, UID=u1, street=s, \
             pseudonym=p, dnQualifier=q, initials=i, generationQualifier=III, 2.5.4.3=oidcn",
        )
        .unwrap();
        assert_eq!(
            to_rfc4514(&all).unwrap(),
            "CN=oidcn,generationQualifier=III,initials=i,dnQualifier=q,pseudonym=p,STREET=s,UID=u1,emailAddress=a@b.c,DC=org,title=t,\
             GN=g,serialNumber=9,SN=sur,ST=Bern,CN=c,OU=u,O=o,L=Baar,ST=Zug,C=CH"
        );
        assert_eq!(from_rfc4514(&to_rfc4514(&all).unwrap()).unwrap(), all);
    }

    #[test]
    fn string_types() {
        let der = from_config("C=CH, CN=Zürich, E=a@b.c").unwrap();
        let name = Name::from_der(&der).unwrap();
        let tags: Vec<Tag> = name.0.iter().map(|r| r.0.get(0).unwrap().value.tag()).collect();
        assert_eq!(tags, vec![Tag::PrintableString, Tag::Utf8String, Tag::Ia5String]);
        assert_eq!(to_rfc4514(&der).unwrap(), "emailAddress=a@b.c,CN=Zürich,C=CH");
        // '@', '*', '_' are not PrintableString.
        let name = Name::from_der(&from_config("CN=a_b*c").unwrap()).unwrap();
        assert_eq!(name.0[0].0.get(0).unwrap().value.tag(), Tag::Utf8String);
    }

    #[test]
    fn equal_ignores_type_case_space() {
        let p = from_config("C=CH, O=strongSwan, CN=moon").unwrap();
        // Same, with UTF8String values built by hand.
        let mut rdns = Vec::new();
        for (oid, v) in [("2.5.4.6", "ch"), ("2.5.4.10", "STRONGSWAN"), ("2.5.4.3", "  Moon ")] {
            let mut set = SetOfVec::new();
            set.insert(AttributeTypeAndValue {
                oid: ObjectIdentifier::new_unwrap(oid),
                value: Any::new(Tag::Utf8String, v.as_bytes()).unwrap(),
            })
            .unwrap();
            rdns.push(RelativeDistinguishedName(set));
        }
        let u = RdnSequence(rdns).to_der().unwrap();
        assert_ne!(p, u);
        assert!(equal(&p, &u));
        assert!(!equal(&p, &from_config("C=CH, O=strong   Swan, CN=moon").unwrap()));
        assert!(equal(&from_config("O=a  b").unwrap(), &from_config("O=A b").unwrap()));
        assert!(!equal(&p, &from_config("C=CH, O=strongSwan, CN=sun").unwrap()));
        assert!(!equal(&p, &from_config("O=strongSwan, C=CH, CN=moon").unwrap()));
        assert!(!equal(&p, &from_config("C=CH, O=strongSwan").unwrap()));
        assert!(!equal(&p, &from_config("C=CH, OU=strongSwan, CN=moon").unwrap()));
        assert!(!equal(&p, b"\x30\x03garbage"));
        assert!(!equal(b"", b""));
    }

    #[test]
    fn escapes() {
        let der = from_config(r#"CN=a\,b, O="x, y", OU=\"q\", L=\#h, ST=\ sp\ , DC=c+d"#).unwrap();
        let s = to_rfc4514(&der).unwrap();
        assert_eq!(s, r#"DC=c\+d,ST=\ sp\ ,L=\#h,OU=\"q\",O=x\, y,CN=a\,b"#);
        assert_eq!(from_rfc4514(&s).unwrap(), der);
        // Hex escapes (UTF-8 bytes) and multi-valued RDNs in RFC 4514.
        let mv = from_rfc4514(r"CN=J\C3\BCrg+UID=j,O=x").unwrap();
        let name = Name::from_der(&mv).unwrap();
        assert_eq!(name.0.len(), 2);
        assert_eq!(name.0[1].0.len(), 2);
        let back = to_rfc4514(&mv).unwrap();
        assert!(back == "CN=Jürg+UID=j,O=x" || back == "UID=j+CN=Jürg,O=x", "{back}");
        assert_eq!(from_rfc4514(&back).unwrap(), mv);
        // Leading/trailing unescaped spaces are dropped.
        assert_eq!(from_config("CN=  moon  ").unwrap(), from_config("CN=moon").unwrap());
        // Control characters are hex-escaped on output.
        assert_eq!(to_rfc4514(&from_rfc4514(r"CN=a\0Ab").unwrap()).unwrap(), r"CN=a\0Ab");
    }

    #[test]
    fn unknown_oid_as_hex() {
        let der = from_rfc4514("1.2.3.4=#0c03616263,CN=x").unwrap();
        assert_eq!(to_rfc4514(&der).unwrap(), "1.2.3.4=#0c03616263,CN=x");
        let der2 = from_config("CN=x, 1.2.3.4=abc").unwrap();
        assert_eq!(to_rfc4514(&der2).unwrap(), "1.2.3.4=#130361626".to_string() + "3,CN=x");
        assert!(equal(&der, &der2));
    }

    #[test]
    fn rejects() {
        let e = from_config("C=CH, XX=foo").unwrap_err();
        assert_eq!(e.to_string(), "unknown attribute type \"XX\" in DN \"C=CH, XX=foo\"");
        assert_eq!(from_config("").unwrap_err(), DnError::Empty);
        assert_eq!(from_config("   ").unwrap_err(), DnError::Empty);
        assert_eq!(from_config("CN=").unwrap_err().to_string(), "empty value for CN");
        assert!(matches!(from_config("CN=a, O"), Err(DnError::NoEquals { .. })));
        assert!(matches!(from_config("moon.strongswan.org"), Err(DnError::NoEquals { .. })));
        assert!(matches!(from_config("=x"), Err(DnError::EmptyType { .. })));
        assert!(matches!(from_config("C=CHE"), Err(DnError::BadCountry(_))));
        assert!(matches!(from_config("C=C1"), Err(DnError::BadCountry(_))));
        assert!(matches!(from_config("E=ü@x"), Err(DnError::NotIa5 { .. })));
        assert!(matches!(from_config("CN=\"abc"), Err(DnError::UnterminatedQuote { .. })));
        assert!(matches!(from_config("CN=\"abc\" x"), Err(DnError::AfterQuote { .. })));
        assert!(matches!(from_config("CN=abc\\"), Err(DnError::BadEscape { .. })));
        assert!(matches!(from_rfc4514("CN=#zz"), Err(DnError::BadHex { .. })));
        assert!(matches!(from_rfc4514(r"CN=\FF"), Err(DnError::BadUtf8 { .. })));
        let long = format!("CN={}", "a".repeat(1100));
        assert!(matches!(from_config(&long), Err(DnError::TooLong(n)) if n > MAX_DN_DER));
        assert_eq!(from_config(&long).unwrap_err().to_string().split(" (").next().unwrap(), "DN longer than 1024 bytes");
        assert!(matches!(to_rfc4514(b"\x30\x05\x31\x03\x30\x01\x00"), Err(DnError::Der(_))));
        assert!(matches!(to_rfc4514(b""), Err(DnError::Der(_))));
    }

    #[test]
    fn matches_strongswan_pki() {
        use std::process::Command;
        if !std::path::Path::new("/usr/bin/pki").exists() {
            eprintln!("skipped: strongSwan's pki is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("wisp-dn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k.der");
        let out = Command::new("pki").args(["--gen", "--type", "ecdsa", "--size", "256", "--outform", "der"]).output().unwrap();
        assert!(out.status.success());
        std::fs::write(&key, &out.stdout).unwrap();
        for dn in [
            "C=CH, O=strongSwan, CN=moon",
            "C=CH, O=strongSwan Zürich, OU=a_b, CN=moon.strongswan.org, E=moon@strongswan.org",
            "C=CH, ST=Zug, L=Baar, DC=org, DC=strongswan, UID=abc, SN=Sur, serialNumber=123, T=Dr, CN=x",
        ] {
            let out = Command::new("pki")
                .args(["--self", "--in", key.to_str().unwrap(), "--type", "ecdsa", "--dn", dn, "--outform", "der"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let cert = x509_cert::Certificate::from_der(&out.stdout).unwrap();
            let subject = cert.tbs_certificate.subject.to_der().unwrap();
            assert_eq!(subject, from_config(dn).unwrap(), "{dn}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn random_input_never_panics() {
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let good = from_config("C=CH, O=strongSwan, CN=moon").unwrap();
        for i in 0..20_000 {
            let mut buf = if i % 2 == 0 {
                let mut b = vec![0u8; (rng.next_u32() % 64) as usize];
                rng.fill_bytes(&mut b);
                b
            } else {
                // Mutated / truncated good DER.
                let mut b = good.clone();
                let n = b.len();
                b[rng.next_u32() as usize % n] = rng.next_u32() as u8;
                b.truncate(1 + rng.next_u32() as usize % n);
                b
            };
            if i % 3 == 0 && !buf.is_empty() {
                buf[0] = 0x30;
            }
            let _ = to_rfc4514(&buf);
            let _ = equal(&buf, &good);
            let _ = equal(&buf, &buf);
            let text = String::from_utf8_lossy(&buf);
            let _ = from_config(&text);
            let _ = from_rfc4514(&text);
        }
    }
}
