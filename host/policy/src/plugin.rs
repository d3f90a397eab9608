//! One loaded version of a policy plugin: a compiled, validated component plus
//! its settings, and the decision calls with sandbox limits and answer checks.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::Store;
use wisp_policy_api::{
    self as api, AddressChoice, AddressRequest, AuthInfo, Clock, NoSas, PeerContext, Policy, PolicyError, Proposal, ProposalChoice, SaKind,
    SaView, SelectorPair, SelectorRequest, SystemClock,
};

use crate::bindings::{self, wit, PolicyPlugin, PolicyPluginPre};
use crate::convert::{self, Setting};
use crate::error::{chain, DecisionError, DecisionKind, LoadError, PluginLabel};
use crate::runtime::{self, DeadlineExceeded, MemoryCapExceeded, StoreState};
use crate::validate::{self, Problem};

/// The export every plugin must provide.
pub const DECISIONS_EXPORT: &str = "wisp:policy/decisions@0.4.0";
/// The world's full name.
pub const WORLD: &str = "wisp:policy/policy-plugin@0.4.0";
/// The WIT package version this host implements.
pub const WIT_VERSION: &str = "0.4.0";
/// Functions of `decisions`, all required.
pub const DECISION_FUNCTIONS: [&str; 7] =
    ["info", "configure", "select-proposal", "order-proposals", "authorize", "narrow-selectors", "assign-address"];

/// How plugin instances are used across decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceMode {
    /// A fresh instance (instantiate + `configure`) for every decision: no state
    /// survives between decisions.
    Fresh,
    /// Instances are kept in a small pool and reused; one instance serves one
    /// decision at a time, and an instance that trapped, timed out or hit the
    /// memory cap is thrown away. Plugin state (set up by `configure`) persists.
    Reuse,
}

/// Sandbox limits of one plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// CPU-time deadline of one decision call (checked at every epoch tick
    /// against the calling thread's CPU clock).
    pub deadline: Duration,
    /// Wall-clock cap of one decision call, for a thread that is starved of
    /// CPU or a plugin blocked in a host call (checked when it returns).
    pub wall_deadline: Duration,
    /// CPU deadline for instantiation + `info` + `configure` (wall cap: 5x).
    pub setup_deadline: Duration,
    /// Cap on the sum of the instance's linear memories, in bytes.
    pub memory: usize,
    pub mode: InstanceMode,
    /// Idle instances kept for reuse (mode `Reuse`).
    pub max_idle: usize,
    /// Largest component accepted, in bytes: a bigger file is refused before
    /// it is read whole or compiled (compile time and memory grow with size).
    pub max_size: u64,
}

/// Default [`Limits::max_size`]: 64 MiB (the Python example is about 19 MB).
pub const DEFAULT_MAX_SIZE: u64 = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_millis(20),
            wall_deadline: Duration::from_secs(1),
            setup_deadline: Duration::from_secs(2),
            memory: 16 << 20,
            mode: InstanceMode::Reuse,
            max_idle: 32,
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// Everything needed to load a plugin.
#[derive(Clone)]
pub struct PluginConfig {
    pub limits: Limits,
    /// Passed to `configure` on every new instance.
    pub settings: Vec<Setting>,
    /// What the `sa-counts` import reports.
    pub sa_view: Arc<dyn SaView>,
    /// What the `now` import reports.
    pub clock: Arc<dyn Clock>,
    /// Where compiled components are cached (keyed by sha256); none = no cache.
    pub cache_dir: Option<PathBuf>,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            limits: Limits::default(),
            settings: Vec::new(),
            sa_view: Arc::new(NoSas),
            clock: Arc::new(SystemClock),
            cache_dir: None,
        }
    }
}

impl std::fmt::Debug for PluginConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginConfig")
            .field("limits", &self.limits)
            .field("settings", &self.settings)
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

/// Facts about one loaded version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginMeta {
    pub label: PluginLabel,
    /// Lowercase hex SHA-256 of the component file.
    pub sha256: String,
    /// Where it was loaded from.
    pub source: PathBuf,
    pub size: usize,
    pub loaded_at: SystemTime,
    /// Time spent compiling (or loading from cache) and validating.
    pub load_time: Duration,
    /// Imports the component declares (WASI and `wisp:policy/host`).
    pub imports: Vec<String>,
    /// Exports the component declares.
    pub exports: Vec<String>,
}

/// A decision request, for callers that dispatch generically (eval, bench).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionRequest {
    SelectProposal { ctx: PeerContext, kind: SaKind, offered: Vec<Proposal>, configured: Vec<Proposal> },
    OrderProposals { ctx: PeerContext, kind: SaKind, configured: Vec<Proposal> },
    Authorize { ctx: PeerContext, auth: AuthInfo },
    NarrowSelectors { ctx: PeerContext, request: SelectorRequest },
    AssignAddress { ctx: PeerContext, request: AddressRequest },
}

impl DecisionRequest {
    pub fn kind(&self) -> DecisionKind {
        match self {
            DecisionRequest::SelectProposal { .. } => DecisionKind::SelectProposal,
            DecisionRequest::OrderProposals { .. } => DecisionKind::OrderProposals,
            DecisionRequest::Authorize { .. } => DecisionKind::Authorize,
            DecisionRequest::NarrowSelectors { .. } => DecisionKind::NarrowSelectors,
            DecisionRequest::AssignAddress { .. } => DecisionKind::AssignAddress,
        }
    }
}

/// A validated "yes".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionAnswer {
    /// The chosen offered proposal (and transforms inside it).
    Proposal(ProposalChoice),
    /// Indices into the configured proposals, in order of preference.
    Order(Vec<usize>),
    Authorized,
    Selectors(SelectorPair),
    /// Where each family's address comes from (empty: the host's default).
    Address(AddressChoice),
}

pub(crate) struct Instance {
    pub(crate) store: Store<StoreState>,
    pub(crate) bindings: PolicyPlugin,
}

/// One loaded, validated version of a plugin. Cheap to share (`Arc`); every
/// decision runs in its own instance, so any number of threads may decide at
/// once.
pub struct LoadedPlugin {
    meta: PluginMeta,
    label_str: Arc<str>,
    pre: PolicyPluginPre<StoreState>,
    component: Component,
    config: PluginConfig,
    settings_wit: Vec<wit::Setting>,
    pool: Mutex<Vec<Instance>>,
    instances_created: AtomicU64,
    /// Log lines the plugin wrote beyond the per-call cap.
    log_dropped: AtomicU64,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin").field("meta", &self.meta).finish_non_exhaustive()
    }
}

/// Loads, validates and configures the component at `path` (load number 1).
pub fn load(path: impl AsRef<Path>, config: &PluginConfig) -> Result<Arc<LoadedPlugin>, LoadError> {
    LoadedPlugin::load_file(path.as_ref(), config, 1)
}

impl LoadedPlugin {
    /// Loads `path` as load number `number`.
    pub fn load_file(path: &Path, config: &PluginConfig, number: u64) -> Result<Arc<Self>, LoadError> {
        let bytes = read_plugin_file(path, config.limits.max_size)?;
        Self::load_bytes(&bytes, path, config, number)
    }

    /// Loads a component from memory; `source` is only recorded.
    pub fn load_bytes(bytes: &[u8], source: &Path, config: &PluginConfig, number: u64) -> Result<Arc<Self>, LoadError> {
        let started = Instant::now();
        if bytes.len() as u64 > config.limits.max_size {
            let (size, limit) = (bytes.len() as u64, config.limits.max_size);
            return Err(LoadError::TooLarge { path: source.to_path_buf(), size, limit });
        }
        let prepared = prepare(bytes, config)?;
        let fallback: Arc<str> = Arc::from(source.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into()));
        let (mut inst, name, version) = first_instance(&prepared.pre, fallback, config)?;
        let label = PluginLabel { name, version, number };
        let label_str: Arc<str> = Arc::from(format!("{} {}", label.name, label.version));
        inst.store.data_mut().label = label_str.clone();
        let settings_wit = convert::settings_to_wit(&config.settings);
        configure(&mut inst, &settings_wit, config).map_err(|detail| LoadError::Configure { plugin: label.to_string(), detail })?;
        let meta = PluginMeta {
            label,
            sha256: prepared.sha256,
            source: source.to_path_buf(),
            size: bytes.len(),
            loaded_at: SystemTime::now(),
            load_time: started.elapsed(),
            imports: prepared.imports,
            exports: prepared.exports,
        };
        tracing::info!(plugin = %meta.label, sha256 = %meta.sha256, source = %source.display(),
            load_ms = meta.load_time.as_secs_f64() * 1e3, "policy plugin loaded");
        let plugin = LoadedPlugin {
            meta,
            label_str,
            pre: prepared.pre,
            component: prepared.component,
            config: config.clone(),
            settings_wit,
            pool: Mutex::new(Vec::new()),
            instances_created: AtomicU64::new(1),
            log_dropped: AtomicU64::new(0),
        };
        plugin.checkin(inst);
        Ok(Arc::new(plugin))
    }

    /// The same component with other settings, as load number `number`
    /// (no recompilation).
    pub fn reconfigure(&self, config: &PluginConfig, number: u64) -> Result<Arc<Self>, LoadError> {
        Self::from_component(self.component.clone(), &self.meta, config, number)
    }

    fn from_component(component: Component, old: &PluginMeta, config: &PluginConfig, number: u64) -> Result<Arc<Self>, LoadError> {
        let started = Instant::now();
        let pre = runtime::linker()?.instantiate_pre(&component).map_err(|e| LoadError::UnsupportedImport { detail: chain(&e) })?;
        let pre = PolicyPluginPre::new(pre).map_err(|e| LoadError::TypeMismatch { detail: chain(&e) })?;
        let label = PluginLabel { number, ..old.label.clone() };
        let label_str: Arc<str> = Arc::from(format!("{} {}", label.name, label.version));
        let settings_wit = convert::settings_to_wit(&config.settings);
        let plugin = LoadedPlugin {
            meta: PluginMeta { label, loaded_at: SystemTime::now(), load_time: Duration::ZERO, ..old.clone() },
            label_str,
            pre,
            component,
            config: config.clone(),
            settings_wit,
            pool: Mutex::new(Vec::new()),
            instances_created: AtomicU64::new(0),
            log_dropped: AtomicU64::new(0),
        };
        let inst =
            plugin.new_instance().map_err(|e| LoadError::Configure { plugin: plugin.meta.label.to_string(), detail: e.to_string() })?;
        if plugin.config.limits.mode == InstanceMode::Reuse {
            plugin.checkin(inst);
        }
        let mut meta = plugin.meta.clone();
        meta.load_time = started.elapsed();
        Ok(Arc::new(LoadedPlugin { meta, ..plugin }))
    }

    pub fn meta(&self) -> &PluginMeta {
        &self.meta
    }

    pub fn label(&self) -> &PluginLabel {
        &self.meta.label
    }

    pub fn config(&self) -> &PluginConfig {
        &self.config
    }

    /// How many instances this version has created so far (including the one
    /// made at load time).
    pub fn instances_created(&self) -> u64 {
        self.instances_created.load(Ordering::Relaxed)
    }

    /// Log lines this version wrote beyond the per-call caps
    /// ([`crate::MAX_LOG_LINES_PER_CALL`], [`crate::MAX_LOG_BYTES_PER_CALL`]), dropped.
    pub fn log_lines_dropped(&self) -> u64 {
        self.log_dropped.load(Ordering::Relaxed)
    }

    /// Idle instances currently pooled.
    pub fn idle_instances(&self) -> usize {
        self.pool.lock().map(|p| p.len()).unwrap_or(0)
    }

    fn new_instance(&self) -> Result<Instance, String> {
        let mut store = new_store(self.label_str.clone(), &self.config);
        runtime::arm(&mut store, self.config.limits.setup_deadline, setup_wall(&self.config.limits));
        let bindings = self.pre.instantiate(&mut store).map_err(|e| describe_setup_error(&e, &self.config))?;
        let mut inst = Instance { store, bindings };
        configure(&mut inst, &self.settings_wit, &self.config)?;
        self.instances_created.fetch_add(1, Ordering::Relaxed);
        Ok(inst)
    }

    fn checkout(&self, decision: DecisionKind) -> Result<Instance, DecisionError> {
        if self.config.limits.mode == InstanceMode::Reuse {
            if let Some(i) = self.pool.lock().ok().and_then(|mut p| p.pop()) {
                return Ok(i);
            }
        }
        self.new_instance().map_err(|detail| DecisionError::Instantiate { plugin: self.meta.label.clone(), decision, detail })
    }

    fn checkin(&self, inst: Instance) {
        if self.config.limits.mode != InstanceMode::Reuse {
            return;
        }
        if let Ok(mut p) = self.pool.lock() {
            if p.len() < self.config.limits.max_idle {
                p.push(inst);
            }
        }
    }

    /// Runs one export call in an instance with the per-call deadline; the
    /// instance goes back to the pool only if the call returned normally.
    fn call<R>(
        &self,
        decision: DecisionKind,
        f: impl FnOnce(&mut Store<StoreState>, &bindings::guest::Guest) -> wasmtime::Result<R>,
    ) -> Result<R, DecisionError> {
        let mut inst = self.checkout(decision)?;
        runtime::arm(&mut inst.store, self.config.limits.deadline, self.config.limits.wall_deadline);
        let result = f(&mut inst.store, inst.bindings.wisp_policy_decisions());
        self.report_dropped_logs(&mut inst.store, decision);
        match result {
            Ok(_) if runtime::wall_overrun(&inst.store).is_some() => {
                let deadline = self.config.limits.wall_deadline;
                Err(DecisionError::Timeout { plugin: self.meta.label.clone(), decision, deadline })
            }
            Ok(r) => {
                self.checkin(inst);
                Ok(r)
            }
            Err(e) => Err(self.classify(decision, &e)),
        }
    }

    /// One warning per call that went over the log caps, and the count.
    fn report_dropped_logs(&self, store: &mut Store<StoreState>, decision: DecisionKind) {
        let log = &mut store.data_mut().log;
        if log.dropped_lines == 0 {
            return;
        }
        let (lines, bytes) = (log.dropped_lines, log.dropped_bytes);
        log.dropped_lines = 0;
        log.dropped_bytes = 0;
        self.log_dropped.fetch_add(lines, Ordering::Relaxed);
        tracing::warn!(plugin = %self.meta.label, dropped_lines = lines, dropped_bytes = bytes,
            "plugin log lines dropped during {decision} (at most {} lines / {} bytes per call)",
            runtime::MAX_LOG_LINES_PER_CALL, runtime::MAX_LOG_BYTES_PER_CALL);
    }

    fn classify(&self, decision: DecisionKind, e: &wasmtime::Error) -> DecisionError {
        let plugin = self.meta.label.clone();
        if let Some(m) = find::<MemoryCapExceeded>(e) {
            return DecisionError::MemoryLimit { plugin, decision, limit: m.limit };
        }
        if let Some(d) = find::<DeadlineExceeded>(e) {
            return DecisionError::Timeout { plugin, decision, deadline: d.limit };
        }
        if let Some(wasmtime::Trap::Interrupt) = find::<wasmtime::Trap>(e) {
            return DecisionError::Timeout { plugin, decision, deadline: self.config.limits.deadline };
        }
        DecisionError::Trap { plugin, decision, detail: chain(e) }
    }

    fn finish<T>(&self, decision: DecisionKind, r: Result<T, Problem>) -> Result<T, DecisionError> {
        let plugin = self.meta.label.clone();
        r.map_err(|p| match p {
            Problem::Refused(reason) => DecisionError::Refused { plugin, decision, reason },
            Problem::Invalid(detail) => DecisionError::InvalidAnswer { plugin, decision, detail },
        })
    }

    fn log<T>(&self, r: Result<T, DecisionError>) -> Result<T, DecisionError> {
        if let Err(e) = &r {
            match e {
                DecisionError::Refused { .. } => tracing::debug!(plugin = %self.meta.label, "{e}"),
                _ => tracing::warn!(plugin = %self.meta.label, "policy decision failed closed: {e}"),
            }
        }
        r
    }

    /// Responder: which offered proposal (and transforms inside it), with
    /// typed errors. The answer is checked for shape here (index and transform
    /// indices in range, one transform per type); the IKE engine checks it
    /// against the configured proposals.
    pub fn try_select_proposal(
        &self,
        ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, DecisionError> {
        let d = DecisionKind::SelectProposal;
        let wctx = convert::ctx_to_wit(ctx);
        let props: Vec<wit::Proposal> = offered.iter().map(convert::proposal_to_wit).collect();
        let conf: Vec<wit::Proposal> = configured.iter().map(convert::proposal_to_wit).collect();
        let kind = convert::sa_kind_to_wit(kind);
        let r = self
            .call(d, |s, g| g.call_select_proposal(s, &wctx, kind, &props, &conf))
            .and_then(|a| self.finish(d, validate::proposal_choice(a, offered)));
        self.log(r)
    }

    /// Initiator: which configured proposals to offer, in order.
    pub fn try_order_proposals(&self, ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, DecisionError> {
        let d = DecisionKind::OrderProposals;
        let wctx = convert::ctx_to_wit(ctx);
        let props: Vec<wit::Proposal> = configured.iter().map(convert::proposal_to_wit).collect();
        let kind = convert::sa_kind_to_wit(kind);
        let r = self
            .call(d, |s, g| g.call_order_proposals(s, &wctx, kind, &props))
            .and_then(|a| self.finish(d, validate::proposal_order(a, configured.len())));
        self.log(r)
    }

    /// After AUTH verification: allow or deny.
    pub fn try_authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), DecisionError> {
        let d = DecisionKind::Authorize;
        let wctx = convert::ctx_to_wit(ctx);
        let wauth = convert::auth_to_wit(auth);
        let r = self.call(d, |s, g| g.call_authorize(s, &wctx, &wauth)).and_then(|a| self.finish(d, validate::authorization(a)));
        self.log(r)
    }

    /// Narrow the proposed selectors.
    pub fn try_narrow_selectors(&self, ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, DecisionError> {
        let d = DecisionKind::NarrowSelectors;
        let wctx = convert::ctx_to_wit(ctx);
        let wreq = convert::selector_request_to_wit(request);
        let r = self.call(d, |s, g| g.call_narrow_selectors(s, &wctx, &wreq)).and_then(|a| self.finish(d, validate::selectors(a, request)));
        self.log(r)
    }

    /// Which pool or address each family's virtual IP comes from. Checked
    /// against the request's pools here; the IKE engine checks again and
    /// knows which addresses are free.
    pub fn try_assign_address(&self, ctx: &PeerContext, request: &AddressRequest) -> Result<AddressChoice, DecisionError> {
        let d = DecisionKind::AssignAddress;
        let wctx = convert::ctx_to_wit(ctx);
        let wreq = convert::address_request_to_wit(request);
        let r =
            self.call(d, |s, g| g.call_assign_address(s, &wctx, &wreq)).and_then(|a| self.finish(d, validate::address_choice(a, request)));
        self.log(r)
    }

    /// Any decision, dispatched.
    pub fn decide(&self, req: &DecisionRequest) -> Result<DecisionAnswer, DecisionError> {
        match req {
            DecisionRequest::SelectProposal { ctx, kind, offered, configured } => {
                self.try_select_proposal(ctx, *kind, offered, configured).map(DecisionAnswer::Proposal)
            }
            DecisionRequest::OrderProposals { ctx, kind, configured } => {
                self.try_order_proposals(ctx, *kind, configured).map(DecisionAnswer::Order)
            }
            DecisionRequest::Authorize { ctx, auth } => self.try_authorize(ctx, auth).map(|()| DecisionAnswer::Authorized),
            DecisionRequest::NarrowSelectors { ctx, request } => self.try_narrow_selectors(ctx, request).map(DecisionAnswer::Selectors),
            DecisionRequest::AssignAddress { ctx, request } => self.try_assign_address(ctx, request).map(DecisionAnswer::Address),
        }
    }
}

impl Policy for LoadedPlugin {
    fn describe(&self) -> String {
        self.meta.label.to_string()
    }
    fn select_proposal(
        &self,
        ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, PolicyError> {
        self.try_select_proposal(ctx, kind, offered, configured).map_err(Into::into)
    }
    fn order_proposals(&self, ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        self.try_order_proposals(ctx, kind, configured).map_err(Into::into)
    }
    fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), PolicyError> {
        self.try_authorize(ctx, auth).map_err(Into::into)
    }
    fn narrow_selectors(&self, ctx: &PeerContext, request: &SelectorRequest) -> Result<api::SelectorPair, PolicyError> {
        self.try_narrow_selectors(ctx, request).map_err(Into::into)
    }
    fn assign_address(&self, ctx: &PeerContext, request: &AddressRequest) -> Result<AddressChoice, PolicyError> {
        self.try_assign_address(ctx, request).map_err(Into::into)
    }
}

/// Reads a plugin file after checking it: a regular file, not writable by
/// group or others (whoever can write it decides who gets in), at most
/// `max_size` bytes (checked before reading, and while reading, as the file
/// may grow in between).
pub fn read_plugin_file(path: &Path, max_size: u64) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let read_err = |e: std::io::Error| LoadError::Read { path: path.to_path_buf(), detail: e.to_string() };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(LoadError::Read { path: path.to_path_buf(), detail: "not a regular file".into() });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(LoadError::UnsafeMode { path: path.to_path_buf(), mode });
    }
    if meta.len() > max_size {
        return Err(LoadError::TooLarge { path: path.to_path_buf(), size: meta.len(), limit: max_size });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_size.saturating_add(1)).read_to_end(&mut bytes).map_err(read_err)?;
    if bytes.len() as u64 > max_size {
        return Err(LoadError::TooLarge { path: path.to_path_buf(), size: bytes.len() as u64, limit: max_size });
    }
    Ok(bytes)
}

/// A compiled component that matches the world and links.
pub(crate) struct Prepared {
    pub component: Component,
    pub pre: PolicyPluginPre<StoreState>,
    pub sha256: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

pub(crate) fn prepare(bytes: &[u8], config: &PluginConfig) -> Result<Prepared, LoadError> {
    let sha256 = runtime::sha256_hex(bytes);
    let component = runtime::compile(bytes, &sha256, config.cache_dir.as_deref())?;
    let (imports, exports) = check_world(&component)?;
    let pre = runtime::linker()?.instantiate_pre(&component).map_err(|e| LoadError::UnsupportedImport { detail: chain(&e) })?;
    let pre = PolicyPluginPre::new(pre).map_err(|e| LoadError::TypeMismatch { detail: chain(&e) })?;
    Ok(Prepared { component, pre, sha256, imports, exports })
}

/// Instantiates and asks `info()`. Returns the instance with its name and version.
pub(crate) fn first_instance(
    pre: &PolicyPluginPre<StoreState>,
    fallback_label: Arc<str>,
    config: &PluginConfig,
) -> Result<(Instance, String, String), LoadError> {
    let mut store = new_store(fallback_label, config);
    runtime::arm(&mut store, config.limits.setup_deadline, setup_wall(&config.limits));
    let bindings = pre.instantiate(&mut store).map_err(|e| LoadError::Instantiate { detail: describe_setup_error(&e, config) })?;
    let info = bindings
        .wisp_policy_decisions()
        .call_info(&mut store)
        .map_err(|e| LoadError::Instantiate { detail: format!("info(): {}", describe_setup_error(&e, config)) })?;
    let (name, version) = validate::info(&info).map_err(|detail| LoadError::BadInfo { detail })?;
    Ok((Instance { store, bindings }, name, version))
}

/// Calls `configure(settings)` under the setup deadline.
pub(crate) fn configure(inst: &mut Instance, settings: &[wit::Setting], config: &PluginConfig) -> Result<(), String> {
    runtime::arm(&mut inst.store, config.limits.setup_deadline, setup_wall(&config.limits));
    match inst.bindings.wisp_policy_decisions().call_configure(&mut inst.store, settings) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(msg)) => Err(format!("configure refused: {}", validate::sanitize(&msg))),
        Err(e) => Err(format!("configure: {}", describe_setup_error(&e, config))),
    }
}

fn new_store(label: Arc<str>, config: &PluginConfig) -> Store<StoreState> {
    let mut store =
        Store::new(runtime::engine(), StoreState::new(label, config.limits.memory, config.sa_view.clone(), config.clock.clone()));
    store.limiter(|s| &mut s.limiter);
    runtime::install_deadline_callback(&mut store);
    store
}

/// Wall-clock cap for instantiation + `configure`.
fn setup_wall(l: &Limits) -> Duration {
    l.setup_deadline.saturating_mul(5)
}

fn find<E: std::error::Error + Send + Sync + 'static>(e: &wasmtime::Error) -> Option<&E> {
    if let Some(x) = e.downcast_ref::<E>() {
        return Some(x);
    }
    e.chain().find_map(|c| c.downcast_ref::<E>())
}

fn describe_setup_error(e: &wasmtime::Error, config: &PluginConfig) -> String {
    if let Some(m) = find::<MemoryCapExceeded>(e) {
        return format!("{m} (raise the plugin's memory limit)");
    }
    if let Some(d) = find::<DeadlineExceeded>(e) {
        return format!("instantiation/configure: {d}");
    }
    if let Some(wasmtime::Trap::Interrupt) = find::<wasmtime::Trap>(e) {
        return format!("setup deadline of {:?} exceeded", config.limits.setup_deadline);
    }
    chain(e)
}

/// Checks the component's exports against the world and its imports against
/// what the host provides, naming what is missing.
fn check_world(component: &Component) -> Result<(Vec<String>, Vec<String>), LoadError> {
    let engine = runtime::engine();
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();

    let wanted_prefix = "wisp:policy/decisions@0.4.";
    let found = ty.exports(engine).find(|(n, _)| *n == DECISIONS_EXPORT || n.starts_with(wanted_prefix));
    let Some((name, item)) = found else {
        let other = exports.iter().find(|n| n.starts_with("wisp:policy/decisions@"));
        let detail = match other {
            Some(o) => {
                let built = o.trim_start_matches("wisp:policy/decisions@");
                format!(
                    "built for wisp:policy@{built}, this host needs {WIT_VERSION} (the component exports `{o}`, \
                     this host calls `{DECISIONS_EXPORT}`): rebuild it against wit/policy.wit {WIT_VERSION}"
                )
            }
            None => format!(
                "missing export `{DECISIONS_EXPORT}` (the component exports: {})",
                if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") }
            ),
        };
        return Err(LoadError::MissingExport { detail });
    };
    let ComponentItem::ComponentInstance(inst) = item.ty else {
        return Err(LoadError::TypeMismatch { detail: format!("export `{name}` is not an interface instance") });
    };
    let mut missing = Vec::new();
    for f in DECISION_FUNCTIONS {
        match inst.get_export(engine, f).map(|e| e.ty) {
            Some(ComponentItem::ComponentFunc(_)) => {}
            Some(_) => return Err(LoadError::TypeMismatch { detail: format!("`{name}#{f}` is not a function") }),
            None => missing.push(format!("`{name}#{f}`")),
        }
    }
    if !missing.is_empty() {
        return Err(LoadError::MissingExport { detail: format!("missing export {}", missing.join(", ")) });
    }
    for imp in &imports {
        let ok = imp.starts_with("wasi:") || imp.starts_with("wisp:policy/host@0.4.") || imp.starts_with("wisp:policy/types@0.4.");
        if !ok {
            return Err(LoadError::UnsupportedImport {
                detail: format!("import `{imp}` is not provided (plugins may import wisp:policy/host@{WIT_VERSION} and WASI only)"),
            });
        }
    }
    Ok((imports, exports))
}
