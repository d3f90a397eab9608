//! The daemon: control socket, signals, and the runtime that hosts the engine
//! drivers and the dataplane.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::config::Config;
use crate::control::{self, Access, Request, Response};
use crate::gateway::Gateway;
use crate::status::Status;

/// State shared by the control handlers.
pub struct Shared {
    pub config_path: PathBuf,
    pub started: Instant,
    pub gateway: Gateway,
    /// Serializes reloads.
    reload_lock: Mutex<()>,
    /// Who may talk to us (`SO_PEERCRED`), and what was refused.
    access: Access,
    control_counters: control::Counters,
    /// Control clients served at once.
    clients: Arc<tokio::sync::Semaphore>,
}

/// `wisp run -c FILE`: run until SIGTERM/SIGINT.
pub fn run(config_path: &Path, control_override: Option<&Path>) -> anyhow::Result<()> {
    let cfg = Config::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    init_logging(&cfg);
    let control = control_override.map(Path::to_path_buf).unwrap_or_else(|| cfg.control_path());
    let access = Access::new(cfg.control.group.as_deref())?;
    let target = cfg.daemon.user.as_deref().map(crate::privdrop::resolve).transpose()?;
    if let Some(t) = &target {
        crate::privdrop::check_readable(t, &reread_files(&cfg, config_path))?;
    }
    let listener = control::bind(&control, access.group.as_ref(), target.as_ref().map(|t| t.uid))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wisp-rt")
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async_main(cfg, config_path.to_path_buf(), control, listener, access, target))
}

/// The files `wisp reload` reads again: the config, its PSK files, the plugin.
fn reread_files(cfg: &Config, config_path: &Path) -> Vec<PathBuf> {
    let base = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut v = vec![config_path.to_path_buf(), cfg.plugin_path()];
    for c in cfg.connections.values() {
        if let Some(f) = &c.auth.psk_file {
            v.push(if f.is_relative() { base.join(f) } else { f.clone() });
        }
    }
    v
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cfg.log_level.as_str()));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn async_main(
    cfg: Config,
    config_path: PathBuf,
    control: PathBuf,
    listener: std::os::unix::net::UnixListener,
    mut access: Access,
    target: Option<crate::privdrop::Target>,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener).context("control socket")?;
    let gateway = Gateway::start(cfg).await?;
    // TUN device, IKE, NAT-T and control sockets are open: drop to the
    // configured user (a partial drop stops the daemon).
    if let Some(t) = &target {
        if let Err(e) = crate::privdrop::drop_to(t) {
            gateway.shutdown().await;
            let _ = std::fs::remove_file(&control);
            return Err(e);
        }
        access.own_uid = nix::unistd::geteuid().as_raw();
    }
    let shared = Arc::new(Shared {
        config_path,
        started: Instant::now(),
        gateway,
        reload_lock: Mutex::new(()),
        access,
        control_counters: control::Counters::default(),
        clients: Arc::new(tokio::sync::Semaphore::new(control::MAX_CLIENTS)),
    });
    tracing::info!(control = %control.display(), "wisp daemon running");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            acc = listener.accept() => match acc {
                Ok((stream, _)) => {
                    let Ok(permit) = shared.clients.clone().try_acquire_owned() else {
                        // Bounded: beyond MAX_CLIENTS at once, refuse at once.
                        shared.control_counters.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let _ = stream.try_write(b"{\"result\":\"error\",\"message\":\"daemon busy: too many control clients\"}\n");
                        continue;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_client(stream, shared).await {
                            tracing::debug!("control client: {e}");
                        }
                        drop(permit);
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

async fn serve_client(stream: UnixStream, shared: Arc<Shared>) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let cred = stream.peer_cred();
    let (r, mut w) = stream.into_split();
    let k = &shared.control_counters;
    let allowed = match cred {
        Ok(c) => shared.access.allows(c.uid(), c.gid()),
        Err(e) => Err(format!("no peer credentials: {e}")),
    };
    let resp = match allowed {
        Err(why) => {
            k.refused_peer.fetch_add(1, Relaxed);
            tracing::warn!("control client refused: {why}");
            Response::Error { message: format!("permission denied: {why}") }
        }
        Ok(()) => match control::read_request(BufReader::new(r), control::REQUEST_TIMEOUT).await {
            Ok(line) => match serde_json::from_str::<Request>(&line) {
                Ok(req) => handle(req, &shared).await,
                Err(e) => Response::Error { message: format!("malformed request: {e}") },
            },
            Err(control::ReadError::Closed) => return Ok(()),
            Err(e) => {
                match e {
                    control::ReadError::TooLong => k.too_long.fetch_add(1, Relaxed),
                    control::ReadError::TimedOut => k.timed_out.fetch_add(1, Relaxed),
                    _ => 0,
                };
                tracing::debug!("control client: {e}");
                Response::Error { message: e.to_string() }
            }
        },
    };
    let mut out = serde_json::to_string(&resp).unwrap_or_else(|e| format!(r#"{{"result":"error","message":"cannot encode answer: {e}"}}"#));
    out.push('\n');
    w.write_all(out.as_bytes()).await?;
    w.shutdown().await
}

async fn handle(req: Request, shared: &Arc<Shared>) -> Response {
    let gw = &shared.gateway;
    let result = match req {
        Request::Up { name, timeout_secs } => gw.up(&name, Duration::from_secs(timeout_secs.unwrap_or(30))).await,
        Request::Down { name } => gw.down(&name).await,
        Request::Rekey { name, ike, child } => gw.rekey(&name, ike, child.as_deref()).await,
        Request::Status => {
            let mut st: Status = gw.status().await;
            st.pid = std::process::id();
            st.uptime_secs = shared.started.elapsed().as_secs();
            st.config = shared.config_path.display().to_string();
            st.daemon.extend(shared.control_counters.list());
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
