//! The shared wasmtime engine, the epoch ticker, per-store state (WASI that
//! grants nothing, the memory limiter, the host imports) and compilation with an
//! optional on-disk cache.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wisp_policy_api::{Clock, SaView};

use crate::bindings::{self, wit};
use crate::convert::identity_from_wit;
use crate::error::{chain, LoadError};

/// How often the ticker thread advances the engine's epoch. Deadlines are
/// counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Process-wide engine: compiled components are only valid for the engine that
/// compiled them, and one ticker thread serves every plugin.
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true);
        cfg.epoch_interruption(true);
        // Plugins are small: 1 MiB of wasm stack is plenty and bounds recursion.
        cfg.max_wasm_stack(1 << 20);
        cfg.parallel_compilation(true);
        let engine = Engine::new(&cfg).expect("static wasmtime configuration is valid");
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wisp-policy-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => return,
                }
            })
            .expect("spawn epoch ticker thread");
        engine
    })
}

/// Number of epoch ticks until `d` has passed (at least one).
pub(crate) fn deadline_ticks(d: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos().max(1);
    (d.as_nanos().div_ceil(tick) as u64).max(1)
}

/// CPU time consumed by the calling thread.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is
    // supported on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The time budget of the call in progress.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    cpu_start: Duration,
    wall_start: Instant,
    cpu: Duration,
    wall: Duration,
}

/// Raised from the epoch callback when a call used up its budget.
#[derive(Debug, thiserror::Error)]
#[error("{} deadline of {limit:?} exceeded", if *.cpu { "CPU" } else { "wall-clock" })]
pub(crate) struct DeadlineExceeded {
    pub cpu: bool,
    pub limit: Duration,
}

/// Epoch callback: the epoch only measures wall time, so when it fires we
/// look at the CPU time this thread really spent in the call. A call that was
/// merely descheduled (a busy machine) gets the rest of its CPU budget; a call
/// that used its CPU budget, or exceeded the wall-clock cap, traps.
fn on_epoch(state: &mut StoreState) -> wasmtime::Result<UpdateDeadline> {
    let b = state.budget;
    let used = thread_cpu_time().saturating_sub(b.cpu_start);
    if used >= b.cpu {
        return Err(wasmtime::Error::new(DeadlineExceeded { cpu: true, limit: b.cpu }));
    }
    let wall_used = b.wall_start.elapsed();
    if wall_used >= b.wall {
        return Err(wasmtime::Error::new(DeadlineExceeded { cpu: false, limit: b.wall }));
    }
    // CPU time never runs faster than wall time: look again when either
    // budget could be used up.
    Ok(UpdateDeadline::Continue(deadline_ticks((b.cpu - used).min(b.wall - wall_used))))
}

/// Arms the deadline for the next call on `store`.
pub(crate) fn arm(store: &mut Store<StoreState>, cpu: Duration, wall: Duration) {
    store.data_mut().budget = Budget { cpu_start: thread_cpu_time(), wall_start: Instant::now(), cpu, wall };
    let log = &mut store.data_mut().log;
    log.lines = 0;
    log.bytes = 0;
    store.set_epoch_deadline(deadline_ticks(cpu.min(wall)));
}

/// The wall-clock cap, if the call armed last has overrun it (a call may
/// return from a host call after its budget without meeting an epoch check).
pub(crate) fn wall_overrun(store: &Store<StoreState>) -> Option<Duration> {
    let b = &store.data().budget;
    (b.wall_start.elapsed() > b.wall).then_some(b.wall)
}

/// Sets the store up for deadlines (once per store).
pub(crate) fn install_deadline_callback(store: &mut Store<StoreState>) {
    store.epoch_deadline_callback(|mut cx| on_epoch(cx.data_mut()));
}

/// Marker error returned by the limiter when a memory would grow past the cap;
/// it makes the call trap, and the host reports `MemoryLimit`.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {limit} bytes exceeded (wanted {wanted} bytes in total)")]
pub(crate) struct MemoryCapExceeded {
    pub limit: usize,
    pub wanted: usize,
}

/// Caps the sum of all linear memories of one store (a component can hold
/// several), and the table sizes.
pub(crate) struct Limiter {
    pub memory_limit: usize,
    pub memory_used: usize,
    pub table_elements: usize,
}

const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let wanted = self.memory_used.saturating_add(desired.saturating_sub(current));
        if wanted > self.memory_limit {
            return Err(wasmtime::Error::new(MemoryCapExceeded { limit: self.memory_limit, wanted }));
        }
        self.memory_used = wanted;
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let wanted = self.table_elements.saturating_add(desired.saturating_sub(current));
        if wanted > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements = wanted;
        Ok(true)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

/// Everything one store (one plugin instance) owns.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: Limiter,
    budget: Budget,
    /// "name version" for log lines written by the plugin.
    pub label: Arc<str>,
    pub sa_view: Arc<dyn SaView>,
    pub clock: Arc<dyn Clock>,
    /// Log lines and bytes of the call in progress, and what was dropped.
    pub log: LogBudget,
}

/// Log lines one call (decision, or instantiation + `configure`) may write;
/// the rest is dropped and counted.
pub const MAX_LOG_LINES_PER_CALL: u32 = 32;
/// Log bytes one call may write (after each line is cut to 2 KiB).
pub const MAX_LOG_BYTES_PER_CALL: usize = 16 << 10;

/// What the plugin logged during the call in progress.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LogBudget {
    pub lines: u32,
    pub bytes: usize,
    /// Dropped since the last report (see `LoadedPlugin::call`).
    pub dropped_lines: u64,
    pub dropped_bytes: u64,
}

impl StoreState {
    pub fn new(label: Arc<str>, memory_limit: usize, sa_view: Arc<dyn SaView>, clock: Arc<dyn Clock>) -> Self {
        // A WASI context that grants nothing: no preopened directories, no
        // environment, no arguments, stdin empty, stdout/stderr discarded, no
        // sockets and no name lookups. Clocks and randomness stay (Rust's std
        // needs them to start; they disclose nothing).
        let mut b = WasiCtxBuilder::new();
        b.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .monotonic_clock(Monotonic);
        StoreState {
            wasi: b.build(),
            table: ResourceTable::new(),
            limiter: Limiter { memory_limit, memory_used: 0, table_elements: 0 },
            budget: Budget {
                cpu_start: Duration::ZERO,
                wall_start: Instant::now(),
                cpu: Duration::from_secs(1),
                wall: Duration::from_secs(1),
            },
            label,
            sa_view,
            clock,
            log: LogBudget::default(),
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Longest plugin log line kept.
const MAX_LOG_LINE: usize = 2048;

impl bindings::wisp::policy::host::Host for StoreState {
    fn log(&mut self, level: wit::LogLevel, message: String) {
        let b = &mut self.log;
        let cost = message.len().min(MAX_LOG_LINE);
        if b.lines >= MAX_LOG_LINES_PER_CALL || b.bytes + cost > MAX_LOG_BYTES_PER_CALL {
            b.dropped_lines += 1;
            b.dropped_bytes += message.len() as u64;
            return;
        }
        b.lines += 1;
        b.bytes += cost;
        let mut msg: String = message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        if msg.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push('…');
        }
        let plugin: &str = &self.label;
        match level {
            wit::LogLevel::Trace => tracing::trace!(target: "wisp_policy::plugin", plugin, "{msg}"),
            wit::LogLevel::Debug => tracing::debug!(target: "wisp_policy::plugin", plugin, "{msg}"),
            wit::LogLevel::Info => tracing::info!(target: "wisp_policy::plugin", plugin, "{msg}"),
            wit::LogLevel::Warn => tracing::warn!(target: "wisp_policy::plugin", plugin, "{msg}"),
            wit::LogLevel::Error => tracing::error!(target: "wisp_policy::plugin", plugin, "{msg}"),
        }
    }

    fn now(&mut self) -> wit::Datetime {
        let d = self.clock.now().duration_since(UNIX_EPOCH).unwrap_or_default();
        wit::Datetime { seconds: d.as_secs(), nanoseconds: d.subsec_nanos() }
    }

    fn sa_counts(&mut self, peer: wit::Identity) -> wit::LiveSas {
        let c = self.sa_view.sa_counts(&identity_from_wit(&peer));
        wit::LiveSas { ike_sas: c.ike_sas, child_sas: c.child_sas }
    }
}

impl bindings::wisp::policy::types::Host for StoreState {}

/// The linker every plugin is instantiated with: WASI p2 (sandboxed by the
/// context above) plus the `wisp:policy/host` imports.
pub(crate) fn linker() -> Result<&'static Linker<StoreState>, LoadError> {
    static LINKER: OnceLock<Result<Linker<StoreState>, String>> = OnceLock::new();
    LINKER
        .get_or_init(|| {
            let mut l = Linker::new(engine());
            wasmtime_wasi::p2::add_to_linker_sync(&mut l).map_err(|e| chain(&e))?;
            bound_sleeps(&mut l).map_err(|e| chain(&e))?;
            bindings::PolicyPlugin::add_to_linker::<StoreState, HasSelf<StoreState>>(&mut l, |s| s).map_err(|e| chain(&e))?;
            Ok(l)
        })
        .as_ref()
        .map_err(|d| LoadError::Host { detail: d.clone() })
}

/// A sleep the plugin asked for, cut to what is left of its wall-clock budget.
struct Nap(Duration);

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for Nap {
    async fn ready(&mut self) {
        tokio::time::sleep(self.0).await
    }
}

/// Monotonic time of the WASI clock below: nanoseconds since the first use.
fn monotonic_now() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The WASI monotonic clock plugins see (shared base, so `subscribe-instant`
/// below can compute durations from it).
struct Monotonic;

impl wasmtime_wasi::HostMonotonicClock for Monotonic {
    fn resolution(&self) -> u64 {
        1
    }
    fn now(&self) -> u64 {
        monotonic_now()
    }
}

const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Epoch interruption cannot stop a plugin blocked inside a host call, and
/// WASI's `subscribe-duration`/`subscribe-instant` + `poll` would let it
/// sleep for as long as it likes. These replacements cut every sleep to the
/// rest of the call's wall-clock budget; the deadline then fires as usual.
fn bound_sleeps(l: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime::StoreContextMut;
    use wasmtime_wasi::p2::DynPollable;
    fn nap(st: &mut StoreState, wanted: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        let left = st.budget.wall.saturating_sub(st.budget.wall_start.elapsed());
        let r = st.table.push(Nap(wanted.min(left)))?;
        wasmtime_wasi::p2::subscribe(&mut st.table, r)
    }
    l.allow_shadowing(true);
    let mut clocks = l.instance(MONOTONIC_CLOCK)?;
    clocks.func_wrap("subscribe-duration", |mut cx: StoreContextMut<'_, StoreState>, (d,): (u64,)| {
        Ok((nap(cx.data_mut(), Duration::from_nanos(d))?,))
    })?;
    clocks.func_wrap("subscribe-instant", |mut cx: StoreContextMut<'_, StoreState>, (when,): (u64,)| {
        let d = Duration::from_nanos(when.saturating_sub(monotonic_now()));
        Ok((nap(cx.data_mut(), d)?,))
    })?;
    l.allow_shadowing(false);
    Ok(())
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Rejects what is not a component before handing it to the compiler, with a
/// message a plugin author understands.
fn precheck(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(LoadError::NotAComponent { detail: "missing the \\0asm magic number (not a WebAssembly file)".into() });
    }
    // Layer field: 0x0001 = component, 0x0000 = core module.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::NotAComponent {
            detail: "this is a core WebAssembly module, not a component; build for \
                     wasm32-wasip2 or wrap it with `wasm-tools component new`"
                .into(),
        });
    }
    Ok(())
}

/// Compiles `bytes` (or loads the cached compilation keyed by its sha256).
pub(crate) fn compile(bytes: &[u8], sha256: &str, cache_dir: Option<&Path>) -> Result<Component, LoadError> {
    precheck(bytes)?;
    let engine = engine();
    let cached: Option<PathBuf> = cache_dir.map(|d| d.join(format!("{sha256}-{}.cwasm", engine_tag())));
    if let Some(p) = &cached {
        if p.is_file() {
            // SAFETY: the cache directory is written only by this host (below),
            // with files named by the sha256 of the source and the engine's
            // compatibility hash; wasmtime additionally checks the header.
            match unsafe { Component::deserialize_file(engine, p) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(path = %p.display(), error = %chain(&e),
                    "ignoring unusable cached plugin compilation"),
            }
        }
    }
    let component = Component::new(engine, bytes).map_err(|e| LoadError::NotAComponent { detail: chain(&e) })?;
    if let Some(p) = &cached {
        if let Err(e) = write_cache(&component, p) {
            tracing::warn!(path = %p.display(), error = %e, "could not write plugin compilation cache");
        }
    }
    Ok(component)
}

fn write_cache(c: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = c.serialize().map_err(|e| std::io::Error::other(chain(&e)))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

/// A short tag for the engine's compatibility hash (wasmtime version + config).
fn engine_tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine().precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    })
}
