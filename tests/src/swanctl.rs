//! `swanctl.conf` generation: connections, children, proposals, PSK secrets.
//!
//! swanctl.conf wants each `key = value` on its own line; [`SwanctlConf::render`]
//! writes it that way. Values are written verbatim (quote PSKs yourself is not
//! needed: secrets are quoted here).

use std::fmt::Write;

/// One Child SA configuration (`connections.<conn>.children.<name>`).
#[derive(Debug, Clone, Default)]
pub struct ChildConf {
    pub name: String,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    /// e.g. `aes256gcm16` or `aes256gcm16-x25519` (PFS).
    pub esp_proposals: Vec<String>,
    /// e.g. `10s`; `None` = charon default (1 h).
    pub rekey_time: Option<String>,
    pub life_time: Option<String>,
    /// e.g. `0` to make rekeying deterministic.
    pub rand_time: Option<String>,
    /// `none`, `trap`, `start`.
    pub start_action: Option<String>,
    /// `none`, `clear`, `trap`, `restart`.
    pub dpd_action: Option<String>,
    pub close_action: Option<String>,
    /// Further `key = value` lines.
    pub extra: Vec<(String, String)>,
}

impl ChildConf {
    pub fn new(name: &str, local_ts: &str, remote_ts: &str, esp: &str) -> ChildConf {
        ChildConf {
            name: name.into(),
            local_ts: vec![local_ts.into()],
            remote_ts: vec![remote_ts.into()],
            esp_proposals: vec![esp.into()],
            ..Default::default()
        }
    }
}

/// One connection (`connections.<name>`), PSK authentication.
#[derive(Debug, Clone, Default)]
pub struct Conn {
    pub name: String,
    pub local_addrs: Vec<String>,
    pub remote_addrs: Vec<String>,
    /// e.g. `aes256gcm16-prfsha256-x25519`.
    pub proposals: Vec<String>,
    pub local_id: String,
    pub remote_id: String,
    /// `encap = yes` (kernel-libipsec forces UDP encapsulation anyway).
    pub encap: bool,
    pub rekey_time: Option<String>,
    pub over_time: Option<String>,
    pub rand_time: Option<String>,
    pub reauth_time: Option<String>,
    pub dpd_delay: Option<String>,
    pub dpd_timeout: Option<String>,
    /// e.g. `no` to force a fresh IKE SA per initiation.
    pub unique: Option<String>,
    pub children: Vec<ChildConf>,
    pub extra: Vec<(String, String)>,
    /// `local.auth` / `remote.auth`; `None` = `psk`.
    pub local_auth: Option<String>,
    pub remote_auth: Option<String>,
    /// `local.certs` (absolute paths).
    pub local_certs: Vec<String>,
    /// `remote.cacerts` (absolute paths).
    pub remote_cacerts: Vec<String>,
    /// Further `key = value` lines in `local { }` / `remote { }`.
    pub local_extra: Vec<(String, String)>,
    pub remote_extra: Vec<(String, String)>,
}

impl Conn {
    /// A PSK connection with encap on and one child.
    pub fn psk(name: &str, local_addr: &str, remote_addr: &str, proposal: &str, local_id: &str, remote_id: &str, child: ChildConf) -> Conn {
        Conn {
            name: name.into(),
            local_addrs: vec![local_addr.into()],
            remote_addrs: vec![remote_addr.into()],
            proposals: vec![proposal.into()],
            local_id: local_id.into(),
            remote_id: remote_id.into(),
            encap: true,
            children: vec![child],
            ..Default::default()
        }
    }
}

/// An IKE pre-shared key shared by `ids`.
#[derive(Debug, Clone)]
pub struct PskSecret {
    pub name: String,
    pub ids: Vec<String>,
    pub secret: String,
}

/// A whole `swanctl.conf`.
#[derive(Debug, Clone, Default)]
pub struct SwanctlConf {
    pub conns: Vec<Conn>,
    pub secrets: Vec<PskSecret>,
    /// Private key files, copied into swanctl's `private/` directory beside
    /// the config (see `Charon::load`; swanctl loads keys from there).
    pub private_keys: Vec<String>,
    /// CRL files, copied into swanctl's `x509crl/` directory beside the
    /// config (see `Charon::load`).
    pub crls: Vec<String>,
    /// `pools { NAME { key = value ... } }`.
    pub pools: Vec<(String, Vec<(String, String)>)>,
    /// `secrets { eap-N { id = ID; secret = "..." } }`: (id, secret).
    pub eap_secrets: Vec<(String, String)>,
}

fn kv(out: &mut String, indent: usize, k: &str, v: &str) {
    let _ = writeln!(out, "{:indent$}{k} = {v}", "", indent = indent);
}

fn opt(out: &mut String, indent: usize, k: &str, v: &Option<String>) {
    if let Some(v) = v {
        kv(out, indent, k, v);
    }
}

fn list(out: &mut String, indent: usize, k: &str, v: &[String]) {
    if !v.is_empty() {
        kv(out, indent, k, &v.join(","));
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl SwanctlConf {
    pub fn render(&self) -> String {
        let mut o = String::new();
        o.push_str("connections {\n");
        for c in &self.conns {
            let _ = writeln!(o, "  {} {{", c.name);
            kv(&mut o, 4, "version", "2");
            list(&mut o, 4, "local_addrs", &c.local_addrs);
            list(&mut o, 4, "remote_addrs", &c.remote_addrs);
            list(&mut o, 4, "proposals", &c.proposals);
            if c.encap {
                kv(&mut o, 4, "encap", "yes");
            }
            opt(&mut o, 4, "rekey_time", &c.rekey_time);
            opt(&mut o, 4, "over_time", &c.over_time);
            opt(&mut o, 4, "rand_time", &c.rand_time);
            opt(&mut o, 4, "reauth_time", &c.reauth_time);
            opt(&mut o, 4, "dpd_delay", &c.dpd_delay);
            opt(&mut o, 4, "dpd_timeout", &c.dpd_timeout);
            opt(&mut o, 4, "unique", &c.unique);
            for (k, v) in &c.extra {
                kv(&mut o, 4, k, v);
            }
            o.push_str("    local {\n");
            kv(&mut o, 6, "auth", c.local_auth.as_deref().unwrap_or("psk"));
            kv(&mut o, 6, "id", &quote(&c.local_id));
            list(&mut o, 6, "certs", &c.local_certs);
            for (k, v) in &c.local_extra {
                kv(&mut o, 6, k, v);
            }
            o.push_str("    }\n    remote {\n");
            kv(&mut o, 6, "auth", c.remote_auth.as_deref().unwrap_or("psk"));
            kv(&mut o, 6, "id", &quote(&c.remote_id));
            list(&mut o, 6, "cacerts", &c.remote_cacerts);
            for (k, v) in &c.remote_extra {
                kv(&mut o, 6, k, v);
            }
            o.push_str("    }\n    children {\n");
            for ch in &c.children {
                let _ = writeln!(o, "      {} {{", ch.name);
                list(&mut o, 8, "local_ts", &ch.local_ts);
                list(&mut o, 8, "remote_ts", &ch.remote_ts);
                list(&mut o, 8, "esp_proposals", &ch.esp_proposals);
                opt(&mut o, 8, "rekey_time", &ch.rekey_time);
                opt(&mut o, 8, "life_time", &ch.life_time);
                opt(&mut o, 8, "rand_time", &ch.rand_time);
                opt(&mut o, 8, "start_action", &ch.start_action);
                opt(&mut o, 8, "dpd_action", &ch.dpd_action);
                opt(&mut o, 8, "close_action", &ch.close_action);
                for (k, v) in &ch.extra {
                    kv(&mut o, 8, k, v);
                }
                o.push_str("      }\n");
            }
            o.push_str("    }\n  }\n");
        }
        o.push_str("}\n");
        if !self.pools.is_empty() {
            o.push_str("pools {\n");
            for (name, kvs) in &self.pools {
                let _ = writeln!(o, "  {name} {{");
                for (k, v) in kvs {
                    kv(&mut o, 4, k, v);
                }
                o.push_str("  }\n");
            }
            o.push_str("}\n");
        }
        o.push_str("secrets {\n");
        for s in &self.secrets {
            let _ = writeln!(o, "  ike-{} {{", s.name);
            for (i, id) in s.ids.iter().enumerate() {
                kv(&mut o, 4, &format!("id-{}", i + 1), id);
            }
            kv(&mut o, 4, "secret", &quote(&s.secret));
            o.push_str("  }\n");
        }
        for (i, (id, secret)) in self.eap_secrets.iter().enumerate() {
            let _ = writeln!(o, "  eap-{i} {{");
            kv(&mut o, 4, "id", &quote(id));
            kv(&mut o, 4, "secret", &quote(secret));
            o.push_str("  }\n");
        }

        o.push_str("}\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_key_per_line_with_quoted_secret() {
        let mut child = ChildConf::new("net", "10.2.0.1/32", "10.1.0.1/32", "aes256gcm16");
        child.rekey_time = Some("5s".into());
        let conf = SwanctlConf {
            conns: vec![Conn::psk("gw", "10.99.0.2", "10.99.0.1", "aes256gcm16-prfsha256-x25519", "right", "left", child)],
            secrets: vec![PskSecret { name: "1".into(), ids: vec!["left".into(), "right".into()], secret: "a \"q\"".into() }],
            ..Default::default()
        };
        let s = conf.render();
        assert!(s.contains("\n    proposals = aes256gcm16-prfsha256-x25519\n"), "{s}");
        assert!(s.contains("\n        rekey_time = 5s\n"), "{s}");
        assert!(s.contains("\n    encap = yes\n"), "{s}");
        assert!(s.contains("secret = \"a \\\"q\\\"\""), "{s}");
        assert!(s.contains("id-2 = right"), "{s}");
        // balanced braces
        assert_eq!(s.matches('{').count(), s.matches('}').count());
    }
}
