//! The gateway's side of the policy: the plugin slot (swappable on reload), the
//! live-SA view plugins may query, and the `[plugin]` config conversion.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use wisp_policy::{PluginConfig, PolicySlot, Setting, SettingValue, SwapListener};
use wisp_policy_api::{
    AddressChoice, AddressRequest, AuthInfo, Identity, PeerContext, Policy, PolicyError, Proposal, ProposalChoice, SaCounts, SaKind,
    SaView, SelectorPair, SelectorRequest,
};

use crate::config::Config;
use crate::status::PluginStatus;

/// Live SA counts per connection, published by the engine drivers; read by
/// plugins through the `sa-counts` import.
#[derive(Default)]
pub struct SaRegistry {
    /// connection → counts per remote identity.
    by_conn: Mutex<HashMap<String, HashMap<Identity, SaCounts>>>,
}

impl SaRegistry {
    pub fn publish(&self, conn: &str, sas: HashMap<Identity, SaCounts>) {
        if let Ok(mut m) = self.by_conn.lock() {
            m.insert(conn.to_string(), sas);
        }
    }
}

impl SaView for SaRegistry {
    fn sa_counts(&self, peer: &Identity) -> SaCounts {
        let mut c = SaCounts::default();
        if let Ok(m) = self.by_conn.lock() {
            for n in m.values().filter_map(|per_id| per_id.get(peer)) {
                c.ike_sas += n.ike_sas;
                c.child_sas += n.child_sas;
            }
        }
        c
    }
}

/// Convert `[plugin.settings]` (validated by the config loader).
pub fn settings(cfg: &Config) -> Vec<Setting> {
    cfg.plugin
        .settings
        .iter()
        .filter_map(|(k, v)| {
            let value = match v {
                toml::Value::String(s) => SettingValue::Text(s.clone()),
                toml::Value::Integer(i) => SettingValue::Integer(*i),
                toml::Value::Boolean(b) => SettingValue::Boolean(*b),
                toml::Value::Array(a) => SettingValue::TextList(a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()),
                _ => return None,
            };
            Some(Setting::new(k.clone(), value))
        })
        .collect()
}

pub fn plugin_config(cfg: &Config, view: Arc<dyn SaView>) -> PluginConfig {
    let mut pc = PluginConfig { settings: settings(cfg), sa_view: view, ..Default::default() };
    if let Some(d) = cfg.plugin.deadline {
        pc.limits.deadline = d.0;
    }
    if let Some(m) = cfg.plugin.memory {
        pc.limits.memory = m.0 as usize;
    }
    if let Some(m) = cfg.plugin.max_size {
        pc.limits.max_size = m.0;
    }
    pc
}

/// The policy the engines call: the current slot, replaceable when a reload
/// points `[plugin] path` elsewhere. Decisions already running keep the slot
/// (and plugin version) they started with.
pub struct SwitchPolicy {
    slot: RwLock<Arc<PolicySlot>>,
    path: RwLock<PathBuf>,
    /// Told about every swap of the slot in charge (and of a new slot).
    listener: Mutex<Option<SwapListener>>,
}

impl SwitchPolicy {
    /// Load the configured plugin and watch its file for hot reload.
    pub fn open(cfg: &Config, view: Arc<dyn SaView>) -> anyhow::Result<SwitchPolicy> {
        let path = cfg.plugin_path();
        let slot =
            PolicySlot::open_watched(&path, plugin_config(cfg, view)).map_err(|e| anyhow::anyhow!("plugin {}: {e}", path.display()))?;
        Ok(SwitchPolicy { slot: RwLock::new(Arc::new(slot)), path: RwLock::new(path), listener: Mutex::new(None) })
    }

    /// Call `f` whenever another plugin version takes charge: the watcher saw
    /// the file change, a reload re-read it or applied new settings, or a
    /// reload opened another file.
    pub fn on_swap(&self, f: SwapListener) {
        self.current().on_swap(f.clone());
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    pub fn current(&self) -> Arc<PolicySlot> {
        self.slot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Apply a reloaded config: a new path opens a new slot (the old one stays in
    /// charge if that fails); the same path re-reads the file and applies
    /// changed settings.
    pub fn reload(&self, cfg: &Config, view: Arc<dyn SaView>) -> Result<String, String> {
        let path = cfg.plugin_path();
        let same = *self.path.read().unwrap_or_else(|p| p.into_inner()) == path;
        if !same {
            let slot = PolicySlot::open_watched(&path, plugin_config(cfg, view))
                .map_err(|e| format!("plugin {}: {e} (previous plugin stays in charge)", path.display()))?;
            let listener = self.listener.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(f) = &listener {
                slot.on_swap(f.clone());
            }
            let label = slot.current().label().clone();
            *self.slot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(slot);
            *self.path.write().unwrap_or_else(|p| p.into_inner()) = path.clone();
            if let Some(f) = listener {
                f(&label);
            }
            return Ok(format!("plugin {} loaded", path.display()));
        }
        let slot = self.current();
        let mut msg = match slot.reload() {
            Ok(wisp_policy::ReloadOutcome::Unchanged) => "plugin unchanged".to_string(),
            Ok(wisp_policy::ReloadOutcome::Loaded(n)) => format!("plugin reloaded (load #{n})"),
            Err(e) => return Err(format!("plugin {}: {e} (previous version stays in charge)", path.display())),
        };
        let new_settings = settings(cfg);
        let cur = slot.current();
        if cur.config().settings != new_settings {
            match slot.set_settings(new_settings) {
                Ok(n) => msg = format!("{msg}; settings applied (load #{n})"),
                Err(e) => return Err(format!("plugin settings: {e} (previous settings stay in charge)")),
            }
        }
        Ok(msg)
    }

    pub fn status(&self) -> PluginStatus {
        let s = self.current().status();
        PluginStatus {
            path: s.path.display().to_string(),
            name: s.name,
            version: s.version,
            load_number: s.number,
            sha256: s.sha256,
            last_error: s.last_error.map(|f| f.error.to_string()),
            decisions: Default::default(),
        }
    }
}

impl Policy for SwitchPolicy {
    fn describe(&self) -> String {
        self.current().describe()
    }
    fn select_proposal(
        &self,
        ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, PolicyError> {
        self.current().select_proposal(ctx, kind, offered, configured)
    }
    fn order_proposals(&self, ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        self.current().order_proposals(ctx, kind, configured)
    }
    fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), PolicyError> {
        self.current().authorize(ctx, auth)
    }
    fn narrow_selectors(&self, ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
        self.current().narrow_selectors(ctx, request)
    }
    fn assign_address(&self, ctx: &PeerContext, request: &AddressRequest) -> Result<AddressChoice, PolicyError> {
        self.current().assign_address(ctx, request)
    }
}
