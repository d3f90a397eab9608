"""Example wisp policy plugin: identity allow-list with source CIDRs, in Python.

Behaves exactly like examples/plugins/rust/allowlist (reasons included); the
shared fixtures examples/fixtures/allowlist-*.json check that.

Settings: `peers` (text list), one entry per identity:
    "alice@example.com from 10.99.0.0/16, 192.0.2.0/24"   only from these
    "gw.example.net"                                      from anywhere

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
VERSION = "1.0.0"
KNOWN = ["peers"]


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


class Entry:
    def __init__(self, ident: str, sources: List[Tuple[str, Cidr]]):
        self.ident = ident
        self.sources = sources


def _parse_entry(raw: str) -> Entry:
    i = raw.rfind(" from ")
    if i >= 0:
        ident, cidrs = raw[:i], raw[i + 6:]
    else:
        ident, cidrs = raw, None
    ident = ident.strip()
    if not ident:
        raise Err(f"peers entry '{raw}': empty identity")
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
    return Entry(ident, sources)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _id_matches(entry: str, ident: types.Identity) -> bool:
    if ident.kind in (types.IdType.FQDN, types.IdType.RFC822_ADDR):
        return entry.translate(_ASCII_LOWER) == ident.value.translate(_ASCII_LOWER)
    return entry == ident.value


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


_entries: Optional[List[Entry]] = None


def _configure(settings: List[types.Setting]) -> List[Entry]:
    for s in settings:
        if s.key not in KNOWN:
            raise Err(f"unknown setting '{s.key}' (known: {', '.join(KNOWN)})")
    value = None
    for s in settings:
        if s.key == "peers":
            value = s.value  # the last one wins
    if value is None:
        peers = []
    elif isinstance(value, types.SettingValue_TextList):
        peers = list(value.value)
    elif isinstance(value, types.SettingValue_Text):
        peers = [value.value]
    else:
        raise Err(f"setting 'peers' must be a text list, not a {_type_name(value)}")
    return [_parse_entry(p) for p in peers]


def _state() -> List[Entry]:
    global _entries
    if _entries is None:
        try:
            _entries = _configure([])
        except Err as e:
            raise Err(types.Refusal(f"{NAME} is not configured: {e.value}"))
    return _entries


class Decisions(exports.Decisions):
    def info(self) -> types.PluginInfo:
        return types.PluginInfo(NAME, VERSION)

    def configure(self, settings: List[types.Setting]) -> None:
        global _entries
        _entries = _configure(settings)

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
        mine = [e for e in _state() if _id_matches(e.ident, ident)]
        if not mine:
            raise Err(types.Refusal(f"identity '{ident.value}' is not on the allow-list"))
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
