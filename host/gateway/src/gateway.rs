//! The gateway proper: connections, their engine drivers, the policy slot and
//! the dataplane, behind the operations the control socket offers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::status::{ConnectionStatus, PluginStatus, Status};

/// Cloneable handle to the running gateway.
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: Mutex<Config>,
    conns: Mutex<BTreeMap<String, ConnectionStatus>>,
    plugin: Mutex<PluginStatus>,
}

fn conn_status(name: &str, c: &crate::config::Connection) -> ConnectionStatus {
    ConnectionStatus {
        name: name.to_string(),
        local_addrs: c.local_addrs.iter().map(|a| a.to_string()).collect(),
        remote_addrs: c.remote_addrs.iter().map(|a| a.to_string()).collect(),
        local_id: c.local_id().unwrap_or_default(),
        remote_id: c.remote_id().unwrap_or_default(),
        state: "idle".into(),
        last_error: None,
        ike_sas: Vec::new(),
    }
}

impl Gateway {
    pub async fn start(cfg: Config) -> anyhow::Result<Gateway> {
        let conns = cfg.connections.iter().map(|(n, c)| (n.clone(), conn_status(n, c))).collect();
        let plugin = PluginStatus { path: cfg.plugin_path().display().to_string(), ..Default::default() };
        Ok(Gateway {
            inner: Arc::new(Inner { config: Mutex::new(cfg), conns: Mutex::new(conns), plugin: Mutex::new(plugin) }),
        })
    }

    fn known(&self, name: &str) -> Result<(), String> {
        let cfg = self.inner.config.lock().unwrap_or_else(|p| p.into_inner());
        if cfg.connections.contains_key(name) {
            Ok(())
        } else {
            Err(format!("no connection named `{name}` (known: {})", cfg.connections.keys().cloned().collect::<Vec<_>>().join(", ")))
        }
    }

    pub async fn up(&self, name: &str, _timeout: Duration) -> Result<String, String> {
        self.known(name)?;
        Err(format!("connection `{name}`: the IKE engine is not linked into this build yet"))
    }

    pub async fn down(&self, name: &str) -> Result<String, String> {
        self.known(name)?;
        Err(format!("connection `{name}`: the IKE engine is not linked into this build yet"))
    }

    pub async fn rekey(&self, name: &str, _ike: bool, _child: Option<&str>) -> Result<String, String> {
        self.known(name)?;
        Err(format!("connection `{name}`: the IKE engine is not linked into this build yet"))
    }

    pub fn status(&self) -> Status {
        Status {
            plugin: self.inner.plugin.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            connections: self.inner.conns.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect(),
            ..Default::default()
        }
    }

    /// Apply a new config (already parsed). Runs on a blocking thread.
    pub fn reload(&self, cfg: Config) -> Result<String, String> {
        let mut conns = self.inner.conns.lock().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::take(&mut *conns);
        for (n, c) in &cfg.connections {
            let mut st = conn_status(n, c);
            if let Some(o) = old.get(n) {
                st.state = o.state.clone();
                st.ike_sas = o.ike_sas.clone();
                st.last_error = o.last_error.clone();
            }
            conns.insert(n.clone(), st);
        }
        let n = cfg.connections.len();
        *self.inner.config.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
        Ok(format!("reloaded: {n} connection(s)"))
    }

    pub async fn shutdown(&self) {}
}
