//! Example: per-identity tenant subnets (traffic-selector narrowing).
//!
//! Settings: `tenants` (text list), one entry per identity:
//!
//! ```toml
//! [plugin.settings]
//! tenants = ["alice@example.com => 10.1.0.0/24, fd01::/64",
//!            "bob@example.com => 10.2.0.0/24"]
//! ```
//!
//! `authorize` allows only identities with an entry. `narrow-selectors` limits
//! the remote side (the peer's networks) to proposed ∩ configured ∩ the
//! identity's tenant subnets, and the local side to proposed ∩ configured; an
//! empty side is TS_UNACCEPTABLE.

use wisp_plugin_sdk::*;

struct Tenant {
    id: String,
    subnets: Vec<TrafficSelector>,
}

struct TenantSubnets {
    tenants: Vec<Tenant>,
}

impl TenantSubnets {
    fn find(&self, id: &Identity) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.id == id.value)
    }
}

impl Policy for TenantSubnets {
    const NAME: &'static str = "tenant-subnets";
    const VERSION: &'static str = "1.0.0";

    fn configure(s: &Settings) -> Result<Self, String> {
        s.reject_unknown(&["tenants"])?;
        let mut tenants = Vec::new();
        for raw in s.text_list("tenants")?.unwrap_or_default() {
            let (id, nets) = raw
                .rsplit_once("=>")
                .ok_or_else(|| format!("tenants entry '{raw}': expected 'IDENTITY => CIDR, CIDR'"))?;
            let id = id.trim();
            let subnets = nets
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| Cidr::parse(c).map(|c| c.selector()).map_err(|e| format!("tenants entry '{raw}': {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            if id.is_empty() || subnets.is_empty() {
                return Err(format!("tenants entry '{raw}': needs an identity and at least one subnet"));
            }
            if tenants.iter().any(|t: &Tenant| t.id == id) {
                return Err(format!("tenants: identity '{id}' listed twice"));
            }
            tenants.push(Tenant { id: id.to_string(), subnets });
        }
        Ok(TenantSubnets { tenants })
    }

    fn authorize(&self, _ctx: &PeerContext, auth: &AuthInfo) -> Result<(), Refusal> {
        match self.find(&auth.peer_identity) {
            Some(_) => Ok(()),
            None => Err(refuse(format!("identity '{}' has no tenant entry", auth.peer_identity.value))),
        }
    }

    fn narrow_selectors(&self, ctx: &PeerContext, req: &SelectorRequest) -> Result<SelectorPair, Refusal> {
        let id = ctx
            .peer_identity
            .as_ref()
            .ok_or_else(|| refuse("no authenticated peer identity; tenant subnets need one"))?;
        let tenant = self.find(id).ok_or_else(|| refuse(format!("identity '{}' has no tenant entry", id.value)))?;
        let allowed = ts::intersect_lists(&req.remote_configured, &tenant.subnets);
        if allowed.is_empty() {
            return Err(refuse(format!(
                "tenant subnets of '{}' {} lie outside the configured remote ranges {}",
                id.value,
                ts::format_list(&tenant.subnets),
                ts::format_list(&req.remote_configured)
            )));
        }
        let remote = ts::narrow_side("remote", &req.remote_proposed, &allowed, &format!("tenant '{}'", id.value))?;
        let local = ts::narrow_side("local", &req.local_proposed, &req.local_configured, "configured")?;
        host::debug(&format!("tenant '{}' narrowed to {}", id.value, ts::format_list(&remote)));
        Ok(SelectorPair { remote, local })
    }
}

export_policy!(TenantSubnets);
