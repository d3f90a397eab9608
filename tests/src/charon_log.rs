//! Parsing charon's file log.
//!
//! Lines look like `12:29:15 08[CHD] encryption initiator key => 36 bytes @ 0x...`
//! followed by hex-dump lines `12:29:15 08[CHD]    0: 7B 09 ...  ascii` (log
//! level 4 for `ike`/`chd`). Dumps of different threads may interleave, so they
//! are collected per thread.

use std::collections::HashMap;

/// One log line split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    pub no: usize,
    pub thread: u32,
    pub group: &'a str,
    pub msg: &'a str,
}

/// Split a line: optional time prefix, `NN[GRP] message`.
pub fn split_line(no: usize, line: &str) -> Option<Line<'_>> {
    let mut search = 0;
    while let Some(rel) = line[search..].find('[') {
        let lb = search + rel;
        let before = &line[..lb];
        let digits_start = before.rfind(|c: char| !c.is_ascii_digit()).map(|i| i + 1).unwrap_or(0);
        let digits = &before[digits_start..];
        let prefix_ok = digits_start == 0 || before.as_bytes()[digits_start - 1] == b' ';
        if !digits.is_empty() && prefix_ok {
            if let Some(rb) = line[lb..].find(']') {
                let group = &line[lb + 1..lb + rb];
                if !group.is_empty() && group.len() <= 4 && group.chars().all(|c| c.is_ascii_uppercase()) {
                    let msg = line[lb + rb + 1..].strip_prefix(' ').unwrap_or(&line[lb + rb + 1..]);
                    return Some(Line { no, thread: digits.parse().ok()?, group, msg });
                }
            }
        }
        search = lb + 1;
    }
    None
}

/// A `%B` hex dump: `label => N bytes @ 0x..` plus its data lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexDump {
    pub line: usize,
    pub thread: u32,
    pub group: String,
    pub label: String,
    pub bytes: Vec<u8>,
}

fn parse_header(msg: &str) -> Option<(String, usize)> {
    let (label, rest) = msg.rsplit_once(" => ")?;
    let (n, rest) = rest.split_once(" bytes @ ")?;
    if !rest.starts_with("0x") && !rest.starts_with("(nil)") {
        return None;
    }
    Some((label.to_string(), n.trim().parse().ok()?))
}

/// All complete hex dumps in the log, in order of their header lines.
pub fn hex_dumps(log: &str) -> Vec<HexDump> {
    let mut pending: HashMap<u32, (HexDump, usize)> = HashMap::new();
    let mut done: Vec<HexDump> = Vec::new();
    for (no, raw) in log.lines().enumerate() {
        let Some(l) = split_line(no, raw) else { continue };
        if let Some((label, n)) = parse_header(l.msg) {
            if let Some((d, _)) = pending.remove(&l.thread) {
                done.push(d); // truncated dump, keep what we have
            }
            let d = HexDump { line: no, thread: l.thread, group: l.group.into(), label, bytes: Vec::new() };
            if n == 0 {
                done.push(d);
            } else {
                pending.insert(l.thread, (d, n));
            }
            continue;
        }
        if let Some((d, n)) = pending.get_mut(&l.thread) {
            let t = l.msg.trim_start();
            let Some((off, data)) = t.split_once(": ") else { continue };
            if off.parse::<usize>().ok() != Some(d.bytes.len()) {
                continue;
            }
            let want = (*n - d.bytes.len()).min(16);
            for tok in data.split(' ').filter(|s| !s.is_empty()).take(want) {
                match u8::from_str_radix(tok, 16) {
                    Ok(b) if tok.len() == 2 => d.bytes.push(b),
                    _ => break,
                }
            }
            if d.bytes.len() >= *n {
                let (d, _) = pending.remove(&l.thread).expect("present");
                done.push(d);
            }
        }
    }
    done.extend(pending.into_values().map(|(d, _)| d));
    done.sort_by_key(|d| d.line);
    done
}

/// `CHILD_SA net{1} established with SPIs fcd0299f_i ea5f12a8_o and TS a === b`
/// (or `inbound CHILD_SA ...` for a rekeyed one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildEstablished {
    pub line: usize,
    pub thread: u32,
    pub name: String,
    pub unique: u32,
    pub spi_in: u32,
    pub spi_out: u32,
    pub ts: String,
}

pub fn children_established(log: &str) -> Vec<ChildEstablished> {
    let mut v = Vec::new();
    for (no, raw) in log.lines().enumerate() {
        let Some(l) = split_line(no, raw) else { continue };
        // Rekeyed SAs log `inbound CHILD_SA ...` (keys installed) and later
        // `outbound CHILD_SA ...` (switched over): count the first only.
        let msg = l.msg.strip_prefix("inbound ").unwrap_or(l.msg);
        let Some(rest) = msg.strip_prefix("CHILD_SA ") else { continue };
        let Some((head, tail)) = rest.split_once(" established with SPIs ") else { continue };
        let Some((name, uniq)) = head.split_once('{') else { continue };
        let unique = uniq.trim_end_matches('}').parse().unwrap_or(0);
        let mut it = tail.split_whitespace();
        let spi_in = it.next().and_then(|s| s.strip_suffix("_i")).and_then(|s| u32::from_str_radix(s, 16).ok());
        let spi_out = it.next().and_then(|s| s.strip_suffix("_o")).and_then(|s| u32::from_str_radix(s, 16).ok());
        let ts = tail.split_once(" and TS ").map(|(_, t)| t.trim().to_string()).unwrap_or_default();
        if let (Some(spi_in), Some(spi_out)) = (spi_in, spi_out) {
            v.push(ChildEstablished { line: no, thread: l.thread, name: name.into(), unique, spi_in, spi_out, ts });
        }
    }
    v
}

/// Child SA keys as charon derived them (RFC 7296 2.17 KEYMAT split), for one
/// Child SA identified by charon's inbound/outbound SPIs. For AEAD ciphers the
/// encryption keys include the 4-byte salt (GCM) / nonce salt (ChaCha20).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildKeys {
    pub name: String,
    pub spi_in: u32,
    pub spi_out: u32,
    /// Key protecting initiator → responder traffic.
    pub encr_i: Vec<u8>,
    /// Key protecting responder → initiator traffic.
    pub encr_r: Vec<u8>,
    pub integ_i: Option<Vec<u8>>,
    pub integ_r: Option<Vec<u8>>,
}

/// For each established Child SA, the key dumps that preceded it on the same
/// thread (needs `chd = 4`).
pub fn child_keys(log: &str) -> Vec<ChildKeys> {
    let dumps = hex_dumps(log);
    let mut v = Vec::new();
    for est in children_established(log) {
        let last =
            |label: &str| dumps.iter().rfind(|d| d.thread == est.thread && d.line < est.line && d.label == label).map(|d| d.bytes.clone());
        if let (Some(ei), Some(er)) = (last("encryption initiator key"), last("encryption responder key")) {
            v.push(ChildKeys {
                name: est.name.clone(),
                spi_in: est.spi_in,
                spi_out: est.spi_out,
                encr_i: ei,
                encr_r: er,
                integ_i: last("integrity initiator key"),
                integ_r: last("integrity responder key"),
            });
        }
    }
    v
}

/// IKE SA keys (SK_d, SK_ei/er, SK_ai/ar when not AEAD, SK_pi/pr), in order of
/// derivation (first IKE SA, then each rekey). Needs `ike = 4`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IkeKeys {
    pub line: usize,
    pub sk_d: Vec<u8>,
    pub sk_ai: Option<Vec<u8>>,
    pub sk_ar: Option<Vec<u8>>,
    pub sk_ei: Vec<u8>,
    pub sk_er: Vec<u8>,
    pub sk_pi: Vec<u8>,
    pub sk_pr: Vec<u8>,
}

pub fn ike_keys(log: &str) -> Vec<IkeKeys> {
    let mut out = Vec::new();
    let mut cur: HashMap<u32, IkeKeys> = HashMap::new();
    for d in hex_dumps(log) {
        match d.label.as_str() {
            "Sk_d secret" => {
                cur.insert(d.thread, IkeKeys { line: d.line, sk_d: d.bytes, ..Default::default() });
            }
            other => {
                let Some(k) = cur.get_mut(&d.thread) else { continue };
                match other {
                    "Sk_ai secret" => k.sk_ai = Some(d.bytes),
                    "Sk_ar secret" => k.sk_ar = Some(d.bytes),
                    "Sk_ei secret" => k.sk_ei = d.bytes,
                    "Sk_er secret" => k.sk_er = d.bytes,
                    "Sk_pi secret" => k.sk_pi = d.bytes,
                    "Sk_pr secret" => {
                        k.sk_pr = d.bytes;
                        if let Some(k) = cur.remove(&d.thread) {
                            out.push(k);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out.sort_by_key(|k| k.line);
    out
}

/// Full notify names for charon's abbreviations in `N(...)` message summaries.
pub fn notify_full_name(abbrev: &str) -> &str {
    match abbrev {
        "AUTH_FAILED" => "AUTHENTICATION_FAILED",
        "NO_PROP" => "NO_PROPOSAL_CHOSEN",
        "TS_UNACCEPT" => "TS_UNACCEPTABLE",
        "INVAL_KE" => "INVALID_KE_PAYLOAD",
        "INVAL_SYN" => "INVALID_SYNTAX",
        "NO_CHILD_SA" => "NO_ADDITIONAL_SAS",
        "CHLD_SA_NOT_FOUND" => "CHILD_SA_NOT_FOUND",
        "TEMP_FAIL" => "TEMPORARY_FAILURE",
        "INT_ADDR_FAIL" => "INTERNAL_ADDRESS_FAILURE",
        "FAILED_CP_REQ" => "FAILED_CP_REQUIRED",
        "INVAL_SPI" => "INVALID_SPI",
        "INVAL_MID" => "INVALID_MESSAGE_ID",
        other => other,
    }
}

const ERROR_NOTIFIES: &[&str] = &[
    "AUTHENTICATION_FAILED",
    "NO_PROPOSAL_CHOSEN",
    "TS_UNACCEPTABLE",
    "INVALID_KE_PAYLOAD",
    "INVALID_SYNTAX",
    "NO_ADDITIONAL_SAS",
    "CHILD_SA_NOT_FOUND",
    "TEMPORARY_FAILURE",
    "INVALID_SPI",
    "INVALID_MESSAGE_ID",
    "INTERNAL_ADDRESS_FAILURE",
    "FAILED_CP_REQUIRED",
];

/// Error notifies in message summaries starting with `verb` (`generating` or
/// `parsed`), e.g. `generating IKE_AUTH response 1 [ N(AUTH_FAILED) ]`.
fn summary_notifies(log: &str, verb: &str) -> Vec<String> {
    let mut v = Vec::new();
    for (no, raw) in log.lines().enumerate() {
        let Some(l) = split_line(no, raw) else { continue };
        if !l.msg.starts_with(verb) {
            continue;
        }
        let Some((_, payloads)) = l.msg.split_once('[') else { continue };
        for p in payloads.split_whitespace() {
            if let Some(inner) = p.strip_prefix("N(").and_then(|s| s.strip_suffix(')')) {
                let full = notify_full_name(inner);
                if ERROR_NOTIFIES.contains(&full) {
                    v.push(full.to_string());
                }
            }
        }
    }
    v
}

/// Error notifies charon put into messages it generated (full names).
pub fn sent_notifies(log: &str) -> Vec<String> {
    summary_notifies(log, "generating ")
}

/// Error notifies charon received: from parsed-message summaries
/// (`parsed IKE_SA_INIT response 0 [ N(INVAL_KE) ]`) and from
/// `received X notify ...` lines; each name once per occurrence kind.
pub fn received_notifies(log: &str) -> Vec<String> {
    let mut v = summary_notifies(log, "parsed ");
    for (no, raw) in log.lines().enumerate() {
        let Some(l) = split_line(no, raw) else { continue };
        let Some(rest) = l.msg.strip_prefix("received ") else { continue };
        let Some((name, _)) = rest.split_once(" notify") else { continue };
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') {
            v.push(name.to_string());
        }
    }
    v
}

/// `(refused, requested)` DH groups from
/// `peer didn't accept DH group CURVE_25519, it requested ECP_384`.
pub fn dh_group_requests(log: &str) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for (no, raw) in log.lines().enumerate() {
        let Some(l) = split_line(no, raw) else { continue };
        let Some(rest) = l.msg.strip_prefix("peer didn't accept DH group ") else { continue };
        if let Some((a, b)) = rest.split_once(", it requested ") {
            v.push((a.trim().to_string(), b.trim().to_string()));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    // Excerpt of a strongSwan 5.9.8 log (ike=4, chd=4), threads interleaved.
    const LOG: &str = "\
12:29:15 13[IKE] Sk_d secret => 32 bytes @ 0x7f3b7c00a910
12:29:15 13[IKE]    0: FA CF B8 F3 88 6C 71 B4 21 1B 34 60 81 6F 21 3D  .....lq.!.4`.o!=
12:29:15 13[IKE]   16: ED CE B0 7C 9E 21 7F C7 CE 26 0F 16 E0 67 6A EA  ...|.!...&...gj.
12:29:15 13[IKE] Sk_ei secret => 4 bytes @ 0x7f3b7c00a880
12:29:15 13[IKE]    0: 09 6A F4 8B                                      .j..
12:29:15 13[IKE] Sk_er secret => 4 bytes @ 0x7f3b7c00a8a4
12:29:15 13[IKE]    0: BC A2 FA B9                                      ....
12:29:15 13[IKE] Sk_pi secret => 2 bytes @ 0x7f3b7c00abb0
12:29:15 13[IKE]    0: CE 97                                            ..
12:29:15 13[IKE] Sk_pr secret => 2 bytes @ 0x7f3b7c0070c0
12:29:15 13[IKE]    0: 9E C8                                            ..
12:29:15 08[CHD] encryption initiator key => 20 bytes @ 0x7f3b80002e90
12:29:15 09[NET] sending packet: from 10.99.0.1[4500] to 10.99.0.2[4500] (254 bytes)
12:29:15 08[CHD]    0: 7B 09 79 85 BD E5 46 A2 AC 3C F7 24 BC C9 A0 3E  {.y...F..<.$...>
12:29:15 08[CHD]   16: AB CD EF 01                                      [...
12:29:15 08[CHD] encryption responder key => 4 bytes @ 0x7f3b80002d20
12:29:15 08[CHD]    0: 5B A3 62 DA                                      [.b.
12:29:15 08[CHD] adding inbound ESP SA
12:29:15 08[IKE] CHILD_SA net{1} established with SPIs fcd0299f_i ea5f12a8_o and TS 10.1.0.1/32 === 10.2.0.1/32
12:29:16 10[IKE] received AUTHENTICATION_FAILED notify error
12:29:16 10[ENC] generating CREATE_CHILD_SA response 2 [ N(TS_UNACCEPT) ]
";

    #[test]
    fn extracts_child_and_ike_keys() {
        let ck = child_keys(LOG);
        assert_eq!(ck.len(), 1);
        assert_eq!(ck[0].spi_in, 0xfcd0299f);
        assert_eq!(ck[0].spi_out, 0xea5f12a8);
        assert_eq!(ck[0].encr_i.len(), 20);
        assert_eq!(&ck[0].encr_i[16..], &[0xAB, 0xCD, 0xEF, 0x01]);
        assert_eq!(ck[0].encr_r, vec![0x5B, 0xA3, 0x62, 0xDA]);
        let ik = ike_keys(LOG);
        assert_eq!(ik.len(), 1);
        assert_eq!(ik[0].sk_d.len(), 32);
        assert_eq!(ik[0].sk_d[0], 0xFA);
        assert_eq!(ik[0].sk_pr, vec![0x9E, 0xC8]);
        assert!(ik[0].sk_ai.is_none());
    }

    #[test]
    fn notifies_both_directions() {
        assert_eq!(received_notifies(LOG), vec!["AUTHENTICATION_FAILED"]);
        let l = "12:34:15 08[ENC] parsed IKE_SA_INIT response 0 [ N(INVAL_KE) ]\n12:34:15 08[IKE] peer didn't accept DH group CURVE_25519, it requested ECP_384\n";
        assert_eq!(received_notifies(l), vec!["INVALID_KE_PAYLOAD"]);
        assert_eq!(dh_group_requests(l), vec![("CURVE_25519".to_string(), "ECP_384".to_string())]);
        assert_eq!(sent_notifies(LOG), vec!["TS_UNACCEPTABLE"]);
    }

    #[test]
    fn established_lines() {
        let e = children_established(LOG);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, "net");
        assert_eq!(e[0].unique, 1);
        assert_eq!(e[0].ts, "10.1.0.1/32 === 10.2.0.1/32");
    }

    #[test]
    fn garbage_lines_are_ignored() {
        assert!(split_line(0, "no brackets here").is_none());
        assert!(hex_dumps("x => 5 bytes @ 0x1\n[IKE] 0: zz").is_empty());
    }
}
