//! What the engine drivers need from the dataplane (`dataplane/`, owned by the
//! ESP side): Child SA install / make-before-break replace / remove, per-SA
//! counters, and sending IKE on the NAT-T socket it owns.

use std::net::SocketAddr;

use wisp_ike::event::ChildSaInfo;

/// Per-Child-SA traffic counters (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildCounters {
    pub bytes_in: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub packets_out: u64,
}

/// Callback the dataplane calls with IKE messages received on the NAT-T port
/// (non-ESP marker already stripped): `(local, remote, ike_bytes)`.
pub type IkeSink = Box<dyn Fn(SocketAddr, SocketAddr, &[u8]) + Send + Sync>;

/// Callback for dataplane lifetime events: `(spi_in, spi_out, outbound, event)`.
/// Soft limits / sequence exhaustion → rekey; hard limits → delete.
pub type LimitSink = Box<dyn Fn(u32, u32, bool, wisp_esp::LimitEvent) + Send + Sync>;

/// Callback for ESP that authenticated but came from an address other than
/// the SA's peer: `(spi_in, from)`.
pub type PeerSink = Box<dyn Fn(u32, SocketAddr) + Send + Sync>;

pub trait Dataplane: Send + Sync {
    /// Install inbound + outbound SAs, the SPD entries for its selectors and
    /// routes to the remote selectors.
    fn install_child(&self, sa: &ChildSaInfo) -> anyhow::Result<()>;
    /// Make-before-break: `new` is installed and carries outbound traffic from
    /// now on; the old inbound SA keeps accepting until [`Dataplane::remove_child`].
    fn rekey_child(&self, old_spi_in: u32, old_spi_out: u32, new: &ChildSaInfo) -> anyhow::Result<()>;
    /// The peer of the Child SA moved (NAT rebinding): send to `peer` from now on.
    fn update_peer(&self, spi_in: u32, spi_out: u32, peer: SocketAddr) -> anyhow::Result<()>;
    /// Remove both directions (and routes no other SA needs).
    fn remove_child(&self, spi_in: u32, spi_out: u32) -> anyhow::Result<()>;
    fn child_counters(&self, spi_in: u32, spi_out: u32) -> Option<ChildCounters>;
    /// Send an IKE message on the NAT-T socket (the dataplane prepends the marker).
    fn send_ike(&self, local: SocketAddr, remote: SocketAddr, ike: &[u8]) -> std::io::Result<()>;
    /// Global counters (drops by reason, ...), for `wisp status`.
    fn counters(&self) -> Vec<(String, u64)>;
    /// Remove every SA and route, stop the packet loops.
    fn shutdown(&self);
}
