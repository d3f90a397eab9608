//! The daemon: control socket, signals, and the runtime that hosts the engine
//! drivers and the dataplane.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::Config;
use crate::control::{Request, Response};
use crate::gateway::Gateway;
use crate::status::Status;

/// State shared by the control handlers.
pub struct Shared {
    pub config_path: PathBuf,
    pub started: Instant,
    pub gateway: Gateway,
    /// Serializes reloads.
    reload_lock: Mutex<()>,
}

/// `wisp run -c FILE`: run until SIGTERM/SIGINT.
pub fn run(config_path: &Path, control_override: Option<&Path>) -> anyhow::Result<()> {
    let cfg = Config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_logging(&cfg);
    let control = control_override.map(Path::to_path_buf).unwrap_or_else(|| cfg.control_path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wisp-rt")
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async_main(cfg, config_path.to_path_buf(), control))
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cfg.log_level.as_str()));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn async_main(cfg: Config, config_path: PathBuf, control: PathBuf) -> anyhow::Result<()> {
    let listener = bind_control(&control)?;
    let gateway = Gateway::start(cfg).await?;
    let shared = Arc::new(Shared {
        config_path,
        started: Instant::now(),
        gateway,
        reload_lock: Mutex::new(()),
    });
    tracing::info!(control = %control.display(), "wisp daemon running");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_client(stream, shared).await {
                            tracing::debug!("control client: {e}");
                        }
                    });
                }
                Err(e) => tracing::warn!("control accept: {e}"),
            },
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); break; }
        }
    }
    shared.gateway.shutdown().await;
    let _ = std::fs::remove_file(&control);
    tracing::info!("wisp daemon stopped");
    Ok(())
}

fn bind_control(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    if path.exists() {
        // A stale socket from a crashed daemon, or a live one: refuse the latter.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another wisp daemon is listening on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("binding control socket {}", path.display()))
}

async fn serve_client(stream: UnixStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let Some(line) = lines.next_line().await? else { return Ok(()) };
    let resp = match serde_json::from_str::<Request>(&line) {
        Ok(req) => handle(req, &shared).await,
        Err(e) => Response::Error { message: format!("malformed request: {e}") },
    };
    let mut out = serde_json::to_string(&resp).unwrap_or_else(|e| {
        format!(r#"{{"result":"error","message":"cannot encode answer: {e}"}}"#)
    });
    out.push('\n');
    w.write_all(out.as_bytes()).await?;
    w.shutdown().await
}

async fn handle(req: Request, shared: &Arc<Shared>) -> Response {
    let gw = &shared.gateway;
    let result = match req {
        Request::Up { name, timeout_secs } => {
            gw.up(&name, Duration::from_secs(timeout_secs.unwrap_or(30))).await
        }
        Request::Down { name } => gw.down(&name).await,
        Request::Rekey { name, ike, child } => gw.rekey(&name, ike, child.as_deref()).await,
        Request::Status => {
            let mut st: Status = gw.status();
            st.pid = std::process::id();
            st.uptime_secs = shared.started.elapsed().as_secs();
            st.config = shared.config_path.display().to_string();
            return Response::Status { status: Box::new(st) };
        }
        Request::Reload => {
            let path = shared.config_path.clone();
            let shared2 = shared.clone();
            // Parsing, plugin compilation and re-validation happen off the runtime's
            // reactor threads.
            let res = tokio::task::spawn_blocking(move || {
                let _g = shared2.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
                let cfg = Config::load(&path).map_err(|e| e.to_string())?;
                shared2.gateway.reload(cfg)
            })
            .await;
            match res {
                Ok(r) => r,
                Err(e) => Err(format!("reload task failed: {e}")),
            }
        }
    };
    match result {
        Ok(message) => Response::Ok { message },
        Err(message) => Response::Error { message },
    }
}
