//! Hot reload: a [`PolicySlot`] holds the plugin version in charge, watches the
//! plugin file's directory and swaps in new versions atomically.
//!
//! * Editors and build tools write a temp file and rename it over the plugin:
//!   the watcher follows the directory, reacts to any event naming the file,
//!   and waits for a quiet period ([`DEBOUNCE`]) before reloading.
//! * Content whose sha256 equals the version in charge (or the last failed
//!   attempt) is ignored.
//! * Compilation and validation happen on the watcher's thread; decisions keep
//!   using the current version meanwhile and take the new one only after the
//!   swap (`arc-swap`). A decision that started on a version finishes on it
//!   (it holds an `Arc` to it).
//! * A version that fails to load leaves the previous one in charge; the error
//!   is kept for [`PolicySlot::status`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use wisp_policy_api::{
    AddressChoice, AddressRequest, AuthInfo, PeerContext, Policy, PolicyError, Proposal, ProposalChoice, SaKind, SelectorPair,
    SelectorRequest,
};

use crate::convert::Setting;
use crate::error::LoadError;
use crate::plugin::{LoadedPlugin, PluginConfig};
use crate::runtime::sha256_hex;

/// Quiet period after the last file event before a reload starts.
pub const DEBOUNCE: Duration = Duration::from_millis(20);

/// A failed load attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    pub at: SystemTime,
    /// sha256 of the content that failed (none when the file could not be read).
    pub sha256: Option<String>,
    pub error: LoadError,
}

/// What `wisp status` shows about the plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    /// Load number of the version in charge (1 = first load).
    pub number: u64,
    pub sha256: String,
    pub loaded_at: SystemTime,
    /// Time the version in charge took to compile/validate/configure.
    pub load_time: Duration,
    /// Whether the directory is being watched.
    pub watching: bool,
    /// The most recent failed attempt since the version in charge was loaded.
    pub last_error: Option<LoadFailure>,
}

/// Called with the new version's label after every swap (file reload seen by
/// the watcher, explicit reload, new settings), on the thread that loaded it.
/// The gateway re-checks live SAs from here.
pub type SwapListener = Arc<dyn Fn(&crate::PluginLabel) + Send + Sync>;

/// Result of an explicit [`PolicySlot::reload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The file's content equals the version in charge.
    Unchanged,
    /// A new version is in charge, with this load number.
    Loaded(u64),
}

struct Inner {
    path: PathBuf,
    current: ArcSwap<LoadedPlugin>,
    config: Mutex<PluginConfig>,
    last_number: AtomicU64,
    last_error: Mutex<Option<LoadFailure>>,
    /// Serializes loads (watcher, explicit reloads, settings changes).
    load_lock: Mutex<()>,
    listeners: Mutex<Vec<SwapListener>>,
}

/// The plugin in charge for one gateway, hot-reloadable. Implements [`Policy`].
pub struct PolicySlot {
    inner: Arc<Inner>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl std::fmt::Debug for PolicySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySlot").field("status", &self.status()).finish()
    }
}

impl PolicySlot {
    /// Loads `path` (it must load: there is no previous version to fall back
    /// to). Does not watch; see [`PolicySlot::watch`] / [`PolicySlot::open_watched`].
    pub fn open(path: impl AsRef<Path>, config: PluginConfig) -> Result<Self, LoadError> {
        let path = absolute(path.as_ref());
        let first = LoadedPlugin::load_file(&path, &config, 1)?;
        Ok(PolicySlot {
            inner: Arc::new(Inner {
                path,
                current: ArcSwap::new(first),
                config: Mutex::new(config),
                last_number: AtomicU64::new(1),
                last_error: Mutex::new(None),
                load_lock: Mutex::new(()),
                listeners: Mutex::new(Vec::new()),
            }),
            watcher: Mutex::new(None),
        })
    }

    /// [`open`](Self::open) + [`watch`](Self::watch).
    pub fn open_watched(path: impl AsRef<Path>, config: PluginConfig) -> Result<Self, LoadError> {
        let slot = Self::open(path, config)?;
        slot.watch()?;
        Ok(slot)
    }

    /// Starts watching the plugin's directory; idempotent.
    pub fn watch(&self) -> Result<(), LoadError> {
        let mut w = self.watcher.lock().map_err(|_| host_err("watcher lock poisoned"))?;
        if w.is_some() {
            return Ok(());
        }
        let dir = self.inner.path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        let file_name = self.inner.path.file_name().map(|n| n.to_os_string());
        let (tx, rx) = mpsc::channel::<()>();
        let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            let relevant = match &ev {
                Ok(ev) => ev.paths.is_empty() || ev.paths.iter().any(|p| p.file_name().map(|n| n.to_os_string()) == file_name),
                Err(_) => true,
            };
            if relevant && !matches!(ev, Ok(notify::Event { kind: notify::EventKind::Access(_), .. })) {
                let _ = tx.send(());
            }
        })
        .map_err(|e| host_err(&format!("cannot watch {}: {e}", dir.display())))?;
        watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(|e| host_err(&format!("cannot watch {}: {e}", dir.display())))?;
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("wisp-policy-reload".into())
            .spawn(move || reload_loop(weak, rx))
            .map_err(|e| host_err(&format!("cannot start reload thread: {e}")))?;
        *w = Some(watcher);
        tracing::info!(dir = %self.inner.path.display(), "watching policy plugin for changes");
        Ok(())
    }

    /// Calls `f` after every future swap (see [`SwapListener`]).
    pub fn on_swap(&self, f: SwapListener) {
        if let Ok(mut l) = self.inner.listeners.lock() {
            l.push(f);
        }
    }

    /// The version in charge. A caller that keeps the `Arc` keeps deciding on
    /// that version even after a swap.
    pub fn current(&self) -> Arc<LoadedPlugin> {
        self.inner.current.load_full()
    }

    /// Re-reads the file now (what `wisp reload` does).
    pub fn reload(&self) -> Result<ReloadOutcome, LoadError> {
        self.inner.reload_from_disk()
    }

    /// New settings for the same component (config reload): a new version
    /// number; on error the old version and settings stay.
    pub fn set_settings(&self, settings: Vec<Setting>) -> Result<u64, LoadError> {
        let inner = &self.inner;
        let _g = inner.load_lock.lock().map_err(|_| host_err("load lock poisoned"))?;
        let mut cfg = inner.config.lock().map_err(|_| host_err("config lock poisoned"))?.clone();
        cfg.settings = settings;
        let number = inner.last_number.load(Ordering::SeqCst) + 1;
        match inner.current.load().reconfigure(&cfg, number) {
            Ok(p) => {
                inner.last_number.store(number, Ordering::SeqCst);
                if let Ok(mut c) = inner.config.lock() {
                    *c = cfg;
                }
                inner.current.store(p);
                if let Ok(mut e) = inner.last_error.lock() {
                    *e = None;
                }
                inner.swapped();
                Ok(number)
            }
            Err(e) => {
                inner.record_failure(Some(inner.current.load().meta().sha256.clone()), e.clone());
                Err(e)
            }
        }
    }

    pub fn status(&self) -> SlotStatus {
        let cur = self.current();
        let m = cur.meta();
        SlotStatus {
            path: self.inner.path.clone(),
            name: m.label.name.clone(),
            version: m.label.version.clone(),
            number: m.label.number,
            sha256: m.sha256.clone(),
            loaded_at: m.loaded_at,
            load_time: m.load_time,
            watching: self.watcher.lock().map(|w| w.is_some()).unwrap_or(false),
            last_error: self.inner.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

impl Inner {
    fn reload_from_disk(&self) -> Result<ReloadOutcome, LoadError> {
        let _g = self.load_lock.lock().map_err(|_| host_err("load lock poisoned"))?;
        let max_size = self.config.lock().map_err(|_| host_err("config lock poisoned"))?.limits.max_size;
        let bytes = match crate::plugin::read_plugin_file(&self.path, max_size) {
            Ok(b) => b,
            Err(err) => {
                self.record_failure(None, err.clone());
                return Err(err);
            }
        };
        let sha = sha256_hex(&bytes);
        if sha == self.current.load().meta().sha256 {
            return Ok(ReloadOutcome::Unchanged);
        }
        let cfg = self.config.lock().map_err(|_| host_err("config lock poisoned"))?.clone();
        let number = self.last_number.load(Ordering::SeqCst) + 1;
        match LoadedPlugin::load_bytes(&bytes, &self.path, &cfg, number) {
            Ok(p) => {
                self.last_number.store(number, Ordering::SeqCst);
                let old = self.current.swap(p);
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                tracing::info!(old = %old.label(), new = %self.current.load().label(),
                    "policy plugin reloaded");
                self.swapped();
                Ok(ReloadOutcome::Loaded(number))
            }
            Err(e) => {
                self.record_failure(Some(sha), e.clone());
                Err(e)
            }
        }
    }

    fn swapped(&self) {
        let label = self.current.load().label().clone();
        let listeners = self.listeners.lock().map(|l| l.clone()).unwrap_or_default();
        for f in listeners {
            f(&label);
        }
    }

    fn record_failure(&self, sha256: Option<String>, error: LoadError) {
        tracing::warn!(path = %self.path.display(), in_charge = %self.current.load().label(),
            "policy plugin not (re)loaded, previous version stays in charge: {error}");
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(LoadFailure { at: SystemTime::now(), sha256, error });
        }
    }

    /// True when the file's content is what we already have or what already failed.
    fn already_seen(&self) -> bool {
        let Ok(max_size) = self.config.lock().map(|c| c.limits.max_size) else { return false };
        let Ok(bytes) = crate::plugin::read_plugin_file(&self.path, max_size) else { return false };
        let sha = sha256_hex(&bytes);
        if sha == self.current.load().meta().sha256 {
            return true;
        }
        self.last_error.lock().ok().and_then(|e| e.as_ref().and_then(|f| f.sha256.clone())).is_some_and(|s| s == sha)
    }
}

fn reload_loop(inner: Weak<Inner>, rx: mpsc::Receiver<()>) {
    // Ends when the watcher (holding the sender) is dropped with the slot.
    while rx.recv().is_ok() {
        // Debounce: wait until no event arrived for DEBOUNCE.
        loop {
            match rx.recv_timeout(DEBOUNCE) {
                Ok(()) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.already_seen() {
            continue;
        }
        // Errors are recorded for status and logged inside.
        let _ = inner.reload_from_disk();
    }
}

fn host_err(detail: &str) -> LoadError {
    LoadError::Host { detail: detail.to_string() }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Policy for PolicySlot {
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
