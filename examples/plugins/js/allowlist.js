// Example wisp policy plugin: allow-list by identity, certificate issuer or
// subjectAltName, with source CIDRs, and virtual IPs by the same rules, in
// JavaScript.
//
// Behaves exactly like examples/plugins/rust/allowlist (reasons included; its
// doc comment describes the rules); the shared fixtures
// examples/fixtures/allowlist-*.json check that.
//
// Settings: `peers` (text list), one rule per entry, each optionally followed
// by ` from CIDR, CIDR, ...`:
//   "alice@example.com from 10.99.0.0/16, 192.0.2.0/24"   identity, only from these
//   "gw.example.net"                                      identity, from anywhere
//   "issuer CN=Corp CA, O=Corp"                           certificate issued by this CA
//   "san dns:*.corp.example"                              certificate with a matching SAN
//   "san email:*@corp.example"
//
// `leases` (text list): where a peer's virtual IP comes from (`assign-address`),
// a rule of the forms above followed by what it gets:
//   "alice@example.com 10.3.0.7"             exactly this address
//   "issuer CN=Staff CA, O=Corp pool staff"  any address of pool `staff`
//   "san dns:*.guest.example none"           no address (refused)
// Per family asked for, the first matching entry of that family (or `none`)
// decides; a pool the connection lacks gives nothing; no entry: the host decides.
//
// Build: node build.mjs OUT.wasm (scripts/build-plugins.sh does it).

const NAME = "allowlist-js";
const VERSION = "1.2.0";
const KNOWN = ["peers", "leases"];

// --- addresses -----------------------------------------------------------------

// WIT ip-address -> { v4: bool, n: BigInt }
function key(a) {
  let n = 0n;
  if (a.tag === "ipv4") {
    for (const o of a.val) n = (n << 8n) | BigInt(o);
    return { v4: true, n };
  }
  for (const s of a.val) n = (n << 16n) | BigInt(s);
  return { v4: false, n };
}

function formatIp(a) {
  if (a.tag === "ipv4") return a.val.join(".");
  const segs = Array.from(a.val);
  // IPv4-mapped / compatible forms, as Rust's std prints them.
  if (segs.slice(0, 5).every((s) => s === 0) && segs[5] === 0xffff) {
    return `::ffff:${segs[6] >> 8}.${segs[6] & 255}.${segs[7] >> 8}.${segs[7] & 255}`;
  }
  // RFC 5952: compress the longest run (>= 2) of zero groups, leftmost first.
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (segs[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && segs[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = (xs) => xs.map((s) => s.toString(16)).join(":");
  if (best < 0) return hex(segs);
  return `${hex(segs.slice(0, best))}::${hex(segs.slice(best + bestLen))}`;
}

function parseIpv4(s) {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  let n = 0n;
  for (const p of parts) {
    if (!/^[0-9]{1,3}$/.test(p) || (p.length > 1 && p[0] === "0") || Number(p) > 255) return null;
    n = (n << 8n) | BigInt(Number(p));
  }
  return n;
}

function parseIpv6(s) {
  let tail4 = null;
  const lastColon = s.lastIndexOf(":");
  if (s.includes(".")) {
    tail4 = parseIpv4(s.slice(lastColon + 1));
    if (tail4 === null) return null;
    s = s.slice(0, lastColon + 1) + "0:0";
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const grp = (h) => (h === "" ? [] : h.split(":"));
  const head = grp(halves[0]);
  const tail = halves.length === 2 ? grp(halves[1]) : [];
  const total = head.length + tail.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return null;
  const groups = [...head, ...Array(8 - total).fill("0"), ...tail];
  let n = 0n;
  for (const g of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    n = (n << 16n) | BigInt(parseInt(g, 16));
  }
  if (tail4 !== null) n = (n & ~0xffffffffn) | tail4;
  return n;
}

function parseCidr(text) {
  const s = text.trim();
  let a = s, p = null;
  const slash = s.indexOf("/");
  if (slash >= 0) { a = s.slice(0, slash).trim(); p = s.slice(slash + 1).trim(); }
  let v4 = true;
  let n = parseIpv4(a);
  if (n === null) { v4 = false; n = parseIpv6(a); }
  if (n === null) return null;
  const bits = v4 ? 32 : 128;
  let prefix = bits;
  if (p !== null) {
    if (!/^[0-9]+$/.test(p) || Number(p) > bits) return null;
    prefix = Number(p);
  }
  const all = (1n << BigInt(bits)) - 1n;
  const mask = all ^ ((1n << BigInt(bits - prefix)) - 1n);
  return { v4, mask, first: n & mask };
}

function cidrContains(c, addr) {
  const k = key(addr);
  return k.v4 === c.v4 && (k.n & c.mask) === c.first;
}

// --- settings --------------------------------------------------------------------

function typeName(v) {
  return { text: "text", integer: "integer", boolean: "boolean", "text-list": "text list" }[v.tag];
}

const SAN_TYPES = ["dns", "email", "ip", "uri", "dn"];

function lowerAscii(s) {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

// ASCII lowercase, RDNs split at unescaped commas, trimmed of spaces, joined with ",".
function normDn(dn) {
  const parts = [];
  let cur = "";
  for (let i = 0; i < dn.length; i++) {
    const c = dn[i];
    if (c === "\\") {
      cur += dn.slice(i, i + 2);
      i++;
    } else if (c === ",") {
      parts.push(cur);
      cur = "";
    } else {
      cur += c;
    }
  }
  parts.push(cur);
  return parts.map((p) => lowerAscii(p.replace(/^ +| +$/g, ""))).join(",");
}

function parseRule(key, raw, text) {
  if (text.startsWith("issuer ")) {
    const dn = text.slice("issuer ".length).trim();
    if (dn === "") throw `${key} entry '${raw}': empty issuer`;
    return { kind: "issuer", value: normDn(dn) };
  }
  if (text.startsWith("san ")) {
    const pat = text.slice("san ".length).trim();
    const colon = pat.indexOf(":");
    if (colon < 0) throw `${key} entry '${raw}': subjectAltName '${pat}' is not TYPE:VALUE`;
    const sanType = lowerAscii(pat.slice(0, colon));
    let value = pat.slice(colon + 1);
    if (!SAN_TYPES.includes(sanType)) {
      throw `${key} entry '${raw}': unknown subjectAltName type '${sanType}' (known: ${SAN_TYPES.join(", ")})`;
    }
    if (value === "") throw `${key} entry '${raw}': empty subjectAltName`;
    const wildOk = (sanType === "dns" && value.startsWith("*.")) || (sanType === "email" && value.startsWith("*@"));
    if (value.slice(wildOk ? 1 : 0).includes("*")) {
      throw `${key} entry '${raw}': '*' only as a leading DNS label (dns:*.example) or e-mail local part (email:*@example)`;
    }
    if (sanType === "dn") value = normDn(value);
    return { kind: "san", sanType, value };
  }
  return { kind: "id", value: text };
}

function parseEntry(raw) {
  const i = raw.lastIndexOf(" from ");
  let ident = raw, cidrs = null;
  if (i >= 0) { ident = raw.slice(0, i); cidrs = raw.slice(i + 6); }
  ident = ident.trim();
  if (ident === "") throw `peers entry '${raw}': empty identity`;
  const rule = parseRule("peers", raw, ident);
  const sources = [];
  if (cidrs !== null) {
    for (let c of cidrs.split(",")) {
      c = c.trim();
      if (c === "") continue;
      const parsed = parseCidr(c);
      if (parsed === null) throw `peers entry '${raw}': bad CIDR '${c}'`;
      sources.push({ text: c, cidr: parsed });
    }
    if (sources.length === 0) throw `peers entry '${raw}': no CIDR after 'from'`;
  }
  return { rule, sources };
}

// An IPv4 or IPv6 address -> WIT ip-address, or null.
function parseAddress(text) {
  const n4 = parseIpv4(text);
  if (n4 !== null) {
    return { tag: "ipv4", val: [0, 1, 2, 3].map((i) => Number((n4 >> BigInt(8 * (3 - i))) & 0xffn)) };
  }
  const n6 = parseIpv6(text);
  if (n6 === null) return null;
  return { tag: "ipv6", val: [0, 1, 2, 3, 4, 5, 6, 7].map((i) => Number((n6 >> BigInt(16 * (7 - i))) & 0xffffn)) };
}

// `RULE ADDRESS`, `RULE pool NAME` or `RULE none`.
function parseLease(raw) {
  const usage = "expected RULE ADDRESS, RULE pool NAME or RULE none";
  const text = raw.trim();
  const i = text.lastIndexOf(" ");
  if (i < 0) throw `leases entry '${raw}': ${usage}`;
  const head = text.slice(0, i), last = text.slice(i + 1);
  let ruleText, gives;
  if (last === "none") {
    ruleText = head;
    gives = { kind: "none" };
  } else if (head.endsWith(" pool")) {
    ruleText = head.slice(0, head.length - " pool".length);
    gives = { kind: "pool", name: last };
  } else if (head === "pool") {
    throw `leases entry '${raw}': no rule before 'pool'`;
  } else {
    const addr = parseAddress(last);
    if (addr === null) throw `leases entry '${raw}': '${last}' is not an address (${usage})`;
    ruleText = head;
    gives = { kind: "address", addr };
  }
  ruleText = ruleText.trim();
  if (ruleText === "") throw `leases entry '${raw}': ${usage}`;
  return { raw, rule: parseRule("leases", raw, ruleText), gives };
}

function textList(settings, key) {
  let value = null;
  for (const s of settings) if (s.key === key) value = s.value; // the last one wins
  if (value === null) return [];
  if (value.tag === "text-list") return value.val;
  if (value.tag === "text") return [value.val];
  throw `setting '${key}' must be a text list, not a ${typeName(value)}`;
}

function configureFrom(settings) {
  for (const s of settings) {
    if (!KNOWN.includes(s.key)) throw `unknown setting '${s.key}' (known: ${KNOWN.join(", ")})`;
  }
  const entries = textList(settings, "peers").map(parseEntry);
  const leases = textList(settings, "leases").map(parseLease);
  return { entries, leases };
}

let config = null;

function state() {
  if (config === null) {
    try {
      config = configureFrom([]);
    } catch (e) {
      throw { reason: `${NAME} is not configured: ${e}` };
    }
  }
  return config;
}

// --- selectors -------------------------------------------------------------------

function intersect(a, b) {
  const as = key(a.startAddress), ae = key(a.endAddress);
  const bs = key(b.startAddress), be = key(b.endAddress);
  if (as.v4 !== ae.v4 || bs.v4 !== be.v4 || as.v4 !== bs.v4) return null;
  let proto;
  if (a.ipProtocol === 0) proto = b.ipProtocol;
  else if (b.ipProtocol === 0 || a.ipProtocol === b.ipProtocol) proto = a.ipProtocol;
  else return null;
  const sp = Math.max(a.startPort, b.startPort), ep = Math.min(a.endPort, b.endPort);
  if (sp > ep) return null;
  const [start, startK] = as.n >= bs.n ? [a.startAddress, as.n] : [b.startAddress, bs.n];
  const [end, endK] = ae.n <= be.n ? [a.endAddress, ae.n] : [b.endAddress, be.n];
  if (startK > endK) return null;
  return { ipProtocol: proto, startPort: sp, endPort: ep, startAddress: start, endAddress: end };
}

function same(x, y) {
  return x.ipProtocol === y.ipProtocol && x.startPort === y.startPort && x.endPort === y.endPort &&
    key(x.startAddress).n === key(y.startAddress).n && key(x.startAddress).v4 === key(y.startAddress).v4 &&
    key(x.endAddress).n === key(y.endAddress).n && key(x.endAddress).v4 === key(y.endAddress).v4;
}

function intersectLists(proposed, allowed) {
  const out = [];
  for (const p of proposed) {
    for (const a of allowed) {
      const i = intersect(p, a);
      if (i !== null && !out.some((o) => same(o, i))) out.push(i);
    }
  }
  return out;
}

function idMatches(entry, ident) {
  if (ident.kind === "fqdn" || ident.kind === "rfc822-addr") return lowerAscii(entry) === lowerAscii(ident.value);
  return entry === ident.value;
}

function endsWithCi(value, suffix) {
  return value.length > suffix.length && lowerAscii(value).endsWith(lowerAscii(suffix));
}

function sanMatches(sanType, pattern, san) {
  const colon = san.indexOf(":");
  if (colon < 0 || san.slice(0, colon) !== sanType) return false;
  const v = san.slice(colon + 1);
  if (sanType === "dns" || sanType === "email") {
    if (pattern.startsWith("*")) {
      const suffix = pattern.slice(1);
      if (!endsWithCi(v, suffix)) return false;
      return sanType === "dns" || !v.slice(0, v.length - suffix.length).includes("@");
    }
    return lowerAscii(v) === lowerAscii(pattern);
  }
  if (sanType === "ip") return lowerAscii(v) === lowerAscii(pattern);
  if (sanType === "dn") return normDn(v) === pattern;
  return v === pattern;
}

function sansOf(auth) {
  return auth.subjectAltNames ? Array.from(auth.subjectAltNames) : [];
}

function ruleMatches(rule, auth) {
  if (rule.kind === "id") return idMatches(rule.value, auth.peerIdentity);
  if (rule.kind === "issuer") return auth.certificateIssuer != null && normDn(auth.certificateIssuer) === rule.value;
  return sansOf(auth).some((s) => sanMatches(rule.sanType, rule.value, s));
}

// --- the exported interface -------------------------------------------------------

export const decisions = {
  info() {
    return { name: NAME, version: VERSION };
  },

  configure(settings) {
    config = configureFrom(settings);
  },

  selectProposal(ctx, kind, offered, configured) {
    state();
    if (offered.length === 0) throw { reason: "no proposal offered" };
    // The first offered proposal; the host picks its transforms.
    return { proposal: 0, transforms: [] };
  },

  orderProposals(ctx, kind, configured) {
    try {
      state();
    } catch (e) {
      return [];
    }
    return configured.map((_, i) => i);
  },

  authorize(ctx, auth) {
    const ident = auth.peerIdentity;
    const all = state().entries;
    const mine = all.filter((e) => ruleMatches(e.rule, auth));
    if (mine.length === 0) {
      let detail = "";
      if (all.some((e) => e.rule.kind !== "id")) {
        const sans = sansOf(auth);
        if (auth.certificateIssuer == null && sans.length === 0) {
          detail = " (no certificate)";
        } else {
          const issuer = auth.certificateIssuer != null ? auth.certificateIssuer : "";
          detail = ` (certificate issuer '${issuer}', subjectAltNames: ${sans.length > 0 ? sans.join(", ") : "none"})`;
        }
      }
      throw { reason: `identity '${ident.value}' is not on the allow-list${detail}` };
    }
    if (mine.some((e) => e.sources.length === 0 || e.sources.some((s) => cidrContains(s.cidr, ctx.remoteAddress)))) {
      return;
    }
    const allowed = mine.flatMap((e) => e.sources.map((s) => s.text)).join(", ");
    throw { reason: `identity '${ident.value}' is not allowed from ${formatIp(ctx.remoteAddress)} (allowed: ${allowed})` };
  },

  narrowSelectors(ctx, request) {
    state();
    const remote = intersectLists(request.remoteProposed, request.remoteConfigured);
    if (remote.length === 0) throw { reason: "remote selectors do not overlap the configured ranges" };
    const local = intersectLists(request.localProposed, request.localConfigured);
    if (local.length === 0) throw { reason: "local selectors do not overlap the configured ranges" };
    return { remote, local };
  },

  assignAddress(ctx, request) {
    const leases = state().leases;
    const picks = [];
    for (const wanted of request.requested) {
      const decides = (l) => {
        if (l.gives.kind === "address") return (l.gives.addr.tag === "ipv4" ? "ipv4" : "ipv6") === wanted.family;
        if (l.gives.kind === "pool") return request.pools.some((p) => p.name === l.gives.name && p.family === wanted.family);
        return true;
      };
      const lease = leases.find((l) => ruleMatches(l.rule, request.auth) && decides(l));
      if (lease === undefined) continue;
      if (lease.gives.kind === "address") picks.push({ tag: "address", val: lease.gives.addr });
      else if (lease.gives.kind === "pool") picks.push({ tag: "pool", val: lease.gives.name });
      else throw { reason: `identity '${request.auth.peerIdentity.value}' gets no address (leases entry '${lease.raw}')` };
    }
    return { picks };
  },
};
