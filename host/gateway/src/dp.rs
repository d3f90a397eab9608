//! What the engine drivers need from the dataplane (`dataplane/`, owned by the
//! ESP side): Child SA install / make-before-break replace / remove, per-SA
//! counters, and sending IKE on the NAT-T socket it owns.

use std::net::SocketAddr;

use wisp_ike::event::ChildSaInfo;
use wisp_policy_api::TrafficSelector;

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

/// What the dataplane reports to the control side. Called from the packet
/// threads: the callback must not block (it pushes into channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A lifetime limit on the Child SA with inbound SPI `spi_in`: soft
    /// limits and sequence exhaustion → rekey, hard limits → delete.
    Limit { spi_in: u32, event: wisp_esp::LimitEvent },
    /// ESP for `spi_in` authenticated but came from `from`, not the SA's peer.
    PeerSeen { spi_in: u32, from: SocketAddr },
    /// Traffic hit the on-demand trap `id` and no Child SA.
    Acquire { id: u64 },
}

/// Callback for [`Notice`]s.
pub type NoticeSink = Box<dyn Fn(Notice) + Send + Sync>;

pub trait Dataplane: Send + Sync {
    /// Install inbound + outbound SAs, the SPD entries for its selectors and
    /// routes to the remote selectors.
    fn install_child(&self, sa: &ChildSaInfo) -> anyhow::Result<()>;
    /// Make-before-break: `new` is installed and carries outbound traffic from
    /// now on; the old inbound SA keeps accepting until [`Dataplane::remove_child`].
    fn rekey_child(&self, old_spi_in: u32, old_spi_out: u32, new: &ChildSaInfo) -> anyhow::Result<()>;
    /// Route `remote_ts` to the TUN device and raise [`Notice::Acquire`] with
    /// `id` when traffic for the selectors finds no Child SA.
    fn install_trap(&self, id: u64, local_ts: &[TrafficSelector], remote_ts: &[TrafficSelector]) -> anyhow::Result<()>;
    fn remove_trap(&self, id: u64) -> anyhow::Result<()>;
    /// The peer of the Child SA moved (NAT rebinding): send to `peer` from now on.
    fn update_peer(&self, spi_in: u32, spi_out: u32, peer: SocketAddr) -> anyhow::Result<()>;
    /// Remove both directions (and routes no other SA needs).
    fn remove_child(&self, spi_in: u32, spi_out: u32) -> anyhow::Result<()>;
    fn child_counters(&self, spi_in: u32, spi_out: u32) -> Option<ChildCounters>;
    /// Send an IKE message on the NAT-T socket (the dataplane prepends the marker).
    fn send_ike(&self, local: SocketAddr, remote: SocketAddr, ike: &[u8]) -> std::io::Result<()>;
    /// A virtual IP assigned to us goes on the TUN device (and comes off).
    fn add_address(&self, a: std::net::IpAddr) -> anyhow::Result<()>;
    fn remove_address(&self, a: std::net::IpAddr) -> anyhow::Result<()>;
    /// Global counters (drops by reason, ...), for `wisp status`.
    fn counters(&self) -> Vec<(String, u64)>;
    /// Remove every SA and route, stop the packet loops.
    fn shutdown(&self);
}
