//! `wisp plugin check FILE.wasm`: validate a component offline and describe it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::convert;
use crate::error::LoadError;
use crate::plugin::{self, Limits, PluginConfig, DECISIONS_EXPORT, DECISION_FUNCTIONS, WORLD};

/// What `check` found out about a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub path: PathBuf,
    pub size: usize,
    pub sha256: String,
    /// The world the component satisfies.
    pub world: &'static str,
    /// Name and version from the plugin's `info()`.
    pub name: String,
    pub version: String,
    /// The decision functions it exports (all of them, or check fails).
    pub functions: Vec<&'static str>,
    /// Everything it exports / imports, as declared.
    pub exports: Vec<String>,
    pub imports: Vec<String>,
    /// The sandbox limits it was checked under.
    pub limits: Limits,
    /// Linear memory the instance holds right after `info()`.
    pub memory_at_start: usize,
    /// Compile + validate time.
    pub compile_time: Duration,
    /// Time for one instantiation + `info()`.
    pub instantiate_time: Duration,
    /// Outcome of `configure` with the given settings (empty for `check`).
    pub configure: Result<(), String>,
}

/// Validates the component at `path` under the default limits and reports it.
/// `configure` is called with no settings; its refusal is reported, not fatal
/// (most plugins need their settings).
pub fn check(path: impl AsRef<Path>) -> Result<CheckReport, LoadError> {
    check_with(path, &PluginConfig::default())
}

/// [`check`] with explicit limits and settings.
pub fn check_with(path: impl AsRef<Path>, config: &PluginConfig) -> Result<CheckReport, LoadError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| LoadError::Read { path: path.to_path_buf(), detail: e.to_string() })?;
    let t0 = Instant::now();
    let prepared = plugin::prepare(&bytes, config)?;
    let compile_time = t0.elapsed();
    let t1 = Instant::now();
    let (mut inst, name, version) = plugin::first_instance(&prepared.pre, Arc::from("check"), config)?;
    let instantiate_time = t1.elapsed();
    let memory_at_start = inst.store.data().limiter.memory_used;
    let settings = convert::settings_to_wit(&config.settings);
    let configure = plugin::configure(&mut inst, &settings, config);
    Ok(CheckReport {
        path: path.to_path_buf(),
        size: bytes.len(),
        sha256: prepared.sha256,
        world: WORLD,
        name,
        version,
        functions: DECISION_FUNCTIONS.to_vec(),
        exports: prepared.exports,
        imports: prepared.imports,
        limits: config.limits.clone(),
        memory_at_start,
        compile_time,
        instantiate_time,
        configure,
    })
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: ok", self.path.display())?;
        writeln!(f, "  plugin:   {} {}", self.name, self.version)?;
        writeln!(f, "  world:    {}", self.world)?;
        writeln!(f, "  sha256:   {}", self.sha256)?;
        writeln!(f, "  size:     {} bytes", self.size)?;
        writeln!(f, "  exports:  {} ({})", DECISIONS_EXPORT, self.functions.join(", "))?;
        for e in self.exports.iter().filter(|e| *e != DECISIONS_EXPORT) {
            writeln!(f, "            {e}")?;
        }
        writeln!(f, "  imports:  {}", if self.imports.is_empty() { "none".into() } else { self.imports.join(", ") })?;
        writeln!(
            f,
            "  limits:   deadline {:?} per decision, memory cap {} MiB ({:.1} MiB in use after start), setup deadline {:?}",
            self.limits.deadline,
            self.limits.memory >> 20,
            self.memory_at_start as f64 / (1 << 20) as f64,
            self.limits.setup_deadline
        )?;
        writeln!(
            f,
            "  timing:   compile {:.1} ms, instantiate + info {:.2} ms",
            self.compile_time.as_secs_f64() * 1e3,
            self.instantiate_time.as_secs_f64() * 1e3
        )?;
        match &self.configure {
            Ok(()) => writeln!(f, "  configure: ok"),
            Err(e) => writeln!(f, "  configure: {e}"),
        }
    }
}
