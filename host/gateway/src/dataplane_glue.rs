//! Connects the engine drivers to the dataplane.
//!
//! [`IkeOnly`] owns the NAT-T socket and handles only IKE on it (ESP datagrams
//! are counted and dropped): it runs the control plane without a packet path,
//! e.g. for control-only tests.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use wisp_ike::event::ChildSaInfo;

use crate::config::Config;
use crate::dp::{ChildCounters, Dataplane, IkeSink, LimitSink};

/// Start the dataplane for `cfg`; IKE received on the NAT-T port goes to `sink`.
pub async fn start(cfg: &Config, sink: IkeSink, _limits: LimitSink) -> anyhow::Result<Arc<dyn Dataplane>> {
    Ok(Arc::new(IkeOnly::start(cfg, sink)?))
}

/// NAT-T socket for IKE only.
pub struct IkeOnly {
    sock: UdpSocket,
    esp_dropped: Arc<AtomicU64>,
}

impl IkeOnly {
    pub fn start(cfg: &Config, sink: IkeSink) -> anyhow::Result<IkeOnly> {
        let sock = UdpSocket::bind(("0.0.0.0", cfg.natt_port))
            .with_context(|| format!("binding NAT-T socket port {}", cfg.natt_port))?;
        let rx = sock.try_clone()?;
        let esp_dropped = Arc::new(AtomicU64::new(0));
        let dropped = esp_dropped.clone();
        let port = cfg.natt_port;
        std::thread::Builder::new().name("natt-rx".into()).spawn(move || {
            let mut buf = vec![0u8; 65536];
            loop {
                match rx.recv_from(&mut buf) {
                    Ok((n, remote)) => match wisp_esp::classify(&buf[..n]) {
                        wisp_esp::Classified::Ike => {
                            let local = SocketAddr::from(([0, 0, 0, 0], port));
                            sink(local, remote, &buf[wisp_esp::NON_ESP_MARKER_LEN..n]);
                        }
                        _ => {
                            dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        })?;
        Ok(IkeOnly { sock, esp_dropped })
    }
}

impl Dataplane for IkeOnly {
    fn install_child(&self, _sa: &ChildSaInfo) -> anyhow::Result<()> {
        Ok(())
    }
    fn rekey_child(&self, _old_spi_in: u32, _old_spi_out: u32, _new: &ChildSaInfo) -> anyhow::Result<()> {
        Ok(())
    }
    fn remove_child(&self, _spi_in: u32, _spi_out: u32) -> anyhow::Result<()> {
        Ok(())
    }
    fn child_counters(&self, _spi_in: u32, _spi_out: u32) -> Option<ChildCounters> {
        None
    }
    fn send_ike(&self, _local: SocketAddr, remote: SocketAddr, ike: &[u8]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(ike.len() + 4);
        buf.extend_from_slice(&[0, 0, 0, 0]);
        buf.extend_from_slice(ike);
        self.sock.send_to(&buf, remote).map(|_| ())
    }
    fn counters(&self) -> Vec<(String, u64)> {
        vec![("esp_dropped_no_dataplane".into(), self.esp_dropped.load(Ordering::Relaxed))]
    }
    fn shutdown(&self) {}
}
