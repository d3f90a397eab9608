"""Example wisp policy plugin: allow-list by identity, certificate issuer or
subjectAltName, with source CIDRs, and virtual IPs by the same rules, in Python.

Behaves exactly like examples/plugins/rust/allowlist (reasons included; its doc
comment describes the rules); the shared fixtures
examples/fixtures/allowlist-*.json check that.

Settings: `peers` (text list), one rule per entry, each optionally followed by
` from CIDR, CIDR, ...`:
    "alice@example.com from 10.99.0.0/16, 192.0.2.0/24"   identity, only from these
    "gw.example.net"                                      identity, from anywhere
    "issuer CN=Corp CA, O=Corp"                           certificate issued by this CA
    "san dns:*.corp.example"                              certificate with a matching SAN
    "san email:*@corp.example"

`leases` (text list): where a peer's virtual IP comes from (`assign-address`),
a rule of the forms above followed by what it gets:
    "alice@example.com 10.3.0.7"             exactly this address
    "issuer CN=Staff CA, O=Corp pool staff"  any address of pool `staff`
    "san dns:*.guest.example none"           no address (refused)
Per family asked for, the first matching entry of that family (or `none`)
decides; a pool the connection lacks gives nothing; no entry: the host decides.

Build: scripts/build-plugins.sh, i.e.
    componentize-py -d ../../../wit -w policy-plugin componentize --stub-wasi app -o allowlist-py.wasm
"""

import ipaddress
from typing import List, Optional, Tuple

import wit_world
from wit_world import exports
from wit_world.imports import types
from componentize_py_types import Err

NAME = "allowlist-py"
VERSION = "1.2.0"
KNOWN = ["peers", "leases"]


def _type_name(v) -> str:
    if isinstance(v, types.SettingValue_Text):
        return "text"
    if isinstance(v, types.SettingValue_Integer):
        return "integer"
    if isinstance(v, types.SettingValue_Boolean):
        return "boolean"
    return "text list"


def _ip(a) -> ipaddress._BaseAddress:
    if isinstance(a, types.IpAddress_Ipv4):
        return ipaddress.IPv4Address(bytes(a.value))
    v = 0
    for seg in a.value:
        v = (v << 16) | seg
    return ipaddress.IPv6Address(v)


def _key(a) -> Tuple[bool, int]:
    ip = _ip(a)
    return (ip.version == 4, int(ip))


class Cidr:
    def __init__(self, text: str):
        s = text.strip()
        if "/" in s:
            a, p = s.split("/", 1)
            a, p = a.strip(), p.strip()
        else:
            a, p = s, None
        addr = ipaddress.ip_address(a)  # ValueError on a bad address
        bits = 32 if addr.version == 4 else 128
        if p is None:
            prefix = bits
        else:
            if not p.isdigit() or not p.isascii() or int(p) > bits:
                raise ValueError("bad prefix length")
            prefix = int(p)
        self.version = addr.version
        self.prefix = prefix
        mask = ((1 << bits) - 1) ^ ((1 << (bits - prefix)) - 1)
        self.first = int(addr) & mask
        self.mask = mask

    def contains(self, ip) -> bool:
        return ip.version == self.version and (int(ip) & self.mask) == self.first


SAN_TYPES = ["dns", "email", "ip", "uri", "dn"]

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _lower(s: str) -> str:
    return s.translate(_ASCII_LOWER)


def _norm_dn(dn: str) -> str:
    """ASCII lowercase, RDNs split at unescaped commas, trimmed of spaces, joined with ','."""
    parts, cur, i = [], [], 0
    while i < len(dn):
        c = dn[i]
        if c == "\\":
            cur.append(dn[i:i + 2])
            i += 2
            continue
        if c == ",":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return ",".join(_lower(p.strip(" ")) for p in parts)


class Entry:
    def __init__(self, kind: str, value: str, san_type: Optional[str], sources: List[Tuple[str, Cidr]]):
        self.kind = kind  # "id", "issuer" or "san"
        self.value = value
        self.san_type = san_type
        self.sources = sources


def _parse_rule(key: str, raw: str, text: str) -> Tuple[str, str, Optional[str]]:
    if text.startswith("issuer "):
        dn = text[len("issuer "):].strip()
        if not dn:
            raise Err(f"{key} entry '{raw}': empty issuer")
        return ("issuer", _norm_dn(dn), None)
    if text.startswith("san "):
        pat = text[len("san "):].strip()
        if ":" not in pat:
            raise Err(f"{key} entry '{raw}': subjectAltName '{pat}' is not TYPE:VALUE")
        kind, value = pat.split(":", 1)
        kind = _lower(kind)
        if kind not in SAN_TYPES:
            raise Err(f"{key} entry '{raw}': unknown subjectAltName type '{kind}' (known: {', '.join(SAN_TYPES)})")
        if not value:
            raise Err(f"{key} entry '{raw}': empty subjectAltName")
        wild_ok = (kind == "dns" and value.startswith("*.")) or (kind == "email" and value.startswith("*@"))
        if "*" in value[1 if wild_ok else 0:]:
            raise Err(f"{key} entry '{raw}': '*' only as a leading DNS label (dns:*.example) or e-mail local part (email:*@example)")
        if kind == "dn":
            value = _norm_dn(value)
        return ("san", value, kind)
    return ("id", text, None)


def _parse_entry(raw: str) -> Entry:
    i = raw.rfind(" from ")
    if i >= 0:
        ident, cidrs = raw[:i], raw[i + 6:]
    else:
        ident, cidrs = raw, None
    ident = ident.strip()
    if not ident:
        raise Err(f"peers entry '{raw}': empty identity")
    kind, value, san_type = _parse_rule("peers", raw, ident)
    sources = []
    if cidrs is not None:
        for c in cidrs.split(","):
            c = c.strip()
            if not c:
                continue
            try:
                parsed = Cidr(c)
            except ValueError:
                raise Err(f"peers entry '{raw}': bad CIDR '{c}'")
            sources.append((c, parsed))
        if not sources:
            raise Err(f"peers entry '{raw}': no CIDR after 'from'")
    return Entry(kind, value, san_type, sources)


class Lease:
    def __init__(self, raw: str, rule: Entry, gives: str, value):
        self.raw = raw
        self.rule = rule  # an Entry without sources
        self.gives = gives  # "address", "pool" or "none"
        self.value = value  # an ipaddress address, a pool name, or None


def _parse_address(text: str):
    """An IPv4 or IPv6 address as Rust's std parses it (no zone, no prefix)."""
    if "%" in text or "/" in text:
        raise ValueError(text)
    return ipaddress.ip_address(text)


def _parse_lease(raw: str) -> Lease:
    usage = "expected RULE ADDRESS, RULE pool NAME or RULE none"
    text = raw.strip()
    i = text.rfind(" ")
    if i < 0:
        raise Err(f"leases entry '{raw}': {usage}")
    head, last = text[:i], text[i + 1:]
    if last == "none":
        rule_text, gives, value = head, "none", None
    elif head.endswith(" pool"):
        rule_text, gives, value = head[:-len(" pool")], "pool", last
    elif head == "pool":
        raise Err(f"leases entry '{raw}': no rule before 'pool'")
    else:
        try:
            value = _parse_address(last)
        except ValueError:
            raise Err(f"leases entry '{raw}': '{last}' is not an address ({usage})")
        rule_text, gives = head, "address"
    rule_text = rule_text.strip()
    if not rule_text:
        raise Err(f"leases entry '{raw}': {usage}")
    kind, rule_value, san_type = _parse_rule("leases", raw, rule_text)
    return Lease(raw, Entry(kind, rule_value, san_type, []), gives, value)


def _to_wit(ip) -> types.IpAddress:
    if ip.version == 4:
        return types.IpAddress_Ipv4(tuple(ip.packed))
    n = int(ip)
    return types.IpAddress_Ipv6(tuple((n >> (16 * (7 - k))) & 0xFFFF for k in range(8)))


def _family(ip):
    return types.AddressFamily.IPV4 if ip.version == 4 else types.AddressFamily.IPV6


def _id_matches(entry: str, ident: types.Identity) -> bool:
    if ident.kind in (types.IdType.FQDN, types.IdType.RFC822_ADDR):
        return _lower(entry) == _lower(ident.value)
    return entry == ident.value


def _ends_with_ci(value: str, suffix: str) -> bool:
    return len(value) > len(suffix) and _lower(value).endswith(_lower(suffix))


def _san_matches(kind: str, pattern: str, san: str) -> bool:
    if ":" not in san:
        return False
    k, v = san.split(":", 1)
    if k != kind:
        return False
    if kind in ("dns", "email"):
        if pattern.startswith("*"):
            suffix = pattern[1:]
            if not _ends_with_ci(v, suffix):
                return False
            return kind == "dns" or "@" not in v[:len(v) - len(suffix)]
        return _lower(v) == _lower(pattern)
    if kind == "ip":
        return _lower(v) == _lower(pattern)
    if kind == "dn":
        return _norm_dn(v) == pattern
    return v == pattern


def _rule_matches(e: Entry, auth: types.AuthInfo) -> bool:
    if e.kind == "id":
        return _id_matches(e.value, auth.peer_identity)
    if e.kind == "issuer":
        return auth.certificate_issuer is not None and _norm_dn(auth.certificate_issuer) == e.value
    return any(_san_matches(e.san_type, e.value, s) for s in auth.subject_alt_names)


def _intersect(a: types.TrafficSelector, b: types.TrafficSelector) -> Optional[types.TrafficSelector]:
    a_s, a_e = _key(a.start_address), _key(a.end_address)
    b_s, b_e = _key(b.start_address), _key(b.end_address)
    if a_s[0] != a_e[0] or b_s[0] != b_e[0] or a_s[0] != b_s[0]:
        return None
    if a.ip_protocol == 0:
        proto = b.ip_protocol
    elif b.ip_protocol == 0 or a.ip_protocol == b.ip_protocol:
        proto = a.ip_protocol
    else:
        return None
    sp, ep = max(a.start_port, b.start_port), min(a.end_port, b.end_port)
    if sp > ep:
        return None
    start, start_k = (a.start_address, a_s[1]) if a_s[1] >= b_s[1] else (b.start_address, b_s[1])
    end, end_k = (a.end_address, a_e[1]) if a_e[1] <= b_e[1] else (b.end_address, b_e[1])
    if start_k > end_k:
        return None
    return types.TrafficSelector(proto, sp, ep, start, end)


def _same(x: types.TrafficSelector, y: types.TrafficSelector) -> bool:
    return (x.ip_protocol, x.start_port, x.end_port, _key(x.start_address), _key(x.end_address)) == \
           (y.ip_protocol, y.start_port, y.end_port, _key(y.start_address), _key(y.end_address))


def _intersect_lists(proposed, allowed):
    out = []
    for p in proposed:
        for a in allowed:
            i = _intersect(p, a)
            if i is not None and not any(_same(i, o) for o in out):
                out.append(i)
    return out


class Config:
    def __init__(self, entries: List[Entry], leases: List[Lease]):
        self.entries = entries
        self.leases = leases


_config: Optional[Config] = None


def _text_list(settings: List[types.Setting], key: str) -> List[str]:
    value = None
    for s in settings:
        if s.key == key:
            value = s.value  # the last one wins
    if value is None:
        return []
    if isinstance(value, types.SettingValue_TextList):
        return list(value.value)
    if isinstance(value, types.SettingValue_Text):
        return [value.value]
    raise Err(f"setting '{key}' must be a text list, not a {_type_name(value)}")


def _configure(settings: List[types.Setting]) -> Config:
    for s in settings:
        if s.key not in KNOWN:
            raise Err(f"unknown setting '{s.key}' (known: {', '.join(KNOWN)})")
    entries = [_parse_entry(p) for p in _text_list(settings, "peers")]
    leases = [_parse_lease(p) for p in _text_list(settings, "leases")]
    return Config(entries, leases)


def _state() -> Config:
    global _config
    if _config is None:
        try:
            _config = _configure([])
        except Err as e:
            raise Err(types.Refusal(f"{NAME} is not configured: {e.value}"))
    return _config


class Decisions(exports.Decisions):
    def info(self) -> types.PluginInfo:
        return types.PluginInfo(NAME, VERSION)

    def configure(self, settings: List[types.Setting]) -> None:
        global _config
        _config = _configure(settings)

    def select_proposal(self, ctx, kind, offered, configured) -> types.ProposalChoice:
        _state()
        if not offered:
            raise Err(types.Refusal("no proposal offered"))
        # The first offered proposal; the host picks its transforms.
        return types.ProposalChoice(0, [])

    def order_proposals(self, ctx, kind, configured) -> List[int]:
        try:
            _state()
        except Err:
            return []
        return list(range(len(configured)))

    def authorize(self, ctx: types.PeerContext, auth: types.AuthInfo) -> None:
        ident = auth.peer_identity
        entries = _state().entries
        mine = [e for e in entries if _rule_matches(e, auth)]
        if not mine:
            detail = ""
            if any(e.kind != "id" for e in entries):
                if auth.certificate_issuer is None and not auth.subject_alt_names:
                    detail = " (no certificate)"
                else:
                    sans = ", ".join(auth.subject_alt_names) if auth.subject_alt_names else "none"
                    issuer = auth.certificate_issuer if auth.certificate_issuer is not None else ""
                    detail = f" (certificate issuer '{issuer}', subjectAltNames: {sans})"
            raise Err(types.Refusal(f"identity '{ident.value}' is not on the allow-list{detail}"))
        remote = _ip(ctx.remote_address)
        if any(not e.sources or any(c.contains(remote) for _, c in e.sources) for e in mine):
            return None
        allowed = ", ".join(t for e in mine for t, _ in e.sources)
        raise Err(types.Refusal(f"identity '{ident.value}' is not allowed from {remote} (allowed: {allowed})"))

    def narrow_selectors(self, ctx, request: types.SelectorRequest) -> types.SelectorPair:
        _state()
        remote = _intersect_lists(request.remote_proposed, request.remote_configured)
        if not remote:
            raise Err(types.Refusal("remote selectors do not overlap the configured ranges"))
        local = _intersect_lists(request.local_proposed, request.local_configured)
        if not local:
            raise Err(types.Refusal("local selectors do not overlap the configured ranges"))
        return types.SelectorPair(remote, local)

    def assign_address(self, ctx, request: types.AddressRequest) -> types.AddressChoice:
        leases = _state().leases
        picks = []
        for wanted in request.requested:
            def decides(lease: Lease) -> bool:
                if lease.gives == "address":
                    return _family(lease.value) == wanted.family
                if lease.gives == "pool":
                    return any(p.name == lease.value and p.family == wanted.family for p in request.pools)
                return True
            lease = next((l for l in leases if _rule_matches(l.rule, request.auth) and decides(l)), None)
            if lease is None:
                continue
            if lease.gives == "address":
                picks.append(types.AddressPick_Address(_to_wit(lease.value)))
            elif lease.gives == "pool":
                picks.append(types.AddressPick_Pool(lease.value))
            else:
                raise Err(types.Refusal(
                    f"identity '{request.auth.peer_identity.value}' gets no address (leases entry '{lease.raw}')"))
        return types.AddressChoice(picks)
