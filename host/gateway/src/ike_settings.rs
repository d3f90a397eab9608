//! `[ike]`: daemon-wide IKE settings, the DoS defence of IKE_SA_INIT
//! (RFC 7296 2.6, RFC 8019). Names follow strongSwan's `charon.*` options
//! where one exists (`cookie_threshold`, `block_threshold`,
//! `init_limit_half_open`).
//!
//! ```toml
//! [ike]
//! cookie_threshold = 10          # half-open IKE SAs (all connections) that turn cookies on
//! cookie_rate_threshold = 100    # IKE_SA_INIT attempts per second that turn cookies on
//! block_threshold = 5            # most half-open IKE SAs per source address
//! init_limit_half_open = 1000    # most half-open IKE SAs in all
//! cookie_secret_lifetime = "2m"  # the cookie secret rotates this often ...
//! cookie_secret_uses = 100000    # ... or after this many cookies
//! cookie_grace = "10s"           # the previous secret's cookies are accepted this long
//! fragment_size = 1280           # largest IP datagram of an IKE message before it goes as
//!                                # RFC 7383 fragments (0: 576 for IPv4, 1280 for IPv6)
//! ```

use serde::Deserialize;
use wisp_ike::admission::AdmissionConfig;

use crate::config::Dur;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IkeSettings {
    pub cookie_threshold: Option<u32>,
    pub cookie_rate_threshold: Option<u32>,
    pub block_threshold: Option<u32>,
    pub init_limit_half_open: Option<u32>,
    pub cookie_secret_lifetime: Option<Dur>,
    pub cookie_secret_uses: Option<u64>,
    pub cookie_grace: Option<Dur>,
    /// strongSwan's `charon.fragment_size` (see [`wisp_ike::config::Config::fragment_size`]).
    pub fragment_size: Option<u32>,
}

impl IkeSettings {
    /// The admission thresholds, defaults filled in.
    pub fn admission(&self) -> AdmissionConfig {
        let d = AdmissionConfig::default();
        AdmissionConfig {
            cookie_threshold: self.cookie_threshold.unwrap_or(d.cookie_threshold),
            cookie_rate_threshold: self.cookie_rate_threshold.unwrap_or(d.cookie_rate_threshold),
            block_threshold: self.block_threshold.unwrap_or(d.block_threshold),
            init_limit_half_open: self.init_limit_half_open.unwrap_or(d.init_limit_half_open),
            cookie_secret_lifetime: self.cookie_secret_lifetime.map(|x| x.0).unwrap_or(d.cookie_secret_lifetime),
            cookie_secret_uses: self.cookie_secret_uses.unwrap_or(d.cookie_secret_uses),
            cookie_grace: self.cookie_grace.map(|x| x.0).unwrap_or(d.cookie_grace),
        }
    }

    /// `Err((field, message))` for a value out of bounds.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let a = self.admission();
        let bad = |f: &str, m: &str| Err((format!("ike.{f}"), m.to_string()));
        if !(1..=1_000_000).contains(&a.init_limit_half_open) {
            return bad("init_limit_half_open", "must be between 1 and 1000000");
        }
        if a.block_threshold == 0 || a.block_threshold > a.init_limit_half_open {
            return bad("block_threshold", "must be between 1 and init_limit_half_open");
        }
        if a.cookie_threshold > a.init_limit_half_open {
            return bad("cookie_threshold", "must not exceed init_limit_half_open (cookies must engage before the cap)");
        }
        if a.cookie_secret_lifetime < std::time::Duration::from_secs(1) || a.cookie_secret_lifetime > std::time::Duration::from_secs(86400)
        {
            return bad("cookie_secret_lifetime", "must be between 1s and 24h");
        }
        if a.cookie_secret_uses == 0 {
            return bad("cookie_secret_uses", "must be at least 1");
        }
        if a.cookie_grace > std::time::Duration::from_secs(3600) {
            return bad("cookie_grace", "must be at most 1h");
        }
        let min = wisp_ike::config::MIN_FRAGMENT_SIZE as u32;
        if self.fragment_size.is_some_and(|n| n != 0 && !(min..=65_535).contains(&n)) {
            return bad("fragment_size", &format!("must be 0 (per address family) or between {min} and 65535 bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    const BASE: &str = r#"
[connections.b]
remote_addrs = ["10.99.0.2"]
auth.psk = "0123456789abcdef"
[connections.b.children.net]
local_ts = ["10.98.1.0/24"]
remote_ts = ["10.98.2.0/24"]
"#;

    #[test]
    fn ike_section_defaults_and_overrides() {
        let cfg = crate::config::Config::parse(BASE, Path::new("t.toml")).unwrap();
        assert_eq!(cfg.ike.admission(), AdmissionConfig::default());
        let text =
            format!("[ike]\ncookie_threshold = 3\nblock_threshold = 2\ncookie_secret_lifetime = \"30s\"\ncookie_grace = \"5s\"\n{BASE}");
        let cfg = crate::config::Config::parse(&text, Path::new("t.toml")).unwrap();
        let a = cfg.ike.admission();
        assert_eq!((a.cookie_threshold, a.block_threshold), (3, 2));
        assert_eq!(a.cookie_secret_lifetime, Duration::from_secs(30));
        assert_eq!(a.cookie_grace, Duration::from_secs(5));
        assert_eq!(a.init_limit_half_open, AdmissionConfig::default().init_limit_half_open);
    }

    #[test]
    fn ike_section_out_of_bounds_names_the_field() {
        for (line, field) in [
            ("block_threshold = 0", "ike.block_threshold"),
            ("init_limit_half_open = 0", "ike.init_limit_half_open"),
            ("cookie_threshold = 5000", "ike.cookie_threshold"),
            ("cookie_secret_lifetime = \"0s\"", "ike.cookie_secret_lifetime"),
            ("cookie_secret_uses = 0", "ike.cookie_secret_uses"),
        ] {
            let text = format!("[ike]\n{line}\n{BASE}");
            let e = crate::config::Config::parse(&text, Path::new("t.toml")).unwrap_err();
            assert_eq!(e.field, field, "{line}: {e}");
            assert_eq!(e.line, 2, "{line}: {e}");
        }
    }
}
